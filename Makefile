# covid-repro: two commands for a fresh machine.
#   make book   -> .venv, run every notebook for $(PROFILE) (default sample), build _build/html
#   make test   -> .venv if needed, pytest
#   make bench  -> benchmarks/ (preprocessing memory/time per step; inference eager vs fast; prints figures)
PROFILE ?= sample
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch/torchvision are pinned in pyproject.toml (torch==2.14.1, torchvision==0.29.1).
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: venv book run html test bench clean distclean

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

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed/memory targets are checked by benchmarks that print figures (not by timed tests).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_preprocess_memory.py
	$(BIN)/python benchmarks/bench_inference.py

clean:
	rm -rf _build book/generated

distclean: clean
	rm -rf $(VENV) .repro results
