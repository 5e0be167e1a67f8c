# covid-repro: two commands for a fresh machine.
#   make book   -> .venv, run every notebook for $(PROFILE) (default sample), build _build/html
#   make lint   -> ruff check reprolib tests
#   make test   -> .venv if needed, pytest (make test-repeat: a second synthetic run, compared;
#                  make test-extended: process kills, DDP ranks, compiler; CI runs all three)
#   make publish-> commit _build/html to the gh-pages branch and push it (repro publish)
#   make smoke  -> the paper profile's code path end to end on miniature archives (--schedule smoke)
#   make bench  -> repro bench (inference, preprocessing, pipeline, book rebuild: prints figures, writes
#                  benchmarks/out/bench.json for the Performance chapter) + per-step preprocessing memory
PROFILE ?= sample
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch/torchvision are pinned in pyproject.toml (torch==2.14.1, torchvision==0.29.1).
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: venv book run html publish lint test test-repeat test-extended smoke bench clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/repro run --profile $(PROFILE)

html: $(STAMP)
	$(BIN)/repro book --profile $(PROFILE)

# papermill's exit code stops the build: no book from a failed run.
book: run
	$(MAKE) html PROFILE=$(PROFILE)

# Commit _build/html to the gh-pages branch and push it to origin (ghp-import); build it first with make book.
publish: $(STAMP)
	$(BIN)/repro publish --profile $(PROFILE)

lint: $(STAMP)
	$(BIN)/ruff check reprolib tests

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Repeatability on one machine: one more synthetic run from empty folders, every published value
# compared with the run `make test` saved for the same code and CPU (.repro/test-runs/; without one,
# two runs are made). CI runs it after `make test`.
test-repeat: $(STAMP)
	$(BIN)/python -m pytest -m repeat tests/test_pipeline.py $(PYTEST_ARGS)

# The suite's costliest process-level checks, kept out of `make test` for its 10-minute budget:
# processes killed mid-write and resumed, two DDP ranks, a TorchInductor compile, emulated bf16. CI runs it.
test-extended: $(STAMP)
	$(BIN)/python -m pytest -m extended $(PYTEST_ARGS)

# The paper profile's exact code path in minutes on a CPU: miniature archives of every dataset in its
# publisher's layout (phantoms), the profile's refusal of them as they are (below the documented
# counts), then every notebook under the smoke schedule (tiny epochs, two items per class). CI runs it.
SMOKE_DATA ?= .cache/mini-archives
smoke: $(STAMP)
	$(BIN)/repro data mini-archives $(SMOKE_DATA)
	REPRO_DATA_DIR=$(SMOKE_DATA) $(BIN)/repro data fetch --profile paper
	! REPRO_DATA_DIR=$(SMOKE_DATA) $(BIN)/repro run --profile paper --quiet
	REPRO_DATA_DIR=$(SMOKE_DATA) $(BIN)/repro data verify --profile paper --schedule smoke
	REPRO_DATA_DIR=$(SMOKE_DATA) $(BIN)/repro run --profile paper --schedule smoke --force --quiet

# Speed/memory targets are checked by benchmarks that print figures (not by timed tests).
bench: $(STAMP)
	$(BIN)/repro bench
	$(BIN)/python benchmarks/bench_preprocess_memory.py

clean:
	rm -rf _build book/generated

distclean: clean
	rm -rf $(VENV) .repro results $(SMOKE_DATA)
