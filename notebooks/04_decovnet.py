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
# ## Our run: DeCoVNet trained in this build
#
# The paper's volumes are private, so our own training run uses what each profile has. The
# `synthetic` profile builds a dedicated cohort of phantoms in memory (larger findings than the
# phantoms of chapter 01, so that a few hundred CPU steps suffice) with the pseudo-label lung masks
# (chapter 03's U-Net reproduces them); the last volumes are held out. The `sample` profile uses
# the real volumes of chapter 02 with chapter 03's U-Net masks and leave-one-patient-out folds, so
# every volume is predicted once by a network that never saw its patient. The profile's settings
# (input size, slice step, epochs, learning rate) are listed below next to the official ones.
# No model selection: each network keeps its last weights, and the held-out curve is a monitor.

# %%
import json
import time
from pathlib import Path

from reprolib import cohort, train

prof = config.load_profile(profile)
C = prof["classifier"]
work = Path(work_dir or config.work_dir(profile))
hw, z_step = tuple(C["hw"]), int(C["z_step"])
t_cohort = time.perf_counter()
if C["cohort"] == "phantoms":
    items, cases = cohort.synthetic_classifier_cohort(
        C["n"], seed, shape=tuple(C["shape"]), spacing_mm=tuple(C["spacing_mm"]),
        finding_scale=C["finding_scale"], hw=hw, z_step=z_step, preprocess_params=prof.get("preprocess", {}),
        workers=C.get("workers", 1))
    n = len(items)
    folds = [(np.arange(n - C["n_test"]), np.arange(n - C["n_test"], n))]
    cases["group"] = cases["case_id"]
    cohort_note = (f"{n} phantoms built in memory ({C['n_test']} held out), findings scaled "
                   f"×{C['finding_scale']}, pseudo-label lung masks")
else:
    pointer = json.loads((work / "unet_checkpoint.json").read_text())
    unet = models.UNet2D()
    train.load_checkpoint(pointer["path"], expected_sha256=pointer["sha256"], model=unet)
    index = cohort.load_index(work / "ct_index.json")
    items, cases = cohort.real_classifier_cohort(index, unet, hw, z_step,
                                                 unet_size=tuple(pointer["size"]) if pointer["size"] else None)
    used = cases[cases.used].reset_index(drop=True)
    folds = cohort.patient_folds(used.group, used.label, C["folds"], seed)
    cohort_note = (f"{len(items)} real volumes of {used.group.nunique()} patients with U-Net lung masks, "
                   f"{len(folds)} patient-level folds")
nb.glue_timing("cohort_seconds", time.perf_counter() - t_cohort)
cohort.save_classifier_cohort(work / "classifier_cohort.npz", items, cases, folds)
labels = np.array([lab for _, lab, _ in items])
nb.glue("our_n", len(items))
nb.glue("our_n_pos", int(labels.sum()))
nb.glue("our_n_neg", int((1 - labels).sum()))
nb.glue("our_n_folds", len(folds))
nb.glue_text("our_cohort", cohort_note)
settings = pd.DataFrame({
    "this profile": [f"{hw[0]}×{hw[1]}", f"every {z_step}", C["epochs"], C["lr"], C["fc_init"], C["augment"]],
    "official code": ["224×336", "every 1", 100, 1e-5, "official", "official"]},
    index=["in-plane input", "1 mm slices kept", "epochs", "Adam learning rate", "FC initialisation",
           "augmentation"]).astype(str)
nb.glue_table("our_settings", settings, record=False)
settings

# %% [markdown]
# The cohort: {glue:text}`our_cohort` ({glue:text}`our_n_pos` COVID-19, {glue:text}`our_n_neg`
# negative).
#
# ```{glue:figure} our_settings
# :name: tbl-our-settings
# Training settings of this profile next to the official code's. Smaller inputs and fewer slices
# keep a CPU run within minutes; the ProClf pooling grids are scaled with the input
# (`models.proclf_grids_for`), so the parameter count is unchanged.
# ```

# %%
cfg = train.TrainConfig(epochs=C["epochs"], lr=C["lr"], augment=C["augment"], seed=seed, device=device,
                        validate_every=1)
make = lambda: models.DeCoVNet(proclf_grids=models.proclf_grids_for(hw), fc_init=C["fc_init"])  # noqa: E731
t_train = time.perf_counter()
oof, hists, nets = train.cross_fit(make, items, folds, cfg)
nb.glue_timing("our_train_seconds", time.perf_counter() - t_train)
oof.to_csv(work / "decovnet_predictions.csv", index=False)
for k, net_k in enumerate(nets):  # every fold's model: chapter 06 localises each volume with the
    meta_k = {"profile": profile, "hw": list(hw), "z_step": z_step, "fc_init": C["fc_init"],  # one that did
              "fold": k, "test_case_ids": [items[int(i)][2] for i in folds[k][1]]}     # not train on it
    train.save_checkpoint(work / f"decovnet_fold{k}.pt", net_k, metadata=meta_k)
train.save_checkpoint(work / "decovnet_last.pt", nets[-1], metadata=meta_k)
ours = evaluate.binary_report(oof.label.to_numpy(), oof.p_covid.to_numpy(), n_boot=2000, seed=seed)
for key in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "average_precision", "accuracy", "sensitivity",
            "specificity"):
    nb.glue(f"our_{key}", float(ours[key]))
nb.glue_text("lp_our_auc", fmt_ci(ours["roc_auc"], ours["roc_auc_ci_lo"], ours["roc_auc_ci_hi"])
             + f", n = {len(oof)}")
nb.glue_text("lp_our_acc", ours["accuracy"])
nb.glue_text("lp_our_ap", ours["average_precision"])
oof.round(4).set_index("case_id").head(12)

# %%
fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
for k, h in enumerate(hists):
    ax[0].plot(h.epoch, h.train_loss, "o-", c=f"C{k % 10}", alpha=0.8, label=f"fold {k}" if len(hists) < 8 else None)
    if any(np.isfinite(h.val_auc)):
        ax[1].plot(h.epoch, h.val_auc, "s-", c=f"C{k % 10}")
if not any(np.isfinite(h.val_auc).any() for h in hists):
    ax[1].text(0.5, 0.5, "one held-out volume per fold:\nno AUC per fold", ha="center", va="center",
               transform=ax[1].transAxes)
ax[0].set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
ax[1].set(xlabel="epoch", ylabel="ROC AUC", title="held-out AUC (monitor only)", ylim=(0, 1.02))
if len(hists) < 8:
    ax[0].legend(fontsize=7)
rc = ours["roc_curve"]
ax[2].plot(rc["fpr"], rc["tpr"], drawstyle="steps-post", label="this build")
if stats:
    ax[2].plot(stats["roc_curve"]["fpr"], stats["roc_curve"]["tpr"], drawstyle="steps-post", ls="--",
               label="paper (released)")
ax[2].plot([0, 1], [0, 1], ls=":", c="0.6")
ax[2].set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC, held-out predictions")
ax[2].legend(loc="lower right")
fig.tight_layout()
nb.glue_figure("our_curves", fig)

# %% [markdown]
# ```{glue:figure} our_curves
# :name: fig-our-curves
# Our DeCoVNet run: training loss per epoch, the held-out AUC after each epoch (shown, never used
# to choose weights) and the ROC curve of the held-out predictions next to the paper's.
# ```
#
# On the {glue:text}`our_n` held-out predictions our DeCoVNet reaches ROC AUC
# {glue:text}`our_roc_auc:.3f` (95 % bootstrap CI {glue:text}`our_roc_auc_ci_lo:.3f`–{glue:text}`our_roc_auc_ci_hi:.3f`),
# average precision {glue:text}`our_average_precision:.3f` and accuracy {glue:text}`our_accuracy:.3f`
# at p > 0.5 (sensitivity {glue:text}`our_sensitivity:.3f`, specificity {glue:text}`our_specificity:.3f`).
# Training took {glue:text}`our_train_seconds:.0f` s on this CPU. These numbers are not comparable with
# the paper's: different data (phantoms or a handful of public volumes instead of 630 private scans),
# smaller inputs and a far shorter schedule. With a handful of volumes the interval is wide; it
# says how little such a sample can show.

# %% [markdown]
# ## Inference time
#
# How long DeCoVNet, the U-Net and the whole pipeline take on this machine — at T = 100, 200 and
# 300 slices of the official 224×336 input, eager and with the fast inference variants, beside
# the paper's {glue:text}`reported_seconds_per_ct_gpu` s per CT on a GPU — is measured by
# `make bench` and shown in the [Performance](09_performance.ipynb) chapter.

# %%
nb.finish()
