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
# # 08 · Chest X-ray: external validation, de-duplicated
#
# The paper validates externally on 200 images per class of the COVID-19 Radiography Database and
# reports accuracies of 97 % (COVID-19), 85 % (pneumonia) and 98 % (normal). That database
# contains copies of the Kermany images the model was trained on, so its "external" set partly
# re-tests the training source. Here, before sampling, every external image is compared with every
# development image by perceptual hash (256-bit pHash, Hamming distance ≤ 12) and near-copies are
# removed.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reprolib import book, config, cxr, evaluate, paper_values, provenance

provenance.seed_everything(seed)
nb = book.Notebook("08_external_validation", profile, results_dir)
nb.banner()
S = config.load_profile(profile)["cxr"]
work = Path(work_dir or config.work_dir(profile))
res_dir = Path(results_dir or config.results_dir(profile))
trained = json.loads((res_dir / "07_cxr_resnet50.json").read_text())["values"]

# %% [markdown]
# ## Which images count as external

# %%
dev, external = cxr.profile_records(profile, data_dir, work)
ext_frame = cxr.records_frame(external)
desc = {"synthetic": "held-out phantoms from the same generator (test split)",
        "sample": "the Kermany *test* split (other children of the same hospital) and the Hannover "
                  "COVID-19 repository (a different hospital than the Cohen images used in training)",
        "paper": "the COVID-19 Radiography Database (Chowdhury et al.)"}[profile]
nb.glue_markdown("external_desc", f"In this build the external set is {desc}.")
nb.glue_table("external_sources", ext_frame.groupby(["label", "source"]).size().rename("images").to_frame())

# %% [markdown]
# ```{glue:md} external_desc
# :format: myst
# ```
#
# ```{glue:figure} external_sources
# :name: tbl-ext-sources
# External images per class and source before de-duplication.
# ```

# %% [markdown]
# ## De-duplication against every development image

# %%
pairs = cxr.find_duplicates([r.path for r in external], [r.path for r in dev], max_distance=12)
dup_paths = {c for c, _, _ in pairs}
kept = [r for r in external if r.path not in dup_paths]
removed = ext_frame[ext_frame.path.isin({str(p) for p in dup_paths})].groupby("label").size()
removed_table = (ext_frame.groupby("label").size().rename("before").to_frame()
                 .join(removed.rename("removed")).fillna(0).astype(int))
removed_table["kept"] = removed_table.before - removed_table.removed
nb.glue("n_removed", int(removed_table.removed.sum()))
nb.glue("n_external_before", int(removed_table.before.sum()))
nb.glue_table("dedup_table", removed_table)

fig, axes = plt.subplots(2, max(1, min(4, len(pairs))), figsize=(10, 5), squeeze=False)
for k, ax in enumerate(axes.T):
    ax[0].axis("off"), ax[1].axis("off")
    if k < len(pairs):
        c, r, d = pairs[k]
        ax[0].imshow(cxr.load_cxr(c, channels=1), cmap="gray")
        ax[0].set_title(f"external (distance {d})", fontsize=8)
        ax[1].imshow(cxr.load_cxr(r, channels=1), cmap="gray")
        ax[1].set_title("development", fontsize=8)
if not pairs:
    axes[0, 0].text(0.5, 0.5, "no near-duplicates found", ha="center")
fig.tight_layout()
nb.glue_figure("dup_pairs", fig)
removed_table

# %% [markdown]
# ```{glue:figure} dedup_table
# :name: tbl-dedup
# External images per class before and after removing near-copies of development images.
# ```
#
# {glue:text}`n_removed` of {glue:text}`n_external_before` external images were near-copies of
# development images and were removed before sampling.
#
# ```{glue:figure} dup_pairs
# :name: fig-dup-pairs
# Examples of removed pairs (top: external image; bottom: its development twin).
# ```

# %% [markdown]
# ## Accuracy per class

# %%
sample_ext = cxr.subsample_per_class(kept, S["external_per_class"], seed=seed)
model = cxr.load_trained(work / "cxr_resnet50.pt", trained["checkpoint_sha256"])
y, probs = cxr.evaluate_records(model, sample_ext, size=S["size"])
yhat = probs.argmax(1)
paper_ext = paper_values.CXR["external_accuracy_percent"]
for cls, pct in paper_ext.items():
    nb.glue_text(f"reported_ext_acc_{cls}", pct / 100, "{:.2f}")
rows = []
for cls in cxr.CLASSES:
    k_idx = y == cxr.CLASSES.index(cls)
    n = int(k_idx.sum())
    if n == 0:
        continue
    k = int((yhat[k_idx] == y[k_idx]).sum())
    lo, hi = evaluate.wilson_ci(k, n)
    rows.append({"class": cls, "n": n, "correct": k, "accuracy": k / n, "ci_lo": lo, "ci_hi": hi,
                 "paper (%)": paper_ext.get(cls, np.nan)})
    nb.glue(f"ext_acc_{cls}", k / n)
    nb.glue_text(f"lp_ext_acc_{cls}", f"{k / n:.3f} ({lo:.3f}–{hi:.3f}), n = {n}")
for cls in ("covid19", "pneumonia", "healthy"):
    if f"ext_acc_{cls}" not in nb.values:
        nb.glue_text(f"lp_ext_acc_{cls}", None)
acc_table = pd.DataFrame(rows).set_index("class")
nb.glue_table("external_accuracy", acc_table.round(3))
acc_table.round(3)

# %% [markdown]
# ```{glue:figure} external_accuracy
# :name: tbl-ext-acc
# Accuracy per class on the de-duplicated external images (up to 200 per class), with Wilson 95 %
# intervals, next to the paper's external accuracies (quoted). The paper's external images are
# partly copies of its training images; ours are not.
# ```

# %%
nb.finish()
