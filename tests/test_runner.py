"""The papermill runner: order, failure stops the run, execution cache, book gate, CLI."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tinynb import write_notebook

from reprolib import bookbuild, cli, runner
from reprolib.errors import ConfigError

ORDER = 'with open(Path(work_dir) / "order.txt", "a") as fh:\n    fh.write("{stem}\\n")\n'


def write_nb(directory: Path, stem: str, body: str = "") -> Path:
    """A tiny notebook that logs its run order, then runs ``body`` in a new cell."""
    return write_notebook(directory, stem, ORDER.replace("{stem}", stem) + "\n# %%\n" +
                          (body or "nb.glue('value', 1)"))


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    write_nb(d, "01_first", "nb.glue('value', 1)")
    write_nb(d, "02_second", "nb.glue('value', 2)")
    write_nb(d, "03_third", "import json\nv = json.load(open(Path(results_dir) / '02_second.json'))"
                            "['values']['value']\nnb.glue('value', v * 10)")
    return d


def order(isolated) -> list[str]:
    p = isolated["work"] / "synthetic" / "work" / "order.txt"
    return p.read_text().split() if p.exists() else []


def test_list_and_select(nbdir):
    nbs = runner.list_notebooks(nbdir)
    assert [p.stem for p in nbs] == ["01_first", "02_second", "03_third"]
    assert [p.stem for p in runner.select(nbs, only=["2"])] == ["02_second"]
    assert [p.stem for p in runner.select(nbs, start="02")] == ["02_second", "03_third"]
    with pytest.raises(ConfigError, match="no notebook numbered"):
        runner.select(nbs, only=["09"])


@pytest.mark.slow
@pytest.mark.extended  # ~25 s of papermill runs; the synthetic run of make test covers order and cache too
def test_run_order_cache_and_failure(nbdir, isolated, tmp_path, monkeypatch):
    # reprolib's own hash is covered by test_cache_key_depends_on_every_input; pin it here
    # so that editing the package while the test runs cannot invalidate the cache.
    monkeypatch.setattr(runner, "code_hash", lambda source: "pinned")
    rep = runner.run("synthetic", notebooks=nbdir, log_output=False)
    assert rep.ok and rep.executed == ["01_first", "02_second", "03_third"]
    assert order(isolated) == ["01_first", "02_second", "03_third"]
    res = json.loads((isolated["results"] / "synthetic" / "03_third.json").read_text())
    assert res["values"]["value"] == 20  # read from upstream results, in order

    # unchanged: everything skipped, quickly, and said so
    lines: list[str] = []
    t0 = time.perf_counter()
    rep = runner.run("synthetic", notebooks=nbdir, echo=lines.append, log_output=False)
    assert rep.ok and rep.skipped == ["01_first", "02_second", "03_third"] and not rep.executed
    assert time.perf_counter() - t0 < 30
    assert sum("[skip]" in s for s in lines) == 3

    # a changed upstream value re-runs the notebook and its dependants, not the ones before
    write_nb(nbdir, "02_second", "nb.glue('value', 3)")
    rep = runner.run("synthetic", notebooks=nbdir, log_output=False)
    assert rep.executed == ["02_second", "03_third"] and rep.skipped == ["01_first"]
    # a source edit that does not change published values leaves downstream cached
    write_nb(nbdir, "02_second", "nb.glue('value', 3)  # comment")
    rep = runner.run("synthetic", notebooks=nbdir, log_output=False)
    assert rep.executed == ["02_second"] and rep.skipped == ["01_first", "03_third"]
    # --force re-runs everything selected
    rep = runner.run("synthetic", notebooks=nbdir, only=["1"], force=True, log_output=False)
    assert rep.executed == ["01_first"]

    # a raising cell stops the run, names notebook and cell, and blocks the book
    write_nb(nbdir, "02_second", "x = 1\n\n# %%\nraise RuntimeError('boom in cell')")
    lines = []
    rep = runner.run("synthetic", notebooks=nbdir, echo=lines.append, log_output=False)
    assert not rep.ok and rep.failure.notebook == "02_second"
    assert rep.failure.ename == "RuntimeError" and "boom in cell" in rep.failure.evalue
    assert isinstance(rep.failure.cell, int)
    text = "\n".join(lines)
    assert "02_second" in text and f"cell {rep.failure.cell}" in text and "boom in cell" in text
    assert "03_third" not in rep.executed
    state = isolated["work"] / "synthetic"
    assert (state / "failed" / "02_second.ipynb").is_file()
    assert not (state / "executed" / "02_second.ipynb").exists()
    with pytest.raises(ConfigError, match="did not succeed"):
        bookbuild.prepare_book("synthetic", root=tmp_path)


@pytest.mark.slow
def test_cli_exit_code_on_failure(tmp_path, isolated, monkeypatch):
    d = tmp_path / "nbs"
    d.mkdir()
    write_nb(d, "01_only", "raise ValueError('bad cell')")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: d)
    assert cli.main(["run", "--profile", "synthetic", "--quiet"]) == 1
    assert cli.main(["book", "--profile", "synthetic"]) != 0  # no book from a failed run


def test_cli_rejects_unknown_profile(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--profile", "bogus"])
    assert err.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_cache_key_depends_on_every_input(nbdir, tmp_path):
    src = nbdir / "01_first.py"
    base = runner.cache_key(src, {"a": 1}, "d", "c", ["u"])
    assert base == runner.cache_key(src, {"a": 1}, "d", "c", ["u"])
    assert base != runner.cache_key(src, {"a": 2}, "d", "c", ["u"])
    assert base != runner.cache_key(src, {"a": 1}, "d2", "c", ["u"])
    assert base != runner.cache_key(src, {"a": 1}, "d", "c2", ["u"])
    assert base != runner.cache_key(src, {"a": 1}, "d", "c", ["u2"])
    src.write_text(src.read_text() + "\n# edit\n")
    assert base != runner.cache_key(src, {"a": 1}, "d", "c", ["u"])


def test_published_values_hash_ignores_timings(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"values": {"a": 1}, "timings": {"wall_time_s": 1.0}}))
    h = runner.published_values_hash(p)
    p.write_text(json.dumps({"values": {"a": 1}, "timings": {"wall_time_s": 9.0}}))
    assert runner.published_values_hash(p) == h
    p.write_text(json.dumps({"values": {"a": 2}, "timings": {}}))
    assert runner.published_values_hash(p) != h
    assert runner.published_values_hash(tmp_path / "missing.json") == "missing"


def test_external_resources_detected(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.example.org/x.js"></script>'
                                     '<link rel="stylesheet" href="//fonts.example.org/f.css">'
                                     '<a href="https://doi.org/10.1/x">paper</a>'
                                     '<script src="_static/local.js"></script>')
    found = bookbuild.external_resources(tmp_path)
    assert [t for _, t in found] == ['<script src="https://cdn.example.org/x.js"',
                                     '<link rel="stylesheet" href="//fonts.example.org/f.css"']


def test_book_notebooks_hide_parameters_collapse_code_and_end_with_a_reproduce_box(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'sample'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("work_dir = '/home/me/x'", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("nb.glue('a', 1)", metadata={"tags": ["remove-input"]})]
    src, dest = tmp_path / "04_x.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    run = {"name": "04_x", "status": "executed", "wall_s": 12.4, "inputs": {"source": "abc123def456"}}
    prov = {"git": {"commit": "f" * 40, "dirty": False}, "hardware": {"cpu": "Test CPU", "cpu_count": 2,
                                                                       "torch_threads": 2, "gpu": None}, "seed": 0}
    bookbuild.write_book_notebook(src, dest, "sample", run, prov, has_results=True)
    out = nbformat.read(dest, as_version=4)
    assert [c.metadata["tags"] for c in out.cells[:4]] == [
        ["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], ["hide-input"], ["remove-input"]]
    box = out.cells[-1].source
    assert "repro run --profile sample --only 04" in box and "12 s (executed)" in box and "Test CPU" in box
    assert "source `abc123def456`" in box and "data/04_x.json" in box and "/home/" not in box


def test_calibration_is_an_input_of_synthetic_pages_only(tmp_path):
    src = tmp_path / "04_x.py"
    src.write_text("# repro-inputs: calibration\nx = 1\n")
    assert runner.declared_inputs(src, "sample") == {"calibration": "not read"}
    assert runner.declared_inputs(src, "synthetic")["calibration"] != "not read"
