"""A CT volume in memory: the (z, y, x) array in Hounsfield units with its spacing, origin and
direction (DICOM LPS), and the conversion of stored scanner values to HU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: spec §2 "HU": stored values <= this become 0.
HU_STORED_CLIP_LOW = -2000

INT16_MIN, INT16_MAX = int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max)


#: spec §2 "HU": stored values >= this become this value.
HU_STORED_CLIP_HIGH = 3000


@dataclass
class CTVolume:
    """A CT volume with its geometry.

    Attributes
    ----------
    hu : np.ndarray, shape (z, y, x)
        int16 Hounsfield units when ``is_hu``; otherwise the stored intensities
        (uint8 for already windowed PNG stacks).
    spacing_mm : tuple of 3 floats
        Voxel size (dz, dy, dx) in mm; ``(nan, nan, nan)`` when unknown.
    origin_mm : tuple of 3 floats
        LPS world position (x, y, z) in mm of voxel [0, 0, 0].
    direction : np.ndarray, shape (3, 3)
        Columns are the LPS unit vectors of the array axes x, y, z (ITK order).
    source : str
        File or directory the volume was read from (or an id).
    is_hu : bool
        Whether ``hu`` holds Hounsfield units.
    meta : dict
        Reader-specific details (dropped duplicates, flags, header fields).
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""
    is_hu: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x) in voxels."""
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing_known(self) -> bool:
        """True when all three spacings are finite and positive."""
        sp = np.asarray(self.spacing_mm, dtype=float)
        return bool(np.all(np.isfinite(sp)) and np.all(sp > 0))


def stored_to_hu(
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    *,
    clip_low: int = HU_STORED_CLIP_LOW,
    clip_high: int = HU_STORED_CLIP_HIGH,
) -> np.ndarray:
    """Convert DICOM stored values to int16 HU (spec §2, "HU").

    Stored values ``<= clip_low`` become 0, values ``>= clip_high`` become
    ``clip_high``; then ``HU = slope * v + intercept``, rounded to the nearest
    integer (exact for the integer slope/intercept of virtually all CT) and
    saturated to the int16 range.

    Parameters
    ----------
    stored : np.ndarray, any shape, integer or float
    slope, intercept : float
        RescaleSlope and RescaleIntercept.

    Returns
    -------
    np.ndarray, same shape, int16 (HU)
    """
    v = np.asarray(stored)
    v = np.where(v <= clip_low, 0, v)
    v = np.minimum(v, clip_high)
    if float(slope) == int(slope) and float(intercept) == int(intercept):
        hu = v.astype(np.int64) * int(slope) + int(intercept)
    else:
        hu = np.rint(v.astype(np.float64) * float(slope) + float(intercept))
    return np.clip(hu, INT16_MIN, INT16_MAX).astype(np.int16)
