"""The Performance chapter's library: what it extracts from a benchmark document, and its figures.

A tiny hand-made benchmark document is the fixture; every expected value below is worked out by
hand from its numbers (no benchmark runs here)."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from reprolib import bench, bench_page
from reprolib.book import format_columns as book_format_columns
from reprolib.figures import performance


def _net(job, seconds, diff, macs, **extra):
    return {"job": job, "seconds": seconds, "max_abs_diff": diff, "macs": macs, "peak_rss_MB": 1000.0,
            "params": {"threads": 2, "device": "cpu"}, **extra}


def _speed(seconds, size, gflops, dice, dp, ceiling=None):
    return {"seconds": seconds, "unet": {"size": size, "bf16": False}, "unet_gflops": gflops,
            "dice_vs_reference": dice, "abs_dp_vs_reference": dp, "resolution_ceiling": ceiling}


@pytest.fixture
def doc():
    d = {
        "format": bench.FORMAT, "created": "2026-01-02T03:04:05+0000", "quick": False,
        "hardware": {"cpu": "Test CPU", "cpu_count": 4, "threads": 2, "gpu": None},
        "packages": {"torch": "9.9"}, "git": {"commit": "a" * 40},
        "bf16": {"native": False, "why": "no bf16"},
        "rows": [
            _net("decovnet", {"eager": 2.0, "jit": 1.0, "channels_last": 4.0},
                 {"eager": 0.0, "jit": 0.0, "channels_last": 0.0}, 20e9, T=100, input=[1, 2, 100, 224, 336]),
            _net("decovnet", {"eager": 8.0, "jit": 3.0}, {"eager": 0.0, "jit": 1e-9}, 60e9,
                 T=300, input=[1, 2, 300, 224, 336]),
            _net("unet", {"eager": 0.5, "jit": 0.25}, {"eager": 0.0, "jit": 2e-8}, 1e9,
                 size=512, per="slice", batch=8),
            _net("resnet50", {"eager": 0.1, "jit": 0.05}, {"eager": 0.0, "jit": 3e-6}, 4e9,
                 size=224, per="image", batch=16, images_per_s={"eager": 10.0, "jit": 20.0}),
            {"job": "preprocess", "engine": "baseline", "shape": [300, 512, 400], "spacing_mm": [1.25, 0.7, 0.7],
             "seconds": 5.0, "peak_rss_MB": 2100.0, "params": {"workers": 2, "engine": "baseline"}},
            {"job": "preprocess", "engine": "fast", "shape": [300, 512, 400], "spacing_mm": [1.25, 0.7, 0.7],
             "seconds": 2.5, "peak_rss_MB": 2000.0, "params": {"workers": 2, "engine": "fast"}},
            {"job": "pipeline", "shape": [51, 512, 400], "spacing_mm": [1.25, 0.7, 0.7], "slices_1mm": 64,
             "shape_1mm": [64, 512, 400], "baseline": "reference", "peak_gflops": 100.0, "peak_rss_MB": 3000.0,
             "speeds": {
                 "reference": _speed({"read": 1.0, "preprocess": 4.0, "unet": 30.0, "decovnet_and_localisation": 5.0,
                                      "total": 40.0}, None, 40.0, 1.0, 0.0),
                 "fast": _speed({"read": 1.0, "preprocess": 2.0, "unet": 5.0, "decovnet_and_localisation": 2.0,
                                 "total": 10.0}, [256, 200], 60.0, 0.98, 0.01, 0.995)},
             "params": {"threads": 2, "device": "cpu"}},
            {"job": "book", "profile": "sample", "params": {"profile": None}, "recorded": {"notebooks": 9, "cold_seconds": 600.0},
             "html_cold_seconds": 100.0, "cold_seconds": 700.0, "cached_run_seconds": 5.0,
             "html_cached_seconds": 50.0, "cached_seconds": 55.0, "cached_executed": 0, "cached_skipped": 9},
        ],
    }
    d["summary"] = bench.summarize(d)
    return d


def _on_gpu(doc, device="cuda", name="Tesla K80"):
    g = copy.deepcopy(doc)
    g["hardware"]["gpu"] = name
    for r in g["rows"]:
        if "device" in r["params"]:
            r["params"]["device"] = device
    return g


# --------------------------------------------------------------------------- loading
def test_load_for_page_reads_the_file_or_runs_the_quick_benchmark(doc, tmp_path, monkeypatch):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    got, source, ran_here = bench_page.load_for_page(path, tmp_path / "quick.json")
    assert (got["created"], source, ran_here) == (doc["created"], "full", False)
    path.write_text(json.dumps({**doc, "quick": True}))
    assert bench_page.load_for_page(path, tmp_path / "quick.json")[1:] == ("quick", False)
    calls = []
    monkeypatch.setattr(bench, "run", lambda jobs, **kw: calls.append((jobs, kw)) or {"quick": True})
    got, source, ran_here = bench_page.load_for_page(tmp_path / "absent.json", tmp_path / "quick.json")
    assert (got, source, ran_here) == ({"quick": True}, "quick", True)
    ((jobs, kw),) = calls
    assert jobs == bench.plan(quick=True) and kw["out"] == tmp_path / "quick.json" and kw["quick"] is True
    assert kw["progress"] is False and kw["echo"] is not print  # nothing printed onto the page


# --------------------------------------------------------------------------- device and GPU
def test_gpu_values_only_for_networks_measured_on_a_gpu(doc):
    assert not bench_page.on_gpu(doc) and bench_page.gpu_name(doc) is None and bench_page.gpu_seconds_pipeline(doc) is None
    present = copy.deepcopy(doc)
    present["hardware"]["gpu"] = "Tesla K80"  # present but the jobs ran on the CPU: no GPU figure
    assert not bench_page.on_gpu(present) and bench_page.gpu_name(present) is None
    assert bench_page.gpu_seconds_pipeline(present) is None
    for device in ("cuda", "cuda:0", "auto"):
        g = _on_gpu(doc, device)
        assert bench_page.on_gpu(g) and bench_page.on_gpu(g, "pipeline")
        assert bench_page.gpu_name(g) == "Tesla K80" and bench_page.gpu_seconds_pipeline(g) == 10.0  # the fast run
    quick = {**_on_gpu(doc), "quick": True}  # a quick run's tiny volume says nothing about a CT
    assert bench_page.gpu_name(quick) == "Tesla K80" and bench_page.gpu_seconds_pipeline(quick) is None
    no_gpu_auto = _on_gpu(doc, "auto", name=None)  # "auto" without a GPU ran on the CPU
    assert not bench_page.on_gpu(no_gpu_auto) and bench_page.gpu_seconds_pipeline(no_gpu_auto) is None


def test_device_label_and_hardware_phrase(doc):
    assert bench_page.device_label(doc, "decovnet") == "CPU, 2 threads"
    assert bench_page.device_label(_on_gpu(doc), "pipeline") == "GPU, Tesla K80"
    assert bench_page.hardware_phrase(doc) == "Test CPU (4 logical cores), torch 9.9, 2 threads per job; GPU: none"


# --------------------------------------------------------------------------- phrases
def test_sizes_state_what_each_figure_was_measured_at(doc):
    assert bench_page.sizes(doc) == {
        "decovnet_slice": "224×336", "unet_input": "512×512", "resnet_input": "224×224",
        "pre_shape": "400×512×300", "pre_spacing": "1.25 mm", "pre_slice": "400×512",
        "pipe_shape": "400×512×51", "pipe_spacing": "1.25 mm", "pipe_slice": "400×512"}
    assert bench_page.sizes({"rows": []}) == {}


def test_headlines_state_value_and_size_and_hide_quick_figures(doc):
    assert bench_page.headline_forward(doc, "full") == "8.00 s eager, 3.00 s jit (CPU, 2 threads, T = 300 slices of 224×336)"
    assert bench_page.headline_pipeline(doc, "full") == ("40.0 s reference, 10.0 s fast (U-Net at 200×256) for 64 "
                                                    "slices of 400×512 (CPU, 2 threads)")
    assert bench_page.headline_forward(doc, "quick") == bench_page.NOT_MEASURED
    assert bench_page.headline_pipeline(doc, "quick") == bench_page.NOT_MEASURED
    assert bench_page.NOT_MEASURED == "not measured in this build (run make bench, then rebuild the book)"
    doc["rows"][1]["max_abs_diff"]["jit"] = 1.0  # outside the tolerance: no fast variant counts
    doc["summary"] = bench.summarize(doc)
    assert bench_page.headline_forward(doc, "full").startswith("8.00 s eager, no fast variant within tolerance (")
    assert bench_page.headline_pipeline({"rows": [], "summary": {}}, "full") == bench_page.NOT_MEASURED


def test_source_phrase_and_banner_name_the_file_never_its_folder(doc, tmp_path):
    path = tmp_path / "deep" / "bench.json"
    same = bench_page.source_phrase(doc, "full", path, False, "a" * 40)
    assert same == "`bench.json`, written by `repro bench` on 2026-01-02 at commit `aaaaaaaaaaaa`"
    other = bench_page.source_phrase(doc, "full", path, False, "b" * 40)
    assert other == same + " (this book: `bbbbbbbbbbbb`)"
    assert "--quick" in bench_page.source_phrase({**doc, "quick": True}, "quick", path, False, "a" * 40)
    here = bench_page.source_phrase(doc, "quick", path, True)
    assert here == "the quick benchmark this page ran itself, because no `bench.json` was found"
    assert bench_page.quick_banner("full", path, False) == ""
    for ran_here in (True, False):
        banner = bench_page.quick_banner("quick", path, ran_here)
        assert banner.startswith(":::{admonition} Quick benchmark\n:class: warning\n") and banner.endswith(":::")
        assert "`bench.json`" in banner and str(tmp_path) not in banner
    assert "ran the *quick* benchmark itself" in bench_page.quick_banner("quick", path, True)
    assert "`repro bench --quick`" in bench_page.quick_banner("quick", path, False)
    for text in (same, other, here):
        assert str(tmp_path) not in text


def test_gpu_note_and_preprocess_verdict(doc):
    assert bench_page.gpu_note(doc).startswith("Every figure above is a CPU figure.")
    assert bench_page.gpu_note(_on_gpu(doc)) == "The network and pipeline figures above were measured on it."
    # 2.5 s ≤ 3 s; 2000 MB > 1536 MB
    assert bench_page.preprocess_verdict(doc) == "time met, memory not met"


# --------------------------------------------------------------------------- tables
def test_format_columns_gives_each_column_its_precision():
    df = pd.DataFrame({"a": [1.234, float("nan")], "b": [1e-9, None], "c": ["x", "y"]})
    out = book_format_columns(df, {"a": "{:.1f}", "b": "{:.1e}"})
    assert out.to_dict(orient="list") == {"a": ["1.2", "–"], "b": ["1.0e-09", "–"], "c": ["x", "y"]}
    assert df["a"].iloc[0] == 1.234  # the input is left alone


def test_decovnet_frame_and_table(doc):
    doc["rows"][0]["seconds"] = dict(sorted(doc["rows"][0]["seconds"].items()))  # as JSON stores them
    f = bench_page.decovnet_frame(doc)
    # eager first, then the variants in the record's order
    assert list(zip(f["T"], f["variant"])) == [(100, "eager"), (100, "channels_last"), (100, "jit"),
                                               (300, "eager"), (300, "jit")]
    top_jit = f[(f["T"] == 300) & (f["variant"] == "jit")].iloc[0]
    assert top_jit["seconds"] == 3.0 and top_jit["× eager"] == pytest.approx(3 / 8)
    assert top_jit["GMAC"] == pytest.approx(60.0) and top_jit["GFLOP/s"] == pytest.approx(2 * 60 / 3)
    assert top_jit["max |Δ logit|"] == 1e-9 and top_jit["threads"] == 2
    t = bench_page.decovnet_table(doc)
    assert t.index.names == ["T", "variant"]
    assert t.loc[(300, "jit")].to_dict() == {"seconds": "3.00", "× eager": "0.38", "GMAC": "60.0",
                                             "GFLOP/s": "40.0", "max |Δ logit|": "1.0e-09",
                                             "peak RSS (MB)": "1000", "threads": 2}
    assert t.loc[(100, "channels_last"), "× eager"] == "2.00"


def test_nets_frame_and_table(doc):
    f = bench_page.nets_frame(doc)
    assert list(zip(f["network"], f["variant"])) == [("lung U-Net", "eager"), ("lung U-Net", "jit"),
                                                     ("CXR ResNet-50", "eager"), ("CXR ResNet-50", "jit")]
    unet_jit = f.iloc[1]
    assert unet_jit["input"] == "512×512 slice" and unet_jit["items/s"] == pytest.approx(4.0)
    assert unet_jit["GFLOP/s"] == pytest.approx(2 * 1.0 / 0.25) and unet_jit["batch"] == 8
    t = bench_page.nets_table(doc)
    assert t.loc[("CXR ResNet-50", "jit")].to_dict() == {"input": "224×224 image", "seconds per item": "0.0500",
                                                         "items/s": "20.0", "GMAC": "4.00", "GFLOP/s": "160.0",
                                                         "max |Δ|": "3.0e-06", "batch": 16}


def test_pipeline_stages_in_pipeline_order(doc):
    s = bench_page.pipeline_stages(doc)
    assert list(s.columns) == ["read", "preprocess", "unet", "decovnet_and_localisation"]
    assert list(s.index) == ["reference", "fast"]
    assert s.loc["reference"].sum() == 40.0 and s.loc["fast", "unet"] == 5.0  # the total is not a stage
    assert bench_page.pipeline_stages({"rows": []}).empty


def test_pipeline_summary_frame_and_table(doc):
    pipe = next(r for r in doc["rows"] if r["job"] == "pipeline")
    pipe["speeds"] = dict(sorted(pipe["speeds"].items()))  # as the JSON file stores them: fast first
    p = doc["summary"]["pipeline"]
    assert p["ratio"] == pytest.approx(0.25) and p["met"] is True  # 10 / 40 ≤ 0.25
    assert (p["dice"], p["abs_dp"], p["fast_unet_size"], p["resolution_ceiling"]) == (0.98, 0.01, [256, 200], 0.995)
    f = bench_page.pipeline_frame(doc)
    assert f.loc["fast", "× reference"] == pytest.approx(0.25) and f.loc["fast", "% of peak"] == pytest.approx(60.0)
    assert f.loc["reference", "U-Net input"] == "400×512" and f.loc["fast", "U-Net input"] == "200×256"
    t = bench_page.pipeline_table(doc)
    assert t.loc["fast"].to_dict() == {"seconds": "10.0", "× reference": "0.25", "U-Net input": "200×256",
                                       "U-Net (s)": "5.0", "U-Net GFLOP/s": "60.0", "% of peak": "60", "bf16": "no",
                                       "|Δp| vs reference": "1.0e-02", "mask Dice ceiling": "0.9950"}
    assert t.loc["reference", "mask Dice ceiling"] == "–"  # full size: nothing to bound
    assert list(t.index) == ["reference", "fast"]  # the baseline first, whatever the file's key order
    assert bench_page.ceiling_phrase(doc).startswith("the synthetic chest's lung pseudo-label, taken to 200×256 px and back")
    assert "keeps Dice 0.9950 with itself" in bench_page.ceiling_phrase(doc)
    assert "this build has no real CT volume" in bench_page.ceiling_phrase(doc)
    assert "this build's 2 real CT volumes it is 0.9900 to 0.9990 (" in bench_page.ceiling_phrase(doc, [0.999, 0.99])
    doc["summary"]["pipeline"]["resolution_ceiling"] = None
    assert "does not resize the slices" in bench_page.ceiling_phrase(doc)


def test_preprocess_summary_compares_the_engines_of_one_run(doc):
    p = doc["summary"]["preprocess"]
    assert (p["seconds"], p["baseline_seconds"]) == (2.5, 5.0)
    assert p["ratio"] == pytest.approx(0.5) and p["met_ratio"] is True
    doc["rows"] = [r for r in doc["rows"] if r.get("engine") != "baseline"]
    p = bench.summarize(doc)["preprocess"]
    assert p["baseline_seconds"] is None and math.isnan(p["ratio"]) and p["met_ratio"] is False


def test_rebuild_frame_table_and_phrase(doc):
    f = bench_page.rebuild_frame(doc)
    assert f.loc["cold"].tolist() == [600.0, 100.0, 700.0, 9]
    assert f.loc["cached"].tolist() == [5.0, 50.0, 55.0, 0]
    assert bench_page.rebuild_table(doc).loc["cached"].tolist() == ["5.0", "50.0", "55.0", "0"]
    assert bench_page.rebuild_phrase(doc) == ("measured on the `sample` book, 9 notebooks, of which the cached "
                                         "`repro run` skipped 9")
    doc["rows"][-1] = {"job": "book", "profile": None, "skipped": "no profile has a successful `repro run`"}
    f = bench_page.rebuild_frame(doc)
    assert list(f.index) == ["cold", "cached"] and f.isna().all().all()
    assert set(bench_page.rebuild_table(doc).to_numpy().ravel()) == {"–"}
    assert bench_page.rebuild_phrase(doc) == "not measured by this benchmark (no profile has a successful `repro run`)"
    doc["rows"].pop()
    assert bench_page.rebuild_phrase(doc) == "not measured by this benchmark (quick run or `--no-book`)"


# --------------------------------------------------------------------------- figures
def test_decovnet_time_vs_T_draws_each_variant_and_the_paper_line(doc):
    import matplotlib.pyplot as plt

    fig = performance.decovnet_time_vs_T(bench_page.decovnet_frame(doc), 1.93, "224×336", "CPU, 2 threads")
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["eager"].get_xdata()) == [100, 300] and list(lines["eager"].get_ydata()) == [2.0, 8.0]
    assert list(lines["jit"].get_ydata()) == [1.0, 3.0]
    assert list(lines["paper: whole pipeline per CT, GPU"].get_ydata()) == [1.93, 1.93]
    (once,) = ax.collections  # channels_last, measured at one T only
    assert once.get_label() == "channels_last (measured once)"
    assert once.get_offsets().tolist() == [[100.0, 4.0]]
    assert ax.get_xlabel() == "slices T (224×336)" and ax.get_title() == "DeCoVNet inference, CPU, 2 threads"
    assert ax.get_ylim()[0] == 0
    plt.close(fig)


def test_pipeline_stages_figure_stacks_the_stages(doc):
    import matplotlib.pyplot as plt

    fig = performance.pipeline_stages(bench_page.pipeline_stages(doc), 64, "400×512", "CPU, 2 threads")
    ax = fig.axes[0]
    ref = [c.patches[0] for c in ax.containers]    # the first speed, drawn on top
    fast = [c.patches[1] for c in ax.containers]
    assert [b.get_x() for b in ref] == [0.0, 1.0, 5.0, 35.0]
    assert [b.get_width() for b in ref] == [1.0, 4.0, 30.0, 5.0]
    assert [b.get_width() for b in fast] == [1.0, 2.0, 5.0, 2.0]
    assert ref[0].get_y() > fast[0].get_y()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["reference", "fast"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "read", "preprocess", "unet", "decovnet_and_localisation"]
    assert [t.get_text() for t in ax.texts] == [" 40.0 s", " 10.0 s"]
    assert ax.get_title() == "one CT volume, 64 slices of 400×512 at 1 mm, CPU, 2 threads"
    plt.close(fig)
