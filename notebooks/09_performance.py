# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Performance: what the companion costs on this hardware
#
# The CT paper reports 1.93 s per CT on a GPU. This chapter shows what the same networks and the
# whole pipeline cost here, how much faster inference gets without changing its result, and how
# long the book takes to rebuild. Every figure comes from `make bench` (`repro bench`), which runs
# each measurement in a fresh process and writes `benchmarks/out/bench.json`; this page reads that
# file. Without one, the page runs a *quick* benchmark (tiny inputs, one repeat) and says so.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None
bench_json = None  # default: $REPRO_BENCH_JSON or benchmarks/out/bench.json
# repro-inputs: bench   (the runner hashes that file into this notebook's cache key)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reprolib import bench, book, config, paper_values, provenance

provenance.seed_everything(seed)
nb = book.Notebook("09_performance", profile, results_dir)
nb.banner()
work = Path(work_dir or config.work_dir(profile))
path = Path(bench_json) if bench_json else bench.default_output()
doc = bench.load(path)
if doc is None:
    doc = bench.run(bench.plan(quick=True), out=work / "bench_quick.json", quick=True, progress=False)
    source = "quick"
else:
    source = "quick" if doc["quick"] else "full"
S = doc["summary"]
hw = doc["hardware"]
build_git = provenance.git_state()
nb.glue("bench_source", source)
nb.glue_markdown("bench_note", {
    "full": f"The figures below come from `{path.name}`, written by `make bench` on {doc['created'][:10]} "
            f"at commit `{(doc['git'] or {}).get('commit', '?')[:12]}`"
            + ("" if (doc["git"] or {}).get("commit") == build_git.get("commit")
               else f" (this book: `{(build_git.get('commit') or '?')[:12]}`)") + ".",
    "quick": ":::{admonition} Quick benchmark\n:class: warning\nNo benchmark JSON was found "
             f"(`{path}`), so this page ran the *quick* benchmark itself: tiny inputs, one repeat, "
             "no book rebuild. Its times describe nothing but the code path; the targets below apply "
             "to the full benchmark. Run `make bench`, then rebuild the book.\n:::",
}[source], timing=True)  # names a path and a date: run-specific
nb.glue_text("bench_hardware", f"{hw.get('cpu')} ({hw.get('cpu_count')} logical cores), torch "
             f"{doc['packages'].get('torch')}, {hw.get('threads')} threads per job; GPU: {hw.get('gpu') or 'none'}",
             timing=True)
P = paper_values.DECOVNET
_ = nb.glue_text("paper_seconds_per_ct", P["seconds_per_ct_gpu"], "{:.2f}")

# %% [markdown]
# ```{glue:md} bench_note
# :format: myst
# ```
#
# Hardware: {glue:text}`bench_hardware`.

# %% [markdown]
# ## DeCoVNet per volume
#
# One forward pass on a random volume of T slices at 224×336 (the official input; untrained
# weights — speed does not depend on their values), median of the repeats after a warm-up. Besides
# eager fp32, `reprolib.models.inference_runner` offers **TorchScript** (traced, frozen and
# `optimize_for_inference`: BatchNorm folded into the convolutions, oneDNN kernels), the
# **channels-last** 3D memory layout and **bf16** autocast. Each fast variant's logits are compared
# with eager fp32 on the same input; the fp32 variants must stay within
# {glue:text}`tolerance:.0e` (also a test, `tests/test_models.py`).

# %%
rows = []
for r in (r for r in doc["rows"] if r["job"] == "decovnet"):
    for v, t in r["seconds"].items():
        rows.append({"T": r["T"], "variant": v, "seconds": t, "× eager": t / r["seconds"]["eager"],
                     "GMAC": r["macs"] / 1e9, "GFLOP/s": 2 * r["macs"] / t / 1e9,
                     "max |Δ logit|": r["max_abs_diff"].get(v, 0.0), "peak RSS (MB)": r["peak_rss_MB"],
                     "threads": r["params"]["threads"]})
dec = pd.DataFrame(rows)
nb.glue("tolerance", bench.TOLERANCE)
nb.glue_table("decovnet_table", dec.set_index(["T", "variant"]).round(
    {"seconds": 3, "× eager": 2, "GMAC": 1, "GFLOP/s": 1, "peak RSS (MB)": 0}), record=False)
d = S["decovnet"]
nb.glue_timing("decovnet_eager_s", d["eager_seconds"], 3)
nb.glue_timing("decovnet_fast_s", bench.or_nan(d["fast_seconds"]), 3)
nb.glue_timing("decovnet_ratio", d["ratio"], 3)
nb.glue_text("decovnet_fast_variant", d["fastest_exact_variant"] or "none", timing=True)
nb.glue_text("decovnet_target_met", "met" if d["met"] else "not met", timing=True)
nb.glue_text("decovnet_max_diff", d["max_abs_diff"], "{:.1e}", timing=True)
nb.glue("decovnet_T_max", d["T"])
bf = doc.get("bf16", {})
nb.glue_text("bf16_note", ("measured, " if bf.get("native") else "not measured, ") + str(bf.get("why", "unknown")),
             timing=True)
nb.glue_text("lp_seconds_forward", f"{d['eager_seconds']:.2f} s eager, {bench.or_nan(d['fast_seconds']):.2f} s "
             f"{d['fastest_exact_variant']} (CPU, {hw.get('threads')} threads, T = {d['T']})", timing=True)
dec.set_index(["T", "variant"]).round(3)

# %% [markdown]
# ```{glue:figure} decovnet_table
# :name: tbl-decovnet-speed
# DeCoVNet inference per volume by depth T and variant: median seconds, ratio to eager fp32,
# multiply–accumulates, achieved GFLOP/s (2 FLOP per MAC), the largest logit difference to eager
# fp32 and the job's peak resident memory.
# ```
#
# At T = {glue:text}`decovnet_T_max` the fastest variant within tolerance, {glue:text}`decovnet_fast_variant`,
# takes {glue:text}`decovnet_fast_s:.2f` s against {glue:text}`decovnet_eager_s:.2f` s eager:
# ×{glue:text}`decovnet_ratio:.2f` of the eager time (target ≤ 0.5: {glue:text}`decovnet_target_met`), with
# logits within {glue:text}`decovnet_max_diff` of eager fp32. bf16 autocast is measured once, at
# the smallest T, where the hardware computes in bf16 (its error is larger than the fp32 tolerance,
# so it is reported, never used for the book's results); here: {glue:text}`bf16_note`.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for v, g in dec.groupby("variant"):
    g = g.sort_values("T")
    if len(g) > 1:
        ax.plot(g["T"], g["seconds"], marker="o", label=v)
    else:
        ax.scatter(g["T"], g["seconds"], marker="x", label=f"{v} (measured once)")
ax.axhline(P["seconds_per_ct_gpu"], ls="--", c="0.4", label="paper: whole pipeline per CT, GPU")
ax.set(xlabel="slices T (224×336)", ylabel="seconds per volume",
       title=f"DeCoVNet inference, CPU, {hw.get('threads')} threads")
ax.set_ylim(bottom=0)
ax.legend(fontsize=8)
fig.tight_layout()
nb.glue_figure("decovnet_time_vs_T", fig)

# %% [markdown]
# ```{glue:figure} decovnet_time_vs_T
# :name: fig-decovnet-time
# DeCoVNet time per volume against the number of slices, eager and fast variants; the dashed line
# is the paper's {glue:text}`paper_seconds_per_ct` s for the *whole* pipeline on a GPU. Cost grows
# linearly with T (spec: ≈ 0.199·T + 3.11 GMAC).
# ```

# %% [markdown]
# ## The lung U-Net and the chest X-ray ResNet-50

# %%
nets = []
for r in (r for r in doc["rows"] if r["job"] in ("unet", "resnet50")):
    for v, t in r["seconds"].items():
        nets.append({"network": {"unet": "lung U-Net", "resnet50": "CXR ResNet-50"}[r["job"]],
                     "input": f"{r['size']}² {r['per']}", "variant": v, f"seconds per item": t,
                     "items/s": 1 / t, "GMAC": r["macs"] / 1e9, "GFLOP/s": 2 * r["macs"] / t / 1e9,
                     "max |Δ|": r["max_abs_diff"].get(v, 0.0), "batch": r["batch"]})
nets = pd.DataFrame(nets)
nb.glue_table("nets_table", nets.set_index(["network", "variant"]).round(
    {"seconds per item": 4, "items/s": 1, "GMAC": 2, "GFLOP/s": 1}), record=False)
unet = next(r for r in doc["rows"] if r["job"] == "unet")
res50 = next(r for r in doc["rows"] if r["job"] == "resnet50")
nb.glue_timing("unet_slice_s", unet["seconds"]["eager"], 4)
nb.glue("unet_gflop", round(2 * unet["macs"] / 1e9, 2))
nb.glue_timing("resnet_images_per_s", res50["images_per_s"]["eager"], 2)
nets.set_index(["network", "variant"]).round(3)

# %% [markdown]
# ```{glue:figure} nets_table
# :name: tbl-nets-speed
# The U-Net per slice and ResNet-50 per image (batches as given), eager and TorchScript.
# ```
#
# One slice costs the U-Net {glue:text}`unet_gflop` GFLOP and {glue:text}`unet_slice_s:.3f` s eager;
# ResNet-50 classifies {glue:text}`resnet_images_per_s:.1f` chest X-rays per second.

# %% [markdown]
# ## Preprocessing and the whole CT pipeline
#
# Preprocessing (FOV, z resampling to 1 mm, window, the unsupervised lung mask and its QC) of a
# synthetic 512×512×300 chest at 1.25 mm, with the pseudo-label computed by a second process beside
# the resampling (`preprocess_ct(workers=2)`; identical arrays, tested). Then one volume through
# everything `repro predict ct` does: read the NIfTI, preprocess (no pseudo-label: the U-Net mask
# replaces it), the U-Net on every 1 mm slice at 512², crop and resize, DeCoVNet.

# %%
pre = next(r for r in doc["rows"] if r["job"] == "preprocess")
pipe = next(r for r in doc["rows"] if r["job"] == "pipeline")
p = S["preprocess"]
nb.glue_text("pre_shape", "×".join(map(str, pre["shape"][::-1])), timing=True)
nb.glue_timing("pre_seconds", pre["seconds"], 2)
nb.glue_timing("pre_peak_mb", pre["peak_rss_MB"], 0)
nb.glue_text("pre_met", f"time {'met' if p['met_seconds'] else 'not met'}, memory "
             f"{'met' if p['met_rss'] else 'not met'}", timing=True)
nb.glue("pre_target_s", bench.TARGET_PREPROCESS_S)
nb.glue("pre_target_mb", bench.TARGET_PREPROCESS_RSS_MB)
order = ("read_nifti", "preprocess", "unet", "decovnet_input", "decovnet")  # pipeline order
stages = pd.Series({k: pipe["seconds"][k] for k in order if k in pipe["seconds"]}, name="seconds")
nb.glue_timing("pipe_seconds", pipe["seconds"]["total"], 1)
nb.glue_timing("pipe_unet_share", 100 * pipe["seconds"]["unet"] / pipe["seconds"]["total"], 0)
nb.glue("pipe_slices", pipe["slices_1mm"])
nb.glue_timing("pipe_unet_seconds", pipe["seconds"]["unet"], 1)
nb.glue_text("lp_seconds_pipeline", f"{pipe['seconds']['total']:.1f} s for {pipe['slices_1mm']} slices of 512² "
             f"(CPU, {hw.get('threads')} threads; U-Net {100 * pipe['seconds']['unet'] / pipe['seconds']['total']:.0f} %)",
             timing=True)
fig, ax = plt.subplots(figsize=(7, 2.6))
left = 0.0
for k, v in stages.items():
    ax.barh([0], [v], left=left, label=f"{k} {v:.1f} s")
    left += v
ax.set(yticks=[], xlabel="seconds", title=f"one CT volume, {pipe['slices_1mm']} slices at 1 mm, CPU")
ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.45))
fig.tight_layout()
nb.glue_figure("pipeline_stages", fig)
stages.round(3).to_frame()

# %% [markdown]
# Preprocessing the {glue:text}`pre_shape` volume takes {glue:text}`pre_seconds:.2f` s with a peak
# resident memory of {glue:text}`pre_peak_mb:.0f` MB over both processes (targets ≤
# {glue:text}`pre_target_s` s and ≤ {glue:text}`pre_target_mb:.0f` MB: {glue:text}`pre_met`). Its
# critical path is the pseudo-label's two 3D connected-component labellings (SciPy, which holds the
# interpreter lock, so threads do not help; the z resampling runs beside it in the main process).
#
# ```{glue:figure} pipeline_stages
# :name: fig-pipeline-stages
# Where the time of one CT goes.
# ```
#
# The whole pipeline takes {glue:text}`pipe_seconds:.1f` s for a volume of {glue:text}`pipe_slices`
# slices, {glue:text}`pipe_unet_share:.0f` % of it in the U-Net ({glue:text}`pipe_unet_seconds:.1f` s),
# against the paper's {glue:text}`paper_seconds_per_ct` s per CT on a GPU. The two differ because a
# GPU runs the U-Net's 512² convolutions one to two orders of magnitude faster than two CPU cores,
# and because the paper does not say which GPU, which volumes or which steps its figure covers.

# %% [markdown]
# ## Rebuilding the book

# %%
book_rows = [r for r in doc["rows"] if r["job"] == "book" and "cold_seconds" in r]
if book_rows:
    b = book_rows[-1]
    rebuild = pd.DataFrame({
        "cold": {"notebooks (s)": b["recorded"]["cold_seconds"], "HTML (s)": b["html_cold_seconds"],
                 "total (s)": b["cold_seconds"], "notebooks executed": b["recorded"]["notebooks"]},
        "cached": {"notebooks (s)": b["cached_run_seconds"], "HTML (s)": b["html_cached_seconds"],
                   "total (s)": b["cached_seconds"], "notebooks executed": b["cached_executed"]}}).T
    nb.glue_markdown("rebuild_note", (
        f"The `{b['profile']}` book: executing its {b['recorded']['notebooks']} notebooks took "
        f"{b['recorded']['cold_seconds']:.0f} s when they last ran (the runner's record), and the HTML build "
        f"{b['html_cold_seconds']:.0f} s from an empty `_build`; rebuilding it with nothing changed took "
        f"{b['cached_seconds']:.0f} s: `repro run` skipped all {b['cached_skipped']} notebooks in "
        f"{b['cached_run_seconds']:.1f} s through the execution cache, and the HTML build took "
        f"{b['html_cached_seconds']:.0f} s (it always rebuilds every page, `--all`)."), timing=True)
else:
    rebuild = pd.DataFrame()
    why = next((r["skipped"] for r in doc["rows"] if r["job"] == "book" and "skipped" in r),
               "quick run or `--no-book`")
    nb.glue_markdown("rebuild_note", f"This benchmark did not measure the book's rebuild: {why}.", timing=True)
nb.glue_table("rebuild_table", rebuild.round(1), record=False)
rebuild.round(1)

# %% [markdown]
# ```{glue:md} rebuild_note
# :format: myst
# ```
#
# ```{glue:figure} rebuild_table
# :name: tbl-rebuild
# Cold and cached rebuild of a built book: notebook execution (cold: as recorded when each notebook
# last ran) and the HTML build.
# ```

# %% [markdown]
# ## On a GPU
#
# ```{glue:md} gpu_note
# :format: myst
# ```
#
# ## Training on several GPUs
#
# The training engine (`reprolib.train`) runs under `torchrun` with DistributedDataParallel (NCCL
# on GPUs, gloo on CPUs) and a `DistributedSampler`: each rank takes its share of every global
# batch, gradients are averaged, BatchNorm statistics merged, so all ranks end every step with the
# same weights. A test runs two CPU processes against one with the same global batch; the README
# gives the `paper`-profile command.

# %%
gpu = hw.get("gpu")
nb.glue_markdown("gpu_note", (f"These figures were measured on {gpu}." if gpu else
                          "No GPU was available to this build, so every figure above is a CPU figure. "
                          "`repro bench --device cuda` on a machine with one measures the same jobs there "
                          "and this page then names the GPU model."), timing=True)
nb.finish()
