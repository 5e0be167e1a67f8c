"""The 2D U-Net on CT volumes: slabs of slices for training, and a whole volume segmented slice by slice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .distributed import (
    resolve_device,
)
from .errors import InputError, VolumeError
from .models import BatchNormSnapshot, model_device, set_eval_mode


def load_pair(src: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ct_u8 (T,H,W) uint8, mask (T,H,W) uint8) from a pair or an npz path."""
    if isinstance(src, (tuple, list)) and len(src) == 2:
        ct, mask = (np.asarray(a) for a in src)
        where = None
    else:
        where = Path(src)
        if not where.is_file():
            raise InputError(where, "U-Net training volume not found")
        try:
            with np.load(where, allow_pickle=False) as d:
                names = set(d.keys())
                ck = next((k for k in ("ct_u8", "ct") if k in names), None)
                mk = next((k for k in ("lung_mask", "mask") if k in names), None)
                if ck is None or mk is None:
                    raise VolumeError(where, f"npz needs 'ct_u8' and 'lung_mask' arrays, has {sorted(names)}")
                ct, mask = d[ck], d[mk]
        except VolumeError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise VolumeError(where, f"unreadable U-Net volume ({exc})") from exc
    if ct.ndim != 3 or ct.shape != mask.shape:
        raise VolumeError(where, f"need CT and mask of equal (T, H, W) shape, got {ct.shape} and {mask.shape}")
    if ct.dtype != np.uint8:
        raise VolumeError(where, f"CT must be windowed uint8, got {ct.dtype}")
    return ct, mask


def slab_indices(n: int, slab: tuple[float, float]) -> np.ndarray:
    lo, hi = int(slab[0] * n), int(slab[1] * n)
    if hi <= lo:
        lo, hi = 0, n
    return np.arange(lo, hi)


def unet_batch(ct: np.ndarray, mask: np.ndarray, z: np.ndarray, size: tuple[int, int] | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices ``z`` as ``(n, 1, h, w)`` CT/255 float32 and ``(n, h, w)`` int64 targets."""
    x = torch.from_numpy(np.ascontiguousarray(ct[z])).to(device=device, dtype=torch.float32)[:, None] / 255.0
    m = torch.from_numpy(np.ascontiguousarray(mask[z]) > 0).to(device)[:, None].float()
    if size is not None and tuple(size) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        m = F.interpolate(m, size=size, mode="nearest-exact")
    return x, m[:, 0].long()


def work_size(shape_hw: tuple[int, int], size: tuple[int, int] | None, downsample: int) -> tuple[int, int] | None:
    if size is not None:
        return (int(size[0]), int(size[1]))
    if downsample and downsample > 1:
        return (shape_hw[0] // downsample, shape_hw[1] // downsample)
    return None


def seg_scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(mIoU over classes {0, 1}, Dice of class 1) for one volume."""
    ious = []
    for c in (0, 1):
        p, t = pred == c, target == c
        union = (p | t).sum().item()
        ious.append((p & t).sum().item() / union if union else 1.0)
    p, t = pred == 1, target == 1
    denom = p.sum().item() + t.sum().item()
    dice = 2.0 * (p & t).sum().item() / denom if denom else 1.0
    return float(np.mean(ious)), float(dice)


def segment_volume(unet: nn.Module, ct_u8: np.ndarray, batch: int = 8, bn_eval: bool = True,
                   size: tuple[int, int] | None = None, device: str | None = None,
                   runner: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Lung mask of a windowed CT, slice by slice (spec §1 step 6).

    Each batch of ``batch`` slices (CT/255, optionally resized to ``size`` with
    antialiasing) goes through the U-Net; logits are resized back to (H, W)
    bilinearly and the argmax is taken. ``bn_eval=False`` normalises each batch with
    its own statistics (``batch=1`` reproduces the official per-slice behaviour);
    running statistics are restored afterwards. ``runner`` (e.g. a frozen graph of ``unet``
    from :func:`reprolib.models.inference_runner`, built for ``(1, 1, *size)`` inputs)
    computes the logits instead of ``unet`` itself.

    Parameters
    ----------
    ct_u8 : ndarray (T, H, W) uint8

    Returns
    -------
    ndarray (T, H, W) uint8 in {0, 1}.
    """
    ct = np.asarray(ct_u8)
    if ct.ndim != 3 or ct.dtype != np.uint8:
        raise VolumeError(None, f"segment_volume needs a (T, H, W) uint8 CT, got {ct.shape} {ct.dtype}")
    dev = resolve_device(device) if device is not None else model_device(unet)
    t, h, w = ct.shape
    out = np.empty((t, h, w), dtype=np.uint8)
    was_training = unet.training
    with BatchNormSnapshot(unet, active=not bn_eval), torch.inference_mode():
        set_eval_mode(unet, bn_eval)
        try:
            for i in range(0, t, max(1, int(batch))):
                x = torch.from_numpy(np.ascontiguousarray(ct[i:i + batch])).to(dev, torch.float32)[:, None] / 255.0
                if size is not None and tuple(size) != (h, w):
                    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
                logits = (runner or unet)(x).float()
                if logits.shape[-2:] != (h, w):
                    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                # argmax; for two classes a comparison (same ties: class 0), ~100x cheaper on a CPU
                label = logits[:, 1] > logits[:, 0] if logits.shape[1] == 2 else logits.argmax(1)
                out[i:i + batch] = label.to(torch.uint8).cpu().numpy()
        finally:
            unet.train(was_training)
    return out
