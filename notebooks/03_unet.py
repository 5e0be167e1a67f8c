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
# devices); the authors therefore trained a 2D U-Net on the pseudo-labels of the scans that passed
# a visual check and used the network's masks downstream (spec §4). Here the check is the automatic
# QC rule of chapter 02, the split is by patient, and the U-Net is evaluated on held-out volumes
# against their pseudo-labels (and, for phantoms, against the exact lungs).

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from reprolib import book, cohort, config, io, models, preprocess, provenance, runner, train

provenance.seed_everything(seed)
nb = book.Notebook("03_unet", profile, results_dir)
nb.banner()
S = config.load_profile(profile)["unet"]
work = Path(work_dir or config.work_dir(profile))
index = cohort.load_index(work / "ct_index.json")

# %% [markdown]
# ## Which volumes train and which test
#
# Only volumes with Hounsfield units and a pseudo-label that passed QC are used. Volumes are split
# by patient.

# %%
usable = index[index.is_hu & index.qc_ok].reset_index(drop=True)
if S["holdout"] == "split":
    held = usable[usable.split == "test"]
else:
    n_hold = S["holdout"] if S["holdout"] >= 1 else max(1, round(S["holdout"] * len(usable)))
    rng = np.random.default_rng(seed)
    patients = sorted(usable.group.unique())
    held_patients = set(rng.choice(patients, size=int(n_hold), replace=False).tolist())
    held = usable[usable.group.isin(held_patients)]
trainv = usable[~usable.case_id.isin(held.case_id)]
assert not set(trainv.group) & set(held.group), "patient leak between U-Net train and test"
split_table = pd.concat([trainv.assign(role="train"), held.assign(role="held out")])[
    ["case_id", "label", "role", "T0", "lung_ml"]].set_index("case_id")
nb.glue("n_unet_train", len(trainv))
nb.glue("n_unet_test", len(held))
nb.glue_table("unet_split", split_table.round(1))
split_table.round(1)

# %% [markdown]
# ```{glue:figure} unet_split
# :name: tbl-unet-split
# Volumes used to train the U-Net and volumes held out to test it (patient-level split).
# ```

# %% [markdown]
# ## Training on the pseudo-labels

# %%
size = tuple(S["size"]) if S["size"] else None
cfg = train.TrainConfig(epochs=S["epochs"], lr=1e-3, seed=seed, device=device, augment="official",
                        validate_every=S["validate_every"],
                        checkpoint_dir=work / "unet" / provenance.short_hash(
                            S, sorted(trainv.case_id), sorted(held.case_id), runner.package_hash()))
unet = models.UNet2D()
t0 = time.perf_counter()
hist = train.fit_unet(unet, list(trainv.npz), cfg, slices_per_step=S["slices_per_step"],
                      val_volumes=list(held.npz), size=size)
nb.glue_timing("unet_train_seconds", time.perf_counter() - t0)
best = train.load_checkpoint(hist.best_path, model=unet)
sha = train.read_sha256_sidecar(hist.best_path)
nb.glue("unet_checkpoint_sha256", sha, timing=True)  # run-specific: the file records paths and wall times
book.atomic_write_text(work / "unet_checkpoint.json",  # read by notebook 04
                       json.dumps({"path": str(hist.best_path), "sha256": sha, "size": size}))
nb.glue("unet_best_epoch", int(hist.best_epoch))
nb.glue("unet_epochs", S["epochs"])

h = pd.DataFrame(hist.to_dict())[["epoch", "train_loss", "val_loss", "val_miou", "val_dice"]]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
ax[0].plot(h.epoch, h.train_loss, "o-", label="train")
ax[0].plot(h.epoch, h.val_loss, "s", label="held out")
ax[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss")
ax[0].legend()
ax[1].plot(h.epoch, h.val_dice, "s-", label="lung Dice")
ax[1].plot(h.epoch, h.val_miou, "^-", label="mIoU")
ax[1].set(xlabel="epoch", title="held-out agreement with pseudo-labels")
ax[1].legend()
fig.tight_layout()
nb.glue_figure("unet_curve", fig)

# %% [markdown]
# ```{glue:figure} unet_curve
# :name: fig-unet-curve
# Training loss per epoch and, at validation epochs, the held-out loss, lung Dice and mean IoU
# (background and lung) against the pseudo-labels.
# ```
#
# The U-Net was trained for {glue:text}`unet_epochs` epochs on {glue:text}`n_unet_train` volumes;
# the checkpoint of epoch {glue:text}`unet_best_epoch` (best held-out mIoU) is used below.

# %% [markdown]
# ## Held-out volumes, slice by slice

# %%
unet.eval()
rows, shown = [], []
for row in held.itertuples():
    pre = cohort.load_preprocessed(row.npz)
    t0 = time.perf_counter()
    pred = train.segment_volume(unet, pre["ct_u8"], batch=8, size=size)
    seconds = time.perf_counter() - t0
    pseudo = pre["lung_mask"]
    inter = np.logical_and(pred > 0, pseudo > 0).sum()
    union = np.logical_or(pred > 0, pseudo > 0).sum()
    r = {"case_id": row.case_id, "slices": pred.shape[0], "Dice": cohort.dice(pred, pseudo),
         "IoU": float(inter / union) if union else 1.0, "seconds": seconds,
         "seconds_per_slice": seconds / pred.shape[0]}
    if profile == "synthetic":
        truth = (io.read_nifti(row.lung_mask).hu > 0).astype(np.uint8)
        truth = preprocess.resample_mask_z(truth, pred.shape[0] / truth.shape[0])[: pred.shape[0]]
        r["Dice vs exact lungs"] = cohort.dice(pred, truth)
    rows.append(r)
    shown.append((row.case_id, pre["ct_u8"], pseudo, pred))
scores = pd.DataFrame(rows).set_index("case_id")
nb.glue("unet_dice_mean", float(scores.Dice.mean()))
nb.glue("unet_dice_min", float(scores.Dice.min()))
nb.glue("unet_dice_max", float(scores.Dice.max()))
nb.glue("unet_iou_mean", float(scores.IoU.mean()))
if "Dice vs exact lungs" in scores:
    nb.glue("unet_dice_exact_mean", float(scores["Dice vs exact lungs"].mean()))
nb.glue_timing("unet_seconds_per_slice", scores.seconds_per_slice.median(), 4)
nb.glue_timing("unet_seconds_per_volume", scores.seconds.median())
nb.glue_table("unet_scores", scores.round(4))
scores.round(4)

# %% [markdown]
# ```{glue:figure} unet_scores
# :name: tbl-unet-scores
# Agreement of the U-Net's masks with the pseudo-labels on each held-out volume, and the time to
# segment it on this CPU (slices processed in batches of 8).
# ```
#
# On the held-out volumes the U-Net agrees with the pseudo-labels with a mean Dice of
# {glue:text}`unet_dice_mean:.4f` (range {glue:text}`unet_dice_min:.4f`–{glue:text}`unet_dice_max:.4f`)
# and a mean IoU of {glue:text}`unet_iou_mean:.4f`; it needs {glue:text}`unet_seconds_per_slice:.3f` s
# per slice, {glue:text}`unet_seconds_per_volume:.1f` s per volume.

# %%
fig, axes = plt.subplots(len(shown), 3, figsize=(10, 3.2 * len(shown)), squeeze=False)
for ax, (case, ct, pseudo, pred) in zip(axes, shown):
    zs = [int(f * ct.shape[0]) for f in (0.3, 0.5, 0.7)]
    for a, z in zip(ax, zs):
        a.imshow(ct[z], cmap="gray")
        a.contour(pseudo[z], levels=[0.5], colors="yellow", linewidths=0.8)
        a.contour(pred[z], levels=[0.5], colors="red", linewidths=0.8, linestyles="--")
        a.set_title(f"{case}, slice {z}", fontsize=8)
        a.axis("off")
fig.tight_layout()
nb.glue_figure("unet_overlays", fig)

# %% [markdown]
# ```{glue:figure} unet_overlays
# :name: fig-unet-overlays
# Held-out volumes at 30 %, 50 % and 70 % of their height: pseudo-label (yellow) and U-Net mask
# (red, dashed).
# ```

# %% [markdown]
# ## Cost of a full-resolution slice

# %%
x = torch.rand(1, 1, 512, 512)
with torch.inference_mode():
    t_slice, _ = provenance.median_time(lambda: unet(x), repeats=3)
nb.glue_timing("unet_seconds_512", t_slice, 3)
nb.glue("unet_gmac_512", round(models.count_macs(unet, (1, 1, 512, 512)) / 1e9, 2))
nb.glue("unet_params", models.count_parameters(unet))

# %% [markdown]
# The U-Net has {glue:text}`unet_params` parameters and costs {glue:text}`unet_gmac_512:.2f` GMAC
# per 512×512 slice, about {glue:text}`unet_seconds_512:.2f` s on this CPU: for a volume of a few
# hundred slices it costs far more than DeCoVNet itself.

# %%
nb.finish()
