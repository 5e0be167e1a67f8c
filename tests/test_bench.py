"""Benchmark harness: job records, the headline summary, the JSON document and the runner's input hashing.

No timing is asserted (speed targets are reported by ``make bench``, not tested); the tests check
that the figures are computed from what was measured and that fast variants are checked against eager.
"""
from __future__ import annotations

import json

import pytest
from tinynb import write_notebook

from reprolib import bench, bench_page, models, runner
from reprolib.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    jobs = [j for j in bench.plan(quick=True) if j[0] in ("decovnet", "preprocess")]
    doc = bench.run(jobs, out=out, quick=True, progress=False, echo=lambda s: None)
    return doc, out


def test_decovnet_record_counts_macs_and_checks_variants(quick_doc):
    doc, _ = quick_doc
    (dec,) = [r for r in doc["rows"] if r["job"] == "decovnet"]
    net = models.DeCoVNet(proclf_grids=models.proclf_grids_for((32, 48)))
    assert dec["macs"] == models.count_macs(net, (1, 2, 8, 32, 48))
    assert set(dec["seconds"]) == {"eager", "jit", "channels_last"}
    assert all(t > 0 for t in dec["seconds"].values())
    for v in ("jit", "channels_last"):  # fp32 variants reproduce eager on the benchmark's own input
        assert dec["max_abs_diff"][v] <= bench.TOLERANCE
    assert dec["params"]["threads"] == 2 and dec["peak_rss_MB"] > 0


def test_preprocess_record_and_document_on_disk(quick_doc):
    doc, out = quick_doc
    base, pre = [r for r in doc["rows"] if r["job"] == "preprocess"]
    assert (base["engine"], pre["engine"]) == ("baseline", "fast")
    assert pre["shape"] == [24, 64, 64] and pre["shape_1mm"] == [60, 64, 64]  # 2.5 mm -> 1 mm
    assert pre["workers"] == 2 and pre["lung_ml"] > 0
    assert base["lung_ml"] == pre["lung_ml"]  # the same mask either way
    assert doc["summary"]["preprocess"]["ratio"] == pytest.approx(pre["seconds"] / base["seconds"])
    again = bench.load(out)
    assert again["format"] == bench.FORMAT and again["quick"] is True
    assert again["summary"]["preprocess"]["seconds"] == pytest.approx(pre["seconds"])
    assert again["hardware"]["cpu_count"] >= 1 and "torch" in again["packages"]


def _row(T, eager, **variants):
    secs = {"eager": eager, **{k: v[0] for k, v in variants.items()}}
    diff = {"eager": 0.0, **{k: v[1] for k, v in variants.items()}}
    return {"job": "decovnet", "T": T, "seconds": secs, "max_abs_diff": diff, "macs": 1}


def test_summary_uses_the_largest_depth_and_only_variants_within_tolerance():
    doc = {"rows": [_row(100, 2.0, jit=(0.5, 0.0)),
                    _row(300, 8.0, jit=(3.0, 1e-9), channels_last=(6.0, 0.0), bf16=(1.0, 3e-2))]}
    d = bench.summarize(doc)["decovnet"]
    # bf16 is fastest but outside the fp32 tolerance: the ratio is jit's, 3.0 / 8.0
    assert d["T"] == 300 and d["fastest_exact_variant"] == "jit"
    assert d["ratio"] == pytest.approx(0.375) and d["met"] is True
    doc["rows"][1]["seconds"]["jit"] = 5.0
    d = bench.summarize(doc)["decovnet"]
    assert d["ratio"] == pytest.approx(0.625) and d["met"] is False
    assert "NOT met" in bench.format_table({"summary": bench.summarize(doc), "hardware": {}})
    # a variant that reproduces eager exactly prints its 0.0 difference, not "nan"
    doc["rows"][1]["seconds"]["channels_last"] = 1.0
    table = bench.format_table({"summary": bench.summarize(doc), "hardware": {}})
    assert "channels_last 1.00 s" in table and "max |diff| 0.0e+00" in table


def test_load_refuses_what_is_not_a_benchmark(tmp_path):
    assert bench.load(tmp_path / "absent.json") is None
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bench.json.*unreadable benchmark JSON"):
        bench.load(bad)
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(InputError, match="not a covid-repro-bench/2 document"):
        bench.load(bad)


def test_partial_runs_never_replace_the_books_file(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_BENCH_JSON", str(tmp_path / "bench.json"))
    seen = {}
    monkeypatch.setattr(bench, "run", lambda jobs, out, **kw: seen.update(out=out, jobs=jobs))
    from reprolib import cli

    assert cli.main(["bench", "--quick", "--only", "unet"]) == 0
    assert seen["out"] == tmp_path / "bench-partial.json" and [j[0] for j in seen["jobs"]] == ["unet"]


def test_declared_inputs_enter_the_cache_key(tmp_path, monkeypatch):
    src = tmp_path / "09_x.py"
    src.write_text("x = 1\n# repro-inputs: bench   (a comment)\n")
    target = tmp_path / "bench.json"
    monkeypatch.setenv("REPRO_BENCH_JSON", str(target))
    assert runner.declared_inputs(src) == {"bench": "missing"}
    key = lambda: runner.cache_key(src, {}, "d", "c", [], runner.declared_inputs(src))  # noqa: E731
    k_missing = key()
    target.write_text("{}")
    k1 = key()
    target.write_text('{"a": 1}')
    assert len({k_missing, k1, key()}) == 3
    plain = tmp_path / "01_y.py"
    plain.write_text("x = 1\n")
    assert runner.declared_inputs(plain) == {}
    assert runner.cache_key(plain, {}, "d", "c", [], {}) == runner.cache_key(plain, {}, "d", "c", [])
    src.write_text("# repro-inputs: benchmark\n")
    with pytest.raises(ConfigError, match="unknown repro-inputs name 'benchmark'"):
        runner.declared_inputs(src)


def test_stale_lists_what_a_run_would_execute(tmp_path, monkeypatch):
    """runner.stale computes the keys run() would, without executing anything."""
    for k in ("REPRO_WORK_DIR", "REPRO_RESULTS_DIR", "REPRO_DATA_DIR"):
        monkeypatch.setenv(k, str(tmp_path / k))
    monkeypatch.setenv("REPRO_BENCH_JSON", str(tmp_path / "bench.json"))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs, "01_a", 'nb.glue("v", 1)\nnb.finish()')
    write_notebook(nbs, "02_b", "# repro-inputs: bench\nnb.finish()")
    monkeypatch.setattr(runner, "code_hash", lambda source: "pinned")
    assert runner.stale("synthetic", nbs) == ["01_a", "02_b"]
    assert runner.run("synthetic", notebooks=nbs, log_output=False, echo=lambda s: None).ok
    assert runner.stale("synthetic", nbs) == []
    (tmp_path / "bench.json").write_text("{}")  # a new benchmark: only the notebook that reads it
    assert runner.stale("synthetic", nbs) == ["02_b"]


def test_pipeline_job_runs_predict_ct_at_both_speeds(tmp_path):
    import numpy as np

    from reprolib.memtrace import synthetic_chest

    vol = tmp_path / "chest.npy"
    np.save(vol, synthetic_chest(12, 64))
    r = bench.job_pipeline(str(vol), (2.5, 1.0, 1.0), hw=(32, 48))
    assert list(r["speeds"]) == ["reference", "fast"] and r["baseline"] == "reference"
    ref, fast = r["speeds"]["reference"], r["speeds"]["fast"]
    assert (ref["unet"]["variant"], fast["unet"]["variant"]) in {("eager", "jit"), ("eager", "bf16")}
    assert fast["unet"]["size"] is None  # 64 px slices: below the fast cap, not resized
    assert ref["dice_vs_reference"] == 1.0 and ref["abs_dp_vs_reference"] == 0.0
    assert fast["dice_vs_reference"] > 0.99 and fast["abs_dp_vs_reference"] < 1e-4
    assert r["slices_1mm"] == 30 and ref["unet_macs"] == models.count_macs(models.UNet2D(), (1, 1, 64, 64)) * 30
    for run_ in (ref, fast):
        secs = run_["seconds"]
        assert set(secs) == set(bench_page.PIPELINE_STAGES) | {"total"}
        assert secs["total"] >= sum(secs[k] for k in bench_page.PIPELINE_STAGES) * 0.99
    assert r["peak_gflops"] > 0
    assert 0 < r["label_fraction"] < 0.5 and r["weights"] == "untrained (seed 0)"
    assert fast["resolution_ceiling"] is None  # nothing resized, nothing to bound


def test_resolution_ceiling_bounds_what_a_smaller_mask_can_agree_with():
    import numpy as np

    yy, xx = np.mgrid[:128, :128]
    disc = ((yy - 64) ** 2 + (xx - 60) ** 2 <= 40**2)[None].repeat(3, 0)
    assert bench.resolution_ceiling(np.ones((2, 64, 64)), (32, 32)) == 1.0
    smooth = bench.resolution_ceiling(disc, (64, 64))
    assert 0.97 < smooth < 1.0  # a large disc loses only boundary pixels at half size
    fine = (yy + xx) % 2 == 0  # a one-pixel checkerboard cannot survive halving
    assert bench.resolution_ceiling(fine[None], (64, 64)) < 0.7
    assert bench.resolution_ceiling(disc, (128, 128)) == 1.0


def test_build_ceilings_read_the_verified_preprocessing_cache(tmp_path):

    from reprolib import preprocess_cache
    from reprolib.memtrace import synthetic_chest
    from reprolib.volume import CTVolume

    assert bench_page.build_ceilings(tmp_path) == []  # no cache folder: nothing to measure
    vol = CTVolume(hu=synthetic_chest(8, 288), spacing_mm=(2.0, 0.7, 0.7))
    res, _ = preprocess_cache.cached_preprocess(vol, tmp_path / "preprocessed", {"qc_lung_volume_ml": (0.0, 1e9)})
    (got,) = bench_page.build_ceilings(tmp_path)
    assert got == bench.resolution_ceiling(res["lung_mask"], (256, 256)) and 0.9 < got < 1.0
    assert bench_page.build_ceilings(tmp_path, side=288) == []  # slices not larger than the cap: not resized
