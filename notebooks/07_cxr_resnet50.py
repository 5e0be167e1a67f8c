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
# radiograph) — with the lower layers frozen, discriminative learning rates from 10⁻⁴ to 10⁻²,
# and contrast augmentation of the COVID-19 class only, and reports 99 % precision, recall and F1
# (seed paper, Table 1). This chapter rebuilds that pipeline, splits by patient, reports every rate
# with a confidence interval, and first asks how much of the task can be solved without looking at
# any pathology. Choices the paper leaves open are listed in {ref}`notes-cxr`.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None
# repro-inputs: calibration   (the synthetic profile shows the calibrated seed spread)

# %% tags=["remove-input"]
import collections
from pathlib import Path

from reprolib import book, config, confound, cxr, cxr_model, cxr_sources, evaluate, modelfile, pages, provenance
from reprolib.figures import cxr as fig_cxr

provenance.seed_everything(seed)
nb = book.Notebook("07_cxr_resnet50", profile, results_dir)
nb.banner()
S = config.load_profile(profile)["cxr"]
work = Path(work_dir or config.work_dir(profile))

# %% [markdown]
# ## Data and a patient-level split
#
# Development images come from three sources: Kermany's paediatric healthy and pneumonia images
# (children aged one to five), the Cohen collection's COVID-19 and adult non-COVID images (bacterial,
# viral and other pneumonia, no finding), and CT slices for "not certain". The Cohen collection also
# holds pictures of the Hannover hospital, whose every patient forms the external set of chapter 08:
# they are found by their metadata (location or source URL), cross-checked by perceptual hash against
# the Hannover images, and kept out of development, so that no Hannover patient is trained on.

# %%
src = cxr_sources.profile_sources(profile, data_dir) if profile != "synthetic" else None
pages.cxr_sources(nb, src)
dev, external = cxr_sources.profile_records(profile, data_dir, work, sources=src)
dev = cxr.patient_split(dev, test_frac=0.0, val_frac=S["val_frac"], seed=seed)
counts = cxr.records_frame(dev).pivot_table(index=["label", "source", "age_group"], columns="split", values="path",
                                            aggfunc="count", fill_value=0)
pages.cxr_split(nb, dev, counts)
_ = cxr.save_split(work / cxr.SPLIT_FILE, dev, seed)  # `repro retrain cxr` holds out exactly these validation images

# %% [markdown]
# Hannover originals in the Cohen collection: {glue:text}`n_hannover_origin_metadata` found by metadata,
# {glue:text}`n_hannover_origin_hash` of them confirmed as the same picture by perceptual hash (the others
# are other pictures of the same patients), {glue:text}`n_hannover_origin_hash_only` more found by hash
# alone; they belong to {glue:text}`n_hannover_origin_patients` Hannover patients and are all excluded.
# The training split holds {glue:text}`n_train_covid19` COVID-19 images.
#
# :::{table} Development images per class, source, age group and split. Patients never cross the split.
# :name: tbl-cxr-split
# ```{glue:md} split_table
# :format: myst
# ```
# :::
#
# {glue:text}`n_train` training and {glue:text}`n_val` validation images; patients shared between them:
# {glue:text}`patient_overlap`. The `not_certain` class holds inputs that are not a frontal chest
# radiograph: axial CT slices from {glue:text}`n_not_certain_patients` patients (the CC-CCII PNG slices
# and, where chapter 02 preprocessed other CT volumes, slices rendered from them at the lung window),
# so that it, too, can be split by patient.

# %% [markdown]
# ## The confound audit: how far do non-medical cues go?
#
# The pneumonia and healthy images come from a paediatric hospital (children aged one to five); the
# COVID-19 images are of adults from other hospitals. Image size, file size, brightness and format
# differ by source. A logistic regression on those cues alone — no pixels of the lungs — shows how
# much of the task is source recognition. It is cross-validated by patient.

# %%
pages.confound(nb, confound.confound_audit(dev, seed=seed))
adults = [r for r in dev if r.age_group == "adult"]
has_adult_controls = len({r.label for r in adults}) > 1
pages.adult_confound(nb, confound.confound_audit(adults, seed=seed) if has_adult_controls else None)

# %% [markdown]
# :::{table} Out-of-fold recall and one-vs-rest ROC AUC of a classifier that sees only image geometry, intensity statistics and file size (classes with a single patient cannot be cross-validated by patient and are left out).
# :name: tbl-confound
# ```{glue:md} confound_table
# :format: myst
# ```
# :::
#
# On these cues alone the accuracy is {glue:text}`confound_accuracy:.3f` (always answering the largest
# class: {glue:text}`confound_majority:.3f`), and COVID-19 against the rest reaches a ROC AUC of
# {glue:text}`lp_confound_covid_auc`. Among adults only — COVID-19 against the adult non-COVID images of
# the Cohen collection, {glue:text}`confound_adult_n` images — the same cues reach
# {glue:text}`confound_covid_auc_adult`. Whatever the network learns, a near-perfect COVID-19 score on
# such data cannot by itself show that it learned pathology.

# %% [markdown]
# ## Training

# %%
mode, reason = cxr_model.weights_mode(S["weights"])
capped = cxr.subsample_per_class([r for r in dev if r.split == "train"], S["per_class_max"], seed=seed,
                                 keep_sources=[cxr_sources.COHEN])  # every adult image stays
train_set = cxr.balance_by_augmentation(capped, target="covid19", seed=seed)
model, losses = cxr.fit_cxr(train_set, size=S["size"], epochs=S["epochs"], batch=S["batch"], weights=mode,
                            freeze_until=S["freeze_until"], lrs=S["lrs"], seed=seed, device=device)
sha = modelfile.save_model(work / "cxr_resnet50.pt", model, {"profile": profile, "classes": list(cxr.CLASSES)})
pages.cxr_training(nb, S, mode, reason, losses, sha, collections.Counter(r.label for r in train_set))

# %% [markdown]
# ```{glue:md} weights_banner
# :format: myst
# ```
#
# The model was trained from {glue:text}`weights_phrase` for {glue:text}`epochs` epochs at
# {glue:text}`image_size` px (the paper: 15 epochs at 350 px) on the training images, with the
# COVID-19 class oversampled by contrast augmentation (factor {glue:text}`contrast_range`, probability
# {glue:text}`contrast_p`) towards the size of the largest class. Training images per class after
# balancing: {glue:text}`n_train_balanced`.

# %%
y, probs = cxr.evaluate_records(model, [r for r in dev if r.split == "val"], size=S["size"])
report = pages.cxr_validation(nb, y, probs.argmax(1), seed)
pages.age_groups(nb, [r for r in dev if r.split == "val"], y, probs.argmax(1))
pages.paper_comparison(nb, report)
pages.seed_spread(nb, {"macro_f1": "macro F1", **{f"f1_{c}": f"F1 {c}" for c in cxr.CLASSES}})

# %% tags=["remove-input"]
cm = evaluate.confusion(y, probs.argmax(1), list(range(len(cxr.CLASSES))))
cm.index = cm.columns = list(cxr.CLASSES)
nb.glue_figure("confusion", fig_cxr.confusion_heatmap(cm))

# %% [markdown]
# **Did it learn?** The model **{glue:text}`cxr_learned_word`**: {glue:text}`cxr_learned_reason`. Its
# macro-averaged F1 over the classes present in validation is {glue:text}`lp_macro_f1` (95 % bootstrap
# interval; the paper's average: {glue:text}`reported_macro_f1`).
#
# ```{glue:md} seed_spread
# :format: myst
# ```
#
# :::{table} Validation metrics per class with 95 % intervals (Wilson for precision, recall and one-vs-rest accuracy; bootstrap over images for F1). The one-vs-rest accuracy is not the paper's "accuracy", which equals its precision.
# :name: tbl-cxr-report
# ```{glue:md} val_report
# :format: myst
# ```
# :::
#
# ```{glue:figure} confusion
# :name: fig-cxr-confusion
# Confusion matrix on the validation images (rows: true class).
# ```
#
# :::{table} The seed paper's per-class precision, recall and F1 (Table 1, per cent) beside this build's, in the same units, with 95 % intervals and the number of validation images of the class.
# :name: tbl-cxr-paper-vs-ours
# ```{glue:md} paper_vs_ours
# :format: myst
# ```
# :::
#
# The paper's table also prints an "accuracy" column that repeats its precision, and confusion counts
# that do not add up to the stated 2,418 validation images (see the claims ledger).
#
# **COVID-19 or adulthood?** Every COVID-19 image is an adult's; the Kermany healthy and pneumonia
# images are children's. On the adult non-COVID validation images the model keeps COVID-19 away with
# specificity {glue:text}`lp_covid_spec_adult`. A model that had learned "adult" instead of "COVID-19"
# would call them COVID-19.
#
# :::{table} Validation metrics by age group: accuracy, and the COVID-19 specificity (non-COVID images not called COVID-19), with Wilson 95 % intervals.
# :name: tbl-cxr-age
# ```{glue:md} age_table
# :format: myst
# ```
# :::

# %% [markdown]
# ## Where does the network look?

# %% tags=["hide-input"]
val = [r for r in dev if r.split == "val"]
nb.glue_figure("gradcam", fig_cxr.gradcam_grid(model, val, y, probs.argmax(1), cxr.CLASSES, S["size"]))

# %% [markdown]
# ```{glue:figure} gradcam
# :name: fig-cxr-gradcam
# Grad-CAM heat maps (last residual stage) for correctly and wrongly classified validation images of
# each class; the title gives the true class and the prediction.
# ```
#
# The papers' claims this chapter checks, with their verdicts: {ref}`ledger-07`.

# %% tags=["remove-cell"]
nb.finish()
