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
# # 02 · From scanner files to DeCoVNet's input
#
# DeCoVNet does not see raw scanner data. Each CT goes through the steps of the official code
# (see {ref}`notes-preprocessing`):
#
# 1. read the series and convert the stored values to Hounsfield units (HU);
# 2. add −2000 HU outside the scanner's circular field of view (FOV);
# 3. resample along z to 1 mm slices (cubic spline; the in-plane grid is unchanged);
# 4. window [−1200, 600] HU to 8 bits.
#
# In parallel, an *unsupervised* lung segmentation produces the pseudo-labels on which the U-Net of
# chapter 03 is trained: threshold at −320 HU, remove the air outside the body, keep the largest air
# component (see {ref}`notes-pseudolabels`). Every constant is a named parameter of
# `reprolib.preprocess`.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %% tags=["remove-input"]
from pathlib import Path

import numpy as np

from reprolib import book, cohort, config, inputs, io, provenance
from reprolib.figures import preprocessing as figs

provenance.seed_everything(seed)
nb = book.Notebook("02_preprocessing", profile, results_dir)
nb.banner()
work = Path(work_dir or config.work_dir(profile))
params = config.load_profile(profile).get("preprocess", {})

# %% [markdown]
# ## Every volume of this profile
#
# `preprocess_cohort` reads each CT of the profile, runs the steps above and the pseudo-label, and
# caches the result; it measures the wall time and the NumPy memory of each call.

# %%
cases = inputs.ct_cases(profile, data_dir, work)
table = cohort.preprocess_cohort(cases, work / "preprocessed", params, index_path=work / "ct_index.json")

# %% tags=["remove-input"]
for key, n in {"n_volumes": len(table), "n_qc_failed": int((~table.qc_ok).sum())}.items():
    nb.glue(key, n)
    nb.glue(f"{key}_text", book.plural(n, "volume"))
nb.glue_timing("median_seconds_per_volume", table.seconds.median())
nb.glue("max_copies", round(float(table.copies.max()), 2), timing=True)  # a measurement, like a time
nb.glue("max_peak_mb", round(float(table.peak_MB.max()), 1), timing=True)
VOLUME_FORMATS = {"min": "{:.0f}", "median": "{:.0f}", "max": "{:.0f}", "lung_ml": "{:.1f}", "seconds": "{:.2f}",
                  "peak_MB": "{:.1f}", "copies": "{:.2f}", "step_copies": "{:.2f}"}
nb.glue_table("volume_table", cohort.volume_table(table), formats=VOLUME_FORMATS)

# %% [markdown]
# We preprocessed {glue:text}`n_volumes_text`. The median time per volume was
# {glue:text}`median_seconds_per_volume:.2f` s, and the whole call peaked at
# {glue:text}`max_peak_mb:.1f` MB of NumPy allocations ({glue:text}`max_copies:.2f` copies; a copy
# is defined in the next section).
#
# :::{table} Every volume of this profile: source label, reader, array shape (slices × rows × columns), voxel spacing (mm), HU range, slices after resampling to 1 mm (T0), pseudo-label lung volume (ml) and its QC, then the wall time (s) and peak traced memory (MB) of the whole call (reading plus preprocessing, or reading plus loading the cached result), that peak in copies of the larger of the native and 1 mm volumes, and the largest per-step peak (`step_copies`, in copies of that step's working volume).
# :name: tbl-volumes
# ```{glue:md} volume_table
# :format: myst
# ```
# :::

# %% [markdown]
# ## Memory of each step
#
# The requirement caps the memory that any single step may hold, counted in copies of the volume.
# A *copy* is the volume a step works on stored as int16 (2 bytes per voxel): the native slices for
# the FOV step and the pseudo-label, the 1 mm grid for the others. A step's peak is its highest
# NumPy allocation (measured with `tracemalloc`) above the inputs it receives, its output included.
# The largest volume shows the worst case (see {ref}`notes-performance`).

# %%
mem, mem_steps = cohort.memory_summary(table)

# %% tags=["remove-input"]
values = {"mem_target_copies": mem["target_copies"], "mem_case": mem["case_id"],
          "mem_shape_native": mem["shape_native"], "mem_shape_1mm": mem["shape_1mm"],
          "mem_copy_mb_native": round(mem["copy_mb_native"], 1), "mem_copy_mb_1mm": round(mem["copy_mb_1mm"], 1)}
measured = {"mem_max_step_copies": round(mem["max_step_copies"], 2), "mem_max_step": mem["max_step"],
            "mem_target_met": mem["target_met"], "mem_preprocess_mb": round(mem["preprocess_MB"], 1),
            "mem_preprocess_copies": round(mem["preprocess_copies"], 2),
            "mem_cohort_max_step_copies": round(mem["cohort_max_step_copies"], 2), "mem_source": mem["source"]}
for key, value in values.items():
    nb.glue(key, value)
for key, value in measured.items():  # measurements of this run: recorded with the timings
    nb.glue(key, value, timing=True)

# %% tags=["remove-input"]
mem_show = mem_steps.round({"seconds": 2, "peak_MB": 1, "copies": 2}).set_index("step")
nb.glue_table("memory_steps", mem_show, formats={"seconds": "{:.2f}", "peak_MB": "{:.1f}",
                                                         "copies": "{:.2f}"}, record=False)
nb.record("memory_steps", mem_show.reset_index().to_dict(orient="list"), timing=True)

# %% [markdown]
# The largest volume is {glue:text}`mem_case`: {glue:text}`mem_shape_native` voxels as read and
# {glue:text}`mem_shape_1mm` at 1 mm, so one copy is {glue:text}`mem_copy_mb_native:.1f` MB before
# resampling and {glue:text}`mem_copy_mb_1mm:.1f` MB after. Its largest step peak was
# {glue:text}`mem_max_step_copies:.2f` copies, in the step {glue:text}`mem_max_step`: the target
# of at most {glue:text}`mem_target_copies:g` copies per step is **{glue:text}`mem_target_met`**
# (figures from: {glue:text}`mem_source`). Over all volumes with figures the largest step peak was
# {glue:text}`mem_cohort_max_step_copies:.2f` copies.
#
# :::{table} Per-step wall time (s) and peak memory above the step's inputs (MB and copies) for the largest volume of this profile, {glue:text}`mem_case`, with the shape the step works on; a copy is that shape stored as int16.
# :name: tbl-memory
# ```{glue:md} memory_steps
# :format: myst
# ```
# :::
#
# The whole `preprocess_ct` call of that volume peaked at {glue:text}`mem_preprocess_mb:.1f` MB
# above its input ({glue:text}`mem_preprocess_copies:.2f` copies of the larger volume): the 1 mm
# CT and mask stay allocated while the lung QC labels the mask. `make bench` prints the same table
# for a synthetic full-size chest.

# %% tags=["remove-input"]
nb.glue_table("qc_failed", cohort.qc_failed_table(table), formats={"lung_ml": "{:.1f}"})

# %% [markdown]
# The automatic QC of the lung mask failed for {glue:text}`n_qc_failed_text` ({numref}`tbl-qc`);
# a volume that fails is not used to train the U-Net.
#
# :::{table} Volumes whose pseudo-label failed the QC rule (implausible lung volume, one lung missing, mask touching the image border), or that carry no Hounsfield units (CC-CCII PNG slices are already windowed: the FOV step, the window and the HU threshold do not apply).
# :name: tbl-qc
# ```{glue:md} qc_failed
# :format: myst
# ```
# :::

# %% [markdown]
# ## What each step does to one volume
#
# We follow one volume through the pipeline: the first COVID-19 volume with Hounsfield units, or
# the first volume with Hounsfield units when there is none.

# %% tags=["hide-input"]
pick = figs.example_case(table)
volume, result = io.read_ct(pick.path), cohort.load_preprocessed(pick.npz)
steps_fig = figs.preprocessing_steps(volume.hu, result["ct_u8"], result["lung_mask"],
                                     title=f"{pick.case_id} ({pick.label})")
nb.glue_figure("steps_figure", steps_fig)
nb.glue_figure("hu_histogram", figs.hu_histogram(volume.hu))

# %% [markdown]
# ```{glue:figure} steps_figure
# :name: fig-steps
# One volume through the pipeline: raw HU, after the field-of-view step and the window, a coronal
# cut after resampling to 1 mm slices, and the unsupervised lung mask.
# ```
#
# ```{glue:figure} hu_histogram
# :name: fig-hu
# HU histogram of the same volume (log scale) with the window bounds (red) and the −320 HU lung
# threshold (green). Air is near −1000 HU, soft tissue near 0–100 HU; values near −2000 or below
# come from outside the reconstruction circle.
# ```

# %% [markdown]
# ## Pseudo-labels against ground truth
#
# Only the phantoms have exact lungs. On real volumes the pseudo-labels are checked by the QC rule
# alone and, in chapter 03, by how well a U-Net can learn them.

# %%
if profile == "synthetic":  # phantoms: compare with the exact lungs
    dices = cohort.pseudo_label_dice(table)
else:  # real volumes: only the lung volumes of those that passed QC
    qc_passed = table[table.qc_ok]

# %% tags=["remove-input"]
if profile == "synthetic":
    nb.glue("pseudo_dice_min", round(float(np.min(dices)), 4))
    nb.glue("pseudo_dice_mean", round(float(np.mean(dices)), 4))
    nb.glue_markdown("pseudo_check", "On the phantoms the pseudo-labels overlap the exact lungs with a mean "
                     "Dice of {glue:text}`pseudo_dice_mean:.4f` (lowest {glue:text}`pseudo_dice_min:.4f`).")
else:
    median_ml = round(float(qc_passed.lung_ml.median()), 0) if len(qc_passed) else float("nan")
    nb.glue("pseudo_lung_ml_median", median_ml)
    nb.glue_markdown("pseudo_check", "The pseudo-labels that passed QC have a median lung volume of "
                     "{glue:text}`pseudo_lung_ml_median:.0f` ml ({numref}`tbl-volumes`).")

# %% [markdown]
# ```{glue:md} pseudo_check
# :format: myst
# ```

# %% tags=["remove-cell"]
nb.finish()
