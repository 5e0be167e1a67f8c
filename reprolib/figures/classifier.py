"""Figures of the whole-volume classifiers (chapters 04 and 05): ROC and PR curves, training curves."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def _roc_axes(ax) -> None:
    ax.plot([0, 1], [0, 1], ls=":", c="0.6")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))


def released_curves(stats: Mapping[str, Any] | None):
    """ROC (with the 0.5 and Youden operating points) and precision–recall curves of the released
    DeCoVNet probabilities (:func:`reprolib.evaluate.paper_statistics`); a note when ``None``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if stats:
        rc, pc = stats["roc_curve"], stats["pr_curve"]
        ax[0].plot(rc["fpr"], rc["tpr"], drawstyle="steps-post", label="released probabilities")
        ax[0].scatter([1 - stats["specificity"]], [stats["sensitivity"]], c="C3", zorder=3, label="p > 0.5")
        ax[0].scatter([1 - stats["youden_specificity"]], [stats["youden_sensitivity"]], c="C2", zorder=3,
                      label="Youden point")
        ax[1].plot(pc["recall"], pc["precision"], drawstyle="steps-post")
        ax[0].legend(loc="lower right")
    else:
        for a in ax:
            a.text(0.5, 0.5, "not fetched in the synthetic profile", ha="center")
    _roc_axes(ax[0])
    ax[0].set_title("ROC")
    ax[1].set(xlabel="recall (sensitivity)", ylabel="precision", title="precision–recall", ylim=(0, 1.02))
    fig.tight_layout()
    return fig


def training_curves(histories: Sequence[Any], report: Mapping[str, Any], released: Mapping[str, Any] | None = None):
    """Training loss per epoch and fold, the held-out AUC per epoch (a monitor, never used to
    choose weights; empty when every fold holds a single volume) and the ROC curve of the
    held-out predictions (``report``: :func:`reprolib.evaluate.binary_report`) beside the
    released one."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    few = len(histories) < 8
    for k, h in enumerate(histories):
        ax[0].plot(h.epoch, h.train_loss, "o-", c=f"C{k % 10}", alpha=0.8, label=f"fold {k}" if few else None)
        if np.isfinite(h.val_auc).any():
            ax[1].plot(h.epoch, h.val_auc, "s-", c=f"C{k % 10}")
    if not any(np.isfinite(h.val_auc).any() for h in histories):
        ax[1].text(0.5, 0.5, "one held-out volume per fold:\nno AUC per fold", ha="center", va="center",
                   transform=ax[1].transAxes)
    ax[0].set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax[1].set(xlabel="epoch", ylabel="ROC AUC", title="held-out AUC (monitor only)", ylim=(0, 1.02))
    if few:
        ax[0].legend(fontsize=7)
    rc = report["roc_curve"]
    ax[2].plot(rc["fpr"], rc["tpr"], drawstyle="steps-post", label="this build")
    if released:
        ax[2].plot(released["roc_curve"]["fpr"], released["roc_curve"]["tpr"], drawstyle="steps-post", ls="--",
                   label="paper (released)")
    _roc_axes(ax[2])
    ax[2].set_title("ROC, held-out predictions")
    ax[2].legend(loc="lower right")
    fig.tight_layout()
    return fig


def score_strip(p: Sequence[float], y: Sequence[int], threshold: float = 0.5):
    """Every held-out volume's p(COVID), by true class: shows at a glance whether the scores
    separate the classes or sit in a narrow band around the threshold."""
    import matplotlib.pyplot as plt

    p, y = np.asarray(p, dtype=float), np.asarray(y)
    fig, ax = plt.subplots(figsize=(7, 1.9 + 0.3 * 2))
    rng = np.random.default_rng(0)
    for cls, name, colour in ((0, "negative", "C0"), (1, "COVID-19", "C3")):
        sel = p[y == cls]
        ax.scatter(sel, cls + rng.uniform(-0.12, 0.12, sel.size), s=22, c=colour, label=f"{name} (n = {sel.size})")
    ax.axvline(threshold, c="0.5", ls="--", lw=1)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.5, 1.5), yticks=[0, 1], yticklabels=["negative", "COVID-19"],
           xlabel="held-out p(COVID)")
    fig.tight_layout()
    return fig


def two_model_curves(reports: Mapping[str, Mapping[str, Any]]):
    """ROC and precision–recall curves of several models on the same held-out volumes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, r), style in zip(reports.items(), ["-", "--", ":", "-."]):
        ax[0].plot(r["roc_curve"]["fpr"], r["roc_curve"]["tpr"], ls=style, drawstyle="steps-post",
                   label=f"{name}: AUC {r['roc_auc']:.3f}")
        ax[1].plot(r["pr_curve"]["recall"], r["pr_curve"]["precision"], ls=style, drawstyle="steps-post", label=name)
    _roc_axes(ax[0])
    ax[0].set_title("ROC, held-out predictions")
    ax[1].set(xlabel="recall", ylabel="precision", title="precision–recall", ylim=(0, 1.02))
    ax[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
