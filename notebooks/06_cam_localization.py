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
# # 06 · Weakly supervised lesion localisation
#
# DeCoVNet localises lesions without lesion labels by fusing two maps: the network's class
# activation map (CAM) on its second residual block, and an unsupervised "3DCC" response that fires
# where the lung mask is fragmented (tiles of 6×6 pixels holding at least three separate fragments
# with a foreground fraction near one half). The CAM component that overlaps the largest 3DCC
# component most is the predicted lesion. It counts as a *hit* when its hit point — the
# lexicographic median voxel in the official code, the "centre" in the paper's wording — lies inside
# a marked lesion; the details are in {ref}`notes-localisation`. This chapter builds the unsupervised
# half and the metric on data with known lesions, then runs the whole chain with chapter 04's DeCoVNet.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None
# repro-inputs: calibration   (the synthetic profile shows the calibrated seed spread)

# %% tags=["remove-input"]
from pathlib import Path

from reprolib import book, cohort, config, localize_cohort, pages, provenance
from reprolib.figures import localisation as fig_loc

provenance.seed_everything(seed)
nb = book.Notebook("06_cam_localization", profile, results_dir)
nb.banner()
work = Path(work_dir or config.work_dir(profile))
index = cohort.load_index(work / "ct_index.json")

# %% [markdown]
# ## The 3DCC response on lung masks

# %%
cc, example = localize_cohort.r3dcc_survey(index, with_truth=profile == "synthetic")
pages.r3dcc_survey(nb, cc, profile)
nb.glue_figure("cc3d_figure", fig_loc.r3dcc_example(example))

# %% [markdown]
# :::{table} Voxels where the 3DCC response fires and the size of its largest 3D component (R3dcc), per volume (pseudo-label lung masks of chapter 02, 6×6 tiles, slices 10–80 %); on phantoms, whether R3dcc's median voxel hits a lesion and the chance that a random lung voxel does.
# :name: tbl-cc3d
# ```{glue:md} cc3d_table
# :format: myst
# ```
# :::
#
# On phantoms, where the lesions are known voxel by voxel, R3dcc alone hits a lesion with rate
# {glue:text}`lp_r3dcc_hit`, against {glue:text}`lp_r3dcc_random` for a random lung voxel. The
# phantoms' COVID-19 lesions carry thickened septa (crazy paving) denser than the −320 HU lung
# threshold, which cut the unsupervised lung mask into fragments where they reach the pleura, as
# consolidation does in real scans; clear lungs leave the mask whole (R3dcc is empty in
# {glue:text}`r3dcc_empty_negatives`). R3dcc says where the mask is fragmented, not whether the scan
# is COVID-19 positive; the CAM supplies that. Real lung masks have no voxel-level lesion truth, so
# in the `sample` profile R3dcc is shown, not scored ("not available" above).
#
# ```{glue:figure} cc3d_figure
# :name: fig-cc3d
# R3dcc (orange) on one volume, with the ground-truth lesions (cyan) where they are known; right, the
# coronal mean projection of the CT (feet at the bottom) with the outlines of both projected.
# ```

# %% [markdown]
# ## CAM + R3dcc with the trained DeCoVNet
#
# Every held-out COVID-19 volume of chapter 04 is localised by the model of its own fold, which never
# saw it. The CAM (the paper's linearised head, or Grad-CAM on the same features) is thresholded at
# the top 5 % of its histogram, gated by intensity and by the lung's slice range, and split into at
# most nine 3D components; the component overlapping R3dcc most is the predicted lesion (the largest
# when none overlaps). R3dcc is computed on the full-resolution lung mask with tiles of 6 pixels (the
# code) and 7 (the paper). Phantoms are scored against their exact lesion masks. The real
# COVID-CT-MD volumes only carry per-slice infection labels: there a hit needs the predicted lesion's
# hit point on an infected slice **and inside the lung mask**, and the chance that a random lung
# voxel of an infected slice hits stands beside every rate.

# %%
items, cases, folds = cohort.load_classifier_cohort(work / "classifier_cohort.npz")
nets = localize_cohort.load_fold_models(work, items, folds)
labels = localize_cohort.covid_ct_md_slice_labels(profile, data_dir, index)
z_step = int(config.load_profile(profile)["classifier"]["z_step"])
per, shown = localize_cohort.localise_held_out(nets, items, cases, folds, z_step, labels)
pages.hit_rates(nb, per, kind="voxel" if profile == "synthetic" else "slice-level")
pages.seed_spread(nb, {"cam_hit_rate": "hit rate, linearised CAM", "gradcam_hit_rate": "hit rate, Grad-CAM",
                       "cam_only_hit_rate": "hit rate, largest CAM component", "cam_margin": "hit rate minus chance"})

# %% [markdown]
# Of the {glue:text}`cam_n_scored` held-out COVID-19 volumes with ground truth, DeCoVNet calls
# {glue:text}`cam_pp_phrase` positive (p > 0.5). On those — the seed paper's population — the fused
# prediction hits with rate {glue:text}`lp_cam_hit_pp`, {glue:text}`cam_above_word` the
# {glue:text}`lp_cam_random_pp` of a random lung voxel; the largest CAM component alone reaches
# {glue:text}`lp_cam_only`, the same chain with Grad-CAM {glue:text}`lp_gradcam`, and 7-pixel tiles
# {glue:text}`lp_cam_w7`. Over every annotated volume (the official code's population) the rate is
# {glue:text}`lp_cam_hit_all`, against {glue:text}`lp_cam_random_all` for a random lung voxel. Hit
# kind: {glue:text}`cam_hit_kind`.
#
# R3dcc was empty in the input frame of {glue:text}`r3dcc_empty_phrase`: there the prediction is the
# largest CAM component and the fusion with 3DCC plays no part. The linearised CAM predicted no lesion
# at all in {glue:text}`cam_empty_phrase`: the linearisation ignores the head's ReLUs and max-pools,
# so the sign of its channel weights is not tied to the evidence for COVID-19, and when the map is
# non-positive everywhere the rectified map is empty and the volume is a miss (Grad-CAM, which
# weights the same features by the network's actual gradient, does not have this failure). The predicted hit point lay outside
# the lung mask in {glue:text}`cam_points_outside_phrase`; such a point is a miss whatever its slice.
# Whether these rates mean anything depends on chapter 04's verdict on the classifier: a CAM of a
# network that did not learn points at noise.
#
# ```{glue:md} seed_spread
# :format: myst
# ```
#
# :::{table} Hit rates per CAM variant (linearised head, Grad-CAM) and tile size of the 3DCC response (6 in the code, 7 in the paper), over the volumes DeCoVNet predicts positive and over every annotated volume, with Wilson 95 % intervals; beside each, the mean chance that a random lung voxel hits, the centroid instead of the median voxel, the largest CAM component without R3dcc, and the median Dice (voxel truth only).
# :name: tbl-hit
# ```{glue:md} hit_table
# :format: myst
# ```
# :::

# %% tags=["remove-input"]
nb.glue_figure("cam_figure", fig_loc.cam_examples(shown))

# %% [markdown]
# ```{glue:figure} cam_figure
# :name: fig-cam
# Held-out COVID-19 volumes, hits first and then misses (linearised CAM, 6-pixel tiles): the input
# slice through the predicted lesion's hit point with the CAM over it; the predicted lesion with the
# lung mask, R3dcc and the truth; coronal view (feet at the bottom): the CAM's maximum-intensity
# projection over the mean projection of the CT, the projected prediction (red) and truth (cyan; for
# the real volumes the infected slice range is shaded), and the hit point's slice (dotted).
# ```
#
# :::{table} Per volume (linearised CAM, 6-pixel tiles): its fold, DeCoVNet's probability, R3dcc and predicted-lesion sizes in input voxels, whether the hit point lies in the lung mask, the hits (median voxel, centroid, largest CAM component alone), the random-voxel chance, Dice (voxel truth only) and the seconds the chain took.
# :name: tbl-cam
# ```{glue:md} cam_table
# :format: myst
# ```
# :::

# %% [markdown]
# ## The hit metric on real lesion shapes
#
# The MosMedData masks are real ground-glass and consolidation lesions (without their CT). Used
# unmodified, they check the metric itself: a mask's own lexicographic median voxel must hit it,
# while its centroid may not (a crescent's centre lies outside the crescent).

# %%
metric = localize_cohort.self_hit_table(localize_cohort.lesion_masks(profile, data_dir, work))
pages.self_hits(nb, metric)

# %% [markdown]
# :::{table} Self-hit rate of each lesion mask: predicting a mask equal to the ground truth, scored with the lexicographic median voxel and with the centroid, on {glue:text}`n_gt_masks` masks with lesions.
# :name: tbl-metric
# ```{glue:md} metric_table
# :format: myst
# ```
# :::
#
# The median voxel always lies in the mask (self-hit rate {glue:text}`self_hit_median:.3f`); the
# centroid does only in {glue:text}`self_hit_centroid:.3f` of the cases, because lesions are
# scattered and curved. The choice of hit point matters for any reported hit rate. The papers'
# claims this chapter checks, with their verdicts: {ref}`ledger-06`.

# %% tags=["remove-cell"]
nb.finish()
