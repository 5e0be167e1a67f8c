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
# # 07 · Chest X-ray: ResNet-50 transfer learning
#
# The second paper fine-tunes an ImageNet ResNet-50 on four classes — healthy, pneumonia
# (bacterial or viral), COVID-19 and "not certain" (inputs that are not a frontal chest
# radiograph) — with the lower layers frozen, discriminative learning rates from 1e-4 to 1e-2,
# and contrast augmentation of the COVID-19 class only, and reports 99 % precision, recall and F1.
# This chapter rebuilds that pipeline, splits by patient, reports every rate with a confidence
# interval, and first asks how much of the task can be solved without looking at any pathology.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import collections
import hashlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from reprolib import book, config, cxr, evaluate, paper_values, provenance

provenance.seed_everything(seed)
nb = book.Notebook("07_cxr_resnet50", profile, results_dir)
nb.banner()
S = config.load_profile(profile)["cxr"]
work = Path(work_dir or config.work_dir(profile))

# %% [markdown]
# ## Data and a patient-level split

# %%
dev, external = cxr.profile_records(profile, data_dir, work)
dev = cxr.patient_split(dev, test_frac=0.0, val_frac=S["val_frac"], seed=seed)
train = [r for r in dev if r.split == "train"]
val = [r for r in dev if r.split == "val"]
frame = cxr.records_frame(dev)
counts = frame.pivot_table(index=["label", "source"], columns="split", values="path", aggfunc="count",
                           fill_value=0)
patients = {s: {r.patient for r in dev if r.split == s} for s in ("train", "val")}
nb.glue("patient_overlap", len(patients["train"] & patients["val"]))
nb.glue("n_train", len(train))
nb.glue("n_val", len(val))
nb.glue("n_not_certain_patients", len({r.patient for r in dev if r.label == "not_certain"}))
nb.glue_table("split_table", counts)
counts

# %% [markdown]
# ```{glue:figure} split_table
# :name: tbl-cxr-split
# Development images per class, source and split. Patients never cross the split.
# ```
#
# {glue:text}`n_train` training and {glue:text}`n_val` validation images; patients shared between
# them: {glue:text}`patient_overlap`. The `not_certain` class holds inputs that are not a frontal
# chest radiograph: axial CT slices from {glue:text}`n_not_certain_patients` patients (the CC-CCII
# PNG slices and, where chapter 02 preprocessed other CT volumes, slices rendered from them at the
# lung window), so that it, too, can be split by patient.

# %% [markdown]
# ## The confound audit: how far do non-medical cues go?
#
# The pneumonia and healthy images come from a paediatric hospital (children aged one to five);
# the COVID-19 images are of adults from other hospitals. Image size, file size, brightness and
# format differ by source. A logistic regression on those cues alone — no pixels of the lungs —
# shows how much of the task is source recognition. It is cross-validated by patient.

# %%
audit = cxr.confound_audit(dev, seed=seed)
nb.glue("confound_accuracy", audit["accuracy"])
nb.glue("confound_majority", audit["majority_accuracy"])
covid_auc = audit["per_class_auc"].get("covid19", float("nan"))
nb.glue("confound_covid_auc", covid_auc)
nb.glue_text("lp_confound_covid_auc", covid_auc)
audit_table = pd.DataFrame({"recall": audit["per_class_recall"], "one-vs-rest AUC": audit["per_class_auc"]})
nb.glue_table("confound_table", audit_table.round(3))
audit_table.round(3)

# %% [markdown]
# ```{glue:figure} confound_table
# :name: tbl-confound
# Out-of-fold recall and one-vs-rest ROC AUC of a classifier that sees only image geometry,
# intensity statistics and file size (classes with a single patient cannot be cross-validated by
# patient and are left out).
# ```
#
# On these cues alone the accuracy is {glue:text}`confound_accuracy:.3f` (always answering the
# largest class: {glue:text}`confound_majority:.3f`), and COVID-19 against the rest reaches a
# ROC AUC of {glue:text}`confound_covid_auc:.3f`. Whatever the network learns, a near-perfect
# COVID-19 score on such data cannot by itself show that it learned pathology.

# %% [markdown]
# ## Training

# %%
mode, reason = cxr.weights_mode(S["weights"])
nb.glue("weights_mode", mode)
nb.glue_markdown("weights_banner", (
    ":::{admonition} Trained from ImageNet weights\n:class: note\n" + reason + "\n:::\n") if mode == "imagenet"
    else (":::{admonition} Trained from random initialisation\n:class: warning\n"
          f"{reason} The paper fine-tunes ImageNet weights; without them, the frozen lower layers are "
          "random features and the scores below are not comparable with the paper's.\n:::\n"))
balanced = cxr.balance_by_augmentation(train, target="covid19", seed=seed)
train_set = cxr.subsample_per_class(balanced, S["per_class_max"], seed=seed)
print(collections.Counter(r.label for r in train_set))
model, losses = cxr.fit_cxr(train_set, size=S["size"], epochs=S["epochs"], batch=S["batch"], weights=mode,
                            freeze_until=S["freeze_until"], lrs=S["lrs"], seed=seed, device=device)
ckpt = work / "cxr_resnet50.pt"
book.atomic_write_bytes(ckpt, cxr.state_dict_bytes(model))
ckpt_sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
nb.glue("checkpoint_sha256", ckpt_sha)
nb.glue("train_loss_last", round(losses[-1], 4))
nb.glue("epochs", S["epochs"])
nb.glue("image_size", S["size"])

# %% [markdown]
# ```{glue:md} weights_banner
# :format: myst
# ```
#
# The model was trained for {glue:text}`epochs` epochs at {glue:text}`image_size` px (the paper:
# 15 epochs at 350 px) on the training images, with the COVID-19 class oversampled by contrast
# augmentation (factor 0.5–1.9, probability 0.5) towards the size of the largest class.

# %%
y, probs = cxr.evaluate_records(model, val, size=S["size"])
yhat = probs.argmax(1)
report = evaluate.per_class_report(y, yhat, list(range(len(cxr.CLASSES))))
report.index = [cxr.CLASSES[i] if isinstance(i, (int, np.integer)) else i for i in report.index]
present = [c for c in cxr.CLASSES if c in report.index and report.loc[c, "support"] > 0]
macro_f1 = float(report.loc[present, "f1"].mean())
nb.glue("macro_f1", macro_f1)
nb.glue_text("lp_macro_f1", macro_f1)
covid_recall = float(report.loc["covid19", "recall"]) if "covid19" in present else float("nan")
nb.glue_text("lp_covid_recall", covid_recall)
for c in cxr.CLASSES:  # per-class F1 (None where the class is absent from validation)
    nb.glue(f"f1_{c}", float(report.loc[c, "f1"]) if c in present else None)
nb.glue_table("val_report", report.round(3))
report.round(3)

# %%
cm = evaluate.confusion(y, yhat, list(range(len(cxr.CLASSES))))
cm.index = cm.columns = list(cxr.CLASSES)
fig, ax = plt.subplots(figsize=(5, 4))
sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
ax.set(xlabel="predicted", ylabel="true")
fig.tight_layout()
nb.glue_figure("confusion", fig)
paper = pd.DataFrame(paper_values.CXR["per_class"]).T
nb.glue_table("paper_table", paper)
nb.glue_text("reported_macro_f1", paper_values.CXR["average_percent"] / 100, "{:.2f}")

# %% [markdown]
# ```{glue:figure} val_report
# :name: tbl-cxr-report
# Validation metrics per class with Wilson 95 % intervals (one-vs-rest accuracy, not the paper's
# "accuracy", which equals its precision).
# ```
#
# ```{glue:figure} confusion
# :name: fig-cxr-confusion
# Confusion matrix on the validation images (rows: true class).
# ```
#
# ```{glue:figure} paper_table
# :name: tbl-cxr-paper
# The paper's validation table (per cent), quoted. Its "accuracy" column repeats the precision,
# and its confusion counts do not add up to the stated 2,418 validation images.
# ```
#
# The macro-averaged F1 over the classes present in validation is {glue:text}`macro_f1:.3f`.

# %% [markdown]
# ## Where does the network look?

# %%
shown = []
for cls in present:
    idx = [i for i in range(len(val)) if y[i] == cxr.CLASSES.index(cls)]
    right = [i for i in idx if yhat[i] == y[i]][:2]
    wrong = [i for i in idx if yhat[i] != y[i]][:1]
    shown += [(i, cls, "correct") for i in right] + [(i, cls, "wrong") for i in wrong]
tf = cxr.build_transforms(S["size"], train=False)
rows_by_class = [[s_ for s_ in shown if s_[1] == cls] for cls in present] or [[]]
fig, axes = plt.subplots(len(rows_by_class), 3, figsize=(7.5, 2.6 * len(rows_by_class)), squeeze=False)
for ax_row, entries in zip(axes, rows_by_class):  # one row per class: up to 2 correct, 1 wrong
    for ax, (i, cls, kind) in zip(ax_row, entries):
        img = cxr.load_cxr(val[i].path)
        heat = cxr.grad_cam(model, tf(img), int(yhat[i]))
        ax.imshow(cxr.overlay(img.resize((S["size"], S["size"])), heat))
        ax.set_title(f"{cls} — {kind}: predicted {cxr.CLASSES[int(yhat[i])]}", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
fig.tight_layout()
nb.glue_figure("gradcam", fig)

# %% [markdown]
# ```{glue:figure} gradcam
# :name: fig-cxr-gradcam
# Grad-CAM heat maps (last residual stage) for correctly and wrongly classified validation images
# of each class; the title gives the true class and the prediction.
# ```

# %%
nb.finish()
