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
# # Claims ledger
#
# Every numeric claim of the two seed papers — and of the TMI abstract and the official DeCoVNet
# code where this book quotes them — with the value this build re-derives or measures and a
# verdict. The rows are data (`reprolib/claims.yml`); the verdicts are computed from this build's
# results by the rules of `reprolib.claims`, never typed:
#
# reproduced
# : re-derived from the authors' released outputs or from the paper's own printed numbers, and
#   equal to the printed value within its printed precision; or a setting this build uses as printed.
#
# consistent
# : a model trained in this build, whose 95 % interval contains the printed value.
#
# differs
# : the re-derived value, the interval or the setting disagrees with the printed value.
#
# not reproducible offline
# : needs what this build cannot have — a GPU, ImageNet weights, the full dataset or data never released.
#
# phantoms only
# : measured on procedural phantoms (the synthetic profile), which say nothing about patients.
#
# not learned at this n
# : the model this build trained did not learn (its held-out AUC interval contains 0.5, its
#   scores barely spread, or its balanced accuracy is not above chance), so its numbers are not evidence.
#
# not addressed
# : nothing in this build measures it, or it is a figure the paper quotes from other work.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %% tags=["remove-input"]
from reprolib import book, claims, config
from reprolib.figures import diagrams

nb = book.Notebook("10_claims_ledger", profile, results_dir)
nb.banner()
verdicts = claims.ledger(claims.load_results(results_dir or config.results_dir(profile)), profile)
claims.publish(nb, verdicts)
nb.glue_figure("pipeline", diagrams.pipeline_diagram())  # shown on the landing page and the methods page

# %% [markdown]
# The ledger holds {glue:text}`n_rows` claims: {glue:text}`n_reproduced` reproduced,
# {glue:text}`n_consistent` consistent, {glue:text}`n_differs` differ,
# {glue:text}`n_not_reproducible_offline` not reproducible offline, {glue:text}`n_phantoms_only`
# on phantoms only, {glue:text}`n_not_learned_at_this_n` not learned at this n and
# {glue:text}`n_not_addressed` not addressed.
#
# :::{table} Claims per verdict and paper in this build.
# :name: tbl-ledger-counts
# ```{glue:md} counts_table
# :format: myst
# ```
# :::
#
# ## DeCoVNet: chest CT (seed paper 000)
#
# (ledger-04)=
# ### Chapter 04 · DeCoVNet
#
# :::{table} Claims checked in [chapter 04](04_decovnet.ipynb): data, headline statistics, network and training.
# :name: tbl-ledger-04
# ```{glue:md} ledger_04_decovnet
# :format: myst
# ```
# :::
#
# (ledger-05)=
# ### Chapter 05 · 2DClfNet
#
# :::{table} Claims checked in [chapter 05](05_2dclfnet.ipynb): the 2DClfNet of Table 2 and its comparison with DeCoVNet.
# :name: tbl-ledger-05
# ```{glue:md} ledger_05_2dclfnet
# :format: myst
# ```
# :::
#
# (ledger-06)=
# ### Chapter 06 · Lesion localisation
#
# :::{table} Claims checked in [chapter 06](06_cam_localization.ipynb): the 3DCC window, the hit rate and the CAM layers.
# :name: tbl-ledger-06
# ```{glue:md} ledger_06_cam_localization
# :format: myst
# ```
# :::
#
# (ledger-09)=
# ### Chapter 09 · Performance
#
# :::{table} Claims checked in [chapter 09](09_performance.ipynb): time per CT and the training GPU.
# :name: tbl-ledger-09
# ```{glue:md} ledger_09_performance
# :format: myst
# ```
# :::
#
# ## ResNet-50: chest X-ray (seed paper 003)
#
# (ledger-07)=
# ### Chapter 07 · Chest X-ray ResNet-50
#
# :::{table} Claims checked in [chapter 07](07_cxr_resnet50.ipynb): data, training settings and validation results.
# :name: tbl-ledger-07
# ```{glue:md} ledger_07_cxr_resnet50
# :format: myst
# ```
# :::
#
# (ledger-08)=
# ### Chapter 08 · External validation
#
# :::{table} Claims checked in [chapter 08](08_external_validation.ipynb): the external set, its accuracies and the F-scores of Table 2.
# :name: tbl-ledger-08
# ```{glue:md} ledger_08_external_validation
# :format: myst
# ```
# :::

# %% tags=["remove-cell"]
nb.finish()
