"""Procedural phantoms for the ``synthetic`` profile.

Chest CT volumes in Hounsfield units with exact lung and lesion masks, and
8-bit frontal chest radiographs, all built from a seed (same seed, same
bytes), small enough for the whole synthetic book to run on two CPU cores.
Numbers computed on these phantoms are *not* medical results.

Conventions
-----------
* CT arrays are ``(z, y, x)`` = (slice, row, column); slice 0 is the most
  inferior one (feet), rows run anterior → posterior, columns patient right →
  patient left (radiological display), i.e. DICOM LPS with z increasing with
  the slice index.
* Anatomy is laid out relative to the scanner field of view (FOV) of radius
  ``0.494 · W`` pixels, so the chest scales with ``shape`` and ``spacing_mm``;
  the default 48×128×128 at (2.5, 1.4, 1.4) mm is about a half-scale chest.
* ``lung_mask`` holds the lungs *and* the trachea/main bronchi (what an ideal
  "largest air component" segmentation returns), including vessels, nodules
  and lesions inside them; ``lesion_mask`` holds only COVID-19 opacities.
* COVID-19 findings: bilateral, peripheral, posterior-predominant ground-glass
  blobs (-680 to -430 HU), some with a consolidated core (-60 to 40 HU), and
  crossed by a network of thickened septa (-200 to -80 HU, "crazy paving",
  :data:`SEPTA_FRACTION` of the ground glass). The septa are denser than the
  -320 HU lung threshold, so where they reach the pleura they cut the
  *unsupervised* lung mask into fragments (what the 3DCC response of the
  localisation looks for), while the exact ``lung_mask`` stays whole.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from .errors import ConfigError, DicomError, ImageError, NiftiError
from .files import atomic_write_bytes, sha256_file
from .io import CTVolume
from .io import write_nifti as write_volume_nifti

__all__ = [
    "CTPhantom",
    "CXRPhantom",
    "CT_FINDINGS",
    "CXR_LABELS",
    "ct_phantom",
    "cxr_phantom",
    "write_nifti",
    "write_nifti_mask",
    "write_dicom_series",
    "write_png",
    "directory_sha256",
    "make_synthetic_dataset",
]

CT_FINDINGS = ("covid", "clear", "non_covid")
NON_COVID_KINDS = ("nodule", "unilateral_consolidation", "emphysema")
CXR_LABELS = ("healthy", "pneumonia", "covid19", "not_certain")
FOV_PADDING_HU = -2048
_SALT_CT = 0x5C7
_SALT_CXR = 0xC512
_Vec = tuple[float, float, float]


# --------------------------------------------------------------------------- CT


@dataclass(frozen=True, eq=False)
class CTPhantom:
    """A synthetic chest CT with its ground truth.

    Attributes
    ----------
    hu : ndarray, int16, (z, y, x)
        Hounsfield units; -2048 outside the scanner FOV disk.
    spacing_mm : tuple of float
        Voxel spacing (z, y, x) in mm.
    lung_mask : ndarray, uint8 {0, 1}, (z, y, x)
        Lungs plus trachea/main bronchi, with everything inside them.
    lesion_mask : ndarray, uint8 {0, 1}, (z, y, x)
        COVID-19 opacities (ground glass and consolidation); empty otherwise.
    label : int
        1 = COVID-19, 0 = negative.
    finding : str
        ``"covid"``, ``"clear"`` or ``"non_covid"``.
    case_id : str
        For example ``"syn-ct-0007"``.
    finding_detail : str
        Kind of non-COVID finding (``"nodule"``, ``"unilateral_consolidation"``,
        ``"emphysema"``), ``"covid_<n>_blobs"`` for COVID, ``""`` when clear.

    The arrays are read-only; copy them before modifying.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    lung_mask: np.ndarray
    lesion_mask: np.ndarray
    label: int
    finding: str
    case_id: str
    finding_detail: str = ""


@dataclass
class _Grid:
    """Voxel-centre coordinates in mm (broadcastable) and the layout unit."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    z: np.ndarray  # (D,1,1) mm
    y: np.ndarray  # (1,H,1) mm
    x: np.ndarray  # (1,1,W) mm
    h: np.ndarray  # (D,1,1) height fraction, 0 = slice 0, 1 = last slice
    u: float  # FOV radius in mm (layout unit)
    length: float  # z extent (D-1)·sz in mm

    def __post_init__(self) -> None:
        self.sp = np.array(self.spacing, dtype=np.float64)
        self.org = -0.5 * (np.array(self.shape, dtype=np.float64) - 1) * self.sp
        self.hi_idx = np.array(self.shape)

    def origin(self) -> np.ndarray:
        """(z, y, x) mm of voxel (0, 0, 0)."""
        return self.org


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Grid:
    d, h, w = shape
    sz, sy, sx = spacing
    z = ((np.arange(d, dtype=np.float32) - (d - 1) / 2) * sz)[:, None, None]
    y = ((np.arange(h, dtype=np.float32) - (h - 1) / 2) * sy)[None, :, None]
    x = ((np.arange(w, dtype=np.float32) - (w - 1) / 2) * sx)[None, None, :]
    hf = (np.arange(d, dtype=np.float32) / (d - 1))[:, None, None]
    u = 0.494 * min(h * sy, w * sx)
    return _Grid(shape, spacing, z, y, x, hf, float(u), float((d - 1) * sz))


def _check_ct_args(label: int, shape: Sequence[int], spacing_mm: Sequence[float],
                   finding: str | None) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if label not in (0, 1):
        raise ConfigError(None, f"CT phantom label must be 0 (negative) or 1 (COVID-19), got {label!r}")
    if len(shape) != 3 or any(int(s) != s for s in shape):
        raise ConfigError(None, f"CT phantom shape must be 3 integers (z, y, x), got {shape!r}")
    shp = tuple(int(s) for s in shape)
    if shp[0] < 12 or shp[1] < 48 or shp[2] < 48:
        raise ConfigError(None, f"CT phantom shape {shp} too small: need at least 12 slices and 48×48 pixels")
    if len(spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise ConfigError(None, f"CT spacing must be 3 positive finite mm values, got {spacing_mm!r}")
    if finding is not None:
        if finding not in CT_FINDINGS:
            raise ConfigError(None, f"unknown CT finding {finding!r}; choose one of {', '.join(CT_FINDINGS)}")
        if (finding == "covid") != (label == 1):
            raise ConfigError(None, f"finding {finding!r} contradicts label {label} (covid ⇔ 1)")
    return shp, tuple(float(s) for s in spacing_mm)  # type: ignore[return-value]


def _local_box(g: _Grid, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index box (z, y, x) covering the mm box [lo, hi]; ``None`` when outside."""
    lo = np.maximum(np.floor((lo_mm - g.org) / g.sp).astype(int), 0)
    hi = np.minimum(np.ceil((hi_mm - g.org) / g.sp).astype(int) + 1, g.hi_idx)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _box_coords(g: _Grid, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return g.z[box[0], :, :], g.y[:, box[1], :], g.x[:, :, box[2]]


def _capsule(g: _Grid, p0: np.ndarray, p1: np.ndarray, radius: float):
    """Box and boolean mask of voxels within ``radius`` mm of segment p0–p1 (z, y, x mm)."""
    box = _local_box(g, np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
    if box is None:
        return None, None
    z, y, x = _box_coords(g, box)
    d = (p1 - p0).astype(np.float32)
    dd = float(d @ d) or 1e-6
    rz, ry, rx = z - p0[0], y - p0[1], x - p0[2]
    t = np.clip((rz * d[0] + ry * d[1] + rx * d[2]) / dd, 0.0, 1.0)
    dist2 = (rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2
    return box, dist2 <= radius * radius


def _ellipsoid(g: _Grid, c: np.ndarray, radii: np.ndarray):
    """Box and boolean mask of the axis-aligned ellipsoid (centre, semi-axes in mm, z y x)."""
    box = _local_box(g, c - radii, c + radii)
    if box is None:
        return None, None
    z, y, x = _box_coords(g, box)
    q = ((z - c[0]) / radii[0]) ** 2 + ((y - c[1]) / radii[1]) ** 2 + ((x - c[2]) / radii[2]) ** 2
    return box, q <= 1.0


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ay: float, ax: float) -> np.ndarray:
    return ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= 1.0


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of linear interpolation with aligned end points."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-scale low-frequency noise (float32, ``shape``): a coarse random grid
    of ``cells`` (each ≥ 2) linearly interpolated, one axis at a time."""
    out = rng.standard_normal(cells).astype(np.float32)
    for axis, (n_out, n_in) in enumerate(zip(shape, cells)):
        out = np.moveaxis(np.tensordot(_interp_matrix(n_out, n_in), out, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(out)


@dataclass
class _Anatomy:
    """Boolean masks and parameters shared by the painting steps."""

    body: np.ndarray
    lungs: np.ndarray  # lung parenchyma region (no trachea)
    core: np.ndarray  # lungs eroded: where vessels and dense lesions may go
    deep: list[np.ndarray]  # per side (-1, +1): lung well away from the pleura
    q: list[np.ndarray]  # per side: normalised lung level (0 centre, 1 pleura)
    side: np.ndarray  # (1,1,W) -1 right lung side (x<0), +1 left
    airways: np.ndarray
    centres: list[tuple[float, float]]  # per side lung centre (y, x) mm
    semi: list[tuple[float, float]]  # per side semi-axes (b_y, a_x) mm
    hilum: list[np.ndarray]  # per side (z, y, x) mm


def _build_anatomy(g: _Grid, rng: np.random.Generator, hu: np.ndarray) -> _Anatomy:
    """Paint body, bones, mediastinum and lungs into ``hu`` (float32, in place); return masks."""
    u, z, y, x, hf = g.u, g.z, g.y, g.x, g.h
    jit = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    # body ellipse, fat layer, table
    by, bay, bax = -0.04 * u, jit(0.54, 0.58) * u, jit(0.78, 0.83) * u
    body2d = _ellipse(y, x, by, 0.0, bay, bax)
    fat_t = jit(0.04, 0.075) * u
    inner2d = _ellipse(y, x, by, 0.0, bay - fat_t, bax - fat_t)
    tb = by + bay + jit(0.02, 0.035) * u
    table2d = (np.abs(x) <= 0.75 * u) & (y >= tb) & (y <= tb + 0.05 * u)  # flat: the gap stays open
    hu[:] = np.where(table2d, jit(80, 250), hu)
    hu[:] = np.where(body2d, jit(-110, -90), hu)  # subcutaneous fat
    hu[:] = np.where(inner2d, jit(35, 48), hu)  # muscle / soft tissue

    # ribs: oblique periodic bands in a ring inside the fat, higher posteriorly
    rr_out = (bay - fat_t - 0.02 * u, bax - fat_t - 0.02 * u)
    ring = _ellipse(y, x, by, 0.0, *rr_out) & ~_ellipse(y, x, by, 0.0, rr_out[0] - 0.05 * u, rr_out[1] - 0.05 * u)
    ring &= np.abs(x) > 0.12 * u
    cavity = _ellipse(y, x, by, 0.0, rr_out[0] - 0.05 * u, rr_out[1] - 0.05 * u)  # inside the ribs
    pitch = jit(0.24, 0.30) * u
    yr = (y - by) / bay
    phase = (z - 0.35 * u * yr) / pitch + rng.uniform()
    ribs = ring & ((phase - np.floor(phase)) < 0.32) & (hf > 0.08)
    hu[ribs] = jit(650, 900)

    # sternum, spine (vertebral body with cortex and discs, spinous process), aorta
    sternum = _ellipse(y, x, by - bay + 0.07 * u, 0.0, 0.03 * u, 0.07 * u) & (hf > 0.3) & (hf < 0.95)
    hu[:] = np.where(sternum, jit(450, 600), hu)
    sp_y, sp_r = jit(0.31, 0.35) * u, jit(0.085, 0.10) * u
    vert = _ellipse(y, x, sp_y, 0.0, sp_r, sp_r)
    cancellous = _ellipse(y, x, sp_y, 0.0, sp_r - 0.022 * u, sp_r - 0.022 * u)
    spinous = _ellipse(y, x, sp_y + sp_r + 0.05 * u, 0.0, 0.06 * u, 0.025 * u)
    disc_phase = z / (0.25 * u) + rng.uniform()
    disc = (disc_phase - np.floor(disc_phase)) < 0.14
    hu[:] = np.where(vert | spinous, jit(800, 950), hu)
    hu[:] = np.where(cancellous, jit(400, 480), hu)
    hu[:] = np.where(vert & disc, jit(60, 90), hu)
    aorta = _ellipse(y, x, jit(0.15, 0.19) * u, 0.06 * u, 0.05 * u, 0.05 * u)

    # heart (left-anterior-inferior), liver under the right dome
    hc = np.array([g.z[0, 0, 0] + jit(0.18, 0.24) * g.length, -jit(0.13, 0.18) * u, jit(0.08, 0.13) * u])
    hr = np.array([jit(0.27, 0.32) * g.length, jit(0.22, 0.26) * u, jit(0.26, 0.30) * u])
    heart = ((z - hc[0]) / hr[0]) ** 2 + ((y - hc[1]) / hr[1]) ** 2 + ((x - hc[2]) / hr[2]) ** 2 <= 1.0
    liver = inner2d & (x < 0.3 * u) & (hf < 0.18 + 0.08 * np.clip(1 - ((x + 0.3 * u) / (0.5 * u)) ** 2, 0, 1))
    hu[:] = np.where(liver & ~vert, jit(50, 62), hu)
    hu[:] = np.where(heart, jit(38, 48), hu)

    # lungs: tapered towards the apex, cut below by a diaphragm dome
    h_widest, h_apex = jit(0.33, 0.40), jit(0.90, 0.93)
    h_dome, h_recess = jit(0.20, 0.26), jit(0.06, 0.09)
    lungs = np.zeros(g.shape, dtype=bool)
    deep, qs, centres, semis, hila = [], [], [], [], []
    taper = np.clip((hf - h_widest) / (h_apex - h_widest), 0, None) ** 2
    one_slice = 1.0 / (g.shape[0] - 1)
    for s in (-1.0, 1.0):
        cx, cy = s * jit(0.36, 0.40) * u, jit(0.0, 0.04) * u
        a, b = jit(0.26, 0.29) * u, jit(0.38, 0.41) * u
        xn2, yn = ((x - cx) / a) ** 2, (y - cy) / b
        r2 = xn2 + yn**2
        q = r2 + taper
        hbot = h_recess + (h_dome - h_recess) * np.clip(1 - r2, 0, 1) - 0.03 * np.clip(yn, 0, 1)
        if s > 0:  # left hemidiaphragm a little lower
            hbot = hbot - 0.02
        region = (q <= 1.0) & (hf >= hbot) & cavity & ~heart & ~aorta & (hf > one_slice * 1.5)
        lungs |= region
        deep.append(region & (q <= 0.75) & (hf >= hbot + 3 * one_slice))
        qs.append(q)
        centres.append((cy, cx))
        semis.append((b, a))
        hila.append(np.array([g.z[0, 0, 0] + 0.52 * g.length, cy, s * 0.27 * u], dtype=np.float32))
    # lung parenchyma: gravity-dependent density + low-frequency texture
    tex = _smooth_field(rng, g.shape, (max(3, g.shape[0] // 6), max(4, g.shape[1] // 12), max(4, g.shape[2] // 12)))
    base = jit(-870, -835)
    lung_hu = base + 18.0 * np.clip((y - 0.02 * u) / (0.4 * u), -1, 1) + 15.0 * tex

    # airways: trachea from near the top down to the carina, main bronchi into each lung
    airways = np.zeros(g.shape, dtype=bool)
    ty = -jit(0.06, 0.10) * u
    carina = np.array([g.z[0, 0, 0] + jit(0.60, 0.64) * g.length, ty, 0.0], dtype=np.float32)
    top = np.array([g.z[-3, 0, 0], ty - 0.03 * u, 0.0], dtype=np.float32)
    segments = [(carina, top, 0.055 * u)]
    for hil in hila:
        end = hil + np.array([-0.02 * g.length, 0.02 * u, np.sign(hil[2]) * 0.04 * u], dtype=np.float32)
        segments.append((carina, end, 0.038 * u))
    min_r = 0.75 * max(g.spacing[1], g.spacing[2])
    for p0, p1, r in segments:
        box, m = _capsule(g, p0, p1, max(r, min_r))
        if box is not None:
            airways[box] |= m
    airways[-2:] = False  # keep the airways off the volume's top face

    # drop lung fragments cut off by the heart/aorta/diaphragm: keep the 26-component of the airways
    lab, _ = ndimage.label(lungs | airways, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    lungs &= lab == sizes.argmax()
    hu[lungs] = lung_hu[lungs]
    core = ndimage.binary_erosion(lungs, structure=np.ones((1, 3, 3), bool)) & (_q_min(qs) <= 0.9)
    deep = [dp & core for dp in deep]
    side = np.where(x < 0, -1, 1).astype(np.int8)
    return _Anatomy(body2d | table2d, lungs, core, deep, qs, side, airways, centres, semis, hila)


def _q_min(qs: list[np.ndarray]) -> np.ndarray:
    """Element-wise minimum of the per-side lung levels."""
    return np.minimum(qs[0], qs[1])


def _vessel_tree(g: _Grid, rng: np.random.Generator, an: _Anatomy) -> np.ndarray:
    """Branching tubes (bool mask) rooted at each hilum, clipped to the lung core."""
    u = g.u
    vessels = np.zeros(g.shape, dtype=bool)
    min_r = 0.45 * min(g.spacing[1], g.spacing[2])
    for k, s in enumerate((-1.0, 1.0)):
        root = an.hilum[k] + np.array([0.0, 0.0, s * 0.04 * u], dtype=np.float32)
        trunks = [(0.9, 0.0, s * 0.45), (0.5, 0.6, s * 0.5), (0.0, 0.35, s * 1.0), (-0.8, 0.35, s * 0.45),
                  (0.1, -0.8, s * 0.5), (-0.6, -0.4, s * 0.5)]
        stack = [(root, np.array(d, dtype=np.float32), 0.21 * u, 0.030 * u, 0) for d in trunks]
        while stack:
            p0, d, length, r, level = stack.pop()
            d = d / np.linalg.norm(d)
            p1 = p0 + d * length
            box, m = _capsule(g, p0, p1, max(r, min_r))
            if box is not None:
                vessels[box] |= m
            if level < 4:
                perp = np.cross(d, rng.standard_normal(3).astype(np.float32))
                perp /= np.linalg.norm(perp) + 1e-6
                ang = rng.uniform(0.35, 0.6)
                for sign in (-1.0, 1.0):
                    nd = d * np.cos(ang) + sign * perp * np.sin(ang)
                    stack.append((p1, nd, length * rng.uniform(0.65, 0.8), r * 0.72, level + 1))
    return vessels & an.core


def _pick_voxel(rng: np.random.Generator, cand: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray | None:
    """Index (z, y, x) of a random True voxel of ``cand``, optionally weighted."""
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return None
    if weight is None:
        j = idx[rng.integers(idx.size)]
    else:
        w = np.broadcast_to(weight, cand.shape).ravel()[idx].astype(np.float64)
        j = idx[rng.choice(idx.size, p=w / w.sum())]
    return np.array(np.unravel_index(j, cand.shape))


def _mm(g: _Grid, ijk: np.ndarray) -> np.ndarray:
    return (g.org + ijk * g.sp).astype(np.float32)


def _paint_blob(g: _Grid, rng: np.random.Generator, centre: np.ndarray, radius: float,
                allowed: np.ndarray, out_mask: np.ndarray, hu: np.ndarray, value: float,
                lobes: int = 3, tex: np.ndarray | None = None, scale: float = 1.0) -> None:
    """Union of ``lobes`` jittered ellipsoids around ``centre`` (mm), ∩ ``allowed``; set HU and mask.

    ``scale`` multiplies ``radius`` (the jitter draws are the same for any scale)."""
    radius = radius * scale
    for i in range(lobes):
        c = centre if i == 0 else centre + rng.normal(0, 0.5 * radius, 3).astype(np.float32)
        radii = (radius * rng.uniform(0.6, 1.2, 3) * (1.0 if i == 0 else 0.7)).astype(np.float32)
        box, m = _ellipsoid(g, c, radii)
        if box is None:
            continue
        m = m & allowed[box]
        out_mask[box] |= m
        vals = value if tex is None else value + tex[box]
        hu[box] = np.where(m, vals, hu[box])


def _paint_covid(g: _Grid, rng: np.random.Generator, an: _Anatomy, hu: np.ndarray, tex: np.ndarray,
                 scale: float = 1.0):
    """Bilateral, peripheral, posterior-predominant GGO blobs with some consolidation."""
    u = g.u
    lesion = np.zeros(g.shape, dtype=bool)
    dense = np.zeros(g.shape, dtype=bool)
    n = int(rng.integers(3, 11))
    sides = [0, 1] + [int(rng.integers(2)) for _ in range(n - 2)]
    blobs = []
    for k in sides:
        cy, cx = an.centres[k]
        b, _ = an.semi[k]
        periph = an.lungs & (an.q[k] >= 0.8) & (an.q[k] <= 1.0) & (g.h < 0.8) & (an.side == (2 * k - 1))
        if rng.uniform() < 0.7:  # posterior-predominant
            periph = periph & (g.y > cy)
        weight = (1.0 + 3.0 * np.clip((g.y - cy) / b + 0.2, 0, None)) * (1.2 - g.h)
        ijk = _pick_voxel(rng, periph, weight)
        if ijk is None:
            continue
        blobs.append((k, _mm(g, ijk), rng.uniform(0.08, 0.18) * u))
    for _k, c, r in blobs:
        _paint_blob(g, rng, c, r, an.lungs, lesion, hu, rng.uniform(-680, -430), tex=tex, scale=scale)
    for k, c, r in blobs:
        if rng.uniform() < 0.45:
            _paint_blob(g, rng, c, 0.5 * r, an.deep[k], dense, hu, rng.uniform(-60, 40), lobes=2, scale=scale)
    _paint_septa(g, rng, lesion & ~dense, hu)
    return lesion | dense, f"covid_{len(blobs)}_blobs"


SEPTA_PERIOD_MM = 5.0
SEPTA_FRACTION = 0.4


def _paint_septa(g: _Grid, rng: np.random.Generator, ggo: np.ndarray, hu: np.ndarray,
                 period_mm: float = SEPTA_PERIOD_MM, fraction: float = SEPTA_FRACTION) -> None:
    """Crazy paving: thickened septa (HU -200..-80) as a network inside the GGO.

    The network is the band ``|f| < q`` around the zero set of a smooth random field
    ``f`` (grid nodes every ``period_mm``), with ``q`` chosen so that about ``fraction`` of
    the GGO voxels become septa. Septa are denser than the -320 HU lung threshold, so
    where they reach the pleura they cut the unsupervised lung mask into fragments, as
    consolidation and reticulation do in real COVID-19 CT (what the 3DCC response detects).
    """
    if not ggo.any():
        return
    cells = tuple(max(2, int(round(n * s / period_mm)) + 1) for n, s in zip(g.shape, g.spacing))
    f = np.abs(_smooth_field(rng, g.shape, cells))
    q = float(np.quantile(f[ggo], fraction))
    septa = ggo & (f < q)
    hu[septa] = rng.uniform(-200, -80)


def _paint_non_covid(g: _Grid, rng: np.random.Generator, an: _Anatomy, hu: np.ndarray, tex: np.ndarray,
                     scale: float = 1.0) -> str:
    """One non-COVID finding (nodule, unilateral consolidation or emphysema); returns its kind."""
    u = g.u
    kind = NON_COVID_KINDS[int(rng.integers(len(NON_COVID_KINDS)))]
    k = int(rng.integers(2))
    scratch = np.zeros(g.shape, dtype=bool)
    if kind == "nodule":
        ijk = _pick_voxel(rng, an.deep[k] & (an.q[k] <= 0.45))
        if ijk is not None:
            r = rng.uniform(0.05, 0.09) * u
            _paint_blob(g, rng, _mm(g, ijk), r, an.core, scratch, hu, rng.uniform(20, 60), lobes=1, scale=scale)
    elif kind == "unilateral_consolidation":
        ijk = _pick_voxel(rng, an.deep[k] & (an.q[k] >= 0.3) & (an.q[k] <= 0.6))
        if ijk is not None:
            c, r = _mm(g, ijk), rng.uniform(0.12, 0.16) * u
            _paint_blob(g, rng, c, 1.5 * r, an.lungs & (an.side == 2 * k - 1), scratch, hu,
                        rng.uniform(-600, -480), lobes=2, tex=tex, scale=scale)
            _paint_blob(g, rng, c, r, an.deep[k], scratch, hu, rng.uniform(-40, 40), lobes=2, scale=scale)
    else:  # emphysema: small very-low-attenuation spots, upper zones, both lungs
        cand = an.core & (g.h > 0.5)
        for _ in range(int(rng.integers(12, 30))):
            ijk = _pick_voxel(rng, cand)
            if ijk is not None:
                _paint_blob(g, rng, _mm(g, ijk), rng.uniform(0.02, 0.05) * u, an.lungs, scratch, hu,
                            rng.uniform(-990, -960), lobes=1, scale=scale)
    return kind


def _fov_outside(shape2d: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels outside the centred FOV disk of radius 0.494·min(H, W)."""
    h, w = shape2d
    r = 0.494 * min(h, w)
    yy = np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2
    xx = np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2
    return yy**2 + xx**2 >= r * r


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def ct_phantom(seed: int, label: int, shape: Sequence[int] = (48, 128, 128),
               spacing_mm: Sequence[float] = (2.5, 1.4, 1.4), finding: str | None = None,
               case_id: str | None = None, finding_scale: float = 1.0) -> CTPhantom:
    """Build a synthetic chest CT.

    Parameters
    ----------
    seed : int
        Fixes anatomy, noise and findings; anatomy and noise depend on ``seed``
        only, so ``ct_phantom(s, 0, finding="clear")`` and ``ct_phantom(s, 1)``
        differ only in the lesions.
    label : int
        1 = COVID-19, 0 = negative.
    shape : (int, int, int)
        (z, y, x) voxels; at least 12 × 48 × 48.
    spacing_mm : (float, float, float)
        (z, y, x) voxel spacing in mm.
    finding : str or None
        ``"covid"`` (label 1), ``"clear"`` or ``"non_covid"`` (label 0);
        ``None`` picks one from the seed.
    case_id : str or None
        Defaults to ``f"syn-ct-{seed:04d}"``.
    finding_scale : float
        Multiplies the radius of every finding (COVID lesions and non-COVID
        nodules, consolidations and emphysema spots alike); 1.0 = the default
        phantoms. Positions and counts do not depend on it.

    Returns
    -------
    CTPhantom
        int16 HU volume (z, y, x) with uint8 lung and lesion masks.
    """
    shp, spacing = _check_ct_args(label, shape, spacing_mm, finding)
    if not (np.isfinite(finding_scale) and finding_scale > 0):
        raise ConfigError(None, f"finding_scale must be a positive number, got {finding_scale!r}")
    if finding is None:
        pick = np.random.default_rng([_SALT_CT, seed, 4])
        finding = "covid" if label == 1 else ("clear" if pick.uniform() < 0.5 else "non_covid")
    g = _grid(shp, spacing)
    rng_anat = np.random.default_rng([_SALT_CT, seed, 1])
    rng_vessel = np.random.default_rng([_SALT_CT, seed, 2])
    rng_noise = np.random.default_rng([_SALT_CT, seed, 3])
    rng_find = np.random.default_rng([_SALT_CT, seed, 5, CT_FINDINGS.index(finding)])

    hu = np.full(shp, -1000.0, dtype=np.float32)
    an = _build_anatomy(g, rng_anat, hu)
    vessels = _vessel_tree(g, rng_vessel, an)
    noise_sigma = float(rng_noise.uniform(10.0, 16.0))
    noise = rng_noise.standard_normal(shp, dtype=np.float32)
    tex = 20.0 * _smooth_field(rng_noise, shp, (max(3, shp[0] // 4), max(4, shp[1] // 8), max(4, shp[2] // 8)))

    lesion = np.zeros(shp, dtype=bool)
    detail = ""
    if finding == "covid":
        lesion, detail = _paint_covid(g, rng_find, an, hu, tex, finding_scale)
    elif finding == "non_covid":
        detail = _paint_non_covid(g, rng_find, an, hu, tex, finding_scale)
    hu[vessels] = np.float32(40.0) + 0.5 * tex[vessels]
    hu[an.airways] = -1000.0
    lesion &= ~an.airways

    hu += noise_sigma * noise
    np.clip(hu, -1024.0, 3071.0, out=hu)
    hu[:, _fov_outside(shp[1:])] = FOV_PADDING_HU
    out = np.rint(hu).astype(np.int16)
    lung = (an.lungs | an.airways).astype(np.uint8)
    return CTPhantom(
        hu=_readonly(out), spacing_mm=spacing, lung_mask=_readonly(lung),
        lesion_mask=_readonly(lesion.astype(np.uint8)), label=int(label), finding=finding,
        case_id=case_id if case_id is not None else f"syn-ct-{seed:04d}", finding_detail=detail,
    )


# ------------------------------------------------------------------ CT writers


def _phantom_volume(arr_zyx: np.ndarray, spacing_mm: Sequence[float]) -> CTVolume:
    """A phantom array centred on the scanner origin: voxel 0 at -(n - 1) / 2 spacings (LPS)."""
    sz, sy, sx = (float(s) for s in spacing_mm)
    d, h, w = arr_zyx.shape
    origin = (-0.5 * (w - 1) * sx, -0.5 * (h - 1) * sy, -0.5 * (d - 1) * sz)  # (x, y, z) of voxel 0
    return CTVolume(hu=arr_zyx, spacing_mm=(sz, sy, sx), origin_mm=origin)


def write_nifti(ph: CTPhantom, path: str | os.PathLike) -> Path:
    """Write the HU volume as int16 NIfTI-1 (``.nii`` or ``.nii.gz``) with :func:`reprolib.io.write_nifti`.

    The data array is (x, y, z) with an RAS affine built from ``spacing_mm`` (LPS → RAS flips
    x and y), so ``np.asarray(img.dataobj).transpose(2, 1, 0)`` is ``ph.hu`` again and the
    header zooms are (sx, sy, sz); the bytes are reproducible.
    """
    return write_volume_nifti(_phantom_volume(np.asarray(ph.hu, dtype=np.int16), ph.spacing_mm), None, path)


def write_nifti_mask(mask: np.ndarray, spacing_mm: Sequence[float], path: str | os.PathLike) -> Path:
    """Write a {0, 1} (z, y, x) mask as uint8 NIfTI with the same geometry as :func:`write_nifti`."""
    m = np.asarray(mask)
    if m.size and (m.min() < 0 or m.max() > 1):
        raise NiftiError(Path(path), f"mask values must be 0 or 1, got range [{m.min()}, {m.max()}]")
    return write_volume_nifti(_phantom_volume(m.astype(np.uint8), spacing_mm), None, path)


def _ds(v: float) -> str:
    """A DICOM decimal string (≤ 16 characters)."""
    s = f"{v:.10g}"
    return s if len(s) <= 16 else f"{v:.6g}"


def _dicom_stored(ph: CTPhantom, slope: float, intercept: float, directory: Path) -> tuple[np.ndarray, int]:
    if not (np.isfinite(slope) and slope > 0 and np.isfinite(intercept)):
        raise DicomError(directory, f"rescale slope must be positive and finite, "
                                    f"got slope={slope}, intercept={intercept}")
    stored = np.rint((ph.hu.astype(np.float64) - intercept) / slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= 0 and hi <= 65535:
        return stored.astype("<u2"), 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype("<i2"), 1
    raise DicomError(directory, f"stored values span [{lo:.0f}, {hi:.0f}]: slope={slope}, "
                                f"intercept={intercept} do not fit 16 bits")


def write_dicom_series(ph: CTPhantom, directory: str | os.PathLike, slope: float = 1.0,
                       intercept: float = -1024.0, shuffle: bool = False, seed: int = 0) -> list[Path]:
    """Write one uncompressed CT Image Storage file per slice.

    Parameters
    ----------
    ph : CTPhantom
    directory : path
        Created if missing; must not hold other ``.dcm`` files.
    slope, intercept : float
        Rescale: stored = round((HU - intercept) / slope), HU = slope · stored
        + intercept (exact when the division is integral). Stored as uint16
        (PixelRepresentation 0) if it fits, else int16.
    shuffle : bool
        Assign file names ``IM0000.dcm…`` in a random order (tests sorting).
    seed : int
        With ``ph.case_id``, fixes the UIDs and the shuffle order.

    Returns
    -------
    list of Path
        ``paths[k]`` holds slice k (z = z0 + k · sz, k = 0 most inferior).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory = Path(directory)
    stored, pixel_rep = _dicom_stored(ph, float(slope), float(intercept), directory)
    d, h, w = ph.hu.shape
    names = [f"IM{i:04d}.dcm" for i in range(d)]
    if shuffle:
        order = np.random.default_rng([_SALT_CT, seed, 7]).permutation(d)
        names = [names[int(i)] for i in order]
    directory.mkdir(parents=True, exist_ok=True)
    stray = sorted(p.name for p in directory.glob("*.dcm") if p.name not in set(names))
    if stray:
        raise DicomError(directory, f"directory already holds other DICOM files ({stray[0]}, ...); use an empty one")

    key = [ph.case_id, str(seed)]
    study_uid = generate_uid(entropy_srcs=key + ["study"])
    series_uid = generate_uid(entropy_srcs=key + ["series"])
    frame_uid = generate_uid(entropy_srcs=key + ["frame"])
    sz, sy, sx = ph.spacing_mm
    x0, y0, z0 = -0.5 * (w - 1) * sx, -0.5 * (h - 1) * sy, -0.5 * (d - 1) * sz
    major = int(pydicom.__version__.split(".")[0])
    paths = []
    for k in range(d):
        sop_uid = generate_uid(entropy_srcs=key + ["sop", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200301"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.Modality = "CT"
        ds.Manufacturer = "covid-repro synthetic phantom"
        ds.PatientName = ph.case_id
        ds.PatientID = ph.case_id
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        zk = z0 + k * sz
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(zk)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds(zk)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = h, w
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_rep
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.PixelData = stored[k].tobytes()
        buf = io.BytesIO()
        if major >= 3:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        else:  # pydicom 2.4
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.preamble = b"\0" * 128
            pydicom.dcmwrite(buf, ds, write_like_original=False)
        path = directory / names[k]
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


# ------------------------------------------------------------------------- CXR


@dataclass(frozen=True, eq=False)
class CXRPhantom:
    """A synthetic 8-bit chest radiograph (or a ``not_certain`` non-CXR picture).

    Attributes
    ----------
    image : ndarray, uint8, (H, W)
    label : str
        ``healthy``, ``pneumonia``, ``covid19`` or ``not_certain``.
    sublabel : str
        ``bacterial``/``viral`` for pneumonia; ``ct_slice``/``lateral``/``other``
        for not_certain; ``""`` otherwise.
    patient_id : str
    age_group : str
        ``child`` (healthy, pneumonia), ``adult`` (covid19), ``unknown`` (not_certain).
    lung_mask : ndarray, uint8 {0, 1}, (H, W)
        Lung fields of a frontal view; all zero for not_certain.
    """

    image: np.ndarray
    label: str
    sublabel: str
    patient_id: str
    age_group: str
    lung_mask: np.ndarray


def _cxr_coords(size: int, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates (ys, xs) of an image, jittered in position, rotation and scale."""
    off = rng.uniform(-0.06, 0.06, 2)
    ang = np.deg2rad(rng.uniform(-5, 5))
    r = (np.arange(size, dtype=np.float32)[:, None] - (size - 1) / 2) / (size / 2) - off[0]
    c = (np.arange(size, dtype=np.float32)[None, :] - (size - 1) / 2) / (size / 2) - off[1]
    ys = (np.cos(ang) * r - np.sin(ang) * c) / scale
    xs = (np.sin(ang) * r + np.cos(ang) * c) / scale
    return ys.astype(np.float32), xs.astype(np.float32)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(a.astype(np.float32), sigma, mode="nearest")


def _render(att: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Attenuation map → uint8 radiograph with random exposure, gamma, blur and noise."""
    att = _blur(att, 0.7 * size / 128)
    gain = rng.uniform(1.1, 1.7)
    lo, hi, gamma = rng.uniform(0, 25), rng.uniform(205, 255), rng.uniform(0.8, 1.25)
    img = lo + (hi - lo) * (1.0 - np.exp(-gain * np.clip(att, 0, None))) ** gamma / (1 - np.exp(-gain * 2.0)) ** gamma
    img += rng.normal(0, rng.uniform(1.5, 5.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _frontal(size: int, rng_pat: np.random.Generator, rng_img: np.random.Generator, child: bool):
    """Frontal chest attenuation map, lung mask and geometry (lung centres, sizes)."""
    if child:  # smaller, rounder thorax; relatively larger heart; flatter ribs
        scale, lw = rng_pat.uniform(0.62, 0.80), rng_pat.uniform(0.33, 0.39)
        lh, ctr, rib_slope = lw * rng_pat.uniform(1.05, 1.30), rng_pat.uniform(0.52, 0.62), rng_pat.uniform(0.02, 0.12)
    else:
        scale, lw = rng_pat.uniform(0.80, 0.97), rng_pat.uniform(0.29, 0.35)
        lh, ctr, rib_slope = lw * rng_pat.uniform(1.5, 1.8), rng_pat.uniform(0.40, 0.50), rng_pat.uniform(0.25, 0.40)
    lx, ly = lw + rng_pat.uniform(0.08, 0.12), rng_pat.uniform(-0.12, -0.02)
    ys, xs = _cxr_coords(size, rng_img, scale)
    wt = lx + lw + rng_pat.uniform(0.12, 0.2)
    top = ly - lh - 0.25 + 0.3 * (xs / wt) ** 2  # sloping shoulders, above the apices
    torso = ((np.abs(xs) / wt) ** 2.6 + (np.abs(ys - 0.3) / 1.6) ** 2.6 <= 1) & (ys > top)
    torso |= (np.abs(xs) < 0.17 + 0.1 * np.clip(ys - top + 0.15, 0, 1)) & (ys > top - 1.0)  # neck
    att = 1.0 * np.sqrt(np.clip(1 - (xs / (wt + 0.05)) ** 2, 0, 1)) * torso
    att += 0.18 * (np.abs(xs) < 0.09) * torso  # spine / mediastinum
    lungs = np.zeros(xs.shape, dtype=bool)
    for s in (-1.0, 1.0):
        xn, yn = (xs - s * lx) / lw, (ys - ly) / lh
        dome = 0.5 + 0.4 * ((s * xn + 1) / 2) ** 2 + (0.05 if s > 0 else 0.0)
        lungs |= (xn**2 + np.minimum(yn, 0) ** 2 <= 1) & (yn <= dome)
    hw = ctr * (lx + lw)
    heart = ((xs - 0.35 * hw) / hw) ** 2 + ((ys - ly - 0.5 * lh) / (0.75 * hw)) ** 2 <= 1
    lungs &= ~heart  # the cardiac silhouette bounds the lung fields
    att -= rng_pat.uniform(0.45, 0.6) * _blur(lungs, 1.0 * size / 128)
    att += 0.45 * _blur(heart, 1.5 * size / 128) * torso
    phase = (ys - rib_slope * np.abs(xs) - 0.2 * xs**2) / (2.2 * lh / 9) + rng_img.uniform()
    rib = np.clip((np.cos(2 * np.pi * phase) - 0.2) / 0.5, 0, 1)
    att += 0.07 * rib * torso * (np.abs(xs) > 0.1) * (ys < ly + 0.9 * lh)
    clav = np.abs(ys - (ly - lh + 0.02 + 0.12 * np.abs(xs))) < 0.03
    att += 0.25 * (clav & (np.abs(xs) > 0.08) & (np.abs(xs) < 0.75 * wt))
    geo = {"ys": ys, "xs": xs, "lx": lx, "ly": ly, "lw": lw, "lh": lh}
    return att.astype(np.float32), lungs, geo


def _blobs(geo: dict, rng: np.random.Generator, centres: Iterable[tuple[float, float]], sigma: float) -> np.ndarray:
    ys, xs = geo["ys"], geo["xs"]
    out = np.zeros(ys.shape, dtype=np.float32)
    for cy, cx in centres:
        sg = sigma * rng.uniform(0.7, 1.3)
        out = np.maximum(out, np.exp(-(((ys - cy) / (1.3 * sg)) ** 2 + ((xs - cx) / sg) ** 2)))
    return out


def _pathology(label: str, sub: str, geo: dict, lungs: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Extra attenuation (float32, H×W) of the finding, confined to the lung fields."""
    ys, xs, lx, ly, lw, lh = geo["ys"], geo["xs"], geo["lx"], geo["ly"], geo["lw"], geo["lh"]
    soft = _blur(lungs, 1.2 * size / 128)
    if label == "covid19":  # bilateral, peripheral (lateral), lower-zone haze
        cen = []
        for s in (-1.0, 1.0):
            for _ in range(int(rng.integers(1, 4))):
                cen.append((ly + lh * rng.uniform(0.1, 0.65), s * (lx + lw * rng.uniform(0.45, 0.85))))
        return rng.uniform(0.18, 0.32) * _blobs(geo, rng, cen, 0.45 * lw) * soft
    if label == "pneumonia" and sub == "bacterial":  # dense lobar opacity, one side, sharp fissure edge
        s = 1.0 if rng.uniform() < 0.5 else -1.0
        xn, yn = (xs - s * lx) / lw, (ys - ly) / lh
        zone = int(rng.integers(3))
        fissure = rng.uniform(-0.15, 0.15) + 0.25 * xn * s
        region = {0: yn > 0.15 + fissure, 1: np.abs(yn - fissure) < 0.35, 2: yn < -0.3 + fissure}[zone]
        region = region & (np.abs(xn) <= 1.1) & lungs
        return rng.uniform(0.35, 0.55) * _blur(region, 0.8 * size / 128)
    if label == "pneumonia":  # viral: diffuse bilateral perihilar interstitial streaks
        noise = rng.standard_normal(ys.shape).astype(np.float32)
        ridges = np.abs(_blur(noise, 1.0 * size / 128))
        ridges = np.clip(ridges / (ridges.std() + 1e-6) - 0.6, 0, 2)
        hilar = np.exp(-((np.abs(xs) - lx * 0.7) ** 2 / (0.5 * lw) ** 2 + (ys - ly) ** 2 / (0.9 * lh) ** 2))
        return rng.uniform(0.12, 0.2) * ridges * (0.4 + hilar) * soft
    return np.zeros(ys.shape, dtype=np.float32)


def _not_frontal(size: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Attenuation map of a non-CXR picture: CT-slice-like, lateral chest view, or other."""
    if kind == "ct_slice":
        ys, xs = _cxr_coords(size, rng, rng.uniform(0.85, 1.0))
        fov = xs**2 + ys**2 <= 0.98
        body = _ellipse(ys, xs, -0.05, 0.0, rng.uniform(0.5, 0.6), rng.uniform(0.75, 0.85))
        att = 0.05 * fov + 0.9 * body
        for s in (-1.0, 1.0):
            att -= 0.75 * _ellipse(ys, xs, 0.0, s * 0.37, 0.38, 0.26)
        att += 1.0 * _ellipse(ys, xs, 0.33, 0.0, 0.09, 0.09) + 0.6 * ((ys > 0.58) & (ys < 0.64) & (np.abs(xs) < 0.75))
        return att * fov
    if kind == "lateral":
        ys, xs = _cxr_coords(size, rng, rng.uniform(0.75, 0.95))
        torso = _ellipse(ys, xs, 0.2, 0.0, 1.3, 0.7)
        att = 1.0 * np.sqrt(np.clip(1 - (xs / 0.75) ** 2, 0, 1)) * torso
        att -= 0.45 * _blur(_ellipse(ys, xs, -0.05, -0.05, 0.6, 0.48), 1.5)
        spine = (np.abs(xs - 0.5) < 0.09) & torso
        vert = np.cos(2 * np.pi * ys / 0.16) > -0.3
        att += 0.4 * spine * vert + 0.35 * _blur(_ellipse(ys, xs, 0.3, -0.22, 0.3, 0.28), 2.0)
        att += 0.3 * ((np.abs(xs + 0.62) < 0.04) & (ys > -0.5) & (ys < 0.5))  # sternum
        return att
    ys, xs = _cxr_coords(size, rng, 1.0)  # other: random shapes on a smooth random background
    att = 1.2 * np.abs(_blur(rng.standard_normal((size, size)), size / 10)) * 10 + rng.uniform(0, 0.5)
    for _ in range(int(rng.integers(2, 7))):
        cy, cx, ay, ax = rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5)
        if rng.uniform() < 0.5:
            shape = _ellipse(ys, xs, cy, cx, ay, ax)
        else:
            shape = (np.abs(ys - cy) < ay) & (np.abs(xs - cx) < ax)
        att = np.where(shape, rng.uniform(0, 2), att)
    return att.astype(np.float32)


def cxr_phantom(seed: int, label: str, size: int = 128, patient: int | None = None,
                sublabel: str | None = None) -> CXRPhantom:
    """Build a synthetic 8-bit chest radiograph.

    Parameters
    ----------
    seed : int
        Fixes position, exposure, noise and the finding.
    label : str
        ``healthy``, ``pneumonia``, ``covid19`` or ``not_certain``.
    size : int
        Image is ``size × size`` pixels (≥ 32).
    patient : int or None
        Fixes the anatomy (thorax size/shape, heart); defaults to ``seed``.
        Two images of one patient share anatomy and ``patient_id``.
    sublabel : str or None
        ``bacterial``/``viral`` (pneumonia) or ``ct_slice``/``lateral``/``other``
        (not_certain); ``None`` picks one from the seed.

    Returns
    -------
    CXRPhantom
        ``image`` uint8 (size, size); healthy/pneumonia are children, covid19 adults.
    """
    if label not in CXR_LABELS:
        raise ConfigError(None, f"unknown CXR label {label!r}; choose one of {', '.join(CXR_LABELS)}")
    if int(size) != size or size < 32:
        raise ConfigError(None, f"CXR size must be an integer ≥ 32, got {size!r}")
    size = int(size)
    patient = seed if patient is None else patient
    rng_pat = np.random.default_rng([_SALT_CXR, patient, 1])
    rng_img = np.random.default_rng([_SALT_CXR, seed, 2, CXR_LABELS.index(label)])
    allowed = {"pneumonia": ("bacterial", "viral"), "not_certain": ("ct_slice", "lateral", "other")}.get(label, ("",))
    if sublabel is None:
        sublabel = allowed[int(rng_img.integers(len(allowed)))]
    elif sublabel not in allowed:
        raise ConfigError(None, f"sublabel {sublabel!r} is not valid for label {label!r}; choose from {allowed}")
    if label == "not_certain":
        image = _render(_not_frontal(size, rng_img, sublabel), rng_img, size)
        lungs = np.zeros((size, size), dtype=bool)
        age = "unknown"
    else:
        child = label in ("healthy", "pneumonia")
        att, lungs, geo = _frontal(size, rng_pat, rng_img, child)
        att += _pathology(label, sublabel, geo, lungs, rng_img, size)
        image = _render(att, rng_img, size)
        age = "child" if child else "adult"
    return CXRPhantom(image=_readonly(image), label=label, sublabel=sublabel,
                      patient_id=f"syn-cxr-p{patient:05d}", age_group=age,
                      lung_mask=_readonly(lungs.astype(np.uint8)))


def write_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W) grayscale image as PNG, atomically (deterministic bytes)."""
    from PIL import Image

    path = Path(path)
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ImageError(path, f"expected a 2D uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


# --------------------------------------------------------------------- dataset


def directory_sha256(directory: str | os.PathLike) -> tuple[str, int]:
    """SHA-256 and total bytes of a folder's files.

    The digest is the SHA-256 of the UTF-8 text that ``sha256sum`` would print
    for the files (``"<sha256>  <relative posix path>\\n"`` lines, sorted by path).
    """
    directory = Path(directory)
    files = sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.relative_to(directory).as_posix())
    lines = "".join(f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest(), sum(p.stat().st_size for p in files)


def _split_groups(items: list[tuple[str, str]], seed: int, train_fraction: float = 2 / 3) -> dict[str, str]:
    """Patient-level split stratified by label: {group: "train" | "test"}.

    ``items`` are (group, label) pairs; groups are ordered by SHA-256 of
    ``f"{seed}:{group}"`` within each label and the first ``round(f·n)`` train.
    """
    by_label: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for group, label in items:
        if group not in first:
            first[group] = label
            by_label.setdefault(label, []).append(group)
    split = {}
    for groups in by_label.values():
        ordered = sorted(groups, key=lambda gr: hashlib.sha256(f"{seed}:{gr}".encode()).hexdigest())
        n_train = int(round(train_fraction * len(ordered)))
        if len(ordered) >= 2:
            n_train = min(max(n_train, 1), len(ordered) - 1)
        for i, gr in enumerate(ordered):
            split[gr] = "train" if i < n_train else "test"
    return split


def _record(out_dir: Path, path: Path, dataset: str, role: str, label: str, group: str) -> dict:
    if path.is_dir():
        digest, size = directory_sha256(path)
    else:
        digest, size = sha256_file(path), path.stat().st_size
    return {"dataset": dataset, "role": role, "label": label, "group": group, "split": "",
            "path": path.relative_to(out_dir).as_posix(), "sha256": digest, "bytes": int(size)}


def make_synthetic_dataset(out_dir: str | os.PathLike, ct_count: int = 24,
                           ct_shape: Sequence[int] = (48, 128, 128),
                           ct_spacing_mm: Sequence[float] = (2.5, 1.4, 1.4),
                           cxr_per_class: int = 40, cxr_size: int = 128, seed: int = 0,
                           dicom_every: int = 4, train_fraction: float = 2 / 3) -> list[dict]:
    """Write the synthetic CT and CXR data set and return one record per item.

    Layout under ``out_dir``: ``ct/<case>.nii.gz``, ``ct/<case>_lung.nii.gz``,
    ``ct/<case>_lesion.nii.gz``, ``ct_dicom/<case>/IM####.dcm`` (every
    ``dicom_every``-th case), ``cxr/<label>/<image>.png``.

    Half the CT cases (``ct_count // 2``) are COVID-19; the negatives alternate
    clear / non-COVID finding. CT case i uses seed ``1000 · seed + i``. CXR:
    ``cxr_per_class`` images for each of healthy, pneumonia (alternating
    bacterial/viral), covid19 (two images per patient) and not_certain.

    Returns
    -------
    list of dict
        Keys ``dataset``, ``role``, ``label``, ``group``, ``split``, ``path``
        (relative, posix), ``sha256``, ``bytes``. For ``ct_dicom_dir`` the
        digest is :func:`directory_sha256` of the folder. Same arguments →
        identical files and records.
    """
    if ct_count < 0 or ct_count >= 1000 or cxr_per_class < 0 or cxr_per_class >= 1000:
        raise ConfigError(None, f"ct_count and cxr_per_class must be in [0, 999], got {ct_count}, {cxr_per_class}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []

    rng = np.random.default_rng([_SALT_CT, seed, 99])
    is_covid = np.zeros(ct_count, dtype=bool)
    is_covid[rng.permutation(ct_count)[: ct_count // 2]] = True
    n_neg = 0
    for i in range(ct_count):
        case_seed = 1000 * seed + i
        if is_covid[i]:
            label, finding = 1, "covid"
        else:
            label, finding = 0, ("clear" if n_neg % 2 == 0 else "non_covid")
            n_neg += 1
        ph = ct_phantom(case_seed, label, ct_shape, ct_spacing_mm, finding)
        lab = "covid19" if label else "normal"
        cid = ph.case_id
        written = [
            ("ct_nifti", write_nifti(ph, out / "ct" / f"{cid}.nii.gz")),
            ("lung_mask", write_nifti_mask(ph.lung_mask, ph.spacing_mm, out / "ct" / f"{cid}_lung.nii.gz")),
            ("lesion_mask", write_nifti_mask(ph.lesion_mask, ph.spacing_mm, out / "ct" / f"{cid}_lesion.nii.gz")),
        ]
        for role, p in written:
            records.append(_record(out, p, "synthetic-ct", role, lab, cid))
        if dicom_every and i % dicom_every == 0:
            final = out / "ct_dicom" / cid
            tmp = final.with_name(f".{cid}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            write_dicom_series(ph, tmp, shuffle=(i // dicom_every) % 2 == 1, seed=seed)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            records.append(_record(out, final, "synthetic-ct", "ct_dicom_dir", lab, cid))

    for ci, label in enumerate(CXR_LABELS):
        for j in range(cxr_per_class):
            img_seed = 100_000 * seed + 1000 * ci + j
            patient = img_seed - (j % 2 if label == "covid19" else 0)
            sub = {"pneumonia": ("bacterial", "viral")[j % 2]}.get(label)
            ph = cxr_phantom(img_seed, label, cxr_size, patient=patient, sublabel=sub)
            rec_label = f"pneumonia_{ph.sublabel}" if label == "pneumonia" else label
            p = write_png(ph.image, out / "cxr" / label / f"syn-cxr-{img_seed:06d}.png")
            records.append(_record(out, p, "synthetic-cxr", "cxr_image", rec_label, ph.patient_id))

    for ds_name in ("synthetic-ct", "synthetic-cxr"):
        items = [(r["group"], r["label"]) for r in records if r["dataset"] == ds_name]
        split = _split_groups(items, seed, train_fraction)
        for r in records:
            if r["dataset"] == ds_name:
                r["split"] = split[r["group"]]
    return records
