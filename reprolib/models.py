"""Networks of the DeCoVNet paper: 2D U-Net, DeCoVNet (3D) and the 2DClfNet baseline.

All definitions are written from the project specification (``spec/decovnet.md``
sections 4-6); no code is taken from the official repository.

Tensor conventions
------------------
* U-Net: ``(N, 1, H, W)`` float32, 8-bit CT slice / 255 -> logits ``(N, 2, H, W)``.
* DeCoVNet and Clf2DNet: ``(N, 2, T, H, W)`` float32 with channel 0 = 8-bit CT / 255
  and channel 1 = lung mask (0/1); ``T`` = number of 1-mm slices (any ``T >= 2``),
  ``H x W`` = 224 x 336 by default -> logits ``(N, 2)``.

Cost helpers
------------
:func:`count_parameters`, :func:`count_macs` (multiply-accumulates via forward hooks;
FLOP = 2 x MAC) and :func:`model_summary` (per-stage output shape, parameters, MACs).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

__all__ = [
    "DoubleConv",
    "UNet2D",
    "Bottleneck3d",
    "DeCoVNet",
    "ResBlock2d",
    "Clf2DNet",
    "linearised_cam_weights",
    "count_parameters",
    "count_macs",
    "model_summary",
    "set_bn_eval",
    "INFERENCE_VARIANTS",
    "inference_runner",
    "output_shape",
]


def _jsonable(value: Any) -> Any:
    """Constructor arguments as JSON values (tuples become lists), for a model file."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# 2D U-Net (spec section 4)
# ---------------------------------------------------------------------------
class DoubleConv(nn.Sequential):
    """(Conv 3x3, pad 1, with bias -> BN -> ReLU) x 2; spatial size unchanged."""

    def __init__(self, in_ch: int, out_ch: int, *, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )


class _Down(nn.Sequential):
    """MaxPool 2x2 then :class:`DoubleConv`; halves H and W (floor)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))


class _Up(nn.Module):
    """Bilinear x2 (align_corners=True), pad to the skip's size, concat [skip, up], DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int, *, align_corners: bool = True):
        super().__init__()
        self.align_corners = align_corners
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dy or dx:  # odd input sizes: pad (left, right, top, bottom) as evenly as possible
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet2D(nn.Module):
    """2D U-Net for lung segmentation (spec section 4; 839,506 parameters by default).

    Parameters
    ----------
    in_ch:
        Input channels (1: 8-bit CT slice / 255).
    n_classes:
        Output classes (2: background, lung).
    widths:
        Channels of ``inc, down1, down2, down3, down4``. The decoder outputs
        ``widths[2], widths[1], widths[0], widths[0]``.
    align_corners:
        Bilinear upsampling mode (True as in the spec).

    Input ``(N, in_ch, H, W)`` float32 -> logits ``(N, n_classes, H, W)``; any H, W >= 16.
    """

    model_kind = "UNet2D"  #: the name a model file gives it (:mod:`reprolib.modelfile`)

    def __init__(
        self,
        in_ch: int = 1,
        n_classes: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128, 128),
        *,
        align_corners: bool = True,
    ):
        super().__init__()
        self.init_kwargs = _jsonable(dict(in_ch=in_ch, n_classes=n_classes, widths=widths,
                                          align_corners=align_corners))
        w = tuple(int(v) for v in widths)
        if len(w) != 5:
            raise ValueError(f"widths must have 5 entries, got {widths!r}")
        self.inc = DoubleConv(in_ch, w[0])
        self.down1 = _Down(w[0], w[1])
        self.down2 = _Down(w[1], w[2])
        self.down3 = _Down(w[2], w[3])
        self.down4 = _Down(w[3], w[4])
        self.up1 = _Up(w[3] + w[4], w[2], align_corners=align_corners)
        self.up2 = _Up(w[2] + w[2], w[1], align_corners=align_corners)
        self.up3 = _Up(w[1] + w[1], w[0], align_corners=align_corners)
        self.up4 = _Up(w[0] + w[0], w[0], align_corners=align_corners)
        self.outc = nn.Conv2d(w[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


# ---------------------------------------------------------------------------
# DeCoVNet (spec section 5)
# ---------------------------------------------------------------------------
class Bottleneck3d(nn.Module):
    """I3D-style bottleneck: (3,1,1) -> (1,3,3) -> 1x1x1, plus a 1x1x1 conv shortcut.

    All convolutions are bias-free and followed by BN; the spatial stride sits in the
    (1,3,3) conv and in the shortcut. The last BN (``bn3``) is the one whose gamma is
    initialised to 0 by :meth:`DeCoVNet.reset_parameters`.

    Input ``(N, in_ch, D, H, W)`` -> ``(N, out_ch, D, ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_ch: int, out_ch: int, inner_ch: int, *, spatial_stride: int = 1,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        s = (1, spatial_stride, spatial_stride)
        bn = lambda c: nn.BatchNorm3d(c, eps=bn_eps, momentum=bn_momentum)  # noqa: E731
        self.conv1 = nn.Conv3d(in_ch, inner_ch, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn1 = bn(inner_ch)
        self.conv2 = nn.Conv3d(inner_ch, inner_ch, (1, 3, 3), stride=s, padding=(0, 1, 1), bias=False)
        self.bn2 = bn(inner_ch)
        self.conv3 = nn.Conv3d(inner_ch, out_ch, 1, bias=False)
        self.bn3 = bn(out_ch)
        self.shortcut_conv = nn.Conv3d(in_ch, out_ch, 1, stride=s, bias=False)
        self.shortcut_bn = bn(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.shortcut_bn(self.shortcut_conv(x)))


def official_init(model: nn.Module) -> nn.Module:
    """The official code's initialisation (spec §5): every Conv2d/Conv3d Kaiming-normal (fan_out,
    ReLU gain) with bias 0; BatchNorm gamma 1, beta 0; Linear N(0, 0.01^2), bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            nn.init.zeros_(m.bias)
    return model


FC_INITS = ("official", "pytorch")


def _check_fc_init(fc_init: str) -> str:
    """Validate the ``fc_init`` option of the classifiers (see :meth:`DeCoVNet.reset_parameters`)."""
    if fc_init not in FC_INITS:
        raise ValueError(f"fc_init must be one of {FC_INITS}, got {fc_init!r}")
    return fc_init


class DeCoVNet(nn.Module):
    """DeCoVNet, the active part of the official network (spec section 5; 346,978 parameters).

    Forward order: stem -> ``res1`` -> ``temporal_pool`` -> ``res2`` -> ProClf -> ``fc1`` -> ``fc2``.

    Parameters
    ----------
    in_ch:
        Input channels (2: CT / 255 and lung mask).
    n_classes:
        Output logits (2: negative, COVID-19).
    width:
        Stem width (16); ``res1`` maps width -> 4*width (inner width), ``res2`` maps
        4*width -> 8*width (inner 2*width).
    proclf_grids:
        Output sizes (D, H, W) of the four adaptive max-pools of ProClf.
    proclf_channels:
        Output channels of the three ProClf Conv3d (k 3, pad 1, bias).
    dropout:
        Dropout3d probability before the third ProClf conv (0 = inactive, as in the code).

    Interface
    ---------
    ``features(x)`` -> ResBlock-2 output ``(N, 8*width, T//2, H/8, W/8)``
    (``(N, 128, T//2, 28, 42)`` for 224 x 336), the CAM features;
    ``classify(F)`` -> logits ``(N, n_classes)``; ``forward(x) = classify(features(x))``;
    ``proclf_convs`` (the three ProClf Conv3d in order), ``fc1``, ``fc2``.
    """

    model_kind = "DeCoVNet"  #: the name a model file gives it (:mod:`reprolib.modelfile`)

    def __init__(
        self,
        in_ch: int = 2,
        n_classes: int = 2,
        *,
        width: int = 16,
        proclf_grids: Sequence[Sequence[int]] = ((16, 24, 36), (4, 12, 18), (1, 6, 9), (1, 1, 1)),
        proclf_channels: Sequence[int] = (64, 32, 32),
        dropout: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        fc_init: str = "official",
    ):
        super().__init__()
        self.init_kwargs = _jsonable(dict(in_ch=in_ch, n_classes=n_classes, width=width, proclf_grids=proclf_grids,
                                          proclf_channels=proclf_channels, dropout=dropout, bn_eps=bn_eps,
                                          bn_momentum=bn_momentum, fc_init=fc_init))
        self.fc_init = _check_fc_init(fc_init)
        if len(proclf_grids) != 4 or len(proclf_channels) != 3:
            raise ValueError("proclf_grids needs 4 sizes and proclf_channels 3 widths")
        c1, c2, c3 = (int(c) for c in proclf_channels)
        self.stem = nn.Sequential(
            nn.Conv3d(in_ch, width, (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(width, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.res1 = Bottleneck3d(width, 4 * width, width, spatial_stride=1,
                                 bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.temporal_pool = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        self.res2 = Bottleneck3d(4 * width, 8 * width, 2 * width, spatial_stride=2,
                                 bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.proclf = nn.Sequential(
            nn.AdaptiveMaxPool3d(tuple(proclf_grids[0])),
            nn.Conv3d(8 * width, c1, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool3d(tuple(proclf_grids[1])),
            nn.Conv3d(c1, c2, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool3d(tuple(proclf_grids[2])),
            nn.Dropout3d(p=dropout),
            nn.Conv3d(c2, c3, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool3d(tuple(proclf_grids[3])),
            nn.Flatten(1),
        )
        self.fc1 = nn.Linear(c3 * _prod(proclf_grids[3]), c3)
        self.fc2 = nn.Linear(c3, n_classes)
        self.reset_parameters()

    @property
    def proclf_convs(self) -> list[nn.Conv3d]:
        """The three ProClf Conv3d modules, in forward order."""
        return [m for m in self.proclf if isinstance(m, nn.Conv3d)]

    def reset_parameters(self) -> None:
        """Spec initialisation: Conv3d Kaiming-normal (fan_out, ReLU), bias 0; BN gamma 1,
        beta 0, except the last BN of each bottleneck (gamma 0); Linear N(0, 0.01^2), bias 0.

        ``fc_init="pytorch"`` re-draws ``fc1``/``fc2`` with PyTorch's default Linear
        initialisation instead: with two stacked N(0, 0.01^2) layers the logits start
        about 1e-4 apart and a run of a few hundred steps stays at the constant
        prediction (the official schedule has ~50,000 steps)."""
        official_init(self)
        for block in (self.res1, self.res2):
            nn.init.zeros_(block.bn3.weight)
        if self.fc_init == "pytorch":
            self.fc1.reset_parameters()
            self.fc2.reset_parameters()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """ResBlock-2 output ``(N, 128, T//2, H/8, W/8)`` for input ``(N, 2, T, H, W)``."""
        _check_volume_input(x, min_t=2)
        x = self.stem(x)
        x = self.res1(x)
        x = self.temporal_pool(x)
        return self.res2(x)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """ProClf + FC head on ResBlock-2 features -> logits ``(N, n_classes)``."""
        return self.fc2(self.fc1(self.proclf(feats)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


OFFICIAL_PROCLF_GRIDS: tuple[tuple[int, int, int], ...] = ((16, 24, 36), (4, 12, 18), (1, 6, 9), (1, 1, 1))


def proclf_grids_for(hw: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """ProClf pooling grids for an in-plane input size other than 224×336.

    The official grids are scaled in-plane by ``hw / (224, 336)`` (rounded, at least 1),
    so the classifier pools the same fraction of the lung field; depth grids are
    unchanged. ``(224, 336)`` gives the official grids. Parameter count is unchanged.
    """
    h, w = (int(v) for v in hw)
    if h < 8 or w < 8:
        raise ValueError(f"in-plane size must be at least 8×8, got {h}×{w}")
    return tuple((d, max(1, round(gh * h / 224)), max(1, round(gw * w / 336)))
                 for d, gh, gw in OFFICIAL_PROCLF_GRIDS)


def linearised_cam_weights(model: DeCoVNet, target: int = 1) -> torch.Tensor:
    """CAM channel weights with the linearised head (spec section 7, step 2-3).

    Each ProClf kernel is averaged over its 27 taps (W1 64x128, W2 32x64, W3 32x32);
    with the FC weights W4 (32x32) and W5 (2x32), ``w = (W5 W4 W3 W2 W1)^T[:, target]``.
    ReLUs, pools and biases are ignored.

    Returns
    -------
    torch.Tensor
        ``(128,)`` float32 (detached), one weight per ResBlock-2 channel.
    """
    with torch.no_grad():
        w = [conv.weight.mean(dim=(2, 3, 4)) for conv in model.proclf_convs]  # (out, in) each
        w += [model.fc1.weight, model.fc2.weight]
        m = w[0]
        for layer in w[1:]:
            m = layer @ m  # (out_k, 128)
        return m[target].detach().clone().float()


# ---------------------------------------------------------------------------
# 2DClfNet baseline (spec section 6)
# ---------------------------------------------------------------------------
class ResBlock2d(nn.Module):
    """Two 3x3 conv + BN with a 1x1 conv + BN projection shortcut; ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, *, always_project: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if always_project or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class Clf2DNet(nn.Module):
    """2DClfNet baseline (seed paper Table 2, book defaults of spec section 6).

    Every slice is a 2-channel 2D image through shared weights: stem (7x7/2 conv + BN +
    ReLU, 3x3/2 max-pool: 1/4 resolution) -> ResBlock(64->128) -> MaxPool 2x2/2 ->
    ResBlock(128->128) -> 2 x (Conv 3x3 + bias + ReLU) -> global max-pool (per slice)
    -> max over slices -> FC(128->n_classes).

    Input ``(N, 2, T, H, W)`` -> logits ``(N, n_classes)``. Slices are processed as a
    batch of 2D images, ``slice_chunk`` at a time, to bound activation memory.
    """

    model_kind = "Clf2DNet"  #: the name a model file gives it (:mod:`reprolib.modelfile`)

    def __init__(self, in_ch: int = 2, n_classes: int = 2, *, stem_ch: int = 64, width: int = 128,
                 slice_chunk: int = 32, always_project: bool = True, fc_init: str = "official"):
        super().__init__()
        self.init_kwargs = _jsonable(dict(in_ch=in_ch, n_classes=n_classes, stem_ch=stem_ch, width=width,
                                          slice_chunk=slice_chunk, always_project=always_project, fc_init=fc_init))
        self.fc_init = _check_fc_init(fc_init)
        self.slice_chunk = int(slice_chunk)
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, stem_ch, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_ch),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.res1 = ResBlock2d(stem_ch, width, always_project=always_project)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.res2 = ResBlock2d(width, width, always_project=always_project)
        self.convs = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
        )
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(width, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As DeCoVNet: conv Kaiming-normal (fan_out, ReLU), bias 0; BN 1/0 except the
        last BN of each residual branch (gamma 0); Linear N(0, 0.01^2), bias 0
        (``fc_init="pytorch"``: PyTorch's default Linear initialisation, as for DeCoVNet)."""
        official_init(self)
        for block in (self.res1, self.res2):
            nn.init.zeros_(block.bn2.weight)
        if self.fc_init == "pytorch":
            self.fc.reset_parameters()

    def slice_features(self, x2d: torch.Tensor) -> torch.Tensor:
        """Per-slice descriptor: ``(B, 2, H, W)`` -> ``(B, 128)`` (global max-pool)."""
        x = self.stem(x2d)
        x = self.res1(x)
        x = self.pool(x)
        x = self.res2(x)
        x = self.convs(x)
        return self.global_pool(x).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Slice-max-pooled descriptor ``(N, 128)`` for input ``(N, 2, T, H, W)``."""
        _check_volume_input(x, min_t=1)
        n, c, t, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # (N*T, C, H, W), volume-major
        chunk = max(1, self.slice_chunk)
        parts = [self.slice_features(slices[i:i + chunk]) for i in range(0, n * t, chunk)]
        per_slice = torch.cat(parts, dim=0).reshape(n, t, -1)
        return per_slice.amax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# ---------------------------------------------------------------------------
# Cost accounting and helpers
# ---------------------------------------------------------------------------
def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _check_volume_input(x: torch.Tensor, *, min_t: int) -> None:
    if x.dim() != 5:
        raise InputError(None, f"expected a 5D tensor (N, C, T, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] < min_t:
        raise InputError(None, f"need at least T={min_t} slices, got T={x.shape[2]} (shape {tuple(x.shape)})")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _module_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one Conv/Linear call: conv = out elements x kernel elements x in_ch/groups;
    linear = out elements x in_features."""
    if isinstance(module, _CONV):
        k = _prod(module.kernel_size)
        return int(output.numel()) * k * (module.in_channels // module.groups)
    if isinstance(module, nn.Linear):
        return int(output.numel()) * module.in_features
    return 0


def _trace(model: nn.Module, input_shape: Sequence[int], device: str | torch.device,
           record: dict[str, nn.Module]) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """Run a forward pass on zeros and collect per-module MACs and output shapes."""
    macs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    name_of = {id(m): n for n, m in model.named_modules()}
    handles = []

    def hook(module, _inputs, output):
        name = name_of[id(module)]
        if isinstance(module, (*_CONV, nn.Linear)):
            macs[name] = macs.get(name, 0) + _module_macs(module, output)
        if name in record and isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape)  # last call wins (chunked slices)

    for m in model.modules():
        handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs, shapes


def _on_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """A deep copy of ``model`` on ``device`` (``"meta"``: shapes only, no compute)."""
    clone = copy.deepcopy(model)
    return clone.to_empty(device=device) if str(device) == "meta" else clone.to(device)


def count_macs(model: nn.Module, input_shape: Sequence[int], *, device: str = "meta") -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_shape``.

    Counts Conv1d/2d/3d (output elements x kernel elements x in_ch/groups) and Linear
    (output elements x in_features); pools, BN, activations are ignored. By default the
    pass runs on a deep copy on the ``meta`` device (no arithmetic, any size);
    use ``device="cpu"`` to trace the real model.
    """
    traced = _on_device(model, device)
    macs, _ = _trace(traced, input_shape, device, {})
    return int(sum(macs.values()))


def output_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``model``'s output for an input of ``input_shape`` (a pass on the ``meta``
    device: no arithmetic, any size)."""
    clone = _on_device(model, "meta").eval()
    with torch.no_grad():
        return tuple(clone(torch.zeros(tuple(input_shape), device="meta")).shape)


def model_summary(model: nn.Module, input_shape: Sequence[int], *, depth: int = 1,
                  device: str = "meta") -> list[dict[str, Any]]:
    """Per-stage rows for the modules ``depth`` levels below ``model``, in forward order.

    Returns
    -------
    list of dict
        ``name``, ``type``, ``output_shape`` (last call's output, tuple; for Clf2DNet
        stages this is the batch of ``slice_chunk`` slices), ``params`` (int) and
        ``macs`` (int, the stage's Conv/Linear MACs summed over all calls).
    """
    traced = _on_device(model, device)
    stages = {n: m for n, m in traced.named_modules() if n and n.count(".") == depth - 1}
    macs, shapes = _trace(traced, input_shape, device, stages)
    order = [n for n in shapes]  # hooks fire at module exit: children before parents
    rows = []
    for name in sorted(stages, key=lambda n: order.index(n) if n in order else len(order)):
        mod = stages[name]
        rows.append({
            "name": name,
            "type": type(mod).__name__,
            "output_shape": shapes.get(name),
            "params": count_parameters(mod),
            "macs": int(sum(v for k, v in macs.items() if k == name or k.startswith(name + "."))),
        })
    return rows


def set_bn_eval(model: nn.Module, eval_bn: bool) -> nn.Module:
    """Put every BatchNorm layer in eval (``eval_bn=True``) or train mode, leaving the
    mode of all other modules unchanged.

    ``model.eval(); set_bn_eval(model, False)`` reproduces the official test script
    (batch statistics per volume, running statistics updated); the spec's ``bn_eval``.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(not eval_bn)
    return model


# ---------------------------------------------------------------------------
# Fast inference (issue G): same results, less time
# ---------------------------------------------------------------------------
class Features(nn.Module):
    """A classifier's ``features`` method as a module of its own, so that
    :func:`inference_runner` can freeze it (e.g. DeCoVNet's ResBlock-2 features for a CAM)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def bf16_native(device: str = "cpu") -> tuple[bool, str]:
    """Whether bf16 arithmetic runs natively (a CUDA GPU that supports it, or a CPU with the
    AVX-512 BF16 or AMX-BF16 instructions) and why; elsewhere autocast emulates it, slowly."""
    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA GPU with bf16" if ok else "GPU without bf16"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    found = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return (bool(found), f"CPU flags {', '.join(found)}" if found else
            "this CPU has neither AVX-512 BF16 nor AMX-BF16: bf16 autocast would be emulated, far slower than fp32")


def resnet50(n_classes: int = 4, *, before_head: Callable[[nn.Module], object] | None = None) -> nn.Module:
    """torchvision's ResNet-50, randomly initialised, with a new ``n_classes``-way ``fc`` head
    (the chest X-ray network). ``before_head(net)`` runs on the 1000-class network before its
    head is replaced (:func:`reprolib.cxr_model.build_resnet50` loads ImageNet weights there).
    Input ``(N, 3, H, W)`` -> logits ``(N, n_classes)``."""
    from torchvision.models import resnet50 as tv_resnet50  # torchvision is slow to import

    model = tv_resnet50(weights=None)
    if before_head is not None:
        before_head(model)
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    model.model_kind = "ResNet50"
    model.init_kwargs = {"n_classes": int(n_classes)}
    return model


def _channels_last_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` in channels-last layout by rank (4D: ``channels_last``, 5D: ``channels_last_3d``)."""
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    return t


@contextlib.contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Hold ``model``'s 4D/5D weights in channels-last layout inside the block, contiguous after it.

    Only the memory layout changes, not the values; a convolution whose weight is
    channels-last computes in that layout and passes it on, so inputs need no change.
    On CPU the oneDNN kernels train 10–25 % faster this way (measured on 2 cores: DeCoVNet,
    the 2D classifiers, ResNet-50). The parameter objects are kept (``Module._apply`` sets
    their ``data``), so an optimiser built before the block still holds them. The last bits
    of the results differ from the contiguous layout's, as between any two kernels.
    """
    if not enabled:
        yield model
        return
    model._apply(_channels_last_tensor)
    try:
        yield model
    finally:
        model._apply(lambda t: t.contiguous() if t.dim() in (4, 5) else t)


#: Variants of :func:`inference_runner`; the fp32 ones must match eager within 1e-4.
INFERENCE_VARIANTS = ("eager", "channels_last", "jit", "bf16", "compile")


def inference_runner(model: nn.Module, variant: str = "jit",
                     example: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``x -> logits`` computing ``model(x)`` in evaluation mode, by ``variant``.

    * ``"eager"``: ``model.eval()`` under ``torch.inference_mode()`` (the reference).
    * ``"channels_last"``: weights and input in ``channels_last(_3d)`` memory layout.
    * ``"jit"``: TorchScript trace on ``example`` (any input of the same rank and channel
      count; the depth may differ from later inputs), frozen, then
      ``torch.jit.optimize_for_inference`` (BatchNorm folded into the convolutions, oneDNN
      kernels on CPU). Input checks of the eager model run before the traced graph.
    * ``"bf16"``: CPU/GPU autocast to bfloat16 (fast only with bf16 hardware; its error is
      reported, not held to 1e-4).
    * ``"compile"``: ``torch.compile`` (inductor: generated C++/OpenMP or Triton kernels) of
      the eval-mode model under ``torch.no_grad``; the first call of each input shape
      compiles (tens of seconds on a CPU), so it pays off for many volumes of one shape.
      Optional: needs a C++ compiler (CPU) or Triton (GPU).

    The model is not modified (``jit``/``channels_last`` work on a copy). Default
    ``example``: ``(1, 2, 16, 64, 96)`` zeros for 5D models.
    """
    import copy
    import warnings

    if variant not in INFERENCE_VARIANTS:
        raise ValueError(f"unknown inference variant {variant!r}; choose one of {', '.join(INFERENCE_VARIANTS)}")
    model = model.eval()
    min_t = 2 if isinstance(model, DeCoVNet) else 1
    check = (lambda x: _check_volume_input(x, min_t=min_t)) if isinstance(model, (DeCoVNet, Clf2DNet)) else (
        lambda x: None)

    if variant == "eager":
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x)
        return run
    if variant == "bf16":
        def run_bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16):
                return model(x).float()
        return run_bf16
    if variant == "channels_last":
        m = copy.deepcopy(model)._apply(_channels_last_tensor)

        def run_cl(x: torch.Tensor) -> torch.Tensor:
            check(x)
            with torch.inference_mode():
                return m(x)  # a channels-last weight makes the convolution compute in that layout
        return run_cl
    if variant == "compile":
        import torch._inductor.config as inductor_config

        inductor_config.deterministic = torch.are_deterministic_algorithms_enabled()  # as the eager switch
        compiled = torch.compile(copy.deepcopy(model), dynamic=False)

        def run_compiled(x: torch.Tensor) -> torch.Tensor:
            check(x)
            with torch.no_grad():
                return compiled(x)
        return run_compiled
    # jit
    if example is None:
        example = torch.zeros(1, 2, 16, 64, 96)
    m = copy.deepcopy(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: the input check runs outside the graph
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(m, example)))

    def run_jit(x: torch.Tensor) -> torch.Tensor:
        check(x)
        with torch.no_grad():
            return traced(x)
    return run_jit


class BatchNormSnapshot:
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


def set_eval_mode(model: nn.Module, bn_eval: bool) -> nn.Module:
    """``model.eval()``, then BatchNorm in batch-statistics mode when ``bn_eval`` is False."""
    return set_bn_eval(model.eval(), bn_eval)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
