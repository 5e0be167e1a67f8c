"""Training and inference engine shared by the U-Net, DeCoVNet and 2DClfNet (spec §4, §5).

Contents
--------
* :class:`TrainConfig` — every training knob, with the spec's defaults.
* Volume augmentation (spec §5 "Augmentation", §4 for the U-Net): small callables
  on a ``(C, T, H, W)`` float32 tensor, channel 0 = CT / 255, channel 1 = lung mask.
  One random draw per volume (:meth:`sample` with a ``torch.Generator``), applied
  identically to every slice (:meth:`apply`); geometric transforms are one
  ``affine_grid``/``grid_sample`` call with the T slices as channels (no Python loop);
  the mask is resampled with nearest neighbour (stays {0, 1}); intensity changes touch
  the CT channel only. :class:`OfficialAugment`, :class:`SeedAugment`,
  :class:`IntensityAugment`, :class:`Compose`, :func:`make_augment`.
* :class:`VolumeDataset`, :func:`oversample_indices`.
* :func:`fit` (whole-volume classifiers), :func:`fit_unet` (2D U-Net on slabs of
  slices), both resumable from ``checkpoint_dir/last.pt`` with bitwise-identical
  results on CPU, returning a :class:`History`.
* Data-parallel training under ``torchrun`` (:func:`init_distributed`,
  :func:`dist_context`): when a process group is initialised, both fits wrap the
  model in ``DistributedDataParallel`` (gloo on CPU, NCCL on GPUs) and a
  ``DistributedSampler`` gives every rank its share of each *global* batch.
* :func:`predict_volumes`, :func:`segment_volume`.
* Checkpoints (``best.pt``, ``last.pt``) are model files of :mod:`reprolib.modelfile`.

Randomness
----------
Shuffling, oversampling and augmentation draws do not consume a global stream: the
epoch order comes from ``(cfg.seed, epoch)`` and each item's draws from
``(cfg.seed, epoch, position in the epoch order)`` (:func:`step_generator`), so a
resumed run draws exactly what an uninterrupted run would, and an item is augmented
the same way whichever rank or micro-batch processes it. Global Python / NumPy /
torch states (dropout, user code) are seeded from ``cfg.seed`` and saved in ``last.pt``.

Batches, micro-batches and ranks
--------------------------------
``cfg.batch`` volumes make one optimiser step (the *global* batch). They go through
the network ``cfg.micro_batch`` at a time (gradient accumulation; default: all at
once), so volumes of different depth T can share a step with ``micro_batch=1``.
Under DDP with ``W`` ranks a ``DistributedSampler`` gives each rank ``batch / W`` of
them (positions ``rank, rank + W, ...`` of the step) and DDP averages the gradients.
BatchNorm normalises each micro-batch with its own statistics; after every step the
ranks' running-statistics updates are composed as one process applying rank 0's,
then rank 1's, ... micro-batches would have (:func:`_merged_batchnorm`), so all
ranks hold identical weights and buffers. With ``micro_batch = 1`` the gradients
equal those of a single-process run with the same ``batch`` (up to summation
order); with ``batch = W`` as well (one volume per rank and step, the official
batch of one per forward pass) the running statistics are equal too.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import evaluate, provenance
from .errors import ConfigError, InputError, ReproError, VolumeError
from .modelfile import load_checkpoint, save_checkpoint
from .models import channels_last

__all__ = [
    "DECOVNET_LR",
    "UNET_LR",
    "TrainConfig",
    "History",
    "step_generator",
    "affine_theta",
    "warp_volume",
    "adjust_brightness",
    "adjust_contrast",
    "IntensityAugment",
    "OfficialAugment",
    "SeedAugment",
    "Compose",
    "make_augment",
    "VolumeDataset",
    "oversample_indices",
    "class_weights",
    "fit",
    "fit_unet",
    "DistContext",
    "dist_context",
    "init_distributed",
    "check_replicas",
    "predict_volumes",
    "segment_volume",
]

#: Adam learning rate of the official DeCoVNet config (spec §5).
DECOVNET_LR = 1e-5
#: Adam learning rate of the official U-Net config (spec §4).
UNET_LR = 1e-3
_BALANCE = ("oversample", "weighted_ce", "none")
_AUGMENT = ("official", "seed", "none")
# Keys of TrainConfig that must match when resuming from last.pt.
_RESUME_MUST_MATCH = ("lr", "weight_decay", "batch", "micro_batch", "balance", "augment", "seed")


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Training settings (spec §4–5 defaults).

    Attributes
    ----------
    epochs : int
        Number of epochs (spec §5 book default 100).
    lr : float or None
        Adam learning rate, constant; ``None`` = :data:`DECOVNET_LR` (1e-5) in
        :func:`fit`, :data:`UNET_LR` (1e-3) in :func:`fit_unet`.
    weight_decay : float
        Adam weight decay (0).
    batch : int
        Volumes per optimiser step, over all ranks (official: 1).
    micro_batch : int or None
        Volumes per forward pass within a step (gradient accumulation); ``None`` = the
        whole (per-rank) batch, which needs equal shapes. ``1`` lets volumes of
        different depth share a step.
    balance : str
        ``"oversample"`` (minority class topped up to parity with random duplicates
        before each epoch), ``"weighted_ce"`` (inverse-frequency class weights) or
        ``"none"``.
    augment : str
        ``"official"`` | ``"seed"`` | ``"none"`` (see :func:`make_augment`).
    seed : int
        Seeds Python, NumPy and torch, and every per-step draw.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:0"`` ... or ``"auto"`` (cuda when available).
    validate_every : int
        Validate every this many epochs (and after the last one).
    checkpoint_dir : str or Path or None
        Where ``last.pt`` / ``best.pt`` go; ``None`` = no checkpoints, no resume.
    bn_eval : bool
        BatchNorm in eval mode (running statistics) at validation time; ``False`` =
        batch statistics as in the official scripts.
    max_threads : int or None
        ``torch.set_num_threads`` during training (restored afterwards).
    progress : bool
        tqdm bars (epoch and step, with running loss).
    channels_last : bool
        Train with the weights in channels-last layout (:func:`reprolib.models.channels_last`;
        10–25 % faster on CPU, same values up to rounding); not under DDP, whose gradient
        buckets expect the contiguous layout. The returned model is contiguous either way.
    """

    epochs: int = 100
    lr: float | None = None
    weight_decay: float = 0.0
    batch: int = 1
    micro_batch: int | None = None
    balance: str = "oversample"
    augment: str = "official"
    seed: int = 0
    device: str = "cpu"
    validate_every: int = 2
    checkpoint_dir: str | os.PathLike | None = None
    bn_eval: bool = True
    max_threads: int | None = None
    progress: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.balance not in _BALANCE:
            raise ConfigError(None, f"balance must be one of {_BALANCE}, got {self.balance!r}")
        if self.augment not in _AUGMENT:
            raise ConfigError(None, f"augment must be one of {_AUGMENT}, got {self.augment!r}")
        if int(self.epochs) < 0 or int(self.batch) < 1 or int(self.validate_every) < 1:
            raise ConfigError(None, f"need epochs >= 0, batch >= 1, validate_every >= 1; got "
                                    f"{self.epochs}, {self.batch}, {self.validate_every}")
        if self.micro_batch is not None and int(self.micro_batch) < 1:
            raise ConfigError(None, f"micro_batch must be >= 1 or None, got {self.micro_batch!r}")
        if self.lr is not None and not (self.lr > 0):
            raise ConfigError(None, f"lr must be positive, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings)."""
        d = asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        return d


@dataclass
class History:
    """Per-epoch record of a training run.

    Lists are aligned by epoch (1-based ``epoch``); validation entries are NaN in
    epochs without validation. ``val_auc`` is used by :func:`fit`, ``val_miou`` and
    ``val_dice`` by :func:`fit_unet`. ``seconds`` = wall time of the epoch,
    validation included.
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_auc: list[float] = field(default_factory=list)
    val_miou: list[float] = field(default_factory=list)
    val_dice: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_path: str | None = None
    last_path: str | None = None
    resumed_from_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = [None if isinstance(x, float) and math.isnan(x) else x for x in v] \
                if isinstance(v, list) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        kw = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if isinstance(v, list) and f.name != "epoch":
                v = [float("nan") if x is None else float(x) for x in v]
            kw[f.name] = v
        return cls(**kw)

    def append(self, epoch: int, train_loss: float, seconds: float, **val: float) -> None:
        self.epoch.append(int(epoch))
        self.train_loss.append(float(train_loss))
        self.seconds.append(float(seconds))
        for name in ("val_loss", "val_auc", "val_miou", "val_dice"):
            getattr(self, name).append(float(val.get(name, float("nan"))))


# ---------------------------------------------------------------------- randomness


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (NumPy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) % 2**32 for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def step_generator(seed: int, epoch: int, step: int, salt: int = 0xA06) -> torch.Generator:
    """CPU ``torch.Generator`` for the draws of one training step (augmentation, slices)."""
    return torch.Generator().manual_seed(_derive_seed(salt, seed, epoch, step))


def _epoch_rng(seed: int, epoch: int, salt: int = 0x5E0) -> np.random.Generator:
    return np.random.default_rng(_derive_seed(salt, seed, epoch))


def _rng_state() -> dict[str, Any]:
    """Global Python / NumPy states as JSON-able values."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}


def _set_rng_state(state: dict[str, Any]) -> None:
    v, keys, g = state["python"]
    random.setstate((v, tuple(keys), g))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """Integer uniform on the closed range [lo, hi]."""
    return int(torch.randint(int(lo), int(hi) + 1, (), generator=gen))


def _grid_factor(gen: torch.Generator, half_range: float, step: float = 0.1) -> float:
    """``1 + round(U(-r, r), 1)``: a factor on the 0.1 grid (official code)."""
    k = round(_uniform(gen, -half_range, half_range) / step)
    return round(1.0 + k * step, 10)


# --------------------------------------------------------------- augmentation math


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


# ------------------------------------------------------------- augmentation classes


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
    raise ConfigError(None, f"unknown augmentation {name!r}; choose one of {_AUGMENT}")


# ------------------------------------------------------------------------ datasets


def _load_array(src: Any, key: str | None) -> np.ndarray:
    """An ndarray from an array, a tensor, a ``.npy`` or a ``.npz`` path."""
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, torch.Tensor):
        return src.detach().cpu().numpy()
    path = Path(src)
    if not path.is_file():
        raise InputError(path, "volume file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if isinstance(data, np.ndarray):
                return data
            names = list(data.keys())
            if key is not None and key in names:
                return data[key]
            if len(names) == 1:
                return data[names[0]]
            raise VolumeError(path, f"npz holds {names}; expected key {key!r} or a single array")
    except VolumeError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise VolumeError(path, f"unreadable volume file ({exc})") from exc


class VolumeDataset(torch.utils.data.Dataset):
    """Whole-volume classification items.

    Parameters
    ----------
    items : sequence of (source, label, case_id)
        ``source``: ndarray / tensor (2, T, H, W) float32, or a path to a ``.npy`` or
        ``.npz`` (array under ``key``, or its only array).
    augment : callable or None
        An augmentation with ``sample(gen)``/``apply(x, params)`` (or any
        ``f(x, gen)``), applied by :meth:`load` when a generator is given.
    key : str
        Array name inside ``.npz`` files.

    ``__getitem__(i)`` returns ``(x (2, T, H, W) float32 tensor, label int, case_id)``,
    augmented with the dataset's own ``generator`` (seed 0) when ``augment`` is set.
    """

    def __init__(self, items: Sequence[tuple[Any, int, str]], augment: Callable | None = None,
                 key: str = "x", generator: torch.Generator | None = None):
        self.items = [(src, int(lab), str(cid)) for src, lab, cid in items]
        self.augment = augment
        self.key = key
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [lab for _, lab, _ in self.items]

    @property
    def case_ids(self) -> list[str]:
        return [cid for _, _, cid in self.items]

    def load(self, i: int, generator: torch.Generator | None = None,
             augment: bool = True) -> tuple[torch.Tensor, int, str]:
        """Item ``i``; augmented only when ``augment`` and a generator are given."""
        src, lab, cid = self.items[i]
        arr = _load_array(src, self.key)
        where = src if isinstance(src, (str, os.PathLike)) else cid
        if arr.ndim != 4 or arr.shape[0] != 2:
            raise VolumeError(where, f"expected a (2, T, H, W) volume, got shape {arr.shape}")
        x = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise VolumeError(where, "volume contains NaN or infinite values")
        if augment and self.augment is not None and generator is not None:
            x = self.augment(x, generator)
        return x, lab, cid

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        return self.load(i, self.generator)


def oversample_indices(labels: Sequence[int], rng: np.random.Generator) -> list[int]:
    """All indices plus random duplicates that top every class up to the largest class.

    Duplicates are drawn without replacement within a class (whole extra copies first
    when a class needs more than its own size). The result is not shuffled.

    Returns
    -------
    list of int, length ``n_classes · max count``.
    """
    labels = np.asarray(labels)
    out = list(range(len(labels)))
    if len(labels) == 0:
        return out
    classes, counts = np.unique(labels, return_counts=True)
    top = counts.max()
    for c, n in zip(classes, counts):
        need = int(top - n)
        if need == 0:
            continue
        idx = np.flatnonzero(labels == c)
        reps, rest = divmod(need, len(idx))
        extra = list(np.tile(idx, reps)) + list(rng.choice(idx, size=rest, replace=False))
        out.extend(int(i) for i in extra)
    return out


def class_weights(labels: Sequence[int], n_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency CE weights ``n / (K · n_c)`` (absent classes get weight 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)


# ------------------------------------------------------------------------ metrics


def _better(score: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Higher primary metric wins (NaN counts as −inf), ties go to the lower loss."""
    if best is None:
        return True
    key = lambda s: (s[0] if math.isfinite(s[0]) else -math.inf,  # noqa: E731
                     -s[1] if math.isfinite(s[1]) else -math.inf)
    return key(score) > key(best)


# ---------------------------------------------------------------------- checkpoints


# ------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (``world == 1``: not distributed)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_context() -> DistContext:
    """The current process group's size and this process's rank (``DistContext()`` without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistContext()


def init_distributed(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
    without ``WORLD_SIZE`` > 1 (a plain ``python`` run) nothing happens. The backend is
    NCCL when the run uses CUDA (``device`` ``"cuda"``, or ``"auto"`` with a GPU),
    gloo otherwise; on CUDA each process is pinned to GPU ``LOCAL_RANK``.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        use_cuda = (torch.cuda.is_available() and str(device) in ("auto", "cuda")) or str(device).startswith("cuda:")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return dist_context()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` = CUDA when available; under DDP a bare ``"cuda"`` means this rank's GPU."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    ctx = dist_context()
    if dev.type == "cuda" and dev.index is None and ctx.active:
        dev = torch.device("cuda", ctx.local_rank)
    return dev


def _wrap_ddp(model: nn.Module, dev: torch.device, ctx: DistContext) -> nn.Module:
    """``DistributedDataParallel(model)`` under a process group, else ``model`` itself.

    Buffers are not broadcast at every forward pass: the ranks' BatchNorm running
    statistics are merged after each step instead (:func:`_merged_batchnorm`).
    """
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dev.index if dev.index is not None else ctx.local_rank] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


@contextlib.contextmanager
def _merged_batchnorm(model: nn.Module | None, ctx: DistContext):
    """Merge the BatchNorm running-statistics updates of all ranks over one step.

    Each rank updates its running statistics with its own micro-batches (EMA with
    momentum m: ``r ← (1 − m)·r + m·batch_stat``). The update of rank q over its
    n_q micro-batches is affine, ``r0 → (1 − m)^n_q·r0 + c_q``; composing them in rank
    order gives every rank the statistics one process would have after running rank
    0's micro-batches, then rank 1's, ... Exactly a single-process run when every rank
    makes one forward pass per step (``batch = W × micro_batch``). ``momentum=None``
    (cumulative average) falls back to the mean over ranks.
    """
    mods = [] if model is None or not ctx.active else [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]
    if not mods:
        yield
        return
    import torch.distributed as dist

    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in mods]
    yield
    with torch.no_grad():
        parts, counts = [], []
        for m, (mean0, var0, nbt0) in zip(mods, before):
            n = int(m.num_batches_tracked) - nbt0
            a = (1.0 - m.momentum) ** n if m.momentum is not None else 0.0
            parts += [m.running_mean - a * mean0, m.running_var - a * var0]
            counts.append(n)
        flat = torch.cat([p.reshape(-1).double() for p in parts] + [torch.tensor(counts, dtype=torch.float64,
                                                                                 device=parts[0].device)])
        every = [torch.empty_like(flat) for _ in range(ctx.world)]
        dist.all_gather(every, flat)
        off = 0
        sizes = [m.running_mean.numel() for m in mods]
        n_all = [e[-len(mods):].round().long().tolist() for e in every]
        for i, (m, (mean0, var0, nbt0)) in enumerate(zip(mods, before)):
            k = sizes[i]
            c_mean = [e[off:off + k] for e in every]
            c_var = [e[off + k:off + 2 * k] for e in every]
            off += 2 * k
            ns = [n_all[q][i] for q in range(ctx.world)]
            if m.momentum is None:
                mean = sum(c_mean) / ctx.world  # a = 0 above: c_q is rank q's final statistic
                var = sum(c_var) / ctx.world
            else:
                keep = 1.0 - m.momentum
                mean, var, later = mean0.double() * keep ** sum(ns), var0.double() * keep ** sum(ns), 0
                for q in reversed(range(ctx.world)):
                    mean = mean + c_mean[q] * keep ** later
                    var = var + c_var[q] * keep ** later
                    later += ns[q]
            m.running_mean.copy_(mean.to(m.running_mean.dtype))
            m.running_var.copy_(var.to(m.running_var.dtype))
            m.num_batches_tracked.fill_(nbt0 + sum(ns))


def _all_sum(values: Sequence[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (identity without DDP)."""
    if not ctx.active:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def _gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without DDP)."""
    if not ctx.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def _barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def _shard(n: int, ctx: DistContext, pad: bool = True) -> list[int]:
    """Positions ``0..n-1`` this rank processes: ``DistributedSampler`` without shuffling,
    i.e. ``rank, rank + W, ...`` (padded by repeating the first positions when ``pad``
    and ``n`` is not a multiple of ``W``, so every rank takes the same number of steps)."""
    if not ctx.active:
        return list(range(n))
    if not pad:
        return list(range(ctx.rank, n, ctx.world))
    from torch.utils.data import DistributedSampler

    return list(DistributedSampler(range(n), num_replicas=ctx.world, rank=ctx.rank, shuffle=False))


def check_replicas(model: nn.Module, ctx: DistContext | None = None) -> float:
    """Largest |difference| between this rank's parameters and buffers and rank 0's (0.0 without DDP).

    Raises :class:`ReproError` when the replicas differ: data-parallel ranks must end
    a step with identical weights.
    """
    ctx = ctx or dist_context()
    if not ctx.active:
        return 0.0
    import torch.distributed as dist

    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1).double().cpu() for t in
                          list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]])
    ref = flat.clone()
    if next(model.parameters()).device.type == "cuda":
        ref = ref.cuda()
        dist.broadcast(ref, src=0)
        ref = ref.cpu()
    else:
        dist.broadcast(ref, src=0)
    diff = float((flat - ref).abs().max()) if flat.numel() else 0.0
    worst = max(_gather(diff, ctx))
    if worst != 0.0:
        raise ReproError(f"data-parallel replicas diverged: max |weight difference| to rank 0 = {worst:.3e}")
    return worst


# ------------------------------------------------------------------ engine helpers


class _GlobalState:
    """Set threads and deterministic algorithms for a run; restore them afterwards."""

    def __init__(self, max_threads: int | None):
        self.max_threads = max_threads

    def __enter__(self) -> "_GlobalState":
        self._threads = torch.get_num_threads()
        self._det = torch.are_deterministic_algorithms_enabled()
        self._warn = torch.is_deterministic_algorithms_warn_only_enabled()
        if self.max_threads:
            torch.set_num_threads(int(self.max_threads))
        provenance.set_deterministic(True, warn_only=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self._threads)
        provenance.set_deterministic(self._det, warn_only=self._warn)


class _BNSnapshot:
    """Save BatchNorm running statistics on entry and restore them on exit."""

    def __init__(self, model: nn.Module, active: bool):
        self.model = model
        self.active = active

    def __enter__(self) -> None:
        if self.active:
            self._saved = {n: b.detach().clone() for n, b in self.model.named_buffers()}

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            with torch.no_grad():
                for n, b in self.model.named_buffers():
                    b.copy_(self._saved[n])


def _set_mode(model: nn.Module, bn_eval: bool) -> None:
    """``model.eval()``, then BatchNorm in batch-statistics mode when ``bn_eval`` is False."""
    model.eval()
    try:
        from .models import set_bn_eval
    except ImportError:  # pragma: no cover - models always ships set_bn_eval
        set_bn_eval = None
    if set_bn_eval is not None:
        set_bn_eval(model, bn_eval)
    else:  # pragma: no cover
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(not bn_eval)


def _progress(iterable: Iterable, enabled: bool, **kw: Any):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


def _maybe_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Run:
    """What the generic loop needs from fit / fit_unet."""

    kind: str
    n_items: int
    labels: Sequence[int] | None
    # [(item index, its generator), ...] of this rank -> mean loss over them (after the optimizer step)
    step: Callable[[list[tuple[int, torch.Generator]]], float]
    validate: Callable[[], dict[str, float]] | None  # -> {"val_loss", "val_auc" | "val_miou", ...}
    select_key: str  # "val_auc" or "val_miou"
    lr: float
    model: nn.Module | None = None  # the unwrapped model (BatchNorm statistics merged across ranks)


def _check_resume(path: Path, saved: dict[str, Any], cfg: TrainConfig, kind: str, lr: float) -> None:
    if saved.get("kind") != kind:
        raise ConfigError(path, f"checkpoint is from a {saved.get('kind')!r} run, not {kind!r}")
    old = saved.get("config", {})
    now = cfg.to_dict()
    now["lr"] = lr
    diff = [k for k in _RESUME_MUST_MATCH if old.get(k) != now.get(k)]
    if diff:
        parts = ", ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ConfigError(path, f"cannot resume with a different configuration ({parts}); "
                                f"use another checkpoint_dir or delete last.pt")


def _train_loop(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, run: _Run) -> History:
    """Epoch loop shared by :func:`fit` and :func:`fit_unet`: shuffling, balancing,
    validation, best/last checkpoints and resumption."""
    ctx = dist_context()
    if cfg.batch % ctx.world:
        raise ConfigError(None, f"batch={cfg.batch} (volumes per step over all ranks) must be a multiple of "
                                f"the {ctx.world} data-parallel ranks")
    local_batch = cfg.batch // ctx.world
    show = cfg.progress and ctx.is_main
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir is not None else None
    last_path = ckpt_dir / "last.pt" if ckpt_dir else None
    best_path = ckpt_dir / "best.pt" if ckpt_dir else None
    history = History()
    start = 0
    best: tuple[float, float] | None = None
    provenance.seed_everything(cfg.seed, deterministic=False)
    if last_path is not None and last_path.is_file():
        ck = load_checkpoint(last_path, model=model, optimizer=optimizer)
        saved = ck["metadata"]
        _check_resume(last_path, saved, cfg, run.kind, run.lr)
        history = History.from_dict(saved["history"])
        start = int(ck["epoch"])
        best = tuple(float("nan") if v is None else v for v in saved["best_score"]) if saved.get("best_score") else None
        _set_rng_state(saved["rng"])
        torch.set_rng_state(ck["tensors"]["torch_rng"])
        if torch.cuda.is_available() and "cuda_rng" in ck["tensors"]:
            torch.cuda.set_rng_state(ck["tensors"]["cuda_rng"])
        history.resumed_from_epoch = start
    history.last_path = str(last_path) if last_path else None

    def metadata(epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        cfgd = cfg.to_dict()
        cfgd["lr"] = run.lr
        return {"kind": run.kind, "config": cfgd, "seed": cfg.seed, "history": history.to_dict(),
                "epoch": epoch, **extra}

    epochs = _progress(range(start, cfg.epochs), show, desc=f"{run.kind} epochs",
                       initial=start, total=cfg.epochs)
    for epoch in epochs:
        t0 = time.perf_counter()
        rng = _epoch_rng(cfg.seed, epoch)
        if cfg.balance == "oversample" and run.labels is not None:
            order = oversample_indices(run.labels, rng)
        else:
            order = list(range(run.n_items))
        order = [order[i] for i in rng.permutation(len(order))]
        # This rank's positions in the epoch order (DistributedSampler; all of them without DDP):
        # local batch k of every rank together form global batch k.
        mine = _shard(len(order), ctx)
        batches = [mine[i:i + local_batch] for i in range(0, len(mine), local_batch)]
        model.train()
        total, count = 0.0, 0
        bar = _progress(batches, show, desc=f"epoch {epoch + 1}", leave=False)
        for positions in bar:
            with _merged_batchnorm(run.model, ctx):
                loss = run.step([(order[p], step_generator(cfg.seed, epoch, p)) for p in positions])
            loss_sum, n = _all_sum([loss * len(positions), len(positions)], ctx, _model_device(model))
            total += loss_sum
            count += int(n)
            if show:
                bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        train_loss = total / max(count, 1)
        n_done = epoch + 1
        val: dict[str, float] = {}
        if run.validate is not None and (n_done % cfg.validate_every == 0 or n_done == cfg.epochs):
            val = run.validate()
        history.append(n_done, train_loss, time.perf_counter() - t0, **val)
        improved = False
        if run.validate is None:
            improved = True  # no validation set: best = last
            score = (float("nan"), float("nan"))
        elif val:
            score = (val.get(run.select_key, float("nan")), val.get("val_loss", float("nan")))
            improved = _better(score, best)
        if improved:
            best = score
            history.best_epoch = n_done
        if show:
            epochs.set_postfix(loss=f"{train_loss:.4f}", **{k: f"{v:.3f}" for k, v in val.items()})
        if improved and ckpt_dir is not None:
            history.best_path = str(best_path)
        if ckpt_dir is not None and ctx.is_main:
            best_json = None if best is None else [None if not math.isfinite(v) else v for v in best]
            if improved:
                save_checkpoint(best_path, model, None, n_done,
                                metadata(n_done, {"best_score": best_json, "select_key": run.select_key}))
            tensors = {"torch_rng": torch.get_rng_state()}
            if torch.cuda.is_available():
                tensors["cuda_rng"] = torch.cuda.get_rng_state()
            save_checkpoint(last_path, model, optimizer, n_done,
                            metadata(n_done, {"best_score": best_json, "rng": _rng_state(),
                                              "select_key": run.select_key}), tensors)
        _barrier(ctx)  # no rank runs ahead of the checkpoint rank 0 is writing
    if ckpt_dir is not None and best_path.is_file():
        history.best_path = str(best_path)
    if ctx.active:
        check_replicas(model, ctx)
    return history


# ---------------------------------------------------------------- whole-volume fit


def _accumulate(net: nn.Module, items: list[Any], micro_batch: int | None,
                forward_loss: Callable[[list[Any]], torch.Tensor]) -> float:
    """Backpropagate the mean loss over ``items``, ``micro_batch`` items per forward pass.

    Each micro-batch's mean loss is weighted by its share of ``items``, so the summed
    gradient is that of the mean over all of them. Under DDP the gradient all-reduce
    runs once, after the last micro-batch (``no_sync`` before it). Returns the mean loss.
    """
    size = len(items) if not micro_batch else int(micro_batch)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    total = 0.0
    for j, chunk in enumerate(chunks):
        last = j == len(chunks) - 1
        with (net.no_sync() if hasattr(net, "no_sync") and not last else contextlib.nullcontext()):
            out = forward_loss(chunk)
            if len(chunks) > 1:
                out = out * (len(chunk) / len(items))
            out.backward()
        total += float(out.detach())
    return total


def _load_item(dataset: Any, i: int, gen: torch.Generator | None, augment: bool) -> tuple[torch.Tensor, int, str]:
    if hasattr(dataset, "load"):
        return dataset.load(i, gen, augment=augment)
    x, y, cid = dataset[i]
    return torch.as_tensor(x, dtype=torch.float32), int(y), str(cid)


class _Subset:
    """Items ``indices`` of a dataset, keeping its ``load`` (no augmentation is applied here)."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int, gen: torch.Generator | None = None, augment: bool = False):
        return _load_item(self.dataset, self.indices[i], gen, augment)


def _dataset_labels(dataset: Any) -> list[int]:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return [int(v) for v in labels]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _logits_over(model: nn.Module, dataset: Any, device: torch.device, bn_eval: bool,
                 progress: bool = False, ctx: DistContext | None = None
                 ) -> tuple[np.ndarray, torch.Tensor, list[str], np.ndarray]:
    """Run ``model`` over every volume (no augmentation). Returns labels, logits
    (N, K) float32 CPU, case ids, seconds per volume (forward pass incl. transfer).

    With an active ``ctx`` every rank runs its share (``rank, rank + W, ...``) and the
    results are gathered back into dataset order on every rank."""
    if ctx is not None and ctx.active:
        mine = _shard(len(dataset), ctx, pad=False)
        parts = _gather((mine, _logits_over(model, _Subset(dataset, mine), device, bn_eval, progress)), ctx)
        inv = np.argsort([p for pos, _ in parts for p in pos], kind="stable")
        ids = [c for _, r in parts for c in r[2]]
        return (np.concatenate([r[0] for _, r in parts])[inv], torch.cat([r[1] for _, r in parts])[inv],
                [ids[i] for i in inv], np.concatenate([r[3] for _, r in parts])[inv])
    was_training = model.training
    ys, outs, ids, secs = [], [], [], []
    with _BNSnapshot(model, active=not bn_eval), torch.inference_mode():
        _set_mode(model, bn_eval)
        try:
            for i in _progress(range(len(dataset)), progress, desc="predict", leave=False):
                x, y, cid = _load_item(dataset, i, None, augment=False)
                t0 = time.perf_counter()
                logits = model(x[None].to(device))
                _maybe_sync(device)
                secs.append(time.perf_counter() - t0)
                outs.append(logits.float().cpu())
                ys.append(y)
                ids.append(cid)
        finally:
            model.train(was_training)
    logits = torch.cat(outs) if outs else torch.zeros((0, 2))
    return np.asarray(ys, dtype=np.int64), logits, ids, np.asarray(secs, dtype=np.float64)


def predict_volumes(model: nn.Module, dataset: Any, bn_eval: bool = True, device: str | None = None,
                    progress: bool = False, positive: int = 1
                    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Softmax probability of class ``positive`` for every volume of ``dataset``.

    Runs under ``torch.inference_mode()`` with ``model.eval()``; ``bn_eval=False``
    puts BatchNorm in batch-statistics mode (official test script). The model's
    running statistics and its train/eval mode are restored afterwards.

    Returns
    -------
    y : ndarray (N,) int64; p_covid : ndarray (N,) float64 in [0, 1];
    case_ids : list of str; seconds_per_volume : ndarray (N,) float64.
    """
    dev = _resolve_device(device) if device is not None else _model_device(model)
    y, logits, ids, secs = _logits_over(model, dataset, dev, bn_eval, progress)
    p = torch.softmax(logits.double(), dim=1)[:, positive].numpy() if len(y) else np.zeros(0)
    return y, p, ids, secs


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _start(model: nn.Module, cfg: TrainConfig, lr: float, dev: torch.device
           ) -> tuple[torch.optim.Optimizer, DistContext, nn.Module]:
    """Seed, move the model, build Adam and wrap the model for DDP when a process group is up:
    ``(optimizer, context, network to call)``."""
    provenance.seed_everything(cfg.seed, deterministic=False)
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    ctx = dist_context()
    return optimizer, ctx, _wrap_ddp(model, dev, ctx)


def _stepper(optimizer: torch.optim.Optimizer, net: nn.Module, micro_batch: int | None,
             forward_loss: Callable[[list[Any]], torch.Tensor]) -> Callable[[list[Any]], float]:
    """One optimiser step over a batch of ``(item, generator)`` pairs; returns the mean loss."""
    def step(items: list[tuple[int, torch.Generator]]) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = _accumulate(net, items, micro_batch, forward_loss)
        optimizer.step()
        return loss
    return step


def fit(model: nn.Module, train_set: Any, val_set: Any | None, cfg: TrainConfig,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "ce") -> History:
    """Train a whole-volume classifier (DeCoVNet, Clf2DNet) as in spec §5.

    Adam (``cfg.lr``, default 1e-5; constant), cross-entropy, ``cfg.batch`` volumes per
    step in a seeded shuffled order, class balance per ``cfg.balance``, augmentation
    ``cfg.augment`` (used when ``train_set`` is a :class:`VolumeDataset` without its
    own ``augment``). Every ``cfg.validate_every`` epochs (and after the last) the
    validation loss and ROC AUC are computed with BN per ``cfg.bn_eval``.

    Checkpoints (when ``cfg.checkpoint_dir`` is set): ``best.pt`` (highest validation
    AUC, ties → lower loss; without a validation set the last epoch) and ``last.pt``
    (every epoch, with optimizer, history and RNG states). If ``last.pt`` exists the
    run resumes from it and ends with exactly the weights of an uninterrupted run.
    The model holds the *last* weights on return; load ``best.pt`` for the selected ones.

    Parameters
    ----------
    train_set, val_set
        :class:`VolumeDataset` (or any dataset returning ``(x (2,T,H,W), label, id)``).
    loss
        ``"ce"`` or ``f(logits (B, K), target (B,)) -> scalar``.
    """
    dev = _resolve_device(cfg.device)
    lr = DECOVNET_LR if cfg.lr is None else float(cfg.lr)
    labels = _dataset_labels(train_set)
    if not labels:
        raise ConfigError(None, "empty training set")
    if isinstance(train_set, VolumeDataset) and train_set.augment is None and cfg.augment != "none":
        train_set = copy.copy(train_set)
        train_set.augment = make_augment(cfg.augment)
    n_classes = max(2, max(labels) + 1)
    weight = class_weights(labels, n_classes).to(dev) if cfg.balance == "weighted_ce" else None
    if loss == "ce":
        loss_fn: Callable = nn.CrossEntropyLoss(weight=weight)
    elif callable(loss):
        loss_fn = loss
    else:
        raise ConfigError(None, f"loss must be 'ce' or a callable, got {loss!r}")
    with _GlobalState(cfg.max_threads):
        optimizer, ctx, net = _start(model, cfg, lr, dev)

        def forward_loss(chunk: list[tuple[int, torch.Generator]]) -> torch.Tensor:
            xs, ys, ids = zip(*(_load_item(train_set, i, gen, augment=True) for i, gen in chunk))
            if len({tuple(x.shape) for x in xs}) > 1:
                raise ConfigError(None, f"{len(xs)} volumes per forward pass need equal shapes; cases {list(ids)} "
                                        f"have {[tuple(x.shape) for x in xs]} (set micro_batch=1)")
            x = torch.stack(xs).to(dev)
            y = torch.as_tensor(ys, dtype=torch.long, device=dev)
            return loss_fn(net(x), y)

        def validate() -> dict[str, float]:
            y, logits, _, _ = _logits_over(model, val_set, dev, cfg.bn_eval, ctx=ctx)
            vloss = float(F.cross_entropy(logits, torch.as_tensor(y))) if len(y) else float("nan")
            p = torch.softmax(logits.double(), 1)[:, 1].numpy()
            return {"val_loss": vloss, "val_auc": evaluate.roc_auc(y, p, single_class=float("nan"))}

        has_val = val_set is not None and len(val_set) > 0
        step = _stepper(optimizer, net, cfg.micro_batch, forward_loss)
        run = _Run("classifier", len(labels), labels, step, validate if has_val else None, "val_auc", lr, model)
        with channels_last(model, cfg.channels_last and not ctx.active):
            return _train_loop(model, optimizer, cfg, run)


# ------------------------------------------------------------------------ U-Net fit


def _load_pair(src: Any) -> tuple[np.ndarray, np.ndarray]:
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


def _slab(n: int, slab: tuple[float, float]) -> np.ndarray:
    lo, hi = int(slab[0] * n), int(slab[1] * n)
    if hi <= lo:
        lo, hi = 0, n
    return np.arange(lo, hi)


def _unet_batch(ct: np.ndarray, mask: np.ndarray, z: np.ndarray, size: tuple[int, int] | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices ``z`` as ``(n, 1, h, w)`` CT/255 float32 and ``(n, h, w)`` int64 targets."""
    x = torch.from_numpy(np.ascontiguousarray(ct[z])).to(device=device, dtype=torch.float32)[:, None] / 255.0
    m = torch.from_numpy(np.ascontiguousarray(mask[z]) > 0).to(device)[:, None].float()
    if size is not None and tuple(size) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        m = F.interpolate(m, size=size, mode="nearest-exact")
    return x, m[:, 0].long()


def _work_size(shape_hw: tuple[int, int], size: tuple[int, int] | None, downsample: int) -> tuple[int, int] | None:
    if size is not None:
        return (int(size[0]), int(size[1]))
    if downsample and downsample > 1:
        return (shape_hw[0] // downsample, shape_hw[1] // downsample)
    return None


def _seg_scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
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


def fit_unet(model: nn.Module, volumes: Sequence[Any], cfg: TrainConfig, slices_per_step: int = 48,
             slab: tuple[float, float] = (0.20, 0.85), val_volumes: Sequence[Any] | None = None,
             size: tuple[int, int] | None = None, downsample: int = 1,
             val_slab: tuple[float, float] | None = None, chunk: int = 16) -> History:
    """Train the 2D U-Net on pseudo-masks (spec §4).

    One step = one volume: ``slices_per_step`` slices drawn without replacement from
    the slab ``[int(a·L), int(b·L))``, CT/255 → 2-class CE against ``mask > 0``;
    brightness and contrast drawn once per volume (``1 + round(U(±0.5), 1)``,
    ``1 + round(U(±0.3), 1)``; off when ``cfg.augment == "none"``). Adam, ``cfg.lr``
    (default 1e-3). Validation (every ``cfg.validate_every`` epochs): loss, mIoU over
    {background, lung} and lung Dice, mean over volumes, on every slice of
    ``val_slab`` (default ``slab``), BN per ``cfg.bn_eval``. Best = highest mIoU.
    Checkpointing and resumption as in :func:`fit`. ``cfg.balance`` is ignored.

    Parameters
    ----------
    volumes, val_volumes
        ``(ct_u8 (T,H,W) uint8, mask (T,H,W) {0,1})`` pairs or ``.npz`` paths with
        ``ct_u8`` and ``lung_mask`` arrays.
    size, downsample
        Working in-plane size (e.g. (256, 256)) or an integer reduction factor;
        CT resized bilinearly (antialiased), mask by nearest neighbour.
    chunk
        Slices per forward pass at validation time.
    """
    if not volumes:
        raise ConfigError(None, "fit_unet needs at least one training volume")
    dev = _resolve_device(cfg.device)
    lr = UNET_LR if cfg.lr is None else float(cfg.lr)
    aug = IntensityAugment() if cfg.augment != "none" else None
    ce = nn.CrossEntropyLoss()
    with _GlobalState(cfg.max_threads):
        optimizer, ctx, net = _start(model, cfg, lr, dev)

        def forward_loss(chunk: list[tuple[int, torch.Generator]]) -> torch.Tensor:
            xs, ts = [], []
            for i, gen in chunk:
                ct, mask = _load_pair(volumes[i])
                cand = _slab(ct.shape[0], slab)
                k = min(int(slices_per_step), len(cand))
                pick = cand[torch.randperm(len(cand), generator=gen)[:k].numpy()]
                x, t = _unet_batch(ct, mask, np.sort(pick), _work_size(ct.shape[1:], size, downsample), dev)
                if aug is not None:
                    x = aug.apply(x.transpose(0, 1), aug.sample(gen)).transpose(0, 1)
                xs.append(x)
                ts.append(t)
            return ce(net(torch.cat(xs)), torch.cat(ts))

        def validate() -> dict[str, float]:
            was_training = model.training
            losses, mious, dices = [], [], []
            with _BNSnapshot(model, active=not cfg.bn_eval), torch.inference_mode():
                _set_mode(model, cfg.bn_eval)
                try:
                    for v in _shard(len(val_volumes), ctx, pad=False):  # every volume without DDP
                        ct, mask = _load_pair(val_volumes[v])
                        z = _slab(ct.shape[0], val_slab or slab)
                        ws = _work_size(ct.shape[1:], size, downsample)
                        preds, targets, tot = [], [], 0.0
                        for j in range(0, len(z), chunk):
                            x, t = _unet_batch(ct, mask, z[j:j + chunk], ws, dev)
                            logits = model(x)
                            tot += float(F.cross_entropy(logits, t, reduction="sum"))
                            preds.append(logits.argmax(1).cpu())
                            targets.append(t.cpu())
                        pred, target = torch.cat(preds), torch.cat(targets)
                        losses.append(tot / target.numel())
                        miou, dice = _seg_scores(pred, target)
                        mious.append(miou)
                        dices.append(dice)
                finally:
                    model.train(was_training)
            parts = _gather((losses, mious, dices), ctx)
            losses, mious, dices = ([x for part in parts for x in part[k]] for k in range(3))
            return {"val_loss": float(np.mean(losses)), "val_miou": float(np.mean(mious)),
                    "val_dice": float(np.mean(dices))}

        has_val = bool(val_volumes)
        cfg_u = copy.copy(cfg)
        cfg_u.balance = "none"  # one step per volume; pseudo-masks have no class label
        step = _stepper(optimizer, net, cfg.micro_batch, forward_loss)
        run = _Run("unet", len(volumes), None, step, validate if has_val else None, "val_miou", lr, model)
        with channels_last(model, cfg.channels_last and not ctx.active):
            return _train_loop(model, optimizer, cfg_u, run)


# ------------------------------------------------------------------- segmentation


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
    dev = _resolve_device(device) if device is not None else _model_device(unet)
    t, h, w = ct.shape
    out = np.empty((t, h, w), dtype=np.uint8)
    was_training = unet.training
    with _BNSnapshot(unet, active=not bn_eval), torch.inference_mode():
        _set_mode(unet, bn_eval)
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


# ------------------------------------------------------------------ cross-fitting


def cross_fit(make_model: Callable[[], nn.Module], items: Sequence[tuple[Any, int, str]],
              folds: Sequence[tuple[Sequence[int], Sequence[int]]], cfg: TrainConfig, *,
              monitor: bool = True, bn_eval: bool | None = None,
              ) -> tuple["pd.DataFrame", list[History], list[nn.Module]]:
    """Train a fresh model per fold and predict that fold's held-out volumes.

    No model selection: every fold's model keeps its **last** weights, so the held-out
    volumes never influence training. With ``monitor=True`` the held-out loss and AUC
    are recorded after each validation epoch for the learning curve only (NaN AUC when
    the fold holds one class). Fold ``k`` initialises and trains with seed ``cfg.seed + k``.

    Returns
    -------
    predictions : DataFrame, one row per held-out volume: ``case_id``, ``label``,
        ``p_covid``, ``fold``, ``seconds`` (forward pass).
    histories : one :class:`History` per fold.
    models : the trained models, in fold order.
    """

    rows, histories, models = [], [], []
    bn = cfg.bn_eval if bn_eval is None else bn_eval
    for k, (tr, te) in enumerate(folds):
        tr_items = [items[int(i)] for i in tr]
        te_items = [items[int(i)] for i in te]
        overlap = {c for _, _, c in tr_items} & {c for _, _, c in te_items}
        if overlap:
            raise ConfigError(None, f"fold {k}: cases on both sides: {sorted(overlap)[:5]}")
        fold_cfg = replace(cfg, seed=cfg.seed + k, checkpoint_dir=(
            None if cfg.checkpoint_dir is None else Path(cfg.checkpoint_dir) / f"fold{k}"))
        provenance.seed_everything(fold_cfg.seed, deterministic=False)  # the fresh model's initial weights too
        model = make_model()
        hist = fit(model, VolumeDataset(tr_items), VolumeDataset(te_items) if monitor else None, fold_cfg)
        y, p, ids, secs = predict_volumes(model, VolumeDataset(te_items), bn_eval=bn)
        rows += [{"case_id": c, "label": int(yy), "p_covid": float(pp), "fold": k, "seconds": float(s)}
                 for c, yy, pp, s in zip(ids, y, p, secs)]
        histories.append(hist)
        models.append(model)
    return pd.DataFrame(rows), histories, models


def predict_folds(nets: Sequence[nn.Module], items: Sequence[tuple[Any, int, str]],
                  folds: Sequence[tuple[Sequence[int], Sequence[int]]], bn_eval: bool = True) -> "pd.DataFrame":
    """Each fold's held-out volumes predicted by that fold's model (:func:`predict_volumes`);
    ``bn_eval=False`` normalises every volume with its own batch statistics, as the official
    test script does. Columns as :func:`cross_fit`'s predictions."""

    rows = []
    for k, (net, (_, te)) in enumerate(zip(nets, folds)):
        y, p, ids, secs = predict_volumes(net, VolumeDataset([items[int(i)] for i in te]), bn_eval=bn_eval)
        rows += [{"case_id": c, "label": int(yy), "p_covid": float(pp), "fold": k, "seconds": float(s)}
                 for c, yy, pp, s in zip(ids, y, p, secs)]
    return pd.DataFrame(rows)


def save_fold_models(work: str | Path, nets: Sequence[nn.Module], items: Sequence[tuple[Any, int, str]],
                     folds: Sequence[tuple[Sequence[int], Sequence[int]]], metadata: dict[str, Any]) -> None:
    """``work/decovnet_fold{k}.pt`` for every fold (with the ids of the volumes it did not train
    on, so that chapter 06 localises each volume with the model that never saw it) and
    ``work/decovnet_last.pt`` (the last fold's model, used by ``repro predict``)."""
    work = Path(work)
    for k, net in enumerate(nets):
        meta = {**metadata, "fold": k, "test_case_ids": [items[int(i)][2] for i in folds[k][1]]}
        save_checkpoint(work / f"decovnet_fold{k}.pt", net, metadata=meta)
    save_checkpoint(work / "decovnet_last.pt", nets[-1], metadata=meta)
