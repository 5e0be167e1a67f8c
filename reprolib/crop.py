"""The classifiers' input: CT and lung mask cropped to the lung's bounding box and resized in-plane.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .arrays import as_bool_mask, as_u8_mask, cast_into
from .errors import VolumeError


def crop_to_mask(
    ct_u8: np.ndarray,
    mask: np.ndarray,
    inclusive: bool = False,
    *,
    z_clip: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Crop CT and mask to the bounding box of ``mask > 0`` ("Crop and resize").

    The box is ``[min, max)`` per axis as in the official code (the last plane
    on each axis is dropped); ``inclusive=True`` gives ``[min, max + 1)``.
    ``z_clip=(a, b)`` first restricts the mask to slices ``int(a·L)`` up to
    ``int(b·L)`` (``crop_z_clip``; book default the whole volume).

    Parameters
    ----------
    ct_u8 : np.ndarray, (L, H, W) uint8
    mask : np.ndarray, (L, H, W) {0, 1}

    Returns
    -------
    (ct_crop, mask_crop, bbox) — views (T, h, w); bbox ((z0, z1), (y0, y1), (x0, x1)).
    """
    if ct_u8.shape != mask.shape:
        raise VolumeError(None, f"CT {ct_u8.shape} and mask {mask.shape} differ in shape")
    m = as_bool_mask(mask)  # a view for bool / uint8 {0, 1} masks; copied before clipping
    n = m.shape[0]
    z_lo, z_hi = int(z_clip[0] * n), int(z_clip[1] * n)
    if (z_lo, z_hi) != (0, n):
        m = m.copy()
        m[:z_lo] = False
        m[z_hi:] = False
    if not m.any():
        raise VolumeError(None, "empty lung mask: nothing to crop to")
    bbox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(m.any(axis=other))
        lo, hi = int(idx[0]), int(idx[-1]) + (1 if inclusive else 0)
        if hi <= lo:
            raise VolumeError(None, f"lung mask is one plane thick along axis {axis}: empty [min, max) box")
        bbox.append((lo, hi))
    sl = tuple(slice(a, b) for a, b in bbox)
    return ct_u8[sl], mask[sl], tuple(bbox)


def resize_inplane(
    vol: np.ndarray,
    hw: tuple[int, int] = (224, 336),
    order: int = 3,
    *,
    mode: str = "constant",
) -> np.ndarray:
    """Zoom every slice in-plane to ``hw``; T unchanged ("Crop and resize").

    Equivalent to ``ndimage.zoom(vol, (1, H/h, W/w), order, mode)`` (z factor
    1 is the identity for a spline interpolant), done slice by slice. Integer
    input is rounded and saturated back to its dtype (uint8 CT stays uint8);
    use ``order=0`` for masks, which keeps them in {0, 1}.

    Returns
    -------
    np.ndarray, (T, hw[0], hw[1]), dtype of ``vol`` (float32 for floats).
    """
    if vol.ndim != 3:
        raise VolumeError(None, f"resize_inplane needs a (z, y, x) volume, got shape {vol.shape}")
    t, h, w = vol.shape
    H, W = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise VolumeError(None, f"cannot resize an empty in-plane size {h}x{w}")
    integer = np.issubdtype(vol.dtype, np.integer) or vol.dtype == bool
    out = np.empty((t, H, W), dtype=(np.uint8 if vol.dtype == bool else vol.dtype) if integer else np.float32)
    factors = (H / h, W / w)
    for z in range(t):
        sl = vol[z].view(np.uint8) if vol.dtype == bool else vol[z]
        if order == 0:
            r = ndimage.zoom(sl, factors, order=0, mode=mode)
            out[z] = r
        else:
            r = ndimage.zoom(sl.astype(np.float64), factors, order=order, mode=mode)
            cast_into(out[z], r)
    return out


def make_decovnet_input(
    ct_u8: np.ndarray,
    mask: np.ndarray,
    hw: tuple[int, int] = (224, 336),
    *,
    crop: bool = True,
    bbox_inclusive: bool = False,
    z_clip: tuple[float, float] = (0.0, 1.0),
    ct_order: int = 3,
    mask_order: int = 0,
) -> np.ndarray:
    """Build the 2-channel DeCoVNet input (spec §1 steps 7–9).

    Crops CT and mask to the mask box (``crop=True``), resizes both in-plane
    to ``hw`` (CT spline order 3, mask order 0) and stacks ``[CT/255, mask]``.
    The CT is not multiplied by the mask and no mean is subtracted.

    Parameters
    ----------
    ct_u8 : np.ndarray, (L, H, W) uint8 windowed CT at 1 mm
    mask : np.ndarray, (L, H, W) {0, 1} lung mask

    Returns
    -------
    np.ndarray, (2, T, hw[0], hw[1]) float32; channel 0 in [0, 1], channel 1 in {0, 1}.

    Memory: mostly the float32 output; 1.45 copies of a 375×512×512 1 mm
    volume (int16) for 224×336.
    """
    if crop:
        ct_u8, mask, _ = crop_to_mask(ct_u8, mask, inclusive=bbox_inclusive, z_clip=z_clip)
    elif ct_u8.shape != mask.shape:
        raise VolumeError(None, f"CT {ct_u8.shape} and mask {mask.shape} differ in shape")
    ct_r = resize_inplane(np.asarray(ct_u8, dtype=np.uint8), hw, order=ct_order)
    m_r = resize_inplane(as_u8_mask(mask), hw, order=mask_order)
    out = np.empty((2,) + ct_r.shape, dtype=np.float32)
    np.multiply(ct_r, np.float32(1.0 / 255.0), out=out[0])
    out[1] = m_r > 0 if mask_order == 0 else m_r >= 1
    return out
