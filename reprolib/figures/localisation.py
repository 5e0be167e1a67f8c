"""Figures of the lesion localisation (chapter 06): the 3DCC response and CAM examples."""
from __future__ import annotations

from typing import Any

import numpy as np


def r3dcc_example(shown: tuple | None):
    """R3dcc (orange) and lesions (cyan, where known) on one volume: the axial slice through the
    median of R3dcc and the coronal mean projection (feet at the bottom). ``shown`` is the example
    of :func:`reprolib.localize_cohort.r3dcc_survey`; a note when it is None."""
    import matplotlib.pyplot as plt

    if shown is None:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "R3dcc empty on every volume", ha="center")
        ax.axis("off")
        return fig
    case, ct, comp, lesion = shown
    z = int(np.median(np.nonzero(comp)[0]))
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    ax[0].imshow(ct[z], cmap="gray")
    ax[0].contour(comp[z], levels=[0.5], colors="orange")
    if lesion is not None:
        ax[0].contour(lesion[z], levels=[0.5], colors="cyan")
    ax[0].set_title(f"{case}, slice {z}", fontsize=9)
    ax[1].imshow(ct.mean(axis=1), cmap="gray", aspect="auto", origin="lower")
    ax[1].contour(comp.max(axis=1), levels=[0.5], colors="orange", linewidths=1.2)
    if lesion is not None:
        ax[1].contour(lesion.max(axis=1), levels=[0.5], colors="cyan", linewidths=1)
    ax[1].set_title("coronal projection: R3dcc (orange), lesions (cyan)", fontsize=9)
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    return fig


def pick_examples(shown: dict[str, tuple], n_each: int = 2) -> list[str]:
    """Up to ``n_each`` hits, then up to ``n_each`` misses, then unscored volumes to fill up:
    failures are shown, not hidden."""
    hits = [c for c, v in shown.items() if v[4] is True][:n_each]
    misses = [c for c, v in shown.items() if v[4] is False][:n_each]
    rest = [c for c, v in shown.items() if v[4] is None][: max(0, 2 * n_each - len(hits) - len(misses))]
    return hits + misses + rest


def cam_examples(shown: dict[str, tuple[Any, ...]], n_each: int = 2):
    """Held-out COVID-19 volumes, hits first, then misses: the input slice through the predicted
    lesion's hit point with the CAM; the prediction with R3dcc, truth and hit point; the coronal
    CAM maximum-intensity projection with the projected prediction and truth (infected slice
    range shaded for slice labels). ``shown``: :func:`reprolib.localize_cohort.localise_held_out`."""
    import matplotlib.pyplot as plt

    from ..hits import hit_point

    cases = pick_examples(shown, n_each)
    fig, axes = plt.subplots(max(1, len(cases)), 3, figsize=(11, 3.2 * max(1, len(cases))), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, cid in zip(axes, cases):
        x, res, gt, flags, hit = shown[cid]
        pt = hit_point(res.lesion)
        zc = pt[0] if pt is not None else x.shape[1] // 2
        verdict = {True: "hit", False: "miss", None: "not scored"}[hit]
        ax[0].imshow(x[0, zc], cmap="gray")
        ax[0].imshow(res.cam[zc], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax[0].set_title(f"{cid} ({verdict}), input slice {zc}: CAM", fontsize=8)
        ax[1].imshow(x[0, zc], cmap="gray")
        ax[1].contour(x[1, zc], levels=[0.5], colors="lime", linewidths=0.6)
        for m, colour, style in [(res.r3dcc, "orange", "--"), (res.lesion, "red", "-"), (gt, "cyan", "-")]:
            if m is not None and m[zc].any():
                ax[1].contour(m[zc], levels=[0.5], colors=colour, linestyles=style, linewidths=1)
        if pt is not None:
            ax[1].plot(pt[2], pt[1], "y+", ms=12, mew=2)
        ax[1].set_title("lung (green), prediction (red), R3dcc (orange), truth (cyan), hit point (+)", fontsize=7)
        ax[2].imshow(x[0].mean(axis=1), cmap="gray", aspect="auto", origin="lower")
        ax[2].imshow(res.cam.max(axis=1), cmap="jet", alpha=0.35, vmin=0, vmax=1, aspect="auto", origin="lower")
        if res.lesion.any():
            ax[2].contour(res.lesion.max(axis=1), levels=[0.5], colors="red", linewidths=1.2)
        if gt is not None and gt.any():
            ax[2].contour(gt.max(axis=1), levels=[0.5], colors="cyan", linewidths=1)
        if flags is not None and np.any(flags):
            inf = np.flatnonzero(flags)
            ax[2].axhspan(inf[0] - 0.5, inf[-1] + 0.5, color="cyan", alpha=0.15)
        ax[2].axhline(zc, color="yellow", lw=0.8, ls=":")
        ax[2].set_title("coronal: CAM maximum-intensity projection, prediction (red), truth (cyan)", fontsize=8)
    fig.tight_layout()
    return fig
