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
# The CT paper reports {glue:text}`paper_seconds_per_ct` s per CT on a GPU. This chapter shows what
# the same networks and the whole pipeline cost here, how much faster inference gets without
# changing its result, and how long the book takes to rebuild. Every figure comes from `make bench`
# (`repro bench`), which runs each measurement in a fresh process and writes
# `benchmarks/out/bench.json`; this page reads that file. Without one, the page runs a *quick*
# benchmark (tiny inputs, one repeat) and says so. How the benchmark is built and why it measures
# what it does: {ref}`notes-performance`.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None
bench_json = None  # default: $REPRO_BENCH_JSON or benchmarks/out/bench.json
# repro-inputs: bench   (the runner hashes that file into this notebook's cache key)

# %% tags=["remove-input"]
from pathlib import Path

from reprolib import bench, bench_page, book, config, paper_values, provenance
from reprolib.figures import performance

provenance.seed_everything(seed)
nb = book.Notebook("09_performance", profile, results_dir)
nb.banner()
path = Path(bench_json) if bench_json else config.bench_json()
doc, source, ran_here = bench_page.load_for_page(path, Path(work_dir or config.work_dir(profile)) / "bench_quick.json")
size = bench_page.sizes(doc)

# %% tags=["remove-input"]
nb.glue("bench_source", source)
nb.glue_markdown("bench_note", bench_page.quick_banner(source, path, ran_here), timing=True)
origin = bench_page.source_phrase(doc, source, path, ran_here, provenance.git_state().get("commit"))
nb.glue_markdown("bench_origin", origin, timing=True)  # names a file, a date and a commit: run-specific
nb.glue_text("bench_hardware", bench_page.hardware_phrase(doc), timing=True)
nb.glue_text("paper_seconds_per_ct", paper_values.DECOVNET["seconds_per_ct_gpu"], "{:.2f}")
nb.glue_text("lp_seconds_forward", bench_page.headline_forward(doc, source), timing=True)
nb.glue_text("lp_seconds_pipeline", bench_page.headline_pipeline(doc, source), timing=True)
nb.glue_text("gpu_seconds_pipeline", bench_page.gpu_seconds_pipeline(doc), "{:.1f} s")
_ = nb.glue_text("gpu_name", bench_page.gpu_name(doc))

# %% [markdown]
# ```{glue:md} bench_note
# :format: myst
# ```
#
# The figures on this page come from {glue:md}`bench_origin`. Hardware: {glue:text}`bench_hardware`.
#
# ## DeCoVNet per volume
#
# One forward pass on a random volume of T slices of {glue:text}`decovnet_slice` pixels (the
# official input is 224×336; untrained weights, since speed does not depend on their values),
# median of the repeats after a warm-up. Besides eager fp32, `reprolib.models.inference_runner`
# offers **TorchScript** (traced, frozen and `optimize_for_inference`: BatchNorm folded into the
# convolutions, oneDNN kernels), the **channels-last** 3D memory layout and **bf16** autocast. Each
# fast variant's logits are compared with eager fp32 on the same input; the fp32 variants must stay
# within {glue:text}`tolerance:.0e` (also a test, `tests/test_models.py`).

# %% tags=["remove-input"]
d = doc["summary"]["decovnet"]
nb.glue("tolerance", bench.TOLERANCE)
nb.glue("decovnet_T_max", d["T"])
nb.glue("decovnet_slice", size["decovnet_slice"])
nb.glue_timing("decovnet_eager_s", d["eager_seconds"], 3)
nb.glue_timing("decovnet_fast_s", bench.or_nan(d["fast_seconds"]), 3)
nb.glue_timing("decovnet_ratio", d["ratio"], 3)
nb.glue_text("decovnet_fast_variant", d["fastest_exact_variant"] or "none", timing=True)
nb.glue("decovnet_target", bench.TARGET_RATIO)
nb.glue_text("decovnet_target_met", "met" if d["met"] else "not met", timing=True)
_ = nb.glue_text("decovnet_max_diff", d["max_abs_diff"], "{:.1e}", timing=True)

# %% tags=["remove-input"]
bf = doc.get("bf16", {})
bf16_note = ("measured, " if bf.get("native") else "not measured, ") + str(bf.get("why", "unknown"))
_ = nb.glue_text("bf16_note", bf16_note, timing=True)

# %% tags=["hide-input"]
nb.glue_table("decovnet_table", bench_page.decovnet_table(doc), record=False)
nb.glue_figure("decovnet_time_vs_T", performance.decovnet_time_vs_T(
    bench_page.decovnet_frame(doc), paper_values.DECOVNET["seconds_per_ct_gpu"], size["decovnet_slice"],
    bench_page.device_label(doc, "decovnet")))

# %% [markdown]
# :::{table} DeCoVNet inference per volume by depth T and variant: median seconds, ratio to eager fp32, multiply–accumulates, achieved GFLOP/s (2 FLOP per MAC), the largest logit difference to eager fp32 and the job's peak resident memory.
# :name: tbl-decovnet-speed
# ```{glue:md} decovnet_table
# :format: myst
# ```
# :::
#
# At T = {glue:text}`decovnet_T_max` slices of {glue:text}`decovnet_slice` the fastest variant
# within tolerance, {glue:text}`decovnet_fast_variant`, takes {glue:text}`decovnet_fast_s:.2f` s
# against {glue:text}`decovnet_eager_s:.2f` s eager: ×{glue:text}`decovnet_ratio:.2f` of the eager
# time (target ≤ {glue:text}`decovnet_target`: {glue:text}`decovnet_target_met`), with logits within
# {glue:text}`decovnet_max_diff` of eager fp32. bf16 autocast is measured once, at the smallest T,
# where the hardware computes in bf16 (its error is larger than the fp32 tolerance, so it is
# reported, never used for the book's results); here: {glue:text}`bf16_note`.
#
# ```{glue:figure} decovnet_time_vs_T
# :name: fig-decovnet-time
# DeCoVNet time per volume against the number of slices, eager and fast variants; the dashed line
# is the paper's {glue:text}`paper_seconds_per_ct` s for the *whole* pipeline on a GPU. Cost grows
# linearly with T (the GMAC column of {numref}`tbl-decovnet-speed`).
# ```
#
# ## The lung U-Net and the chest X-ray ResNet-50

# %% tags=["hide-input"]
nb.glue_table("nets_table", bench_page.nets_table(doc), record=False)

# %% tags=["remove-input"]
unet = next(r for r in doc["rows"] if r["job"] == "unet")
nb.glue("unet_gflop", round(2 * unet["macs"] / 1e9, 2))
nb.glue("unet_input", size["unet_input"])
nb.glue("resnet_input", size["resnet_input"])
nb.glue_timing("unet_slice_s", unet["seconds"]["eager"], 4)
res50 = next(r for r in doc["rows"] if r["job"] == "resnet50")
_ = nb.glue_timing("resnet_images_per_s", res50["images_per_s"]["eager"], 2)

# %% [markdown]
# :::{table} The U-Net per slice and ResNet-50 per image (inputs and batches as given), eager and TorchScript.
# :name: tbl-nets-speed
# ```{glue:md} nets_table
# :format: myst
# ```
# :::
#
# One slice of {glue:text}`unet_input` pixels costs the U-Net {glue:text}`unet_gflop` GFLOP and
# {glue:text}`unet_slice_s:.4f` s eager; ResNet-50 classifies {glue:text}`resnet_images_per_s:.1f`
# chest X-rays of {glue:text}`resnet_input` pixels per second.
#
# ## Preprocessing and the whole CT pipeline
#
# Preprocessing (FOV, z resampling to 1 mm, window, the unsupervised lung mask and its QC) of a
# synthetic {glue:text}`pre_shape` chest (width × height × slices) at {glue:text}`pre_spacing`,
# with the pseudo-label computed by a second process beside the resampling
# (`preprocess_ct(workers=2)`), measured twice in this run: with the earlier path (`baseline`:
# SciPy's connected-components labelling, the cubic z interpolation as four gathered sums) and
# with the `fast` one (the labelling by the `connected-components-3d` library, LGPL, used
# unmodified; the interpolation as one sparse banded product). Both give identical arrays
# (`tests/test_preprocess.py`, `tests/test_components.py`).

# %% tags=["remove-input"]
p = doc["summary"]["preprocess"]
nb.glue_text("pre_shape", size["pre_shape"], timing=True)
nb.glue("pre_spacing", size["pre_spacing"])
nb.glue_timing("pre_seconds", p["seconds"], 2)
nb.glue_timing("pre_baseline_seconds", bench.or_nan(p["baseline_seconds"]), 2)
nb.glue_timing("pre_ratio", p["ratio"], 2)
nb.glue("pre_target_ratio", bench.TARGET_PREPROCESS_RATIO)
nb.glue_text("pre_ratio_met", "met" if p["met_ratio"] else "not met", timing=True)
nb.glue_timing("pre_peak_mb", p["peak_rss_MB"], 0)
nb.glue_text("pre_met", bench_page.preprocess_verdict(doc), timing=True)
nb.glue("pre_target_s", bench.TARGET_PREPROCESS_S)
_ = nb.glue("pre_target_mb", bench.TARGET_PREPROCESS_RSS_MB)

# %% [markdown]
# Preprocessing the {glue:text}`pre_shape` volume takes {glue:text}`pre_seconds:.2f` s against
# {glue:text}`pre_baseline_seconds:.2f` s for the earlier path, ×{glue:text}`pre_ratio:.2f`
# (target ≤ {glue:text}`pre_target_ratio`: {glue:text}`pre_ratio_met`), with a peak resident
# memory of {glue:text}`pre_peak_mb:.0f` MB over both processes (absolute targets, for a
# 512×512×300 chest: ≤ {glue:text}`pre_target_s` s and ≤ {glue:text}`pre_target_mb:.0f` MB;
# here: {glue:text}`pre_met`).
#
# Then one synthetic {glue:text}`pipe_shape` chest through everything `repro predict ct` does (read the
# NIfTI, preprocess without the pseudo-label, the U-Net on every 1 mm slice, DeCoVNet and its CAM
# localisation), with the paper-size networks, twice in one process: at the `reference` speed
# (eager fp32 U-Net at the slices' full size: the path before this benchmark) and at the `fast`
# one (`repro predict ct --speed fast`: a frozen TorchScript graph at most 256 px per side, as the
# lungmask tool does, logits resized back; frozen DeCoVNet features for the CAM; bf16 only where
# the hardware computes it natively). Both networks are untrained (seed 0): time does not depend
# on the weights.

# %% tags=["remove-input"]
pl = doc["summary"]["pipeline"]
nb.glue("pipe_slices", pl["slices_1mm"])
nb.glue("pipe_shape", size["pipe_shape"])
nb.glue("pipe_slice", size["pipe_slice"])
nb.glue_timing("pipe_seconds", pl["reference_seconds"], 1)
nb.glue_timing("pipe_fast_seconds", bench.or_nan(pl.get("fast_seconds")), 1)
nb.glue_timing("pipe_ratio", bench.or_nan(pl.get("ratio")), 2)
nb.glue("pipe_target_ratio", bench.TARGET_PIPELINE_RATIO)
nb.glue_text("pipe_ratio_met", "met" if pl.get("met") else "not met", timing=True)
nb.glue_text("pipe_abs_dp", bench.or_nan(pl.get("abs_dp")), "{:.1e}", timing=True)
nb.glue_timing("pipe_peak_gflops", pl["peak_gflops"], 0)
nb.glue_timing("pipe_unet_share", 100 * pl["unet_share"], 0)
nb.glue_timing("pipe_unet_peak_pct", bench_page.pipeline_frame(doc)["% of peak"].iloc[0], 0)
nb.glue_markdown("pipe_ceiling", bench_page.ceiling_phrase(doc, bench_page.build_ceilings(work_dir or config.work_dir(profile))),
                 timing=True)
nb.glue_timing("pipe_ref_lung_pct", 100 * pl["reference_lung_fraction"], 0)
nb.glue_timing("pipe_ref_p", pl["reference_p_covid"], 3)
_ = nb.glue_markdown("own_models", bench_page.own_models_phrase(profile, work_dir, results_dir), timing=True)

# %% tags=["hide-input"]
nb.glue_table("pipeline_table", bench_page.pipeline_table(doc), record=False)
nb.glue_figure("pipeline_stages", performance.pipeline_stages(
    bench_page.pipeline_stages(doc), pl["slices_1mm"], size["pipe_slice"], bench_page.device_label(doc, "pipeline")))

# %% [markdown]
# :::{table} `repro predict ct` of one volume by speed: seconds, ratio to the reference, the U-Net's input size, seconds and achieved GFLOP/s (2 FLOP per MAC) and its share of this machine's measured fp32 matrix-multiply peak, bf16 or not, the change of p(COVID) against the reference run, and the mask Dice ceiling of a run that resizes the slices (the lung pseudo-label resized to the U-Net's input size and back, compared with itself).
# :name: tbl-pipeline-speed
# ```{glue:md} pipeline_table
# :format: myst
# ```
# :::
#
# ```{glue:figure} pipeline_stages
# :name: fig-pipeline-stages
# Where the time of one CT goes, stage by stage, at each speed.
# ```
#
# The reference run takes {glue:text}`pipe_seconds:.1f` s for {glue:text}`pipe_slices` slices of
# {glue:text}`pipe_slice` pixels, {glue:text}`pipe_unet_share:.0f` % of it in the U-Net; the fast
# run {glue:text}`pipe_fast_seconds:.1f` s, ×{glue:text}`pipe_ratio:.2f` of the reference (target
# ≤ {glue:text}`pipe_target_ratio`: {glue:text}`pipe_ratio_met`). The fp32 matrix-multiply peak of
# this machine, measured in the same job, is {glue:text}`pipe_peak_gflops:.0f` GFLOP/s; the U-Net
# reaches {glue:text}`pipe_unet_peak_pct:.0f` % of it at the reference speed (its layers have 16
# to 128 channels: little arithmetic per byte moved).
#
# The two runs' p(COVID) differ by {glue:text}`pipe_abs_dp`: a check of the computation only,
# since the untrained U-Net marks {glue:text}`pipe_ref_lung_pct:.0f` % of the voxels as lung and the
# untrained DeCoVNet answers p(COVID) = {glue:text}`pipe_ref_p:.3f`.
# What the reduced resolution costs a mask is bounded by geometry instead:
# {glue:md}`pipe_ceiling`. As for this build: {glue:md}`own_models`.
# Against the paper's {glue:text}`paper_seconds_per_ct` s per CT on a GPU: a GPU runs these
# convolutions one to two orders of magnitude faster than two CPU cores, and the paper does not say
# which GPU, which volumes or which steps its figure covers.
#
# ## Rebuilding the book

# %% tags=["hide-input"]
nb.glue_table("rebuild_table", bench_page.rebuild_table(doc), record=False)
nb.glue_markdown("rebuild_note", bench_page.rebuild_phrase(doc), timing=True)

# %% [markdown]
# The rebuild of a built book was {glue:md}`rebuild_note`. *Cold* is the execution of every
# notebook as the runner recorded it when each last ran (re-executing them here would cost the
# whole build), plus the HTML build from an empty `_build`. *Cached* is `repro run` with nothing
# changed, which skips every notebook through the execution cache, plus the HTML build, which
# always rebuilds every page (`--all`).
#
# :::{table} Cold and cached rebuild of a built book: notebook execution, HTML build, their total and the notebooks executed.
# :name: tbl-rebuild
# ```{glue:md} rebuild_table
# :format: myst
# ```
# :::

# %% tags=["remove-input"]
nb.glue_markdown("gpu_note", bench_page.gpu_note(doc), timing=True)

# %% [markdown]
# ## On a GPU
#
# GPU of this benchmark: {glue:text}`gpu_name`. {glue:md}`gpu_note` Whole pipeline per CT on
# that GPU, the figure the claims ledger compares with the paper's {glue:text}`paper_seconds_per_ct` s:
# {glue:text}`gpu_seconds_pipeline`.
#
# ## Training on several GPUs
#
# The training engine (`reprolib.train`) runs under `torchrun` with DistributedDataParallel (NCCL
# on GPUs, gloo on CPUs) and a `DistributedSampler`: each rank takes its share of every global
# batch, gradients are averaged, BatchNorm statistics merged, so all ranks end every step with the
# same weights. A test runs two CPU processes against one with the same global batch; the README
# gives the `paper`-profile command.
#
# The papers' timing claims and their verdicts: {ref}`ledger-09`.

# %% tags=["remove-cell"]
nb.finish()
