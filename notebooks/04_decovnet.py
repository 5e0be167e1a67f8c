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
# DeCoVNet classifies a whole chest CT as COVID-19 positive or negative from a two-channel
# volume (the windowed CT and its lung mask, cropped to the lungs and resized to 224×336 in-plane,
# with a variable number T of 1 mm slices). This chapter first re-derives the paper's headline
# statistics from the per-volume probabilities the authors released, then checks our
# re-implementation of the network against the layer table of the official code and times it.

# %% tags=["parameters"]
profile = "sample"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from reprolib import book, config, data, evaluate, models, paper_values, provenance

provenance.seed_everything(seed)
nb = book.Notebook("04_decovnet", profile, results_dir)
nb.banner()
P = paper_values.DECOVNET
for key, fmt in [("roc_auc", "{:.3f}"), ("pr_auc", "{:.3f}"), ("accuracy", "{:.3f}"),
                 ("ppv_as_labelled", "{:.3f}"), ("npv_as_labelled", "{:.3f}"),
                 ("seconds_per_ct_gpu", "{:.2f}"), ("params", "{:,}")]:
    nb.glue_text(f"reported_{key}", P[key], fmt)

# %% [markdown]
# ## The paper's statistics, recomputed from the released probabilities
#
# The authors released one line per test volume: its id, p(negative), p(COVID-19) and the true
# label (`20200212-auc95p9.txt`, CC BY-NC-SA 4.0). The CT volumes themselves are private, so this
# is as far as anyone can re-check the headline numbers. The `synthetic` profile downloads nothing
# and skips this section.

# %%
stats = None
if profile != "synthetic":
    (release,) = [m for m in data.profile_manifests(profile) if m.dataset == "decovnet-release"]
    (entry,) = release.by_role("released_predictions")
    released = evaluate.read_released_predictions(data.fetch(entry, data_dir=data_dir))
    stats = evaluate.paper_statistics(released, n_boot=2000, seed=seed)
    rows = [
        ("ROC AUC", P["roc_auc"], stats["roc_auc"]),
        ("PR AUC (average precision)", P["pr_auc"], stats["average_precision"]),
        ("accuracy at p > 0.5", P["accuracy"], stats["accuracy"]),
        ('"PPV" in the abstract = sensitivity', P["ppv_as_labelled"], stats["sensitivity"]),
        ('"NPV" in the abstract = specificity', P["npv_as_labelled"], stats["specificity"]),
        ("true PPV (precision)", None, stats["ppv"]),
        ("true NPV", None, stats["npv"]),
    ]
    compare = pd.DataFrame(rows, columns=["statistic", "paper reports", "recomputed"]).set_index("statistic")
    nb.glue_table("released_table", compare.round(4))
    for k in ("n", "n_pos", "n_neg", "tp", "fn", "tn", "fp", "patient_n", "saturated_n", "saturated_n_pos",
              "overlap_patients", "overlap_volumes", "no_overlap_n"):
        nb.glue(f"rel_{k}", int(stats[k]))
    for k in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "average_precision", "average_precision_step",
              "accuracy", "sensitivity", "specificity", "ppv", "npv", "patient_roc_auc",
              "no_overlap_roc_auc", "no_overlap_accuracy", "youden_threshold", "youden_sensitivity",
              "youden_specificity"):
        nb.glue(f"rel_{k}", float(stats[k]))
    ops = pd.DataFrame(stats["operating_points"])
    nb.glue_table("operating_points", ops.round(3))
    display(compare.round(4))
else:
    empty = pd.DataFrame({"note": ["not fetched in the synthetic profile"]})
    nb.glue_table("released_table", empty, record=False)
    nb.glue_table("operating_points", empty, record=False)

def fmt_ci(v, lo, hi):
    return f"{v:.3f} ({lo:.3f}–{hi:.3f})"

nb.glue_text("lp_rel_auc", fmt_ci(stats["roc_auc"], stats["roc_auc_ci_lo"], stats["roc_auc_ci_hi"])
             if stats else None)
for key, name in [("average_precision", "ap"), ("accuracy", "acc"), ("sensitivity", "sens"),
                  ("specificity", "spec"), ("ppv", "ppv"), ("npv", "npv")]:
    nb.glue_text(f"lp_rel_{name}", stats[key] if stats else None)

# %%
if stats:
    released_text = f"""
The released file reproduces the paper: ROC AUC {stats['roc_auc']:.4f} (95 % bootstrap CI
{stats['roc_auc_ci_lo']:.3f}–{stats['roc_auc_ci_hi']:.3f}, 2000 resamples of volumes), average
precision {stats['average_precision']:.4f} ({stats['average_precision_step']:.4f} with the official
code's step rule) and accuracy {stats['accuracy']:.3f} on n = {stats['n']} volumes
({stats['n_pos']} COVID-19, {stats['n_neg']} negative). At the 0.5 threshold the confusion counts are
TP {stats['tp']}, FN {stats['fn']}, TN {stats['tn']}, FP {stats['fp']}.

**The mislabelled "PPV" and "NPV".** The abstract's "PPV" and "NPV" equal the sensitivity
({stats['sensitivity']:.3f}) and the specificity ({stats['specificity']:.3f}) exactly. The true
positive predictive value is {stats['ppv']:.3f} and the true negative predictive value
{stats['npv']:.3f}.

**Patients, repeats and saturation.** Scoring each patient by the maximum probability of their scans
({stats['patient_n']} patients) gives ROC AUC {stats['patient_roc_auc']:.3f}. {stats['saturated_n']}
volumes have p = 1 exactly, {stats['saturated_n_pos']} of them positive. The training list was not
released; inferring repeat scans from the ids alone (a letter suffix marks a repeat scan),
{stats['overlap_volumes']} test volumes of {stats['overlap_patients']} patients may have a sibling
scan in the training set. Without them (n = {stats['no_overlap_n']}) the ROC AUC is
{stats['no_overlap_roc_auc']:.3f} and the accuracy {stats['no_overlap_accuracy']:.3f}. (The
specification, which used the official code's full id lists, not part of our data, also flags
`ncov-00298`, a scan without a letter whose repeats carry letters.)
"""
else:
    released_text = ("*Skipped in the synthetic profile, which downloads nothing: build the `sample` "
                     "profile to recompute the paper's statistics from the released file.*")
nb.glue_markdown("released_text", released_text)

# %% [markdown]
# ```{glue:md} released_text
# :format: myst
# ```
#
# ```{glue:figure} released_table
# :name: tbl-released
# The abstract's statistics next to the same statistics recomputed from the released file.
# ```
#
# ```{glue:figure} operating_points
# :name: tbl-operating
# Operating points on the released ROC curve: the best sensitivity at a minimum specificity and
# the best specificity at a minimum sensitivity, with the probability threshold that reaches it.
# ```

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 4))
if stats:
    rc, pc = stats["roc_curve"], stats["pr_curve"]
    ax[0].plot(rc["fpr"], rc["tpr"], drawstyle="steps-post", label="released probabilities")
    ax[0].plot([0, 1], [0, 1], ls=":", c="0.6")
    ax[0].scatter([1 - stats["specificity"]], [stats["sensitivity"]], c="C3", zorder=3, label="p > 0.5")
    ax[0].scatter([1 - stats["youden_specificity"]], [stats["youden_sensitivity"]], c="C2", zorder=3,
                  label="Youden point")
    ax[1].plot(pc["recall"], pc["precision"], drawstyle="steps-post")
    ax[0].legend(loc="lower right")
else:
    for a in ax:
        a.text(0.5, 0.5, "not fetched in the synthetic profile", ha="center")
ax[0].set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC")
ax[1].set(xlabel="recall (sensitivity)", ylabel="precision", title="precision–recall", ylim=(0, 1.02))
fig.tight_layout()
nb.glue_figure("released_curves", fig)

# %% [markdown]
# ```{glue:figure} released_curves
# :name: fig-released-curves
# ROC and precision–recall curves of the released test probabilities, with the 0.5 operating
# point and the Youden point.
# ```

# %% [markdown]
# ## The network
#
# Our `reprolib.models.DeCoVNet` follows the official code, not the paper's prose (spec §5): a
# 3D stem, two bottleneck residual blocks with a temporal max-pool between them, a "progressive
# classifier" of three 3D convolutions with adaptive max-pooling, and two stacked linear layers.

# %%
net = models.DeCoVNet()
n_params = models.count_parameters(net)
summary = pd.DataFrame(models.model_summary(net, (1, 2, 100, 224, 336)))
summary["GMAC"] = summary.pop("macs") / 1e9
summary["output_shape"] = summary["output_shape"].map(lambda s: "×".join(map(str, s[1:])) if s else "")
nb.glue("params", n_params)
nb.glue_text("lp_params", n_params, "{:,}")
nb.glue("params_match", n_params == P["params"])
gmac = {T: models.count_macs(net, (1, 2, T, 224, 336)) / 1e9 for T in (50, 100, 200, 300)}
slope = (gmac[300] - gmac[100]) / 200
nb.glue("gmac_t100", round(gmac[100], 2))
nb.glue("gmac_slope", round(slope, 4))
nb.glue("gmac_intercept", round(gmac[100] - 100 * slope, 2))
nb.glue_table("layer_table", summary.round(3).set_index("name"))
summary.round(3)

# %% [markdown]
# ```{glue:figure} layer_table
# :name: tbl-layers
# Per-stage output shape (channels × T × H × W), parameters and multiply–accumulates for an input
# of 1×2×100×224×336, traced on PyTorch's meta device (no arithmetic).
# ```
#
# The network has {glue:text}`params` parameters (the official code's active path has
# {glue:text}`reported_params`; match: {glue:text}`params_match`). Its cost grows linearly with
# the number of slices: {glue:text}`gmac_slope:.4f` GMAC per slice plus a fixed
# {glue:text}`gmac_intercept:.2f` GMAC for the progressive classifier, {glue:text}`gmac_t100:.1f`
# GMAC at T = 100.

# %% [markdown]
# ## Inference time on this machine

# %%
net.eval()
threads = torch.get_num_threads()
T = config.load_profile(profile)["timing"]["T"]
x = torch.rand(1, 2, T, 224, 336)
with torch.inference_mode():
    t_med, t_all = provenance.median_time(lambda: net(x), repeats=3)
nb.glue("timing_T", T)
nb.glue_timing("seconds_forward", t_med)
nb.glue("threads", threads)
nb.glue_text("lp_seconds_forward", f"{t_med:.2f} s (CPU, {threads} threads, T = {T})")
print(f"DeCoVNet forward at T={T}: median {t_med:.2f} s over {len(t_all)} runs, {threads} threads")

# %% [markdown]
# One forward pass at T = {glue:text}`timing_T` takes {glue:text}`seconds_forward:.2f` s on this CPU with
# {glue:text}`threads` threads (median of three). The paper reports {glue:text}`reported_seconds_per_ct_gpu`
# s per CT on a GPU, presumably for the whole pipeline including preprocessing and the U-Net,
# which costs far more than DeCoVNet itself (see the performance figures in chapter 03).

# %%
nb.finish()
