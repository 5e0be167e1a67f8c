"""Where the chest X-ray network looks: Grad-CAM on its last stage, and the heat map over the image.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from .cam import grad_cam_map
from .cxr import CLASS_INDEX
from .errors import (
    ConfigError,
)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_class: int | str,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM heat map of ``target_class`` for one image.

    Parameters
    ----------
    x:
        float tensor ``(3, H, W)`` or ``(1, 3, H, W)``, already transformed.
    layer:
        Module whose output feature maps ``A`` (``(K, h, w)``) are weighted; default
        ``model.layer4``.

    Returns
    -------
    np.ndarray
        float32 ``(H, W)`` in ``[0, 1]``: ``ReLU(sum_k mean_ij(dy_c/dA_k) * A_k)``,
        bilinearly upsampled to the input size and divided by its maximum (all zeros
        when the map is zero everywhere). The model's train/eval mode is restored.
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ConfigError(None, f"grad_cam expects one image (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    cls = CLASS_INDEX[target_class] if isinstance(target_class, str) else int(target_class)
    layer = layer if layer is not None else model.layer4
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    was_training = model.training
    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            logits = model(xi)
            model.zero_grad(set_to_none=True)
            logits[0, cls].backward()
    finally:
        handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    heat = torch.from_numpy(grad_cam_map(store["act"][0], store["grad"][0]))[None, None]
    heat = torch.nn.functional.interpolate(heat, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    heat = heat.clamp_min(0)
    m = float(heat.max())
    heat = heat / m if m > 0 else torch.zeros_like(heat)
    return heat.numpy().astype(np.float32)


def overlay(image: Image.Image | np.ndarray, cam: np.ndarray, *, alpha: float = 0.4,
            cmap: str = "jet") -> np.ndarray:
    """Blend a heat map onto an image: uint8 RGB ``(H, W, 3)`` of the image's size.

    ``image``: PIL image, or array ``(H, W)`` / ``(H, W, 3)`` (uint8, or float in [0, 1]).
    ``cam``: float ``(h, w)`` in [0, 1], resized bilinearly to ``(H, W)`` if needed.
    Result: ``(1 - alpha) * image + alpha * colormap(cam)``.
    """
    import matplotlib

    if isinstance(image, Image.Image):
        base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(image)
        base = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        if base.ndim == 2:
            base = np.repeat(base[..., None], 3, axis=2)
        elif base.ndim == 3 and base.shape[2] == 1:
            base = np.repeat(base, 3, axis=2)
    h, w = base.shape[:2]
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam).resize((w, h), Image.BILINEAR), dtype=np.float32)
    heat = matplotlib.colormaps[cmap](np.clip(cam, 0, 1))[..., :3].astype(np.float32)
    out = (1.0 - alpha) * np.clip(base, 0, 1) + alpha * heat
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
