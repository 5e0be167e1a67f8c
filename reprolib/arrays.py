"""Small array helpers shared by the CT steps: masks as bool or uint8, and casting into a buffer.
"""
from __future__ import annotations

import numpy as np


def cast_into(dst: np.ndarray, values: np.ndarray) -> None:
    """Round and saturate float ``values`` into the integer (or float) ``dst``."""
    if np.issubdtype(dst.dtype, np.integer):
        info = np.iinfo(dst.dtype)
        np.rint(values, out=values)
        np.clip(values, info.min, info.max, out=values)
    dst[...] = values


def as_u8_mask(mask: np.ndarray) -> np.ndarray:
    """``(mask > 0).astype(np.uint8)`` without a copy when ``mask`` is bool or already
    uint8 in {0, 1} (the pseudo-label's own dtype): a view then, else a new array."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m.view(np.uint8)
    if m.dtype == np.uint8 and (m.size == 0 or int(m.max()) <= 1):
        return m
    return (m > 0).astype(np.uint8)


def as_bool_mask(mask: np.ndarray) -> np.ndarray:
    """``mask > 0`` as bool, a view (no copy) when ``mask`` is bool or uint8 in {0, 1}."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    if m.dtype == np.uint8 and (m.size == 0 or int(m.max()) <= 1):
        return m.view(bool)
    return m > 0
