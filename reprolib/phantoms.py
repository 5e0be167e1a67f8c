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

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .errors import ConfigError

__all__ = [
    "CTPhantom",
    "CT_FINDINGS",
    "ct_phantom",
]

CT_FINDINGS = ("covid", "clear", "non_covid")
NON_COVID_KINDS = ("nodule", "unilateral_consolidation", "emphysema")
FOV_PADDING_HU = -2048
SALT_CT = 0x5C7
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


def ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ay: float, ax: float) -> np.ndarray:
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
    body2d = ellipse(y, x, by, 0.0, bay, bax)
    fat_t = jit(0.04, 0.075) * u
    inner2d = ellipse(y, x, by, 0.0, bay - fat_t, bax - fat_t)
    tb = by + bay + jit(0.02, 0.035) * u
    table2d = (np.abs(x) <= 0.75 * u) & (y >= tb) & (y <= tb + 0.05 * u)  # flat: the gap stays open
    hu[:] = np.where(table2d, jit(80, 250), hu)
    hu[:] = np.where(body2d, jit(-110, -90), hu)  # subcutaneous fat
    hu[:] = np.where(inner2d, jit(35, 48), hu)  # muscle / soft tissue

    # ribs: oblique periodic bands in a ring inside the fat, higher posteriorly
    rr_out = (bay - fat_t - 0.02 * u, bax - fat_t - 0.02 * u)
    ring = ellipse(y, x, by, 0.0, *rr_out) & ~ellipse(y, x, by, 0.0, rr_out[0] - 0.05 * u, rr_out[1] - 0.05 * u)
    ring &= np.abs(x) > 0.12 * u
    cavity = ellipse(y, x, by, 0.0, rr_out[0] - 0.05 * u, rr_out[1] - 0.05 * u)  # inside the ribs
    pitch = jit(0.24, 0.30) * u
    yr = (y - by) / bay
    phase = (z - 0.35 * u * yr) / pitch + rng.uniform()
    ribs = ring & ((phase - np.floor(phase)) < 0.32) & (hf > 0.08)
    hu[ribs] = jit(650, 900)

    # sternum, spine (vertebral body with cortex and discs, spinous process), aorta
    sternum = ellipse(y, x, by - bay + 0.07 * u, 0.0, 0.03 * u, 0.07 * u) & (hf > 0.3) & (hf < 0.95)
    hu[:] = np.where(sternum, jit(450, 600), hu)
    sp_y, sp_r = jit(0.31, 0.35) * u, jit(0.085, 0.10) * u
    vert = ellipse(y, x, sp_y, 0.0, sp_r, sp_r)
    cancellous = ellipse(y, x, sp_y, 0.0, sp_r - 0.022 * u, sp_r - 0.022 * u)
    spinous = ellipse(y, x, sp_y + sp_r + 0.05 * u, 0.0, 0.06 * u, 0.025 * u)
    disc_phase = z / (0.25 * u) + rng.uniform()
    disc = (disc_phase - np.floor(disc_phase)) < 0.14
    hu[:] = np.where(vert | spinous, jit(800, 950), hu)
    hu[:] = np.where(cancellous, jit(400, 480), hu)
    hu[:] = np.where(vert & disc, jit(60, 90), hu)
    aorta = ellipse(y, x, jit(0.15, 0.19) * u, 0.06 * u, 0.05 * u, 0.05 * u)

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


def readonly(a: np.ndarray) -> np.ndarray:
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
        pick = np.random.default_rng([SALT_CT, seed, 4])
        finding = "covid" if label == 1 else ("clear" if pick.uniform() < 0.5 else "non_covid")
    g = _grid(shp, spacing)
    rng_anat = np.random.default_rng([SALT_CT, seed, 1])
    rng_vessel = np.random.default_rng([SALT_CT, seed, 2])
    rng_noise = np.random.default_rng([SALT_CT, seed, 3])
    rng_find = np.random.default_rng([SALT_CT, seed, 5, CT_FINDINGS.index(finding)])

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
        hu=readonly(out), spacing_mm=spacing, lung_mask=readonly(lung),
        lesion_mask=readonly(lesion.astype(np.uint8)), label=int(label), finding=finding,
        case_id=case_id if case_id is not None else f"syn-ct-{seed:04d}", finding_detail=detail,
    )


# ------------------------------------------------------------------ CT writers


# ------------------------------------------------------------------------- CXR


# --------------------------------------------------------------------- dataset


