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
# reports accuracies of 97 % (COVID-19), 85 % (pneumonia) and 98 % (normal). That database contains
# copies of the Kermany images the model was trained on, so its "external" set partly re-tests the
# training source. Here, before sampling, every external image is compared with every development
# image by perceptual hash (256-bit pHash, Hamming distance ≤ 12) and near-copies are removed.

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
from pathlib import Path

from reprolib import book, config, cxr, cxr_sources, dedup, modelfile, pages, provenance
from reprolib.figures import cxr as fig_cxr

provenance.seed_everything(seed)
nb = book.Notebook("08_external_validation", profile, results_dir)
nb.banner()
S = config.load_profile(profile)["cxr"]
work = Path(work_dir or config.work_dir(profile))
trained = json.loads((Path(results_dir or config.results_dir(profile)) / "07_cxr_resnet50.json").read_text())["values"]

# %% [markdown]
# ## Which images count as external

# %%
dev, external = cxr_sources.profile_records(profile, data_dir, work)
pairs = dedup.find_duplicates([r.path for r in external], [r.path for r in dev], max_distance=12)
kept, removed_table, ext_frame = dedup.removal_summary(external, pairs)
pages.external_sets(nb, profile, ext_frame, removed_table, len(pairs))
if pairs:
    nb.glue_figure("dup_pairs", fig_cxr.duplicate_pairs(pairs))

# %% [markdown]
# In this build the external set is {glue:text}`external_desc`.
#
# :::{table} External images per class and source before de-duplication.
# :name: tbl-ext-sources
# ```{glue:md} external_sources
# :format: myst
# ```
# :::
#
# {glue:text}`n_removed` of {glue:text}`n_external_before` external images were near-copies of
# development images and were removed before sampling.
#
# :::{table} External images per class before and after removing near-copies of development images.
# :name: tbl-dedup
# ```{glue:md} dedup_table
# :format: myst
# ```
# :::
#
# ```{glue:md} dup_pairs_block
# :format: myst
# ```

# %% [markdown]
# ## Accuracy per class

# %%
sample_ext = cxr.subsample_per_class(kept, S["external_per_class"], seed=seed)
model, _ = modelfile.load_model(work / "cxr_resnet50.pt", trained["checkpoint_sha256"])
y, probs = cxr.evaluate_records(model, sample_ext, size=S["size"])
pages.external_accuracy(nb, sample_ext, y, probs, S["external_per_class"])
pages.seed_spread(nb, {f"ext_acc_{c}": f"accuracy {c}" for c in cxr.CLASSES})

# %% [markdown]
# :::{table} Accuracy per class on the de-duplicated external images (up to {glue:text}`external_per_class` per class), with Wilson 95 % intervals, next to the paper's external accuracies (quoted). The paper's external images are partly copies of its training images; ours are not.
# :name: tbl-ext-acc
# ```{glue:md} external_accuracy
# :format: myst
# ```
# :::
#
# Reading these numbers: in the `sample` profile the COVID-19 row is the external set — every Hannover
# patient, none of whom was trained on — and it holds COVID-19 only, so it measures sensitivity, not
# specificity (chapter 07 gives the specificity on adult non-COVID images). Scored once per patient
# (the mean of a patient's probabilities), {glue:text}`lp_ext_patient_acc_covid19` are called COVID-19.
# The healthy and pneumonia rows come from the Kermany test split: other children of the training
# hospital, a same-source held-out set, not an external one. A class that holds images of one source
# measures how well the model recognises that source as much as the disease.
#
# ```{glue:md} seed_spread
# :format: myst
# ```
#
# The papers' claims this chapter checks, with their verdicts: {ref}`ledger-08`.

# %% tags=["remove-cell"]
nb.finish()
