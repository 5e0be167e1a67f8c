"""Figures and page tables of chapters 01–03 (data, preprocessing, U-Net).

Every plotting function takes arrays and returns a matplotlib figure (the notebook glues it);
the helpers that choose what to draw (:func:`synthetic_examples`, :func:`manifest_examples`,
:func:`example_case`) return plain data.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import load_gray

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..data import Manifest

#: The display window of the official code (HU) and the pseudo-label threshold (HU), as in
#: :func:`reprolib.preprocess.preprocess_ct`.
WINDOW_HU = (-1200.0, 600.0)
LUNG_THRESHOLD_HU = -320.0


# --------------------------------------------------------------------------- tables
# --------------------------------------------------------------------------- chapter 01
def synthetic_examples(records: Sequence[dict], root: str | Path, per_class: int = 2,
                       n_ct: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """Example images of the synthetic data set for :func:`reprolib.figures.montage`.

    ``per_class`` X-rays of every class (classes sorted by name, records in their order), then
    the middle axial slice of the first ``n_ct`` CT phantoms, clipped to the display window
    :data:`WINDOW_HU` and rotated to the usual orientation. ``records`` are those of
    :func:`reprolib.phantom_dataset.make_synthetic_dataset`, paths relative to ``root``.
    Returns ``(images, titles)``: 2D arrays (X-rays uint8 at most 256 px, CT slices in HU)."""
    import nibabel as nib

    root = Path(root)
    cxr = [r for r in records if r["role"] == "cxr_image"]
    picks: list[dict] = []
    for label in sorted({r["label"] for r in cxr}):
        picks += [r for r in cxr if r["label"] == label][:per_class]
    images = [load_gray(root / r["path"]) for r in picks]
    titles = [r["label"] for r in picks]
    for r in [r for r in records if r["role"] == "ct_nifti"][:n_ct]:
        vol = np.asanyarray(nib.load(root / r["path"]).dataobj)
        images.append(np.rot90(np.clip(vol[:, :, vol.shape[2] // 2], *WINDOW_HU)))
        titles.append(f"CT {r['label']}")
    return images, titles


def manifest_examples(manifests: Iterable["Manifest"], data_dir: str | Path | None = None,
                      per_class: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """Example images of real data for :func:`reprolib.figures.montage`.

    For every (dataset, label) among the X-ray images and CT PNG slices of ``manifests``, the
    first ``per_class`` files by URL, read from the verified cache as 8-bit grey (at most
    256 px). Returns ``(images, titles)``; a title reads ``"<dataset>\\n<label>"``."""
    from .. import data

    frame = data.entries_frame(manifests)
    picks = []
    for _, sub in frame[frame.role.isin(["cxr_image", "ct_png"])].groupby(["dataset", "label"]):
        picks += list(sub.sort_values("url").head(per_class).itertuples())
    images = [load_gray(data.local_path(p, data_dir)) for p in picks]
    return images, [f"{p.dataset}\n{p.label}" for p in picks]


def record_examples(records: Sequence, per_class: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """Example images of chest X-ray records (:class:`reprolib.cxr.CXRRecord`, e.g. a full
    archive's, :func:`reprolib.full_data.records`): the first ``per_class`` of every (source,
    label) in record order, as 8-bit grey. Returns ``(images, titles)``; a title reads
    ``"<source>\\n<label>"``."""
    picks: dict[tuple[str, str], list] = {}
    for r in records:
        got = picks.setdefault((r.source, r.label), [])
        if len(got) < per_class:
            got.append(r)
    chosen = [r for key in sorted(picks) for r in picks[key]]
    return [load_gray(r.path) for r in chosen], [f"{r.source}\n{r.label}" for r in chosen]


# --------------------------------------------------------------------------- chapter 02
def example_case(table: pd.DataFrame) -> pd.Series:
    """The volume chapter 02 follows through the pipeline: the first COVID-19 volume with
    Hounsfield units (else the first HU volume; else the first volume of ``table``).
    ``table`` is :func:`reprolib.cohort.preprocess_cohort`'s (columns ``is_hu``, ``target``)."""
    hu_cases = table[table.is_hu].reset_index(drop=True)
    return hu_cases.iloc[int(np.argmax(hu_cases.target.values))] if len(hu_cases) else table.iloc[0]


def preprocessing_steps(hu: np.ndarray, ct_u8: np.ndarray, lung_mask: np.ndarray | None,
                        title: str = "") -> "Figure":
    """One volume through the pipeline, four panels.

    ``hu`` (S, H, W) is the volume as read (HU), ``ct_u8`` (T0, H, W) uint8 the windowed 1 mm
    volume, ``lung_mask`` (T0, H, W) its pseudo-label (or None: the last panel shows no contour).
    Panels: the middle raw slice in the window :data:`WINDOW_HU`, the middle slice after the
    FOV step and the window, a coronal cut at 1 mm, and the mask's outline on the middle slice."""
    import matplotlib.pyplot as plt

    z_raw, z_new = hu.shape[0] // 2, ct_u8.shape[0] // 2
    fig, ax = plt.subplots(1, 4, figsize=(14, 3.6))
    ax[0].imshow(hu[z_raw], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1])
    ax[0].set_title(f"raw HU, slice {z_raw}")
    ax[1].imshow(ct_u8[z_new], cmap="gray", vmin=0, vmax=255)
    ax[1].set_title("FOV + window → uint8")
    ax[2].imshow(ct_u8[:, ct_u8.shape[1] // 2], cmap="gray", aspect="auto")
    ax[2].set_title(f"coronal after z → 1 mm (T0 = {ct_u8.shape[0]})")
    if lung_mask is not None:
        ax[3].imshow(ct_u8[z_new], cmap="gray")
        ax[3].contour(lung_mask[z_new], levels=[0.5], colors="lime", linewidths=0.8)
    ax[3].set_title("pseudo-label lung mask")
    for a in ax:
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def hu_histogram(hu: np.ndarray, max_slices: int = 32) -> "Figure":
    """Histogram (log counts) of a volume's HU, about ``max_slices`` evenly spaced slices of
    ``hu`` (S, H, W), over [−2100, 1500] HU, with the window bounds (:data:`WINDOW_HU`, red)
    and the lung threshold (:data:`LUNG_THRESHOLD_HU`, green) as dashed lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    sample = hu[:: max(1, hu.shape[0] // max_slices)].ravel()
    ax.hist(sample, bins=200, range=(-2100, 1500), color="0.3")
    for v in WINDOW_HU:
        ax.axvline(v, color="C3", ls="--", lw=1)
    ax.axvline(LUNG_THRESHOLD_HU, color="C2", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("HU")
    ax.set_ylabel("voxels (sampled)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- chapter 03
def unet_training_curves(history: Any) -> "Figure":
    """Two panels from a :class:`reprolib.train.History` (or its ``to_dict()``, or a DataFrame
    with its columns): training and held-out cross-entropy per epoch; held-out lung Dice and
    mIoU (background and lung) at the validation epochs (missing elsewhere)."""
    import matplotlib.pyplot as plt

    d = history.to_dict() if hasattr(history, "to_dict") and not isinstance(history, pd.DataFrame) else history
    h = pd.DataFrame(d)[["epoch", "train_loss", "val_loss", "val_miou", "val_dice"]].astype(float)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    ax[0].plot(h.epoch, h.train_loss, "o-", label="train")
    ax[0].plot(h.epoch, h.val_loss, "s", label="held out")
    ax[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax[0].legend()
    ax[1].plot(h.epoch, h.val_dice, "s-", label="lung Dice")
    ax[1].plot(h.epoch, h.val_miou, "^-", label="mIoU")
    ax[1].set(xlabel="epoch", title="held-out agreement with pseudo-labels")
    ax[1].legend()
    fig.tight_layout()
    return fig


def segmentation_overlays(shown: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                          fractions: Sequence[float] = (0.3, 0.5, 0.7)) -> "Figure":
    """One row per volume, one column per height fraction: the CT slice with the outline of
    the pseudo-label (yellow) and of the U-Net mask (red, dashed).

    ``shown`` holds ``(case_id, ct_u8, pseudo, pred)``, arrays (T, H, W); the slice of a
    fraction f is ``int(f · T)``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(max(1, len(shown)), len(fractions), figsize=(10, 3.2 * max(1, len(shown))),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (case, ct, pseudo, pred) in zip(axes, shown):
        for a, f in zip(ax, fractions):
            z = int(f * ct.shape[0])
            a.imshow(ct[z], cmap="gray")
            a.contour(pseudo[z], levels=[0.5], colors="yellow", linewidths=0.8)
            a.contour(pred[z], levels=[0.5], colors="red", linewidths=0.8, linestyles="--")
            a.set_title(f"{case}, slice {z}", fontsize=8)
    fig.tight_layout()
    return fig
