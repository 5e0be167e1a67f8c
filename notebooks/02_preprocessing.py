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
# (spec §2): read the series and convert stored values to Hounsfield units (HU); add −2000 HU
# outside the scanner's circular field of view; resample along z to 1 mm slices (cubic spline,
# in-plane grid unchanged); window [−1200, 600] HU to 8 bits. In parallel, an *unsupervised* lung
# segmentation (spec §3: threshold at −320 HU, remove outside air, keep the largest air component)
# produces the pseudo-labels on which the U-Net of chapter 03 is trained. Every constant is a named
# parameter of `reprolib.preprocess`.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from reprolib import book, cohort, config, data, io, preprocess, provenance

provenance.seed_everything(seed)
nb = book.Notebook("02_preprocessing", profile, results_dir)
nb.banner()
prof = config.load_profile(profile)
work = Path(work_dir or config.work_dir(profile))
params = prof.get("preprocess", {})

# %% [markdown]
# ## Every volume of this profile

# %%
cases = data.ct_cases(profile, data_dir, work)
table = cohort.preprocess_cohort(cases, work / "preprocessed", params, index_path=work / "ct_index.json")
show = table[["case_id", "label", "kind", "shape", "spacing_mm", "min", "median", "max", "T0",
              "lung_ml", "qc_ok", "seconds", "peak_MB", "copies", "step_copies"]].round(2).set_index("case_id")
nb.glue("n_volumes", len(table))
nb.glue("n_qc_failed", int((~table.qc_ok).sum()))
nb.glue_timing("median_seconds_per_volume", table.seconds.median())
nb.glue("max_copies", round(float(table.copies.max()), 2), timing=True)  # a measurement, like a time
nb.glue("max_peak_mb", round(float(table.peak_MB.max()), 1), timing=True)
nb.glue_table("volume_table", show)
show

# %% [markdown]
# ```{glue:figure} volume_table
# :name: tbl-volumes
# One row per volume: source label, reader, array shape (slices × rows × columns), voxel spacing
# (mm), HU range, slices after resampling to 1 mm (T0), pseudo-label lung volume (ml) and its QC,
# the wall time and peak traced memory of the whole call (reading plus preprocessing, or reading
# plus loading the cached result on a cache hit), that peak in copies (one copy = the larger of
# the native and 1 mm volumes stored as int16), and the largest per-step peak (`step_copies`, in
# copies of that step's working volume; see below).
# ```
#
# {glue:text}`n_volumes` volumes were preprocessed; the median time per volume was
# {glue:text}`median_seconds_per_volume` s, and the whole call peaked at {glue:text}`max_peak_mb` MB
# of NumPy allocations ({glue:text}`max_copies` copies). {glue:text}`n_qc_failed` volumes failed the
# automatic lung-mask QC; they are listed below and are not used to train the U-Net.

# %% [markdown]
# ## Memory of each step
#
# The requirement caps the memory that any single step may hold, counted in copies of the volume. A
# *copy* is the volume a step works on stored as int16 (2 bytes per voxel): the native slices for the
# field-of-view step and the pseudo-label, the 1 mm grid for the others. A step's peak is the highest
# NumPy allocation (tracemalloc) above the inputs it receives, its output included.

# %%
mem, mem_steps = cohort.memory_summary(table)
nb.glue("mem_target_copies", mem["target_copies"])
nb.glue("mem_case", mem["case_id"])
nb.glue("mem_shape_native", mem["shape_native"])
nb.glue("mem_shape_1mm", mem["shape_1mm"])
nb.glue("mem_copy_mb_native", round(mem["copy_mb_native"], 1))
nb.glue("mem_copy_mb_1mm", round(mem["copy_mb_1mm"], 1))
nb.glue("mem_max_step_copies", round(mem["max_step_copies"], 2), timing=True)  # measurements
nb.glue("mem_max_step", mem["max_step"], timing=True)
nb.glue("mem_target_met", mem["target_met"], timing=True)
nb.glue("mem_preprocess_mb", round(mem["preprocess_MB"], 1), timing=True)
nb.glue("mem_preprocess_copies", round(mem["preprocess_copies"], 2), timing=True)
nb.glue("mem_cohort_max_step_copies", round(mem["cohort_max_step_copies"], 2), timing=True)
nb.glue("mem_source", mem["source"], timing=True)
mem_show = mem_steps.round({"seconds": 2, "peak_MB": 1, "copies": 2}).set_index("step")
nb.glue_table("memory_steps", mem_show, record=False)
nb.record("memory_steps", mem_show.reset_index().to_dict(orient="list"), timing=True)
mem_show

# %% [markdown]
# ```{glue:figure} memory_steps
# :name: tbl-memory
# Per-step time and peak memory above the step's inputs for the largest volume of this profile,
# with the shape the step works on; copies are int16 copies of that shape.
# ```
#
# For the largest volume, {glue:text}`mem_case` ({glue:text}`mem_shape_native` native,
# {glue:text}`mem_shape_1mm` at 1 mm; one copy is {glue:text}`mem_copy_mb_native` MB and
# {glue:text}`mem_copy_mb_1mm` MB), the largest step peak was {glue:text}`mem_max_step_copies`
# copies, in the step {glue:text}`mem_max_step`; the target of at most
# {glue:text}`mem_target_copies` copies per step is **{glue:text}`mem_target_met`** (figures
# measured: {glue:text}`mem_source`). Over all volumes with figures the largest step peak was
# {glue:text}`mem_cohort_max_step_copies` copies. The whole `preprocess_ct` call of that volume
# peaked at {glue:text}`mem_preprocess_mb` MB above its input ({glue:text}`mem_preprocess_copies`
# copies of the larger volume): the 1 mm CT and mask stay allocated while the lung QC labels the
# mask. `make bench` prints the same table for a synthetic full-size chest.

# %%
flagged = table.loc[~table.qc_ok, ["case_id", "label", "lung_ml", "flags"]].set_index("case_id")
nb.glue_table("qc_failed", flagged if len(flagged) else flagged.reindex([]), record=True)
flagged

# %% [markdown]
# ```{glue:figure} qc_failed
# :name: tbl-qc
# Volumes whose pseudo-label failed the QC rule (implausible lung volume, one lung missing,
# mask touching the image border), or that carry no Hounsfield units (CC-CCII PNG slices, which
# are already windowed: the FOV step, the window and the HU threshold do not apply).
# ```

# %% [markdown]
# ## What each step does to one volume

# %%
hu_cases = table[table.is_hu].reset_index(drop=True)
pick = hu_cases.iloc[int(np.argmax(hu_cases.target.values))] if len(hu_cases) else table.iloc[0]
vol = io.read_ct(pick.path)
res = cohort.load_preprocessed(pick.npz)
z_raw = vol.hu.shape[0] // 2
z_new = res["ct_u8"].shape[0] // 2
fig, ax = plt.subplots(1, 4, figsize=(14, 3.6))
ax[0].imshow(vol.hu[z_raw], cmap="gray", vmin=-1200, vmax=600)
ax[0].set_title(f"raw HU, slice {z_raw}")
ax[1].imshow(res["ct_u8"][z_new], cmap="gray", vmin=0, vmax=255)
ax[1].set_title("FOV + window → uint8")
ax[2].imshow(res["ct_u8"][:, res["ct_u8"].shape[1] // 2], cmap="gray", aspect="auto")
ax[2].set_title(f"coronal after z → 1 mm (T0 = {res['ct_u8'].shape[0]})")
if res["lung_mask"] is not None:
    ax[3].imshow(res["ct_u8"][z_new], cmap="gray")
    ax[3].contour(res["lung_mask"][z_new], levels=[0.5], colors="lime", linewidths=0.8)
ax[3].set_title("pseudo-label lung mask")
for a in ax:
    a.axis("off")
fig.suptitle(f"{pick.case_id} ({pick.label})")
fig.tight_layout()
nb.glue_figure("steps_figure", fig)

fig, ax = plt.subplots(figsize=(7, 3))
sample = vol.hu[:: max(1, vol.hu.shape[0] // 32)].ravel()
ax.hist(sample, bins=200, range=(-2100, 1500), color="0.3")
for v, name in [(-1200, "window low"), (600, "window high"), (-320, "lung threshold")]:
    ax.axvline(v, color="C3" if "window" in name else "C2", ls="--", lw=1)
ax.set_yscale("log")
ax.set_xlabel("HU")
ax.set_ylabel("voxels (sampled)")
fig.tight_layout()
nb.glue_figure("hu_histogram", fig)

# %% [markdown]
# ```{glue:figure} steps_figure
# :name: fig-steps
# One volume through the pipeline: raw HU, after the field-of-view step and the window, a coronal
# cut after resampling to 1 mm slices, and the unsupervised lung mask.
# ```
#
# ```{glue:figure} hu_histogram
# :name: fig-hu
# HU histogram of the same volume (log scale) with the window bounds and the −320 HU lung
# threshold. Air is near −1000 HU, soft tissue near 0–100 HU; values near −2000 or below come
# from outside the reconstruction circle.
# ```

# %% [markdown]
# ## Pseudo-labels against ground truth
#
# Only the phantoms have exact lungs. On real volumes the pseudo-labels are checked by QC alone
# (and, in chapter 03, by how well a U-Net can learn them).

# %%
if profile == "synthetic":
    dices = []
    for row in table.itertuples():
        truth = (io.read_nifti(row.lung_mask).hu > 0).astype(np.uint8)  # same orientation as the CT
        res_i = cohort.load_preprocessed(row.npz)
        factor = res_i["ct_u8"].shape[0] / truth.shape[0]
        truth_1mm = preprocess.resample_mask_z(truth, factor)[: res_i["ct_u8"].shape[0]]
        dices.append(cohort.dice(res_i["lung_mask"], truth_1mm))
    nb.glue("pseudo_dice_min", round(float(np.min(dices)), 4))
    nb.glue("pseudo_dice_mean", round(float(np.mean(dices)), 4))
    print(f"pseudo-label Dice vs phantom lungs: mean {np.mean(dices):.4f}, min {np.min(dices):.4f}")
else:
    ok = table[table.qc_ok]
    nb.glue("pseudo_lung_ml_median", round(float(ok.lung_ml.median()), 0) if len(ok) else float("nan"))
    print(ok[["case_id", "lung_ml"]].to_string(index=False))

# %%
nb.finish()
