"""Augmentation of CT volumes for the whole-volume classifiers and the U-Net.

Each augmentation draws its parameters from a torch.Generator it is given (the training engine
passes one per item and epoch, :func:`reprolib.train.step_generator`), so a resumed or distributed
run augments every item exactly as an uninterrupted single-process run would.

* :class:`OfficialAugment` — the official DeCoVNet code's random affine warp, crop and flip.
* :class:`SeedAugment` — the seed paper's description.
* :class:`IntensityAugment` — brightness and contrast (the U-Net's training).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, VolumeError

#: The names :func:`make_augment` knows (``"none"``: no augmentation).
AUGMENTATIONS = ("official", "seed", "none")


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """Integer uniform on the closed range [lo, hi]."""
    return int(torch.randint(int(lo), int(hi) + 1, (), generator=gen))


def _grid_factor(gen: torch.Generator, half_range: float, step: float = 0.1) -> float:
    """``1 + round(U(-r, r), 1)``: a factor on the 0.1 grid (official code)."""
    k = round(_uniform(gen, -half_range, half_range) / step)
    return round(1.0 + k * step, 10)


def affine_theta(
    hw: tuple[int, int],
    angle_deg: float = 0.0,
    translate_px: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    shear_deg: float = 0.0,
    hflip: bool = False,
) -> torch.Tensor:
    """Normalised ``affine_grid`` matrix for an image-centred affine.

    The forward map (input -> output pixel, centred coordinates, x right, y down) is
    ``p_out = Flip · (R(angle) · Sh(shear) · S(scale) · p_in + t)``, with R counter-
    clockwise on screen for positive angles, ``Sh = [[1, tan shear], [0, 1]]`` and
    Flip the horizontal mirror. The returned matrix is its inverse (output -> input)
    in ``align_corners=False`` normalised coordinates.

    Returns
    -------
    torch.Tensor, (2, 3) float32.
    """
    h, w = int(hw[0]), int(hw[1])
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, s], [-s, c]])
    sh = np.array([[1.0, math.tan(math.radians(shear_deg))], [0.0, 1.0]])
    fwd = rot @ sh * float(scale)
    flip = np.diag([-1.0 if hflip else 1.0, 1.0])
    t = np.asarray(translate_px, dtype=np.float64)
    # p_out = flip (fwd p_in + t)  =>  p_in = fwd^-1 (flip p_out - t)
    inv = np.linalg.inv(fwd)
    a_pix = inv @ flip
    b_pix = -inv @ t
    n = np.diag([w / 2.0, h / 2.0])  # normalised -> centred pixels (align_corners=False)
    n_inv = np.diag([2.0 / w, 2.0 / h])
    theta = np.zeros((2, 3))
    theta[:, :2] = n_inv @ a_pix @ n
    theta[:, 2] = n_inv @ b_pix
    return torch.as_tensor(theta, dtype=torch.float32)


def warp_volume(x: torch.Tensor, theta: torch.Tensor, mask_channels: Sequence[int] = (1,),
                padding_value: float = 0.0) -> torch.Tensor:
    """Apply one 2D affine to every slice of a ``(C, T, H, W)`` volume.

    The T slices are the channels of a single ``grid_sample`` call, so the same grid
    serves all slices. Channels in ``mask_channels`` use nearest neighbour (values stay
    in their set, e.g. {0, 1}); the others bilinear. Outside the image: 0
    (``padding_value`` is added to and subtracted from non-mask channels).

    Returns
    -------
    torch.Tensor, (C, T, H, W), dtype of ``x``.
    """
    if x.dim() != 4:
        raise VolumeError(None, f"warp_volume needs (C, T, H, W), got shape {tuple(x.shape)}")
    c, t, h, w = x.shape
    grid = F.affine_grid(theta.to(x.device, torch.float32)[None], [1, 1, h, w], align_corners=False)
    out = torch.empty_like(x)
    for ch in range(c):  # at most 2 channels; the slice axis is vectorised
        mode = "nearest" if ch in mask_channels else "bilinear"
        src = x[ch][None].float()
        if padding_value and ch not in mask_channels:
            src = src - padding_value
        res = F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
        if padding_value and ch not in mask_channels:
            res = res + padding_value
        out[ch] = res
    return out


def adjust_brightness(ct: torch.Tensor, factor: float) -> torch.Tensor:
    """``clip(factor · ct, 0, 1)`` (PIL/torchvision brightness); ``ct`` in [0, 1]."""
    return (ct * factor).clamp_(0.0, 1.0)


def adjust_contrast(ct: torch.Tensor, factor: float, per_slice: bool = True) -> torch.Tensor:
    """Blend with the mean grey level: ``clip(f · ct + (1 − f) · mean, 0, 1)``.

    ``ct``: (..., H, W) in [0, 1]. ``per_slice=True`` uses each slice's own mean (as
    torchvision applied slice by slice); ``False`` one mean for the whole tensor.
    """
    mean = ct.mean(dim=(-2, -1), keepdim=True) if per_slice else ct.mean()
    return (ct * factor + (1.0 - factor) * mean).clamp_(0.0, 1.0)


class _Augment:
    """Base: ``sample(gen) -> dict``; ``apply(x, params) -> x'``; ``__call__(x, gen)``."""

    def sample(self, gen: torch.Generator) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def neutral(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """Parameters that leave the input unchanged."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample(gen if gen is not None else torch.Generator().manual_seed(0)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _check_vol(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise VolumeError(None, f"augmentation needs a (C, T, H, W) tensor, got shape {tuple(x.shape)}")


class IntensityAugment(_Augment):
    """Brightness then contrast on the CT channel (U-Net, spec §4; part of "official").

    Draws ``brightness = 1 + round(U(−b, b), 1)`` and ``contrast = 1 + round(U(−c, c), 1)``.
    """

    def __init__(self, brightness: float = 0.5, contrast: float = 0.3, ct_channels: Sequence[int] = (0,),
                 per_slice_mean: bool = True):
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.ct_channels = tuple(ct_channels)
        self.per_slice_mean = bool(per_slice_mean)

    def sample(self, gen: torch.Generator) -> dict[str, Any]:
        return {"brightness": _grid_factor(gen, self.brightness), "contrast": _grid_factor(gen, self.contrast)}

    def neutral(self) -> dict[str, Any]:
        return {"brightness": 1.0, "contrast": 1.0}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        _check_vol(x)
        out = x.clone()
        for ch in self.ct_channels:
            ct = adjust_brightness(out[ch], params["brightness"])
            out[ch] = adjust_contrast(ct, params["contrast"], self.per_slice_mean)
        return out


class OfficialAugment(_Augment):
    """Official-code augmentation (spec §5): affine, then brightness and contrast.

    Draws: rotation integer in [−10°, 10°]; translation integer px in
    [−round(0.1·W), round(0.1·W)] × [−round(0.1·H), …] (``round(U(−0.1·W, 0.1·W))``);
    scale ``1 + round(U(−0.2, 0.2), 1)`` ∈ {0.8, …, 1.2}; shear integer in [−10°, 10°];
    brightness ``1 + round(U(−0.5, 0.5), 1)``; contrast ``1 + round(U(−0.3, 0.3), 1)``.
    Bilinear for the CT, nearest for the mask; zero outside the image.
    """

    def __init__(self, degrees: int = 10, translate: float = 0.1, scale: float = 0.2, shear: int = 10,
                 brightness: float = 0.5, contrast: float = 0.3, mask_channels: Sequence[int] = (1,),
                 ct_channels: Sequence[int] = (0,)):
        self.degrees = int(degrees)
        self.translate = float(translate)
        self.scale = float(scale)
        self.shear = int(shear)
        self.mask_channels = tuple(mask_channels)
        self.intensity = IntensityAugment(brightness, contrast, ct_channels)
        self._hw: tuple[int, int] | None = None

    def sample(self, gen: torch.Generator, hw: tuple[int, int] | None = None) -> dict[str, Any]:
        """Draw parameters; ``hw`` (H, W) bounds the translation (defaults to the last
        volume seen, else translation is drawn as a fraction and scaled in ``apply``)."""
        hw = hw or self._hw
        p: dict[str, Any] = {"angle": _randint(gen, -self.degrees, self.degrees)}
        fx, fy = _uniform(gen, -self.translate, self.translate), _uniform(gen, -self.translate, self.translate)
        if hw is None:
            p["translate_frac"] = (fx, fy)
        else:
            p["translate"] = (int(round(fx * hw[1])), int(round(fy * hw[0])))
        p["scale"] = _grid_factor(gen, self.scale)
        p["shear"] = _randint(gen, -self.shear, self.shear)
        p.update(self.intensity.sample(gen))
        return p

    def neutral(self) -> dict[str, Any]:
        return {"angle": 0, "translate": (0, 0), "scale": 1.0, "shear": 0, **self.intensity.neutral()}

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        _check_vol(x)
        g = gen if gen is not None else torch.Generator().manual_seed(0)
        return self.apply(x, self.sample(g, hw=tuple(x.shape[-2:])))

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        _check_vol(x)
        h, w = x.shape[-2:]
        if "translate" in params:
            t = params["translate"]
        else:
            fx, fy = params["translate_frac"]
            t = (int(round(fx * w)), int(round(fy * h)))
        theta = affine_theta((h, w), params["angle"], t, params["scale"], params["shear"])
        return self.intensity.apply(warp_volume(x, theta, self.mask_channels), params)


class SeedAugment(_Augment):
    """Seed-paper augmentation (spec §5), adapted to the non-square input.

    Draws: centred crop of scale ``U(0.7, 1)`` with the input's aspect ratio, resized
    back to (H, W); rotation ``U(−25°, 25°)``; horizontal flip with p = 0.5; contrast
    factor ``U(0.5, 1.5)`` (CT only). Crop-resize, rotation and flip are composed into
    one affine, so the volume is interpolated once.
    """

    def __init__(self, crop_scale: tuple[float, float] = (0.7, 1.0), degrees: float = 25.0,
                 flip_p: float = 0.5, contrast: tuple[float, float] = (0.5, 1.5),
                 mask_channels: Sequence[int] = (1,), ct_channels: Sequence[int] = (0,),
                 per_slice_mean: bool = True):
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.degrees = float(degrees)
        self.flip_p = float(flip_p)
        self.contrast = (float(contrast[0]), float(contrast[1]))
        self.mask_channels = tuple(mask_channels)
        self.ct_channels = tuple(ct_channels)
        self.per_slice_mean = bool(per_slice_mean)

    def sample(self, gen: torch.Generator) -> dict[str, Any]:
        return {"crop_scale": _uniform(gen, *self.crop_scale),
                "angle": _uniform(gen, -self.degrees, self.degrees),
                "hflip": bool(_uniform(gen, 0.0, 1.0) < self.flip_p),
                "contrast": _uniform(gen, *self.contrast)}

    def neutral(self) -> dict[str, Any]:
        return {"crop_scale": 1.0, "angle": 0.0, "hflip": False, "contrast": 1.0}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        _check_vol(x)
        h, w = x.shape[-2:]
        # crop of scale s resized back to (H, W) = zoom by 1/s about the centre
        theta = affine_theta((h, w), params["angle"], (0.0, 0.0), 1.0 / params["crop_scale"], 0.0,
                             hflip=params["hflip"])
        out = warp_volume(x, theta, self.mask_channels)
        for ch in self.ct_channels:
            out[ch] = adjust_contrast(out[ch], params["contrast"], self.per_slice_mean)
        return out


class Compose(_Augment):
    """Chain augmentations; ``sample`` returns ``{"steps": [params, ...]}``."""

    def __init__(self, *augs: _Augment):
        self.augs = list(augs)

    def sample(self, gen: torch.Generator) -> dict[str, Any]:
        return {"steps": [a.sample(gen) for a in self.augs]}

    def neutral(self) -> dict[str, Any]:
        return {"steps": [a.neutral() for a in self.augs]}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        for a, p in zip(self.augs, params["steps"]):
            x = a.apply(x, p)
        return x


def make_augment(name: str | None, **kwargs: Any) -> _Augment | None:
    """``"official"`` -> :class:`OfficialAugment`, ``"seed"`` -> :class:`SeedAugment`,
    ``"none"``/``None`` -> ``None``; ``kwargs`` go to the constructor."""
    if name in (None, "none"):
        return None
    if name == "official":
        return OfficialAugment(**kwargs)
    if name == "seed":
        return SeedAugment(**kwargs)
    raise ConfigError(None, f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}")
