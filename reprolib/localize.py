"""Weakly supervised lesion localisation and the lesion hit metric (spec §7, §12).

Chain (each step a small function; every spec constant a keyword parameter):

1. CAM on the ResBlock-2 features ``F`` (128 x T/2 x h x w):
   :func:`linear_cam` / :func:`cam_for_volume` (linearised head weights, the paper's
   method) or :func:`grad_cam` (Grad-CAM on the same layer, the modern comparison).
2. Post-processing in the cropped input frame (T x 224 x 336): :func:`resize_cam`
   (order 1) + :func:`normalise_cam` (ReLU, min-max), :func:`histogram_threshold`
   (top ~5 %), :func:`intensity_gate` (8-bit CT > 75), :func:`slice_gate` (slab of
   large lung area), :func:`cam_candidates` (9 largest 26-connected components).
3. 3DCC "variance" response on the binary lung mask (512^2 grid):
   :func:`variance_response` (w x w tiles with >= 3 8-connected fragments and
   |std - 0.5| < 0.05) and :func:`r3dcc` (largest 26-connected component);
   :func:`to_cam_frame` crops/resizes it like the CT.
4. :func:`merge_candidates` (largest voxel overlap with R3dcc) and :func:`uncrop`
   (order-0 inverse of ``crop.crop_to_mask`` + ``crop.resize_inplane``).
5. :func:`localize` runs 1-4 and returns a :class:`LocalizationResult`.
6. Hit metric: :func:`parse_voc_boxes`, :func:`boxes_to_volume`, :func:`mask_to_boxes`,
   :func:`gt_components`, :func:`hit_point`, :func:`is_hit`, :func:`hit_rate`,
   :func:`random_baseline_hit`, :func:`slice_level_hit`, :func:`dice`.

Connectivity: 26 in 3D and 8 in 2D, always through ``scipy.ndimage.label``.
Axes are (z, y, x) everywhere; boxes use 1-based PASCAL-VOC pixel coordinates
(x = column, y = row).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from .cam import grad_cam_map, weighted_sum
from .crop import resize_inplane
from .errors import VolumeError
from .models import linearised_cam_weights

__all__ = [
    "linear_cam",
    "cam_for_volume",
    "grad_cam",
    "grad_cam_for_volume",
    "resize_cam",
    "normalise_cam",
    "histogram_threshold_value",
    "histogram_threshold",
    "intensity_gate",
    "slice_gate_range",
    "slice_gate",
    "label_components",
    "cam_candidates",
    "variance_response",
    "r3dcc",
    "to_cam_frame",
    "candidate_overlaps",
    "merge_candidates",
    "uncrop",
    "LocalizationResult",
    "localize",
]

STRUCT_26 = np.ones((3, 3, 3), dtype=bool)
STRUCT_8 = np.ones((3, 3), dtype=bool)
#: Labels each (w, w) patch of a (K, w, w) stack on its own (8-connectivity in-plane, none across K).
_STRUCT_8_STACKED = np.zeros((3, 3, 3), dtype=bool)
_STRUCT_8_STACKED[1] = True


def require_3d(a: np.ndarray, what: str) -> None:
    if a.ndim != 3:
        raise VolumeError(None, f"{what} must be a 3D (z, y, x) array, got shape {a.shape}")


# =============================================================================
# 1. CAM
# =============================================================================
def linear_cam(features: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """CAM = sum_c w_c F_c (spec §7 step 4).

    Parameters
    ----------
    features : (C, D, h, w) or (1, C, D, h, w) tensor or array (ResBlock-2 output)
    weights : (C,) channel weights

    Returns
    -------
    np.ndarray, (D, h, w) float32 (raw, not rectified).
    """
    if features.ndim == 5:
        if features.shape[0] != 1:
            raise VolumeError(None, f"linear_cam takes one volume, got batch of {features.shape[0]}")
        features = features[0]
    if features.ndim != 4:
        raise VolumeError(None, f"features {tuple(features.shape)} are not (C, D, h, w)")
    return weighted_sum(features, weights)


def _as_input(model: torch.nn.Module, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim == 4:
        t = t.unsqueeze(0)
    if t.ndim != 5 or t.shape[0] != 1:
        raise VolumeError(None, f"expected one input volume (1, 2, T, H, W), got shape {tuple(t.shape)}")
    p = next(model.parameters())
    return t.to(device=p.device, dtype=p.dtype)


def cam_for_volume(model: torch.nn.Module, x: torch.Tensor | np.ndarray, target: int = 1,
                   features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, float]:
    """Linearised-head CAM and p(target) in one forward pass (spec §7 steps 1-4).

    The features are computed once (by ``features``, e.g. a frozen graph of
    ``models.Features(model)``, else ``model.features``); the logits come from
    ``model.classify(F)``. The model's train/eval mode is left as the caller set it (``bn_eval``).

    Parameters
    ----------
    x : (1, 2, T, H, W) float32 input (CT/255, lung mask)

    Returns
    -------
    (cam, p) : cam (T//2, H/8, W/8) float32 raw CAM; p = softmax(logits)[target] (float).
    """
    xt = _as_input(model, x)
    with torch.no_grad():
        feats = (features or model.features)(xt)
        p = torch.softmax(model.classify(feats), dim=1)[0, target].item()
        w = linearised_cam_weights(model, target=target).to(feats.device)
        cam = linear_cam(feats[0], w)
    return cam, float(p)


def grad_cam_for_volume(model: torch.nn.Module, x: torch.Tensor | np.ndarray, target: int = 1,
                        features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, float]:
    """Grad-CAM on the ResBlock-2 features, and p(target), in one forward pass.

    Channel weight a_c = mean over (D, h, w) of d logit_target / d F_c; CAM =
    ReLU(sum_c a_c F_c). Only the features receive gradients (parameters' ``.grad``
    are not touched).

    Returns
    -------
    (cam, p) : cam (T//2, H/8, W/8) float32 >= 0; p = softmax(logits)[target].
    """
    xt = _as_input(model, x)
    with torch.no_grad():
        feats = (features or model.features)(xt)
    feats = feats.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.classify(feats)
        (grad,) = torch.autograd.grad(logits[0, target], feats)
    p = torch.softmax(logits.detach(), dim=1)[0, target].item()
    return grad_cam_map(feats[0], grad[0]), float(p)


def grad_cam(model: torch.nn.Module, x: torch.Tensor | np.ndarray, target: int = 1) -> np.ndarray:
    """Grad-CAM (D, h, w) float32 on the ResBlock-2 layer; see :func:`grad_cam_for_volume`."""
    return grad_cam_for_volume(model, x, target)[0]


# =============================================================================
# 2. Post-processing
# =============================================================================
def resize_cam(cam: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Zoom a (D, h, w) CAM to ``shape`` = (T, H, W) (spline ``order``, default 1).

    ``scipy.ndimage.zoom`` with factors out/in (corner-aligned grid, as the code).

    Returns
    -------
    np.ndarray, ``shape`` float32.
    """
    cam = np.asarray(cam, dtype=np.float32)
    require_3d(cam, "CAM")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1 or min(cam.shape) < 1:
        raise VolumeError(None, f"cannot resize CAM {cam.shape} to {shape}")
    factors = [o / i for o, i in zip(shape, cam.shape)]
    out = ndimage.zoom(cam, factors, order=order, output=np.float32, mode="nearest")
    if out.shape != shape:  # guard against float rounding in zoom's output size
        raise VolumeError(None, f"CAM resize produced {out.shape}, expected {shape}")
    return out


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU, then min-max normalise to [0, 1] (spec §7 post-processing step 1).

    A constant or empty CAM becomes all zeros (never NaN). Non-finite input raises.

    Returns
    -------
    np.ndarray, same shape, float32 in [0, 1].
    """
    c = np.maximum(np.asarray(cam, dtype=np.float32), np.float32(0))
    if c.size == 0:
        return c
    if not np.isfinite(c).all():
        raise VolumeError(None, "CAM contains NaN or inf (broken model or input?)")
    lo, hi = float(c.min()), float(c.max())
    if hi - lo <= 0.0:
        return np.zeros_like(c)
    c -= np.float32(lo)
    c *= np.float32(1.0 / (hi - lo))
    return c


def histogram_threshold_value(cam: np.ndarray, top_frac: float = 0.05, bins: int = 50,
                              value_range: tuple[float, float] | None = (0.0, 1.0)) -> float:
    """Threshold of spec §7 post-processing step 2.

    Build a ``bins``-bin histogram over ``value_range`` (the normalised CAM's [0, 1];
    ``None`` = data range), add counts from the top bin down, and return the upper
    edge of the first bin at which the running total exceeds ``top_frac`` of all
    voxels (strictly greater). Empty CAM -> ``inf``.
    """
    c = np.asarray(cam)
    if c.size == 0:
        return math.inf
    counts, edges = np.histogram(c, bins=bins, range=value_range)
    running = np.cumsum(counts[::-1])  # running[j] = count of the top j+1 bins
    over = np.flatnonzero(running > top_frac * c.size)
    if over.size == 0:  # values outside value_range only: keep nothing
        return math.inf
    k = bins - 1 - int(over[0])  # index of the bin where the total first exceeds top_frac
    return float(edges[k + 1])


def histogram_threshold(cam: np.ndarray, top_frac: float = 0.05, bins: int = 50,
                        value_range: tuple[float, float] | None = (0.0, 1.0)) -> np.ndarray:
    """Binary CAM mask: voxels with round(255 cam) > 255 thr (spec §7 step 2).

    ``thr`` from :func:`histogram_threshold_value`; keeps roughly the top <= ``top_frac``
    (``cam_top_frac=0.05``, ``cam_bins=50``).

    Parameters
    ----------
    cam : (T, H, W) float in [0, 1] (normalised CAM)

    Returns
    -------
    np.ndarray, (T, H, W) bool.
    """
    thr = histogram_threshold_value(cam, top_frac, bins, value_range)
    c = np.asarray(cam, dtype=np.float32)
    if not math.isfinite(thr):
        return np.zeros(c.shape, dtype=bool)
    return np.rint(c * np.float32(255)) > 255.0 * thr


def intensity_gate(mask: np.ndarray, ct_u8: np.ndarray, min_u8: int = 75) -> np.ndarray:
    """Keep mask voxels whose 8-bit CT is > ``min_u8`` (~ -670 HU; ``cam_min_u8=75``).

    Parameters
    ----------
    mask : (T, H, W) bool; ct_u8 : (T, H, W) uint8 (resized 8-bit CT, cropped frame)

    Returns
    -------
    np.ndarray, (T, H, W) bool.
    """
    if np.shape(mask) != np.shape(ct_u8):
        raise VolumeError(None, f"mask {np.shape(mask)} and CT {np.shape(ct_u8)} differ in shape")
    return np.logical_and(mask, np.asarray(ct_u8) > min_u8)


def slice_gate_range(lung_mask: np.ndarray, ignore: float = 0.2, frac: float = 0.4,
                     drop_last: bool = False) -> tuple[int, int]:
    """Slab [z0, z1) of spec §7 step 4 on the (cropped-frame) lung mask.

    A(z) = lung area per slice; z* = argmax A over slices ``int(ignore T)`` up to
    ``int((1 - ignore) T)`` (whole range if that is empty); the slab grows from z*
    while A(z) > ``frac`` * A(z*) (the maximum found). ``drop_last=True`` reproduces
    the code quirk of dropping the slab's last slice. No lung -> (0, 0).
    """
    require_3d(np.asarray(lung_mask), "lung mask")
    area = np.count_nonzero(np.asarray(lung_mask).reshape(lung_mask.shape[0], -1), axis=1)
    t = area.shape[0]
    lo, hi = int(ignore * t), int((1.0 - ignore) * t)
    if hi <= lo:
        lo, hi = 0, t
    z_star = lo + int(np.argmax(area[lo:hi]))
    a_max = area[z_star]
    if a_max == 0:
        return 0, 0
    keep = area > frac * a_max
    z0 = z_star
    while z0 > 0 and keep[z0 - 1]:
        z0 -= 1
    z1 = z_star + 1
    while z1 < t and keep[z1]:
        z1 += 1
    if drop_last:
        z1 = max(z0, z1 - 1)
    return z0, z1


def slice_gate(mask: np.ndarray, lung_mask: np.ndarray, ignore: float = 0.2, frac: float = 0.4,
               drop_last: bool = False) -> np.ndarray:
    """Zero ``mask`` outside the lung slab of :func:`slice_gate_range` (cropped frame).

    Parameters
    ----------
    mask : (T, H, W) bool; lung_mask : (T, h', w') {0, 1} with the same T

    Returns
    -------
    np.ndarray, (T, H, W) bool (a new array).
    """
    if np.shape(mask)[0] != np.shape(lung_mask)[0]:
        raise VolumeError(None, f"mask has {np.shape(mask)[0]} slices, lung mask {np.shape(lung_mask)[0]}")
    z0, z1 = slice_gate_range(lung_mask, ignore, frac, drop_last)
    out = np.zeros(np.shape(mask), dtype=bool)
    out[z0:z1] = np.asarray(mask[z0:z1], dtype=bool)
    return out


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """26-connected components, ordered by size.

    Returns
    -------
    (labels, ids, sizes) : labels (Z, Y, X) int32 in raster order (scipy); ids and sizes
    (n,) int64 of the components sorted by size, largest first (ties: lower id first).
    """
    m = np.asarray(mask, dtype=bool)
    require_3d(m, "mask")
    labels, n = ndimage.label(m, structure=STRUCT_26)
    if n == 0:
        return labels, np.zeros(0, np.int64), np.zeros(0, np.int64)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.lexsort((np.arange(n), -sizes))
    return labels, (order + 1).astype(np.int64), sizes[order].astype(np.int64)


def cam_candidates(mask: np.ndarray, max_candidates: int = 9, return_label_ids: bool = False):
    """The ``max_candidates`` largest 26-connected components (spec §7 step 5).

    Parameters
    ----------
    mask : (T, H, W) bool (gated CAM mask)

    Returns
    -------
    list of (T, H, W) bool masks, largest first; with ``return_label_ids`` also the
    raster-order label id of each (used by ``merge="label_weighted"``).
    """
    labels, ids, _ = label_components(mask)
    ids = ids[:max_candidates]
    cands = [labels == i for i in ids]
    return (cands, [int(i) for i in ids]) if return_label_ids else cands


# =============================================================================
# 3. 3DCC variance response
# =============================================================================
def _window_sums(m: np.ndarray, window: int, stride: int, chunk: int = 16) -> np.ndarray:
    """Foreground count of every w x w window at origins (i s, j s), per slice.

    m : (Z, Y, X) bool -> (Z, (Y-w)//s + 1, (X-w)//s + 1) int32 (integral image, z-chunked).
    """
    z, y, x = m.shape
    ny, nx = (y - window) // stride + 1, (x - window) // stride + 1
    out = np.empty((z, ny, nx), dtype=np.int32)
    if stride == window:  # plain tiling: reshape and sum, no integral image needed
        for a in range(0, z, chunk):
            t = m[a:a + chunk, :ny * window, :nx * window]
            out[a:a + chunk] = t.reshape(t.shape[0], ny, window, nx, window).sum(axis=(2, 4), dtype=np.int32)
        return out
    for a in range(0, z, chunk):
        blk = m[a:a + chunk]
        c = np.zeros((blk.shape[0], y + 1, x + 1), dtype=np.int32)
        np.cumsum(blk, axis=1, dtype=np.int32, out=c[:, 1:, 1:])
        np.cumsum(c[:, 1:, 1:], axis=2, out=c[:, 1:, 1:])
        s = c[:, window:, window:] - c[:, :-window, window:] - c[:, window:, :-window] + c[:, :-window, :-window]
        out[a:a + chunk] = s[:, ::stride, ::stride]
    return out


def _fragment_counts(patches: np.ndarray) -> np.ndarray:
    """Number of 8-connected foreground fragments in each (w, w) patch of (K, w, w)."""
    k = patches.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    labels, n = ndimage.label(patches, structure=_STRUCT_8_STACKED)
    tile_of = np.zeros(n + 1, dtype=np.int64)
    tile_of[labels] = np.broadcast_to(np.arange(k)[:, None, None], labels.shape)
    return np.bincount(tile_of[1:], minlength=k)


def variance_response(
    lung_mask: np.ndarray,
    window: int = 6,
    stride: int | None = None,
    slab: tuple[float, float] = (0.1, 0.8),
    min_fragments: int = 3,
    std_ref: float = 0.5,
    std_tol: float = 0.05,
) -> np.ndarray:
    """3DCC "variance map" of the binary lung mask (spec §7, 3DCC steps 1-4).

    Within slices ``int(slab[0] Z)`` to ``int(slab[1] Z)``, each w x w window
    (``window=6`` as the code, 7 as the paper; origins every ``stride`` pixels,
    ``None`` = ``window`` = non-overlapping tiles; windows that do not fit at the
    bottom/right are skipped) fires when it holds >= ``min_fragments`` separate
    8-connected foreground fragments (counted inside the window) and
    |std(window) - ``std_ref``| < ``std_tol`` (population std of the 0/1 values).
    Fired windows are set to 1 (for ``stride < window`` the union of fired windows).

    Parameters
    ----------
    lung_mask : (Z, Y, X) {0, 1} (any dtype; > 0 is foreground), typically 512^2 grid

    Returns
    -------
    np.ndarray, (Z, Y, X) bool; False outside the slab.
    """
    m_all = np.asarray(lung_mask)
    require_3d(m_all, "lung mask")
    window = int(window)
    stride = window if stride is None else int(stride)
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    zdim, ydim, xdim = m_all.shape
    fired_map = np.zeros(m_all.shape, dtype=bool)
    z0, z1 = int(slab[0] * zdim), int(slab[1] * zdim)
    if z1 <= z0 or ydim < window or xdim < window:
        return fired_map
    m = m_all[z0:z1] > 0
    counts = _window_sums(m, window, stride)
    p = counts / float(window * window)
    ok = np.abs(np.sqrt(p * (1.0 - p)) - std_ref) < std_tol
    zi, yi, xi = np.nonzero(ok)
    patches = sliding_window_view(m, (window, window), axis=(1, 2))[zi, yi * stride, xi * stride]
    fire = _fragment_counts(patches) >= min_fragments
    zi, yi, xi = zi[fire], yi[fire], xi[fire]
    out = fired_map[z0:z1]
    if stride == window:
        ny, nx = counts.shape[1:]
        tiles = out[:, :ny * window, :nx * window].reshape(z1 - z0, ny, window, nx, window)
        tiles[zi, yi, :, xi, :] = True
    else:  # union of overlapping windows: box count over the origin map
        origin = np.zeros((z1 - z0, ydim + window - 1, xdim + window - 1), dtype=bool)
        origin[zi, yi * stride + window - 1, xi * stride + window - 1] = True
        out[:] = _window_sums(origin, window, 1) > 0
    return fired_map


def r3dcc(fired: np.ndarray) -> np.ndarray:
    """R3dcc = the largest 26-connected component of the fired map (spec §7, 3DCC step 5).

    Empty when nothing fired (the code crashed with <= 5 components; this does not).
    Ties: the component with the lower raster-order label.

    Returns
    -------
    np.ndarray, same shape, bool.
    """
    f = np.asarray(fired, dtype=bool)
    require_3d(f, "fired map")
    out = np.zeros(f.shape, dtype=bool)
    box = _bbox_slices(f)
    if box is None:
        return out
    labels, ids, _ = label_components(f[box])  # label only the fired bounding box (speed)
    out[box] = labels == ids[0]
    return out


def _bbox_slices(m: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels of a bool (Z, Y, X) array as slices; None if empty."""
    zs = np.flatnonzero(m.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    sub = m[zs[0]:zs[-1] + 1]
    proj = sub.any(axis=0)
    ys, xs = np.flatnonzero(proj.any(axis=1)), np.flatnonzero(proj.any(axis=0))
    return slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def to_cam_frame(mask_full: np.ndarray, bbox: Sequence[Sequence[int]],
                 hw: tuple[int, int] = (224, 336), z_step: int = 1) -> np.ndarray:
    """Crop a full-grid mask to ``bbox`` ([min, max) per axis) and resize in-plane to ``hw``
    with order 0, exactly as ``crop.crop_to_mask`` + ``resize_inplane`` treat the lung mask;
    keep every ``z_step``-th slice like ``cohort.classifier_input``.

    Returns
    -------
    np.ndarray, (ceil((z1 - z0) / z_step), hw[0], hw[1]) bool.
    """
    require_3d(np.asarray(mask_full), "mask")
    if int(z_step) < 1:
        raise ValueError(f"z_step must be >= 1, got {z_step!r}")
    sl = tuple(slice(int(a), int(b)) for a, b in bbox)
    crop = (np.asarray(mask_full)[sl][:: int(z_step)] > 0).astype(np.uint8)
    return resize_inplane(crop, hw, order=0) > 0


# =============================================================================
# 4. Merge and uncrop
# =============================================================================
def _raster_label_ids(candidates: Sequence[np.ndarray]) -> list[int]:
    """Label ids a raster-order labeller would give these components (1-based rank of first voxel)."""
    firsts = [int(np.flatnonzero(np.asarray(c).ravel())[:1].tolist()[0]) if np.any(c) else -1
              for c in candidates]
    order = np.argsort(firsts, kind="stable")
    ids = np.empty(len(candidates), dtype=np.int64)
    ids[order] = np.arange(1, len(candidates) + 1)
    return ids.tolist()


def candidate_overlaps(candidates: Sequence[np.ndarray], r3dcc_mask: np.ndarray, mode: str = "voxel",
                       label_ids: Sequence[int] | None = None) -> np.ndarray:
    """Overlap score of each candidate with R3dcc (spec §7, Merge).

    ``mode="voxel"``: |C_k ∩ R3dcc| (book default). ``"label_weighted"``: the code's
    quirk, overlap x label id (``label_ids`` from :func:`cam_candidates`; default the
    raster-order rank of the candidates' first voxels).

    Returns
    -------
    np.ndarray, (K,) int64.
    """
    r = np.asarray(r3dcc_mask, dtype=bool)
    ov = np.array([np.count_nonzero(np.logical_and(c, r)) for c in candidates], dtype=np.int64)
    if mode == "voxel":
        return ov
    if mode == "label_weighted":
        ids = _raster_label_ids(candidates) if label_ids is None else list(label_ids)
        if len(ids) != len(candidates):
            raise ValueError(f"{len(ids)} label ids for {len(candidates)} candidates")
        return ov * np.asarray(ids, dtype=np.int64)
    raise ValueError(f"unknown merge mode {mode!r}; use 'voxel' or 'label_weighted'")


def merge_candidates(candidates: Sequence[np.ndarray], r3dcc_mask: np.ndarray, mode: str = "voxel",
                     no_overlap: str = "largest", label_ids: Sequence[int] | None = None) -> np.ndarray:
    """The lesion mask: the candidate with the largest overlap score with R3dcc.

    Ties go to the earlier (larger) candidate. With no overlap at all, ``no_overlap=
    "largest"`` (book default) returns the largest candidate and ``"empty"`` an empty
    mask (a miss). No candidates -> empty mask of ``r3dcc_mask``'s shape.

    Returns
    -------
    np.ndarray, (T, H, W) bool.
    """
    if no_overlap not in ("largest", "empty"):
        raise ValueError(f"unknown no_overlap rule {no_overlap!r}; use 'largest' or 'empty'")
    idx = _choose(candidates, r3dcc_mask, mode, no_overlap, label_ids)[0]
    if idx is None:
        return np.zeros(np.shape(r3dcc_mask), dtype=bool)
    return np.asarray(candidates[idx], dtype=bool)


def _choose(candidates, r3dcc_mask, mode, no_overlap, label_ids):
    if len(candidates) == 0:
        return None, np.zeros(0, np.int64)
    scores = candidate_overlaps(candidates, r3dcc_mask, mode, label_ids)
    if scores.max() > 0:
        return int(np.argmax(scores)), scores
    return (0 if no_overlap == "largest" else None), scores


def uncrop(mask_cropped: np.ndarray, bbox: Sequence[Sequence[int]], full_shape: Sequence[int],
           order: int = 0, z_step: int = 1) -> np.ndarray:
    """Map a cropped-frame mask (T, H, W) back to the full grid (spec §7, Merge, last step).

    Inverse of ``crop_to_mask`` (bbox ((z0, z1), (y0, y1), (x0, x1)), [min, max)) followed
    by ``resize_inplane``: the mask is zoomed in-plane to (y1 - y0, x1 - x0) with order 0
    (same corner-aligned ``ndimage.zoom`` convention) and pasted at the box; zero elsewhere.
    With ``z_step`` > 1 (every ``z_step``-th slice kept), each slice fills the ``z_step``
    slices it stands for (nearest neighbour in z).

    Returns
    -------
    np.ndarray, ``full_shape`` bool.
    """
    m = np.asarray(mask_cropped)
    require_3d(m, "cropped mask")
    (z0, z1), (y0, y1), (x0, x1) = ((int(a), int(b)) for a, b in bbox)
    full_shape = tuple(int(s) for s in full_shape)
    if int(z_step) < 1:
        raise ValueError(f"z_step must be >= 1, got {z_step!r}")
    if m.shape[0] != -(-(z1 - z0) // int(z_step)):
        raise VolumeError(None, f"mask has {m.shape[0]} slices but the box spans {z1 - z0} (z_step {z_step})")
    if int(z_step) > 1:
        m = np.repeat(m, int(z_step), axis=0)[: z1 - z0]
    if not (0 <= z0 < z1 <= full_shape[0] and 0 <= y0 < y1 <= full_shape[1] and 0 <= x0 < x1 <= full_shape[2]):
        raise VolumeError(None, f"box {bbox} does not fit in the full grid {full_shape}")
    out = np.zeros(full_shape, dtype=bool)
    out[z0:z1, y0:y1, x0:x1] = resize_inplane((m > 0).astype(np.uint8), (y1 - y0, x1 - x0), order=order) > 0
    return out


# =============================================================================
# 5. Whole chain
# =============================================================================
@dataclass
class LocalizationResult:
    """Output of :func:`localize`; masks in the cropped input frame (T, H, W) unless ``_full``.

    Attributes
    ----------
    cam_raw : (T//2, H/8, W/8) float32 raw CAM; cam : (T, H, W) float32 normalised CAM
    cam_mask : (T, H, W) bool after threshold and both gates
    candidates : list of (T, H, W) bool, largest first; candidate_label_ids : raster label ids
    overlaps : (K,) scores used for the merge; chosen : index into candidates or None
    r3dcc : (T, H, W) bool (R3dcc in the CAM frame); r3dcc_full : full grid or None
    lesion : (T, H, W) bool; lesion_full : full grid or None (needs ``lung_mask_full`` + ``bbox``)
    p_covid : float; timings : seconds per stage; params : every constant used
    """

    cam_raw: np.ndarray
    cam: np.ndarray
    cam_mask: np.ndarray
    candidates: list
    candidate_label_ids: list
    overlaps: np.ndarray
    chosen: int | None
    r3dcc: np.ndarray
    r3dcc_full: np.ndarray | None
    lesion: np.ndarray
    lesion_full: np.ndarray | None
    p_covid: float
    timings: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def localize(
    model: torch.nn.Module,
    x: torch.Tensor | np.ndarray,
    ct_u8_cropped: np.ndarray | None = None,
    lung_mask_cropped: np.ndarray | None = None,
    lung_mask_full: np.ndarray | None = None,
    *,
    bbox: Sequence[Sequence[int]] | None = None,
    z_step: int = 1,
    method: str = "linear",
    target: int = 1,
    cam_top_frac: float = 0.05,
    cam_bins: int = 50,
    cam_min_u8: int = 75,
    slice_gate_ignore: float = 0.2,
    slice_gate_frac: float = 0.4,
    slice_gate_drop_last: bool = False,
    cam_max_candidates: int = 9,
    cc3d_window: int = 6,
    cc3d_stride: int | None = None,
    cc3d_slab: tuple[float, float] = (0.1, 0.8),
    cc3d_min_fragments: int = 3,
    cc3d_std_ref: float = 0.5,
    cc3d_std_tol: float = 0.05,
    merge: str = "voxel",
    no_overlap: str = "largest",
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LocalizationResult:
    """Run the whole localisation chain of spec §7 on one volume.

    Parameters
    ----------
    x : (1, 2, T, H, W) float32 DeCoVNet input (cropped, resized)
    ct_u8_cropped : (T, H, W) uint8 resized 8-bit CT; ``None`` = round(255 x[0, 0])
    lung_mask_cropped : (T, H', W') {0, 1} cropped lung mask (slice gate); ``None`` = x[0, 1]
    lung_mask_full : (L, 512, 512) {0, 1} U-Net mask on the full grid for the 3DCC
        response; needs ``bbox`` (from ``crop_to_mask``). ``None``: the 3DCC response is
        computed on ``lung_mask_cropped`` instead (a fallback: the window then covers
        resized pixels) and no full-grid masks are returned.
    bbox : ((z0, z1), (y0, y1), (x0, x1)) crop box of ``lung_mask_full`` ([min, max))
    z_step : every ``z_step``-th slice of the box is in ``x`` (``cohort.classifier_input``)
    method : "linear" (linearised head, the paper) or "gradcam"
    features : computes the ResBlock-2 features instead of ``model.features`` (e.g. a frozen
        graph from ``models.inference_runner(models.Features(model), "jit")``)
    Other keywords: the spec §7 constants (names as in the spec's parameter list).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if method == "linear":
        cam_raw, p = cam_for_volume(model, x, target, features)
    elif method == "gradcam":
        cam_raw, p = grad_cam_for_volume(model, x, target, features)
    else:
        raise ValueError(f"unknown CAM method {method!r}; use 'linear' or 'gradcam'")
    timings["cam"] = time.perf_counter() - t0
    xt = torch.as_tensor(x)
    xt = xt[0] if xt.ndim == 5 else xt
    shape = tuple(int(s) for s in xt.shape[1:])
    if ct_u8_cropped is None:
        ct_u8_cropped = np.rint(xt[0].detach().cpu().numpy() * 255.0).astype(np.uint8)
    if lung_mask_cropped is None:
        lung_mask_cropped = xt[1].detach().cpu().numpy() > 0.5

    t0 = time.perf_counter()
    cam = normalise_cam(resize_cam(cam_raw, shape, order=1))
    mask = histogram_threshold(cam, cam_top_frac, cam_bins)
    mask = intensity_gate(mask, ct_u8_cropped, cam_min_u8)
    mask = slice_gate(mask, lung_mask_cropped, slice_gate_ignore, slice_gate_frac, slice_gate_drop_last)
    cands, ids = cam_candidates(mask, cam_max_candidates, return_label_ids=True)
    timings["postprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vr = dict(window=cc3d_window, stride=cc3d_stride, slab=cc3d_slab, min_fragments=cc3d_min_fragments,
              std_ref=cc3d_std_ref, std_tol=cc3d_std_tol)
    r_full = None
    if lung_mask_full is not None:
        if bbox is None:
            raise ValueError("lung_mask_full needs the crop box `bbox` to map R3dcc into the CAM frame")
        r_full = r3dcc(variance_response(lung_mask_full, **vr))
        r_cam = to_cam_frame(r_full, bbox, shape[1:], z_step)
        if r_cam.shape != shape:
            raise VolumeError(None, f"R3dcc in the CAM frame is {r_cam.shape}, input is {shape}")
    else:
        r_cam = r3dcc(variance_response(lung_mask_cropped, **vr))
        if r_cam.shape != shape:
            r_cam = to_cam_frame(r_cam, [(0, r_cam.shape[0]), (0, r_cam.shape[1]), (0, r_cam.shape[2])],
                                 shape[1:])
    timings["r3dcc"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if no_overlap not in ("largest", "empty"):
        raise ValueError(f"unknown no_overlap rule {no_overlap!r}; use 'largest' or 'empty'")
    chosen, scores = _choose(cands, r_cam, merge, no_overlap, ids)
    lesion = cands[chosen] if chosen is not None else np.zeros(shape, dtype=bool)
    lesion_full = None
    if lung_mask_full is not None:
        lesion_full = uncrop(lesion, bbox, np.shape(lung_mask_full), z_step=z_step)
    timings["merge"] = time.perf_counter() - t0

    params = dict(method=method, target=target, cam_top_frac=cam_top_frac, cam_bins=cam_bins,
                  cam_min_u8=cam_min_u8, slice_gate_ignore=slice_gate_ignore, slice_gate_frac=slice_gate_frac,
                  slice_gate_drop_last=slice_gate_drop_last, cam_max_candidates=cam_max_candidates,
                  cc3d_window=cc3d_window, cc3d_stride=cc3d_stride, cc3d_slab=list(cc3d_slab),
                  cc3d_min_fragments=cc3d_min_fragments, cc3d_std_ref=cc3d_std_ref, cc3d_std_tol=cc3d_std_tol,
                  merge=merge, no_overlap=no_overlap, z_step=int(z_step), cc3d_frame="full" if lung_mask_full is not None else "cropped")
    return LocalizationResult(cam_raw=cam_raw, cam=cam, cam_mask=mask, candidates=cands, candidate_label_ids=ids,
                              overlaps=scores, chosen=chosen, r3dcc=r_cam, r3dcc_full=r_full, lesion=lesion,
                              lesion_full=lesion_full, p_covid=p, timings=timings, params=params)


# =============================================================================
# 6. Hit metric
# =============================================================================


# =============================================================================
# 7. Scoring a run
# =============================================================================


