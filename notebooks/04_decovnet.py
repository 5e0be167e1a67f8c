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
# # 04 · DeCoVNet: the paper's numbers and the network
#
# DeCoVNet classifies a whole chest CT as COVID-19 positive or negative from a two-channel volume:
# the windowed CT and its lung mask, cropped to the lungs and resized to 224×336 in-plane, with a
# variable number T of 1 mm slices. This chapter first re-derives the paper's headline statistics
# from the per-volume probabilities the authors released, then checks our re-implementation of the
# network against the official code's layer table, and finally trains it on this build's data —
# and says whether it learned anything.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None
# repro-inputs: calibration   (the synthetic profile shows the calibrated seed spread)

# %% tags=["remove-input"]
from functools import partial
from pathlib import Path

from reprolib import book, cohort, config, crossfit, evaluate, inputs, models, pages, provenance, train
from reprolib.figures import classifier as fig_clf, diagrams

provenance.seed_everything(seed)
nb = book.Notebook("04_decovnet", profile, results_dir)
nb.banner()
prof = config.load_profile(profile)
work = Path(work_dir or config.work_dir(profile))
pages.quoted_decovnet(nb)

# %% [markdown]
# ## The paper's statistics, recomputed from the released probabilities
#
# The authors released one line per test volume: its id, p(negative), p(COVID-19) and the true
# label (`20200212-auc95p9.txt`, CC BY-NC-SA 4.0). The CT volumes themselves are private, so this
# file is as far as anyone can re-check the headline numbers; the numbers quoted below come from
# the TMI abstract.

# %%
released = inputs.role_files(profile, "decovnet-release", "released_predictions", data_dir)  # [] when synthetic
stats = evaluate.paper_statistics(evaluate.read_released_predictions(released[0]), seed=seed) if released else None
pages.released_statistics(nb, stats)

# %% [markdown]
# ```{glue:md} released_skipped
# :format: myst
# ```
#
# The released file holds {glue:text}`rel_n` volumes ({glue:text}`rel_n_pos` COVID-19,
# {glue:text}`rel_n_neg` negative; the paper's test set: {glue:text}`reported_n_test`). They give a ROC
# AUC of {glue:text}`rel_roc_auc` (95 % bootstrap interval {glue:text}`rel_roc_auc_ci_lo` to
# {glue:text}`rel_roc_auc_ci_hi`, 2000 resamples of volumes; the TMI abstract: {glue:text}`reported_roc_auc`),
# an average precision of {glue:text}`rel_average_precision` ({glue:text}`rel_average_precision_step` with
# the official code's step rule; abstract: {glue:text}`reported_pr_auc`) and an accuracy of
# {glue:text}`rel_accuracy` at p > 0.5 (abstract: {glue:text}`reported_accuracy`). The confusion counts
# at that threshold are TP {glue:text}`rel_tp`, FN {glue:text}`rel_fn`, TN {glue:text}`rel_tn` and
# FP {glue:text}`rel_fp`.
#
# **The mislabelled "PPV" and "NPV".** The abstract's "PPV" ({glue:text}`reported_ppv_as_labelled`)
# and "NPV" ({glue:text}`reported_npv_as_labelled`) equal the sensitivity ({glue:text}`rel_sensitivity`)
# and the specificity ({glue:text}`rel_specificity`). The true positive predictive value is
# {glue:text}`rel_ppv` and the true negative predictive value {glue:text}`rel_npv`.
#
# **Patients, repeats and saturation.** Scoring each of the {glue:text}`rel_patient_n` patients by the
# highest probability of their scans gives a ROC AUC of {glue:text}`rel_patient_roc_auc`.
# {glue:text}`rel_saturated_n` volumes have p = 1 exactly, {glue:text}`rel_saturated_n_pos` of them
# positive. The training list was not released; reading repeat scans from the ids alone (a letter
# suffix marks a repeat), {glue:text}`rel_overlap_volumes` test volumes of
# {glue:text}`rel_overlap_patients` patients may have a sibling scan in the training set. Without them
# ({glue:text}`rel_no_overlap_n` volumes) the ROC AUC is {glue:text}`rel_no_overlap_roc_auc` and the
# accuracy {glue:text}`rel_no_overlap_accuracy`.
#
# :::{table} The TMI abstract's statistics beside the same statistics recomputed from the released file.
# :name: tbl-released
# ```{glue:md} released_table
# :format: myst
# ```
# :::
#
# :::{table} Operating points on the released ROC curve: the best sensitivity at a minimum specificity and the best specificity at a minimum sensitivity, with the probability threshold that reaches it.
# :name: tbl-operating
# ```{glue:md} operating_points
# :format: myst
# ```
# :::

# %% tags=["remove-input"]
nb.glue_figure("released_curves", fig_clf.released_curves(stats))

# %% [markdown]
# ```{glue:figure} released_curves
# :name: fig-released-curves
# ROC and precision–recall curves of the released test probabilities, with the 0.5 operating
# point and the Youden point (threshold {glue:text}`rel_youden_threshold`: sensitivity
# {glue:text}`rel_youden_sensitivity`, specificity {glue:text}`rel_youden_specificity`).
# ```

# %% [markdown]
# ## The network
#
# `reprolib.models.DeCoVNet` follows the official code where it departs from the paper's prose
# (see {ref}`notes-decovnet`): a 3D stem, two bottleneck residual blocks with a temporal max-pool
# between them, a "progressive classifier" of three 3D convolutions with adaptive max-pooling, and
# two stacked linear layers.

# %%
net = pages.network_summary(nb)
nb.glue_figure("architecture", diagrams.architecture_diagram(models.model_summary(net, (1, 2, 100, 224, 336))))

# %% [markdown]
# ```{glue:figure} architecture
# :name: fig-architecture
# DeCoVNet's stages for an input of 2 × 100 × 224 × 336 (channels × slices × rows × columns): the
# output shape of each stage and its parameters; box heights grow with the logarithm of the output size.
# ```
#
# :::{table} Per-stage output shape (channels × T × H × W), parameters and multiply–accumulates for an input of 1×2×100×224×336, traced on PyTorch's meta device (no arithmetic).
# :name: tbl-layers
# ```{glue:md} layer_table
# :format: myst
# ```
# :::
#
# The network has {glue:text}`lp_params` parameters (the official code's active path:
# {glue:text}`reported_params`; equal: {glue:text}`params_match_word`), and its stem convolution has a
# {glue:text}`stem_kernel` kernel as the seed paper states. Its cost grows linearly with the number of
# slices: {glue:text}`gmac_slope:.4f` GMAC per slice plus a fixed {glue:text}`gmac_intercept:.2f` GMAC
# for the progressive classifier, {glue:text}`gmac_t100:.1f` GMAC at T = 100.

# %% [markdown]
# ## Our run: DeCoVNet trained in this build
#
# The paper's volumes are private, so our own training run uses what each profile has. The
# `synthetic` profile builds a dedicated cohort of phantoms in memory, with larger findings than
# chapter 01's so that a few hundred CPU steps suffice, and holds out the last volumes. The
# `sample` profile uses the real volumes of chapter 02 with chapter 03's U-Net masks and
# leave-one-patient-out folds, so every volume is predicted once by a network that never saw its
# patient. No model selection: each network keeps its last weights.

# %%
items, cases, folds, note = cohort.build_classifier_cohort(prof, seed, work)
pages.cohort_summary(nb, items, folds, note)
pages.classifier_settings(nb, prof["classifier"])

# %% [markdown]
# The cohort: {glue:text}`our_cohort` ({glue:text}`our_n_pos` COVID-19, {glue:text}`our_n_neg`
# negative; {glue:text}`our_T_min` to {glue:text}`our_T_max` input slices per volume).
#
# :::{table} Training settings of this profile beside the official code's. Smaller inputs and fewer slices keep a CPU run within minutes; the progressive classifier's pooling grids are scaled with the input, so the parameter count is unchanged.
# :name: tbl-our-settings
# ```{glue:md} our_settings
# :format: myst
# ```
# :::

# %%
C = prof["classifier"]
cfg = train.TrainConfig(epochs=C["epochs"], lr=C["lr"], augment=C["augment"], seed=seed, device=device,
                        validate_every=1)
make = partial(models.DeCoVNet, proclf_grids=models.proclf_grids_for(C["hw"]), fc_init=C["fc_init"])
with nb.timer("our_train_seconds"):
    oof, hists, nets = crossfit.cross_fit(make, items, folds, cfg)
oof.to_csv(work / "decovnet_predictions.csv", index=False)
crossfit.save_fold_models(work, nets, items, folds, {"profile": profile, "hw": list(C["hw"]), "z_step": C["z_step"],
                                                  "fc_init": C["fc_init"]})

# %% tags=["remove-input"]
ours = pages.trained_decovnet(nb, oof, crossfit.predict_folds(nets, items, folds, bn_eval=False), seed)
nb.glue_figure("our_scores", fig_clf.score_strip(oof.p_covid, oof.label))
nb.glue_figure("our_curves", fig_clf.training_curves(hists, ours, stats))
pages.seed_spread(nb, {"our_roc_auc": "ROC AUC", "our_accuracy": "accuracy", "our_sensitivity": "sensitivity",
                       "our_specificity": "specificity"})

# %% [markdown]
# On its {glue:text}`our_n` held-out predictions our DeCoVNet reaches a ROC AUC of
# {glue:text}`lp_our_auc` (95 % bootstrap interval), an average precision of {glue:text}`lp_our_ap` and
# an accuracy of {glue:text}`lp_our_acc` at p > 0.5 (sensitivity {glue:text}`our_sensitivity:.3f`,
# specificity {glue:text}`our_specificity:.3f`). Training took {glue:text}`our_train_seconds:.0f` s.
#
# **Did it learn?** The model **{glue:text}`our_learned_word`**: {glue:text}`our_learned_reason`. A
# model is counted as learned only when the lower end of its AUC interval is above 0.5 and its
# held-out probabilities spread over at least 0.2; otherwise its accuracy and AUC are not evidence
# of anything, however they compare with the paper's, and the [claims ledger](10_claims_ledger.ipynb)
# says "not learned at this n".
#
# ```{glue:figure} our_scores
# :name: fig-our-scores
# Every held-out volume's p(COVID) by its true class; the dashed line is the 0.5 threshold.
# ```
#
# ```{glue:md} seed_spread
# :format: myst
# ```
#
# ```{glue:figure} our_curves
# :name: fig-our-curves
# Our DeCoVNet run: training loss per epoch, the held-out AUC after each epoch (shown, never used to
# choose weights) and the ROC curve of the held-out predictions beside the released one.
# ```
#
# **BatchNorm at test time.** The official test script never switches BatchNorm to evaluation mode,
# so each test volume is normalised with its own statistics. Predicting our held-out volumes that way
# gives a ROC AUC of {glue:text}`lp_our_auc_bn_train`, against {glue:text}`lp_our_auc` with the running
# statistics this book uses.
#
# These numbers are not comparable with the paper's: other data (phantoms or a handful of public
# volumes instead of 499 + 131 private scans), smaller inputs and a far shorter schedule.

# %% [markdown]
# ## Inference time
#
# How long DeCoVNet, the U-Net and the whole pipeline take on this machine, beside the paper's
# {glue:text}`reported_seconds_per_ct_gpu` s per CT on a GPU, is measured by `make bench` and shown in
# the [Performance](09_performance.ipynb) chapter.
#
# The papers' claims this chapter checks, with their verdicts: {ref}`ledger-04`.

# %% tags=["remove-cell"]
nb.finish()
