"""Scoring a lesion localisation: the hit metric (is the predicted lesion's point inside a marked
lesion?), its random-voxel baseline, slice-level hits where only infected slices are labelled, VOC
boxes, and a run's hit-rate table with Wilson intervals.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from . import evaluate
from .errors import InputError, VolumeError
from .evaluate import wilson_ci
from .localize import STRUCT_8, STRUCT_26, LocalizationResult, require_3d


class VocBox(NamedTuple):
    """One PASCAL-VOC box: class name and 1-based inclusive pixel coordinates (x = column)."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def _voc_int(obj: ET.Element, tag: str, path: str) -> int:
    node = obj.find(f"bndbox/{tag}")
    if node is None or node.text is None or not node.text.strip():
        raise InputError(path, f"VOC object without bndbox/{tag}")
    try:
        return int(round(float(node.text.strip())))
    except ValueError:
        raise InputError(path, f"VOC bndbox/{tag} is not a number: {node.text.strip()!r}") from None


def parse_voc_boxes(xml_path: str | os.PathLike) -> list[VocBox]:
    """Boxes of one PASCAL-VOC XML file (e.g. a Lung-PET-CT-Dx annotation).

    Raises
    ------
    InputError naming the file when it is unreadable, not XML, not an ``<annotation>``,
    or has a box with a missing/non-numeric coordinate or xmax < xmin / ymax < ymin.
    A file without ``<object>`` gives ``[]``.
    """
    path = str(xml_path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InputError(path, f"malformed VOC XML: {e}") from None
    except OSError as e:
        raise InputError(path, f"cannot read VOC XML: {e.strerror or e}") from None
    if root.tag != "annotation":
        raise InputError(path, f"not a PASCAL-VOC annotation (root element <{root.tag}>)")
    boxes = []
    for obj in root.iter("object"):
        name_node = obj.find("name")
        name = (name_node.text or "").strip() if name_node is not None else ""
        xmin, ymin, xmax, ymax = (_voc_int(obj, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise InputError(path, f"VOC box with xmax < xmin or ymax < ymin: {(xmin, ymin, xmax, ymax)}")
        boxes.append(VocBox(name, xmin, ymin, xmax, ymax))
    return boxes


def read_voc_dir(folder: str | os.PathLike, slice_of: Mapping[str, int] | None = None
                 ) -> dict[int, list[VocBox]]:
    """Read every ``*.xml`` in ``folder`` as {slice index: boxes} (spec §7, Hit metric 1).

    The slice index is ``int(file stem)`` (the code's convention) or ``slice_of[stem]``
    (e.g. SOPInstanceUID -> slice position for Lung-PET-CT-Dx). A stem that is neither
    raises InputError; files whose stem is absent from ``slice_of`` are skipped.
    """
    out: dict[int, list[VocBox]] = {}
    for f in sorted(Path(folder).glob("*.xml")):
        if slice_of is not None:
            if f.stem not in slice_of:
                continue
            z = int(slice_of[f.stem])
        else:
            try:
                z = int(f.stem)
            except ValueError:
                raise InputError(f, "VOC file name is not a slice index (pass slice_of)") from None
        out.setdefault(z, []).extend(parse_voc_boxes(f))
    return out


def _iter_boxes(boxes) -> Iterable[tuple[int, int, int, int, int]]:
    items = boxes.items() if isinstance(boxes, Mapping) else None
    if items is not None:
        for z, bs in items:
            for b in bs:
                if isinstance(b, VocBox):
                    yield int(z), b.xmin, b.ymin, b.xmax, b.ymax
                else:
                    xmin, ymin, xmax, ymax = b
                    yield int(z), int(xmin), int(ymin), int(xmax), int(ymax)
    else:
        for b in boxes:
            z, xmin, ymin, xmax, ymax = b
            yield int(z), int(xmin), int(ymin), int(xmax), int(ymax)


def boxes_to_volume(boxes, shape: Sequence[int], inclusive: bool = True) -> np.ndarray:
    """Rasterise per-slice 2D boxes into a 3D ground-truth mask (spec §7, Hit metric 1).

    Parameters
    ----------
    boxes : {z: [VocBox or (xmin, ymin, xmax, ymax)]} or [(z, xmin, ymin, xmax, ymax)];
        z is the 0-based slice index; x/y are 1-based VOC pixel coordinates.
    shape : (Z, Y, X)
    inclusive : True (``gt_box_inclusive``, book): rows ymin..ymax and columns xmin..xmax
        inclusive, i.e. 0-based [ymin-1, ymax); False: the code's slicing, which drops the
        last row and column, 0-based [ymin-1, ymax-1).

    Boxes are clipped to the grid; a slice index outside [0, Z) raises InputError.

    Returns
    -------
    np.ndarray, ``shape`` bool.
    """
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, dtype=bool)
    end = 0 if inclusive else 1
    for z, xmin, ymin, xmax, ymax in _iter_boxes(boxes):
        if not 0 <= z < shape[0]:
            raise InputError(None, f"box on slice {z} outside the volume's {shape[0]} slices")
        y0, y1 = max(ymin - 1, 0), min(ymax - end, shape[1])
        x0, x1 = max(xmin - 1, 0), min(xmax - end, shape[2])
        if y1 > y0 and x1 > x0:
            out[z, y0:y1, x0:x1] = True
    return out


def mask_to_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Per-slice boxes of a voxel mask (spec §12: MosMed/COVID-19-CT-Seg masks -> boxes).

    One box per 8-connected 2D component of each slice, as (z, xmin, ymin, xmax, ymax)
    with 1-based inclusive VOC coordinates (so ``boxes_to_volume(.., inclusive=True)``
    covers the mask).
    """
    m = np.asarray(mask) > 0
    require_3d(m, "mask")
    out = []
    for z in np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1)):
        labels, _ = ndimage.label(m[z], structure=STRUCT_8)
        for sl in ndimage.find_objects(labels):
            ys, xs = sl
            out.append((int(z), xs.start + 1, ys.start + 1, xs.stop, ys.stop))
    return out


def gt_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """3D ground-truth components (26-connectivity): (labels int32, count)."""
    m = np.asarray(mask) > 0
    require_3d(m, "ground-truth mask")
    return ndimage.label(m, structure=STRUCT_26)


def hit_point(pred_mask: np.ndarray, mode: str = "median_voxel") -> tuple[int, int, int] | None:
    """The predicted point of spec §7, Hit metric 2 (``hit_point``).

    ``"median_voxel"``: element floor(n/2) of the mask's voxel coordinates listed in
    C order (z, then y, then x) — a lexicographic median, always a mask voxel.
    ``"centroid"``: the mean coordinate rounded to the nearest voxel (may lie outside
    the mask). Empty mask -> None.
    """
    m = np.asarray(pred_mask)
    flat = np.flatnonzero(m.ravel())
    if flat.size == 0:
        return None
    if mode == "median_voxel":
        return tuple(int(v) for v in np.unravel_index(flat[flat.size // 2], m.shape))
    if mode == "centroid":
        coords = np.unravel_index(flat, m.shape)
        return tuple(int(np.rint(c.mean())) for c in coords)
    raise ValueError(f"unknown hit_point mode {mode!r}; use 'median_voxel' or 'centroid'")


def is_hit(pred_mask: np.ndarray, gt_mask: np.ndarray, mode: str = "median_voxel") -> bool | None:
    """Hit: the predicted point lies in a ground-truth component (spec §7, Hit metric 3).

    Returns
    -------
    True / False; **None** when ``gt_mask`` is empty (no boxes): such volumes must be
    excluded explicitly by the caller (see :func:`hit_rate`). An empty prediction is a miss.
    """
    g = np.asarray(gt_mask) > 0
    if np.shape(pred_mask) != g.shape:
        raise VolumeError(None, f"prediction {np.shape(pred_mask)} and ground truth {g.shape} differ in shape")
    if not g.any():
        return None
    pt = hit_point(pred_mask, mode)
    return False if pt is None else bool(g[pt])


def hit_rate(hits: Sequence[bool | None], alpha: float = 0.05, exclude_none: bool = False
             ) -> tuple[float, float, float, int, int]:
    """Hit rate = hits / (hits + misses) with a Wilson (1 - alpha) CI.

    ``None`` entries (volumes without ground truth) raise unless ``exclude_none=True``.

    Returns
    -------
    (rate, lo, hi, k, n); (nan, nan, nan, 0, 0) when n = 0.
    """
    vals = list(hits)
    if any(h is None for h in vals):
        if not exclude_none:
            raise ValueError("hit list contains None (volumes without ground truth): exclude them first "
                             "or pass exclude_none=True")
        vals = [h for h in vals if h is not None]
    n = len(vals)
    k = int(sum(bool(h) for h in vals))
    if n == 0:
        return math.nan, math.nan, math.nan, 0, 0
    lo, hi = wilson_ci(k, n, alpha)
    return k / n, lo, hi, k, n


def random_baseline_hit(lung_mask: np.ndarray, gt_mask: np.ndarray, rng: np.random.Generator | int | None = None,
                        n_draws: int | None = None) -> float | None:
    """Chance that a uniformly random lung voxel hits the ground truth.

    ``n_draws=None``: exact, |lung ∩ GT| / |lung|. Otherwise a Monte-Carlo estimate from
    ``n_draws`` draws with ``rng`` (Generator or seed). None when the GT is empty (excluded,
    as in :func:`is_hit`); an empty lung mask raises.
    """
    lung = np.asarray(lung_mask) > 0
    g = np.asarray(gt_mask) > 0
    if lung.shape != g.shape:
        raise VolumeError(None, f"lung mask {lung.shape} and ground truth {g.shape} differ in shape")
    if not g.any():
        return None
    idx = np.flatnonzero(lung.ravel())
    if idx.size == 0:
        raise VolumeError(None, "empty lung mask: no random lung voxel to draw")
    gflat = g.ravel()
    if n_draws is None:
        return float(np.count_nonzero(gflat[idx]) / idx.size)
    rng = np.random.default_rng(rng)
    draws = idx[rng.integers(0, idx.size, size=int(n_draws))]
    return float(np.count_nonzero(gflat[draws]) / int(n_draws))


def labels_in_input_frame(slice_labels: np.ndarray, bbox: Sequence[Sequence[int]], z_step: int,
                          n_slices_1mm: int) -> np.ndarray:
    """Scanner-slice labels carried to the slices of a classifier input.

    Input slice ``t`` is 1 mm slice ``j = z0 + t·z_step`` of the crop box; the 1 mm grid
    comes from ``preprocess.resample_z`` (``ndimage.zoom``, corner-aligned), so ``j`` lies at
    scanner coordinate ``j·(S - 1)/(n_slices_1mm - 1)``, rounded to the nearest slice.

    Parameters
    ----------
    slice_labels : (S,) per scanner slice (reader order)
    bbox : crop box ((z0, z1), ...) on the 1 mm grid; z_step : slices kept
    n_slices_1mm : slices of the 1 mm volume

    Returns
    -------
    (ceil((z1 - z0) / z_step),) array of ``slice_labels``' dtype.
    """
    lab = np.asarray(slice_labels)
    s = lab.shape[0]
    (z0, z1) = (int(v) for v in bbox[0])
    j = np.arange(z0, z1, int(z_step))
    if n_slices_1mm < 2 or z1 > n_slices_1mm:
        raise VolumeError(None, f"crop box {bbox[0]} does not fit {n_slices_1mm} slices at 1 mm")
    src = np.rint(j * (s - 1) / (int(n_slices_1mm) - 1)).astype(np.int64)
    return lab[np.clip(src, 0, s - 1)]


def slice_level_hit(pred_mask: np.ndarray, infected_slices, mode: str = "median_voxel",
                    lung: np.ndarray | None = None) -> bool | None:
    """Slice-level variant for COVID-CT-MD (spec §12): the predicted point's slice is infected
    and, when ``lung`` is given, the point lies inside the lung mask (a "lesion" on the chest
    wall or at the crop border of an infected slice is a miss, not a hit).

    Parameters
    ----------
    pred_mask : (Z, Y, X) bool
    infected_slices : (Z,) np.ndarray of per-slice 0/1 labels (e.g. COVID-CT-MD), or any
        other iterable of infected slice indices
    lung : (Z, Y, X) lung mask of the same frame, or None (slice label alone)

    Returns
    -------
    bool; None when no slice is infected (exclude the volume). Empty prediction = miss.
    Label as "slice-level hit", not the box-based metric.
    """
    z_n = np.shape(pred_mask)[0]
    if isinstance(infected_slices, np.ndarray) and infected_slices.ndim == 1 and infected_slices.size == z_n:
        flags = infected_slices.astype(bool)
    else:
        idx = np.asarray(list(infected_slices), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= z_n):
            raise VolumeError(None, f"infected slice index outside the volume's {z_n} slices")
        flags = np.zeros(z_n, dtype=bool)
        flags[idx] = True
    if not flags.any():
        return None
    pt = hit_point(pred_mask, mode)
    if pt is None:
        return False
    in_lung = True if lung is None else bool(np.asarray(lung)[pt] > 0)
    return bool(flags[pt[0]]) and in_lung


_UNSCORED = dict(hit=None, hit_centroid=None, hit_largest_cam=None, random_baseline=None, dice=None,
                 point_in_lung=None)


def _point_in(pred_mask: np.ndarray, region: np.ndarray, mode: str = "median_voxel") -> bool | None:
    """Whether the predicted hit point lies inside ``region`` (None for an empty prediction)."""
    pt = hit_point(pred_mask, mode)
    return None if pt is None else bool(np.asarray(region)[pt] > 0)


def score_volume(res: LocalizationResult, lung: np.ndarray, gt: np.ndarray | None = None,
                 slice_flags: np.ndarray | None = None) -> dict[str, float | bool | None]:
    """Score one :func:`localize` result against voxel masks or slice labels.

    Parameters
    ----------
    res : the result (masks in the input frame (T, H, W))
    lung : (T, H, W) lung mask of the input (the random baseline draws from it)
    gt : (T, H, W) ground-truth lesion mask, or None
    slice_flags : (T,) per-slice infection labels (:func:`labels_in_input_frame`), used
        when ``gt`` is None: every scored quantity is then slice-level, and a hit also needs
        the hit point inside ``lung`` (the random baseline draws lung voxels of infected slices)

    Returns
    -------
    dict with ``hit`` (median voxel), ``hit_centroid``, ``hit_largest_cam`` (largest CAM
    component alone, no R3dcc), ``random_baseline`` (chance that a random lung voxel
    hits), ``dice`` (voxel masks only, else None); all None without ground truth.
    """
    lung = np.asarray(lung) > 0
    largest = res.candidates[0] if res.candidates else np.zeros_like(res.lesion)
    if gt is not None:
        g = np.asarray(gt) > 0
        if not g.any():
            return dict(_UNSCORED)
        return dict(hit=is_hit(res.lesion, g, "median_voxel"), hit_centroid=is_hit(res.lesion, g, "centroid"),
                    hit_largest_cam=is_hit(largest, g, "median_voxel"),
                    random_baseline=random_baseline_hit(lung, g), dice=evaluate.dice(res.lesion, g),
                    point_in_lung=_point_in(res.lesion, lung))
    if slice_flags is not None:
        flags = np.asarray(slice_flags).astype(bool)
        if not flags.any():
            return dict(_UNSCORED)
        on_infected = np.broadcast_to(flags[:, None, None], lung.shape) & lung
        return dict(hit=slice_level_hit(res.lesion, flags, "median_voxel", lung),
                    hit_centroid=slice_level_hit(res.lesion, flags, "centroid", lung),
                    hit_largest_cam=slice_level_hit(largest, flags, "median_voxel", lung),
                    random_baseline=random_baseline_hit(lung, on_infected) if lung.any() else None, dice=None,
                    point_in_lung=_point_in(res.lesion, lung))
    return dict(_UNSCORED)


def hit_rate_table(per_volume: "pd.DataFrame", by: Sequence[str] = ("CAM", "window"),
                   population: str = "predicted_positive", alpha: float = 0.05) -> "pd.DataFrame":
    """Hit rates with Wilson CIs per variant, from :func:`score_volume` rows.

    ``per_volume`` needs the columns of ``by``, ``predicted_positive`` (bool) and the
    :func:`score_volume` keys. Rows without ground truth (``hit`` None/NaN) are left out.
    ``population``: ``"predicted_positive"`` (volumes DeCoVNet calls positive, the seed
    paper) or ``"all_annotated"`` (every volume with ground truth, the official code).

    Returns
    -------
    One row per variant: ``n``, ``hits``, ``hit_rate``, ``ci_lo``, ``ci_hi``,
    ``hit_rate_centroid``, ``hit_rate_largest_cam``, ``random_baseline`` (mean over the
    same volumes), ``median_dice`` (NaN without voxel masks).
    """

    if population not in ("predicted_positive", "all_annotated"):
        raise ValueError(f"population must be 'predicted_positive' or 'all_annotated', got {population!r}")
    df = per_volume[per_volume["hit"].notna()]
    if population == "predicted_positive":
        df = df[df["predicted_positive"].astype(bool)]
    out = []
    for key, g in per_volume.groupby(list(by), sort=False):
        sub = df.loc[df.index.intersection(g.index)]
        rate, lo, hi, k, n = hit_rate([bool(h) for h in sub["hit"]])
        rc = hit_rate([bool(h) for h in sub["hit_centroid"]])[0]
        rl = hit_rate([bool(h) for h in sub["hit_largest_cam"]])[0]
        base = float(pd.to_numeric(sub["random_baseline"]).mean()) if n else math.nan
        dices = pd.to_numeric(sub["dice"], errors="coerce").dropna() if "dice" in sub else pd.Series(dtype=float)
        key = key if isinstance(key, tuple) else (key,)
        out.append(dict(zip(by, key), n=n, hits=k, hit_rate=rate, ci_lo=lo, ci_hi=hi, hit_rate_centroid=rc,
                        hit_rate_largest_cam=rl, random_baseline=base,
                        median_dice=float(dices.median()) if len(dices) else math.nan))
    return pd.DataFrame(out).set_index(list(by))
