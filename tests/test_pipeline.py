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

from reprolib import runner

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


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    report, first, mp = _fresh_run(base)
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


def check(name: str, actual, spec: dict) -> None:
    if "value" in spec:
        want = spec["value"]
        if isinstance(want, (bool, str)) or (isinstance(want, int) and "abs" not in spec):
            assert actual == want, f"{name}: {actual!r} != {want!r}"
        else:
            assert actual is not None and math.isclose(actual, want, abs_tol=spec.get("abs", 1e-6)), \
                f"{name}: {actual!r} drifted from {want!r} (tolerance {spec.get('abs', 1e-6)})"
    if "min" in spec:
        assert actual >= spec["min"], f"{name}: {actual!r} < required {spec['min']}"
    if "max" in spec:
        assert actual <= spec["max"], f"{name}: {actual!r} > allowed {spec['max']}"


def test_values_match_expected(synthetic_run):
    _, base, _, _ = synthetic_run
    results = load_results(base)
    expected = json.loads(EXPECTED.read_text())
    for stem, specs in expected.items():
        if stem.startswith("_"):
            continue
        values = results[stem]["values"]
        for key, spec in specs.items():
            assert key in values, f"{stem}: expected value {key!r} was not published"
            check(f"{stem}.{key}", values[key], spec)


def test_second_run_skips_everything(synthetic_run):
    report, _, _, _ = synthetic_run
    assert report.ok
    t0 = time.perf_counter()
    again = runner.run("synthetic", log_output=False)
    elapsed = time.perf_counter() - t0
    assert again.ok and not again.executed
    assert len(again.skipped) == len(report.records)
    assert elapsed <= 30, f"an unchanged rebuild took {elapsed:.1f} s"


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
    report, base, first, _ = synthetic_run
    assert report.ok
    other = tmp_path_factory.mktemp("synthetic_again")
    again, seconds, mp = _fresh_run(other)
    try:
        assert again.ok, again.failure
        assert not again.skipped  # really from scratch
        one, two = load_results(base), load_results(other)
        assert sorted(one) == sorted(two)
        diffs = [d for stem in one for d in _differences(one[stem]["values"], two[stem]["values"], stem)]
        n = sum(len(doc["values"]) for doc in one.values())
        print(f"repeatability: {n} published values of {len(one)} notebooks compared over two runs from "
              f"scratch ({first:.0f} s and {seconds:.0f} s): {len(diffs)} differences")
        assert not diffs, "\n".join(diffs[:30])
    finally:
        mp.undo()
