"""Class activation maps: a weighted sum of feature maps, and Grad-CAM's weights.

One rule serves both networks: the chest CT classifier's 3D maps (:mod:`reprolib.localize`,
features ``(C, D, h, w)``) and the chest X-ray ResNet-50's 2D maps (:func:`reprolib.cxr_cam.grad_cam`,
features ``(C, h, w)``).
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import VolumeError


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def weighted_sum(features: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """``sum_c w_c F_c``: features ``(C, *spatial)``, weights ``(C,)`` -> ``(*spatial)`` float32, raw
    (not rectified)."""
    f, w = _numpy(features), _numpy(weights)
    if f.ndim < 2 or w.ndim != 1 or w.shape[0] != f.shape[0]:
        raise VolumeError(None, f"features {f.shape} and weights {w.shape} do not match (C, ...) / (C,)")
    return np.tensordot(w.astype(np.float32), f.astype(np.float32, copy=False), axes=(0, 0))


def grad_cam_map(features: torch.Tensor, grads: torch.Tensor) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): channel weight ``a_c`` = the mean over the spatial axes of
    d score / d ``F_c``; map = ReLU(sum_c a_c F_c). ``features`` and ``grads``: ``(C, *spatial)``
    of one input. Returns ``(*spatial)`` float32 >= 0 at the feature maps' resolution."""
    if features.shape != grads.shape:
        raise VolumeError(None, f"features {tuple(features.shape)} and gradients {tuple(grads.shape)} differ")
    alpha = grads.detach().mean(dim=tuple(range(1, grads.dim())))  # (C,)
    return np.maximum(weighted_sum(features.detach(), alpha), 0.0).astype(np.float32, copy=False)
