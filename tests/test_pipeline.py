"""The synthetic profile end to end: results contract, expected values, execution cache, repeatability.

Runs every notebook on the phantoms (a few minutes on 2 cores), compares each published value
with ``tests/expected/synthetic.json``, checks that a second run skips everything, and runs the
whole profile once more from empty folders to compare every published value with the first run
(integers, booleans and strings exactly, floats to 1e-6; the ``timings`` section — wall times and
other run-specific figures such as file digests — is excluded by the results contract).
Set ``REPRO_SKIP_PIPELINE=1`` to leave it out of a quick local run.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from reprolib import bookbuild, codehash, runner

EXPECTED = Path(__file__).parent / "expected" / "synthetic.json"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("REPRO_SKIP_PIPELINE") == "1", reason="REPRO_SKIP_PIPELINE=1")]


def _fresh_run(base: Path):
    """The synthetic profile from empty work/results/data folders under ``base``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRO_WORK_DIR", str(base / "work"))
    mp.setenv("REPRO_RESULTS_DIR", str(base / "results"))
    mp.setenv("REPRO_DATA_DIR", str(base / "data"))
    mp.setenv("REPRO_BENCH_JSON", str(base / "no-bench.json"))  # chapter 09 runs its quick benchmark
    t0 = time.perf_counter()
    report = runner.run("synthetic", log_output=False)
    return report, time.perf_counter() - t0, mp


#: Results of earlier synthetic runs of this test module (``make test`` keeps its run here, so that
#: ``make test-repeat`` on the same machine and code compares one new run with it instead of two).
SAVED_RUNS = Path(__file__).resolve().parents[1] / ".repro" / "test-runs"
SESSION = f"{os.getpid()}-{time.time_ns()}"


def run_key() -> str:
    """What a synthetic run's results depend on: code, notebooks, profiles, CPU and kernel settings."""
    import hashlib
    import platform

    import torch

    from reprolib.provenance import cpu_model

    parts = [codehash.package_hash()] + [p.read_text() for p in runner.list_notebooks()]
    parts += [cpu_model(), platform.machine(), str(torch.get_num_threads()), torch.__version__]
    parts += [f"{v}={os.environ.get(v, '')}" for v in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _save_run(base: Path) -> None:
    import shutil

    folder = SAVED_RUNS / run_key()
    dest = folder / SESSION
    shutil.copytree(base / "results" / "synthetic", dest / "results" / "synthetic")
    for old in sorted(folder.iterdir(), key=lambda d: d.stat().st_mtime)[:-2]:  # keep the two newest
        shutil.rmtree(old, ignore_errors=True)


def _saved_run() -> Path | None:
    """The newest run saved by another pytest session with the same :func:`run_key`, if any."""
    folder = SAVED_RUNS / run_key()
    found = [d for d in folder.glob("*") if d.name != SESSION and (d / "results" / "synthetic").is_dir()]
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    report, first, mp = _fresh_run(base)
    if report.ok:
        _save_run(base)
    yield report, base, first, mp
    mp.undo()


def load_results(base: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((base / "results" / "synthetic").glob("*.json"))}


def test_every_notebook_ran_and_published(synthetic_run):
    report, base, first, _ = synthetic_run
    assert report.ok, report.failure
    print(f"synthetic profile: {first:.0f} s for {len(report.executed)} notebooks")
    results = load_results(base)
    stems = [p.stem for p in runner.list_notebooks()]
    assert sorted(results) == sorted(stems)
    for stem, doc in results.items():
        assert doc["profile"] == "synthetic" and doc["notebook"] == stem
        assert doc["values"], f"{stem} glued no value"
        assert doc["timings"]["wall_time_s"] > 0


def check_exact(name: str, actual, spec: dict) -> None:
    """An exact value: equal (ints, booleans, strings) or within ``abs`` (floats, default 1e-6)."""
    want = spec["value"]
    if isinstance(want, (bool, str)) or (isinstance(want, int) and "abs" not in spec):
        assert actual == want, f"{name}: {actual!r} != {want!r}"
    else:
        assert actual is not None and math.isclose(actual, want, abs_tol=spec.get("abs", 1e-6)), \
            f"{name}: {actual!r} drifted from {want!r} (tolerance {spec.get('abs', 1e-6)})"
    if "min" in spec:
        assert actual >= spec["min"], f"{name}: {actual!r} < required {spec['min']}"


def check_statistical(name: str, actual, spec: dict) -> None:
    """A value downstream of training: inside its calibrated bound (``min`` / ``max``, or ``equals``
    for a flag); None only where the calibration saw None too."""
    spread = spec["spread"]
    where = (f"calibrated bound {({k: spec[k] for k in ('min', 'max', 'equals') if k in spec})}; spread over "
             f"{spread['n']} runs {spread} (tests/expected/calibration.json)")
    if actual is None:
        assert spec["none_seen"], f"{name}: not published ({where})"
        return
    if "equals" in spec:
        assert actual == spec["equals"], f"{name}: {actual!r} ({where})"
    if "min" in spec:
        assert actual >= spec["min"], f"{name}: {actual!r} below the {where}"
    if "max" in spec:
        assert actual <= spec["max"], f"{name}: {actual!r} above the {where}"


def published_numbers(values: dict) -> set[str]:
    """Keys of the numbers (and booleans) a notebook publishes, as the calibration script sees them."""
    from expected.calibrate import SKIP

    return {k for k, v in values.items() if k not in SKIP and not k.startswith("lp_")
            and not isinstance(v, (dict, list, str)) and v is not None}  # booleans included


def test_values_match_expected(synthetic_run):
    """Exact values equal on any machine; trained values inside bounds calibrated over seeds and
    instruction sets (``tests/expected/calibrate.py``); every published number is covered."""
    _, base, _, _ = synthetic_run
    results = load_results(base)
    expected = json.loads(EXPECTED.read_text())
    failures = []
    for stem, specs in expected.items():
        if stem.startswith("_"):
            continue
        values = results[stem]["values"]
        for kind, checker in (("exact", check_exact), ("statistical", check_statistical)):
            for key, spec in specs[kind].items():
                try:
                    assert key in values, f"{stem}: expected value {key!r} was not published"
                    checker(f"{stem}.{key}", values[key], spec)
                except AssertionError as exc:
                    failures.append(str(exc))
        covered = set(specs["exact"]) | set(specs["statistical"])
        unknown = published_numbers(values) - covered
        if unknown and stem != "09_performance":  # 09 is not calibrated: its numbers are configuration
            failures.append(f"{stem}: published {sorted(unknown)} without an expected value or bound "
                            "(rerun tests/expected/calibrate.py)")
    assert not failures, "\n".join(failures)


def test_expected_file_records_spread_and_command():
    """Each statistical bound carries its calibration spread, contains every calibrated value and is
    exactly what the rule of ``calibrate.bound`` gives (no looser); the file names its command."""
    from expected.calibrate import REQUIRE, bound

    expected = json.loads(EXPECTED.read_text())
    assert "calibrate.py" in expected["_about"]["command"]
    calibration = json.loads((EXPECTED.parent / "calibration.json").read_text())
    assert len(calibration["_about"]["runs"]) >= 10
    for stem, specs in expected.items():
        if stem.startswith("_"):
            continue
        for key, spec in specs["statistical"].items():
            observed = [v for v in calibration[stem][key]["values"].values() if v is not None]
            assert spec["spread"]["n"] == len(observed), f"{stem}.{key}"
            rule = bound(observed, spec["domain"], REQUIRE.get(stem, {}).get(key))
            assert {k: spec[k] for k in ("min", "max", "equals") if k in spec} == rule, f"{stem}.{key}"
            if spec["domain"] != "bool":
                assert spec["min"] <= min(observed) and spec.get("max", math.inf) >= max(observed)


def test_synthetic_book_reads_without_defects(synthetic_run, tmp_path):
    """The synthetic run built into a book (in a scratch copy of the book's sources) has no reader
    defect (``reprolib.audit``: long visible code, tracebacks, machine paths, nan cells, duplicated
    tables, tables captioned as figures), a ledger of at least 40 rows, and no quick-benchmark figure
    on the report."""
    import shutil

    from reprolib import audit

    report, _, _, _ = synthetic_run
    assert report.ok
    root = Path(__file__).resolve().parents[1]
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, tmp_path / name)
    shutil.copytree(root / "book", tmp_path / "book", ignore=shutil.ignore_patterns("generated", "generated.tmp"))
    shutil.copytree(root / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
    bookbuild.prepare_book("synthetic", root=tmp_path)
    assert bookbuild.build_book(root=tmp_path) == 0
    html = tmp_path / "_build" / "html"
    found = audit.audit(html)
    print(found.summary())
    assert found.n_defects == 0, found.summary()
    assert found.ledger_rows >= 40
    page = (html / "book" / "report.html").read_text()
    assert "not measured in this build" in page  # chapter 09 ran its quick benchmark here


def _differences(a, b, where: str, tol: float = 1e-6) -> list[str]:
    """Where two published values differ: exact for int/bool/str/None, ``tol`` for floats."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())} in one run only"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}", tol)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]", tol)]
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool) and abs(a - b) <= tol
        return [] if ok else [f"{where}: {a!r} vs {b!r}"]
    return [] if (type(a) is type(b) and a == b) else [f"{where}: {a!r} vs {b!r}"]


def test_differences_helper_catches_what_it_should():
    assert _differences({"a": [1, 2.0, "x"]}, {"a": [1, 2.0 + 5e-7, "x"]}, "v") == []
    assert _differences({"a": 1}, {"a": True}, "v") and _differences({"a": 1.0}, {"a": 1.00001}, "v")
    assert _differences({"a": [1]}, {"a": [1, 2]}, "v") and _differences({"a": 1}, {"b": 1}, "v")


@pytest.mark.repeat
def test_second_run_from_scratch_gives_identical_results(synthetic_run, tmp_path_factory):
    """Two synthetic runs from scratch on this machine publish identical values.

    The second run is this module's; the first is the run an earlier session (``make test``) saved
    with the same code and machine (:func:`run_key`), or, without one, a further run made here."""
    report, base, first, _ = synthetic_run
    assert report.ok
    saved = _saved_run()
    mp = None
    if saved is not None:
        other, seconds, how = saved, None, f"saved by an earlier session ({saved.name})"
    else:
        other = tmp_path_factory.mktemp("synthetic_again")
        again, seconds, mp = _fresh_run(other)
        assert again.ok, again.failure
        assert not again.skipped  # really from scratch
        how = f"run here ({seconds:.0f} s)"
    try:
        one, two = load_results(base), load_results(other)
        assert sorted(one) == sorted(two)
        diffs = [d for stem in one for d in _differences(one[stem]["values"], two[stem]["values"], stem)]
        n = sum(len(doc["values"]) for doc in one.values())
        print(f"repeatability: {n} published values of {len(one)} notebooks compared over two runs from "
              f"scratch (this one {first:.0f} s; the other {how}): {len(diffs)} differences")
        assert not diffs, "\n".join(diffs[:30])
    finally:
        if mp is not None:
            mp.undo()


def test_editing_a_module_reexecutes_only_the_notebooks_that_import_it(synthetic_run, monkeypatch):
    """After the run, nothing is stale; an edit of serve.py (no notebook imports it) leaves every
    notebook cached, an edit of models.py makes exactly the notebooks that import it stale."""
    from reprolib import codehash

    report, _, _, _ = synthetic_run
    assert report.ok and runner.stale("synthetic") == []
    real_read = codehash._read

    def edited(name: str):
        target = codehash.ROOT / name
        return lambda path: real_read(path) + (b"\n# edited\n" if Path(path) == target else b"")

    monkeypatch.setattr(codehash, "_read", edited("serve.py"))
    assert runner.stale("synthetic") == []
    monkeypatch.setattr(codehash, "_read", edited("models.py"))
    importers = [p.stem for p in runner.list_notebooks() if codehash.ROOT / "models.py" in codehash.closure(
        codehash.imported_names(p.read_bytes()))]
    assert importers and runner.stale("synthetic") == importers
    assert len(importers) < len(runner.list_notebooks())  # 01 and 10 do not run the models
