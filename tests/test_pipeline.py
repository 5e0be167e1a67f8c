"""The synthetic profile end to end: results contract, expected values, execution cache.

Runs every notebook once on the phantoms (a few minutes on 2 cores), compares each published
value with ``tests/expected/synthetic.json`` and checks that a second run skips everything.
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


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRO_WORK_DIR", str(base / "work"))
    mp.setenv("REPRO_RESULTS_DIR", str(base / "results"))
    mp.setenv("REPRO_DATA_DIR", str(base / "data"))
    t0 = time.perf_counter()
    report = runner.run("synthetic", log_output=False)
    first = time.perf_counter() - t0
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
