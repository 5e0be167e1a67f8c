"""Unsupervised lung masks (the official code's pseudo-labels) and their quality check.

From a CT in HU: air under the table and outside the body joins the body, the largest body
component per slice stays, and the largest 3D air component inside it is the lung. The U-Net of
chapter 03 trains on these masks.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import components
from .arrays import as_bool_mask
from .errors import VolumeError


def default_probes(h: int, w: int) -> tuple[tuple[int, int], ...]:
    """The spec's six probe pixels (row, col) of slice 0 (spec §3 step 2)."""
    return ((0, 0), (h - 1, 0), (h - 1, w - 1), (h - 1, w // 2), (h - 10, w // 2), (h - 55, w // 2))


def _component_sizes(labels: np.ndarray, n: int, slice_weights: np.ndarray | None = None) -> np.ndarray:
    """Voxel count per label (index 0 = background, set to 0), slice by slice
    so that bincount's int64 copy of the labels stays one slice big; slice ``z``
    counted ``slice_weights[z]`` times when given."""
    sizes = np.zeros(n + 1, dtype=np.int64)
    for z, sl in enumerate(labels.reshape((-1,) + labels.shape[-2:]) if labels.ndim > 2 else [labels]):
        counts = np.bincount(sl.ravel(), minlength=n + 1)
        sizes += counts if slice_weights is None else counts * int(slice_weights[z])
    sizes[0] = 0
    return sizes


def _select_labels(labels: np.ndarray, ids: Sequence[int], n: int | None = None, *,
                   out: np.ndarray | None = None, union: bool = False) -> np.ndarray:
    """Mask of the voxels whose label is in ``ids``, written slice by slice.

    A lookup table over the ``n + 1`` labels (``n`` defaults to ``labels.max()``)
    is applied one slice at a time, so the only temporary is one slice of
    indices. ``out`` (bool or uint8, labels' shape) receives the mask, or with
    ``union=True`` is OR-ed with it; ``None`` = a new bool array.
    """
    if n is None:
        n = int(labels.max()) if labels.size else 0
    lut = np.zeros(n + 1, dtype=bool)
    lut[[i for i in ids if 0 <= i <= n]] = True
    if out is None:
        out = np.empty(labels.shape, dtype=bool)
        union = False
    lut = lut.astype(out.dtype)
    lab = labels.reshape((-1,) + labels.shape[-2:]) if labels.ndim > 2 else labels[None]
    dst = out.reshape(lab.shape)
    tmp = np.empty(lab.shape[1:], dtype=out.dtype) if union else None
    for z in range(lab.shape[0]):
        if union:
            np.take(lut, lab[z], out=tmp)
            np.logical_or(dst[z], tmp, out=dst[z])
        else:
            np.take(lut, lab[z], out=dst[z])
    return out


def lung_pseudo_label(
    hu: np.ndarray,
    threshold_hu: float = -320,
    probes: Sequence[tuple[int, int]] | None = None,
    keep: str = "largest",
    min_lung_ml: float = 100.0,
    spacing_mm: Sequence[float] | None = None,
    labeller: str = "auto",
) -> np.ndarray:
    """Unsupervised lung mask (spec §3 steps 1–5).

    1. body = HU > ``threshold_hu``; air otherwise.
    2. 3D components (26-connectivity) of air under the probe pixels of
       slice 0 become body (outside air, air under the table). Body
       components under a probe are body already, so labelling body in 3D
       would not change the result and is skipped.
    3. Per axial slice only the largest 8-connected body component stays body.
    4. Invert: lung candidates = air.
    5. Keep the largest 26-connected component (``keep="largest"``) or the two
       largest of at least ``min_lung_ml`` each (``keep="two_largest"``, needs
       ``spacing_mm``; not in the official code).

    Parameters
    ----------
    hu : np.ndarray, (S, H, W) int16 HU, after FOV, at native slice spacing
    probes : (row, col) pixels of slice 0; ``None`` = :func:`default_probes`.
    spacing_mm : (dz, dy, dx) in mm, only for ``keep="two_largest"``.
    labeller : connected-components backend (:func:`reprolib.components.label`); same result.

    Returns
    -------
    np.ndarray, (S, H, W) uint8 in {0, 1}.

    Memory: about 2.5 copies of the native volume (int16 S×H×W) above the
    input: an int32 label volume (2 copies) beside one bool volume (0.5).
    """
    return pseudo_label_with_counts(hu, threshold_hu, probes, keep, min_lung_ml, spacing_mm, labeller)[0]


def pseudo_label_with_counts(hu: np.ndarray, threshold_hu: float, probes: Sequence[tuple[int, int]] | None, keep: str,
                  min_lung_ml: float, spacing_mm: Sequence[float] | None, labeller: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lung_pseudo_label` plus the voxel count of each kept 26-connected
    component in each slice, ``(S, k)`` int64 (k = 0, 1 or 2), for :func:`lung_qc`."""
    if hu.ndim != 3:
        raise VolumeError(None, f"lung_pseudo_label needs a (z, y, x) volume, got shape {hu.shape}")
    if keep not in ("largest", "two_largest"):
        raise ValueError(f"keep must be 'largest' or 'two_largest', got {keep!r}")
    s, h, w = hu.shape
    # Memory (copies = S×H×W int16, module docstring): one int32 label volume
    # (2 copies) is alive at a time, beside one bool volume (0.5 copy); the
    # full-size temporaries of the straightforward version (body, ~body, the
    # selection masks) are avoided. Peak about 2.5 copies above the input.
    air = np.greater(hu, threshold_hu)                                     # step 1: body
    np.logical_not(air, out=air)                                           # air = not body
    air_labels, n_air = components.label(air, 26, labeller)               # step 2
    del air
    probes = default_probes(h, w) if probes is None else probes
    probe_ids = sorted({int(air_labels[0, r, c]) for r, c in probes} - {0})
    body = np.empty(hu.shape, dtype=bool)
    for z in range(s):  # body, recomputed slice by slice, plus the probed air
        np.greater(hu[z], threshold_hu, out=body[z])
    if probe_ids:
        _select_labels(air_labels, probe_ids, n_air, out=body, union=True)
    del air_labels
    for z in range(s):                                                     # step 3
        lab, n = components.label(body[z], 8, labeller)
        if n > 1:
            body[z] = lab == components.largest(lab, _component_sizes(lab, n))[0]
    cand = np.logical_not(body, out=body)                                  # step 4 (in place)
    del body
    labels, n = components.label(cand, 26, labeller)                      # step 5
    del cand
    if n == 0:
        return np.zeros(hu.shape, dtype=np.uint8), np.zeros((s, 0), dtype=np.int64)
    sizes = _component_sizes(labels, n)
    if keep == "largest":
        ids = components.largest(labels, sizes)
    else:
        if spacing_mm is None:
            raise ValueError("keep='two_largest' needs spacing_mm to apply min_lung_ml")
        voxel_ml = float(np.prod(spacing_mm)) / 1000.0
        order = components.largest(labels, sizes, 2)
        ids = [int(k) for k in order if sizes[k] > 0 and sizes[k] * voxel_ml >= min_lung_ml]
        if not ids:
            ids = [int(order[0])]
    mask = _select_labels(labels, ids, n, out=np.empty(hu.shape, dtype=np.uint8))
    if len(ids) == 1:  # slice by slice: no full-size temporary
        counts = np.array([[np.count_nonzero(mask[z])] for z in range(s)])
    else:
        counts = np.array([[np.count_nonzero(labels[z] == i) for i in ids] for z in range(s)])
    return mask, counts.astype(np.int64).reshape(s, len(ids))


def lung_qc(
    mask: np.ndarray,
    spacing_mm: Sequence[float],
    volume_ml: tuple[float, float] = (1000.0, 9000.0),
    *,
    min_side_fraction: float = 0.15,
    midline_x: float | None = None,
    min_component_ml: float = 100.0,
    slice_weights: Sequence[int] | None = None,
    component_voxels: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Rule-based QC of a lung mask (spec §3 step 7, ``qc_lung_volume_ml``).

    Checks: empty mask; total volume outside ``volume_ml``; one lung missing
    (either side of the midline column holds less than ``min_side_fraction``
    of the mask); mask touching the in-plane border (outside air or a table
    leaked in).

    Parameters
    ----------
    mask : np.ndarray, (z, y, x), {0, 1}
    spacing_mm : (dz, dy, dx) in mm
    volume_ml : (lo, hi) plausible total lung volume in ml (book's rule; the
        authors sorted by volume and judged by eye)
    midline_x : column of the left/right split; ``None`` = W/2.
    slice_weights : (z,) ints >= 1 or None
        QC of the mask with slice ``z`` repeated ``slice_weights[z]`` times (the 1 mm
        mask of an order-0 z upsampling, :func:`nearest_slice_index`), computed on
        ``mask`` itself; repeating slices keeps 26-connected components as they are,
        so every figure equals the QC of the repeated mask.
    component_voxels : voxel counts (in the repeated mask) of every 26-connected
        component of the mask, when the caller knows them; skips the labelling.

    Returns
    -------
    dict with ``ok`` (bool), ``reasons`` (list of str), ``volume_ml``,
    ``n_lungs`` (26-connected components of at least ``min_component_ml``),
    ``side_fractions`` ([columns < midline, columns >= midline]),
    ``touches_border`` (bool).

    Memory: the int32 label volume, 2 copies of the (1 mm) mask's volume as
    int16; a bool or uint8 {0, 1} mask is labelled through a view.
    """
    m = as_bool_mask(mask)  # a view of a uint8 {0, 1} mask: the label volume is the only big array
    voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=float))) / 1000.0
    wz = np.ones(m.shape[0], dtype=np.int64) if slice_weights is None else np.asarray(slice_weights, np.int64)
    if wz.shape != (m.shape[0],) or (wz < 1).any():
        raise ValueError(f"slice_weights must be {m.shape[0]} integers >= 1")
    per_slice_col = np.count_nonzero(m, axis=1)  # (z, x): one pass over the mask
    per_col = wz @ per_slice_col
    n_vox = int(per_col.sum())
    vol = n_vox * voxel_ml
    reasons: list[str] = []
    res: dict[str, Any] = {"volume_ml": vol, "n_voxels": n_vox, "n_lungs": 0,
                           "side_fractions": [0.0, 0.0], "touches_border": False}
    if n_vox == 0:
        res.update(ok=False, reasons=["empty mask"])
        return res
    lo, hi = volume_ml
    if not (lo <= vol <= hi):
        reasons.append(f"implausible lung volume {vol:.0f} ml (expected {lo:.0f}-{hi:.0f} ml)")
    w = m.shape[-1]
    mid = int(round(w / 2 if midline_x is None else midline_x))
    left = float(per_col[:mid].sum()) / n_vox
    sides = [left, 1.0 - left]
    res["side_fractions"] = sides
    if min(sides) < min_side_fraction:
        which = "image-left (patient right)" if sides[0] < sides[1] else "image-right (patient left)"
        reasons.append(f"one lung missing: {which} half holds {min(sides):.1%} of the mask")
    if component_voxels is None:
        labels, n = components.label(m, 26)
        sizes = _component_sizes(labels, n, wz if slice_weights is not None else None)
        del labels
    else:
        sizes = np.asarray(component_voxels, dtype=np.int64)
    res["n_lungs"] = int(np.sum(sizes * voxel_ml >= min_component_ml))
    border = m[:, 0, :].any() or m[:, -1, :].any() or m[:, :, 0].any() or m[:, :, -1].any()
    res["touches_border"] = bool(border)
    if border:
        reasons.append("mask touches the in-plane image border (outside air or table leaked in)")
    res.update(ok=not reasons, reasons=reasons)
    return res
