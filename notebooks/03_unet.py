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
# # 03 · Lung segmentation with a 2D U-Net
#
# The unsupervised lung masks of chapter 02 fail on some scans (closed scanner tables, breathing
# devices). The authors therefore trained a 2D U-Net on the pseudo-labels of the scans that passed
# a visual check, and used the network's masks downstream (see {ref}`notes-unet`). Here the check
# is the automatic QC rule of chapter 02, the split is by patient, and the U-Net is evaluated on
# held-out volumes against their pseudo-labels (and, for phantoms, against the exact lungs).

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None
# repro-inputs: calibration   (the synthetic profile shows the calibrated seed spread)

# %% tags=["remove-input"]
import json
import time
from pathlib import Path

import torch

from reprolib import book, codehash, cohort, config, modelfile, models, pages, provenance, train
from reprolib.figures import preprocessing as figs

provenance.seed_everything(seed)
nb = book.Notebook("03_unet", profile, results_dir)
nb.banner()
S = config.load_profile(profile)["unet"]
work = Path(work_dir or config.work_dir(profile))
index = cohort.load_index(work / "ct_index.json")

# %% [markdown]
# ## Which volumes train and which test
#
# Only volumes with Hounsfield units and a pseudo-label that passed QC are used. They are split by
# patient, so that no patient has volumes on both sides.

# %%
train_vols, held = cohort.unet_holdout(index, S["holdout"], seed)

# %% tags=["remove-input"]
nb.glue_table("unet_split", cohort.unet_split_table(train_vols, held), floatfmt="{:.1f}")
for key, n in {"n_unet_train": len(train_vols), "n_unet_test": len(held)}.items():
    nb.glue(key, n)
    nb.glue(f"{key}_text", book.plural(n, "volume"))

# %% [markdown]
# The U-Net trains on {glue:text}`n_unet_train_text` and is tested on {glue:text}`n_unet_test_text`
# held out by patient.
#
# :::{table} Volumes used to train the U-Net and volumes held out to test it (patient-level split), with their slices at 1 mm (T0) and pseudo-label lung volume (ml).
# :name: tbl-unet-split
# ```{glue:md} unet_split
# :format: myst
# ```
# :::

# %% [markdown]
# ## Training on the pseudo-labels
#
# The network is trained on slices of the training volumes against their pseudo-labels and checked
# on the held-out volumes after every few epochs. Its checkpoints go to a folder named after the
# settings, the split and the code, so that a rerun with the same inputs can resume from them.

# %%
size = tuple(S["size"]) if S["size"] else None  # working in-plane size (None: full resolution)
training_code = codehash.modules_hash(["reprolib.train", "reprolib.models"])
run_id = provenance.short_hash(S, sorted(train_vols.case_id), sorted(held.case_id), training_code)
cfg = train.TrainConfig(epochs=S["epochs"], lr=1e-3, seed=seed, device=device, augment="official",
                        validate_every=S["validate_every"], checkpoint_dir=work / "unet" / run_id)
unet = models.UNet2D()
t0 = time.perf_counter()
hist = train.fit_unet(unet, list(train_vols.npz), cfg, slices_per_step=S["slices_per_step"],
                      val_volumes=list(held.npz), size=size)
nb.glue_timing("unet_train_seconds", time.perf_counter() - t0)
unet, _ = modelfile.load_model(hist.best_path)  # the best epoch's weights, used from here on

# %% tags=["hide-input"]
# Notebook 04 reads the checkpoint through this pointer and checks its SHA-256.
sha = modelfile.read_sha256_sidecar(hist.best_path)
book.atomic_write_text(work / "unet_checkpoint.json",
                       json.dumps({"path": str(hist.best_path), "sha256": sha, "size": size}))
nb.glue_figure("unet_curve", figs.unet_training_curves(hist))

# %% tags=["remove-input"]
nb.glue("unet_checkpoint_sha256", sha, timing=True)  # run-specific: the file records paths and wall times
for key, value in {"unet_best_epoch": int(hist.best_epoch), "unet_epochs": S["epochs"],
                   "unet_epochs_text": book.plural(S["epochs"], "epoch")}.items():
    nb.glue(key, value)

# %% [markdown]
# ```{glue:figure} unet_curve
# :name: fig-unet-curve
# Training loss per epoch and, at validation epochs, the held-out loss, lung Dice and mean IoU
# (background and lung) against the pseudo-labels.
# ```
#
# The U-Net was trained for {glue:text}`unet_epochs_text` on {glue:text}`n_unet_train_text`; the
# checkpoint of epoch {glue:text}`unet_best_epoch` (best held-out mIoU) is used below.

# %% [markdown]
# ## Held-out volumes, slice by slice

# %%
unet.eval()
scores, shown = cohort.score_unet(unet, held, size=size, exact_lungs=profile == "synthetic")

# %% tags=["remove-input"]
nb.glue("unet_dice_mean", float(scores.Dice.mean()))
nb.glue("unet_dice_min", float(scores.Dice.min()))
nb.glue("unet_dice_max", float(scores.Dice.max()))
nb.glue("unet_iou_mean", float(scores.IoU.mean()))
if "Dice vs exact lungs" in scores:
    nb.glue("unet_dice_exact_mean", float(scores["Dice vs exact lungs"].mean()))
nb.glue_timing("unet_seconds_per_slice", scores.seconds_per_slice.median(), 4)
nb.glue_timing("unet_seconds_per_volume", scores.seconds.median())
SCORE_FORMATS = {"Dice": "{:.4f}", "IoU": "{:.4f}", "Dice vs exact lungs": "{:.4f}", "seconds": "{:.2f}",
                 "seconds_per_slice": "{:.4f}"}
nb.glue_table("unet_scores", scores.round(4), formats=SCORE_FORMATS)
pages.seed_spread(nb, {"unet_dice_mean": "mean Dice", "unet_dice_min": "lowest Dice", "unet_iou_mean": "mean IoU"})

# %% [markdown]
# On the held-out volumes the U-Net agrees with the pseudo-labels with a mean Dice of
# {glue:text}`unet_dice_mean:.4f` (range {glue:text}`unet_dice_min:.4f` to
# {glue:text}`unet_dice_max:.4f`) and a mean IoU of {glue:text}`unet_iou_mean:.4f`. It needs a
# median {glue:text}`unet_seconds_per_slice:.4f` s per slice, {glue:text}`unet_seconds_per_volume:.2f` s
# per volume.
#
# ```{glue:md} seed_spread
# :format: myst
# ```
#
# :::{table} Agreement of the U-Net's masks with the pseudo-labels on each held-out volume (and, for phantoms, with the exact lungs), and the time to segment it on this CPU (s; slices processed in batches of 8).
# :name: tbl-unet-scores
# ```{glue:md} unet_scores
# :format: myst
# ```
# :::

# %% tags=["hide-input"]
nb.glue_figure("unet_overlays", figs.segmentation_overlays(shown))

# %% [markdown]
# ```{glue:figure} unet_overlays
# :name: fig-unet-overlays
# Held-out volumes at 30 %, 50 % and 70 % of their height: pseudo-label (yellow) and U-Net mask
# (red, dashed).
# ```

# %% [markdown]
# ## Cost of a full-resolution slice

# %%
x = torch.rand(1, 1, 512, 512)  # one full-resolution slice
with torch.inference_mode():
    t_slice, _ = provenance.median_time(lambda: unet(x), repeats=3)
gmac_512 = models.count_macs(unet, (1, 1, 512, 512)) / 1e9  # multiply-accumulates, in 10⁹
n_params = models.count_parameters(unet)

# %% tags=["remove-input"]
nb.glue_timing("unet_seconds_512", t_slice, 3)
for key, value in {"unet_gmac_512": round(gmac_512, 2), "unet_params": n_params}.items():
    nb.glue(key, value)

# %% [markdown]
# The U-Net has {glue:text}`unet_params:,d` parameters and costs {glue:text}`unet_gmac_512:.2f` GMAC
# per 512×512 slice, about {glue:text}`unet_seconds_512:.3f` s on this CPU: for a volume of a few
# hundred slices it costs far more than DeCoVNet itself (see {ref}`notes-performance`).

# %% tags=["remove-cell"]
nb.finish()
