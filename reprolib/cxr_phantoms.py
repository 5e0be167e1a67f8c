"""Procedural chest X-ray phantoms with ground truth: frontal radiographs of children and adults with
the four classes' findings, and non-frontal images for "not certain"; one patient's images share
an anatomy.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy import ndimage

from .errors import ConfigError, ImageError
from .files import atomic_write_bytes
from .phantoms import ellipse, readonly

CXR_LABELS = ("healthy", "pneumonia", "covid19", "not_certain")


_SALT_CXR = 0xC512


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
        body = ellipse(ys, xs, -0.05, 0.0, rng.uniform(0.5, 0.6), rng.uniform(0.75, 0.85))
        att = 0.05 * fov + 0.9 * body
        for s in (-1.0, 1.0):
            att -= 0.75 * ellipse(ys, xs, 0.0, s * 0.37, 0.38, 0.26)
        att += 1.0 * ellipse(ys, xs, 0.33, 0.0, 0.09, 0.09) + 0.6 * ((ys > 0.58) & (ys < 0.64) & (np.abs(xs) < 0.75))
        return att * fov
    if kind == "lateral":
        ys, xs = _cxr_coords(size, rng, rng.uniform(0.75, 0.95))
        torso = ellipse(ys, xs, 0.2, 0.0, 1.3, 0.7)
        att = 1.0 * np.sqrt(np.clip(1 - (xs / 0.75) ** 2, 0, 1)) * torso
        att -= 0.45 * _blur(ellipse(ys, xs, -0.05, -0.05, 0.6, 0.48), 1.5)
        spine = (np.abs(xs - 0.5) < 0.09) & torso
        vert = np.cos(2 * np.pi * ys / 0.16) > -0.3
        att += 0.4 * spine * vert + 0.35 * _blur(ellipse(ys, xs, 0.3, -0.22, 0.3, 0.28), 2.0)
        att += 0.3 * ((np.abs(xs + 0.62) < 0.04) & (ys > -0.5) & (ys < 0.5))  # sternum
        return att
    ys, xs = _cxr_coords(size, rng, 1.0)  # other: random shapes on a smooth random background
    att = 1.2 * np.abs(_blur(rng.standard_normal((size, size)), size / 10)) * 10 + rng.uniform(0, 0.5)
    for _ in range(int(rng.integers(2, 7))):
        cy, cx, ay, ax = rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5)
        if rng.uniform() < 0.5:
            shape = ellipse(ys, xs, cy, cx, ay, ax)
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
    return CXRPhantom(image=readonly(image), label=label, sublabel=sublabel,
                      patient_id=f"syn-cxr-p{patient:05d}", age_group=age,
                      lung_mask=readonly(lungs.astype(np.uint8)))


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
