"""Figures of the chest X-ray classifier (chapters 07 and 08)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_heatmap(cm):
    """Confusion matrix (rows: true class) as an annotated heat map; ``cm`` is a DataFrame."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 4))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
    ax.set(xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def gradcam_grid(model: Any, records: Sequence[Any], y: np.ndarray, yhat: np.ndarray, classes: Sequence[str],
                 size: int, per_class: tuple[int, int] = (2, 1)):
    """Grad-CAM heat maps, one row per class present: up to ``per_class[0]`` correctly and
    ``per_class[1]`` wrongly classified images; titles give the true class and the prediction."""
    import matplotlib.pyplot as plt

    from .. import cxr, cxr_cam

    present = [c for c in classes if np.any(np.asarray(y) == list(cxr.CLASSES).index(c))]
    rows = []
    for cls in present:
        idx = [i for i in range(len(records)) if y[i] == cxr.CLASSES.index(cls)]
        right = [i for i in idx if yhat[i] == y[i]][: per_class[0]]
        wrong = [i for i in idx if yhat[i] != y[i]][: per_class[1]]
        rows.append([(i, cls, "correct") for i in right] + [(i, cls, "wrong") for i in wrong])
    rows = rows or [[]]
    tf = cxr.build_transforms(size, train=False)
    ncol = max(1, sum(per_class))
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.5 * ncol, 2.6 * len(rows)), squeeze=False)
    for ax_row, entries in zip(axes, rows):
        for ax, (i, cls, kind) in zip(ax_row, entries):
            img = cxr.load_cxr(records[i].path)
            heat = cxr_cam.grad_cam(model, tf(img), int(yhat[i]))
            ax.imshow(cxr_cam.overlay(img.resize((size, size)), heat))
            ax.set_title(f"{cls} — {kind}: predicted {cxr.CLASSES[int(yhat[i])]}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


def duplicate_pairs(pairs: Sequence[tuple[Any, Any, int]], n: int = 4):
    """Up to ``n`` removed pairs: the external image (top) and its development twin (bottom)."""
    import matplotlib.pyplot as plt

    from .. import cxr

    shown = list(pairs)[:n]
    fig, axes = plt.subplots(2, max(1, len(shown)), figsize=(2.5 * max(1, len(shown)), 5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (c, r, d) in enumerate(shown):
        axes[0, k].imshow(cxr.load_cxr(c, channels=1), cmap="gray")
        axes[0, k].set_title(f"external (distance {d})", fontsize=8)
        axes[1, k].imshow(cxr.load_cxr(r, channels=1), cmap="gray")
        axes[1, k].set_title("development", fontsize=8)
    fig.tight_layout()
    return fig
