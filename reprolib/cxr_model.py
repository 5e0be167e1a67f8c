"""The chest X-ray network: torchvision's ResNet-50 with a four-class head, ImageNet weights found
and verified offline, frozen stages and the seed paper's discriminative learning rates.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import numpy as np
import torch
from torch import nn

from . import config, models
from .errors import (
    ChecksumError,
    ConfigError,
    DataUnavailableError,
    InputError,
)
from .files import sha256_file

#: Module names of torchvision's ResNet-50 by depth; ``stem`` = conv1 + bn1.
RESNET_STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")


IMAGENET_SHA256 = "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"


def imagenet_weights_url() -> str:
    """URL of torchvision's ``ResNet50_Weights.IMAGENET1K_V1`` (no network access)."""
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V1.url


def _stage_modules(model: nn.Module, stage: str) -> list[nn.Module]:
    if stage == "stem":
        return [model.conv1, model.bn1]
    return [getattr(model, stage)]


def _stage_params(model: nn.Module, stage: str) -> list[nn.Parameter]:
    return [p for m in _stage_modules(model, stage) for p in m.parameters()]


def verify_sha256(path: str | os.PathLike, expected: str) -> Path:
    """Return ``path`` if its SHA-256 is ``expected``, else raise :class:`ChecksumError`."""
    actual = sha256_file(path)
    if actual.lower() != expected.lower():
        raise ChecksumError(path, expected.lower(), actual)
    return Path(path)


def weight_search_paths(
    cache_dirs: Sequence[str | os.PathLike] | None = None,
    mirror: str | os.PathLike | None = None,
    url: str | None = None,
) -> list[Path]:
    """Candidate locations of the ImageNet checkpoint, in search order.

    Default ``cache_dirs``: ``torch.hub.get_dir()/checkpoints`` (where torchvision caches
    it) and ``$REPRO_DATA_DIR`` (:func:`reprolib.config.data_dir`). In each cache dir the
    file is looked for as ``<dir>/<filename>`` and ``<dir>/<host>/<url path>``; in the
    mirror (default ``$REPRO_DATA_MIRROR``) as ``<mirror>/<host>/<url path>``.
    """
    url = url or imagenet_weights_url()
    parts = urlsplit(url)
    rel = Path(parts.netloc, *unquote(parts.path).lstrip("/").split("/"))
    if cache_dirs is None:
        cache_dirs = [Path(torch.hub.get_dir()) / "checkpoints", config.data_dir()]
    if mirror is None:
        mirror = config.mirror_dir()
    out: list[Path] = []
    for d in cache_dirs:
        out += [Path(d) / rel.name, Path(d) / rel]
    if mirror is not None:
        out.append(Path(mirror) / rel)
    return out


def resolve_imagenet_weights(
    cache_dirs: Sequence[str | os.PathLike] | None = None,
    mirror: str | os.PathLike | None = None,
    expected_sha256: str = IMAGENET_SHA256,
    *,
    url: str | None = None,
) -> Path:
    """Find and verify ``resnet50-0676ba61.pth`` locally; never downloads.

    Searches :func:`weight_search_paths` in order; the first existing file must match
    ``expected_sha256``.

    Raises
    ------
    ChecksumError
        The first file found has the wrong SHA-256 (names the file, expected and actual).
    DataUnavailableError
        No candidate exists; the message lists where it looked and how to provide it.
    """
    url = url or imagenet_weights_url()
    candidates = weight_search_paths(cache_dirs, mirror, url)
    for cand in candidates:
        if cand.is_file():
            return verify_sha256(cand, expected_sha256)
    name = candidates[0].name if candidates else Path(urlsplit(url).path).name
    looked = "\n  ".join(str(c) for c in candidates)
    mirror_rel = Path(urlsplit(url).netloc, *urlsplit(url).path.lstrip("/").split("/"))
    raise DataUnavailableError(
        f"ImageNet weights {name} not found; looked in:\n  {looked}\n"
        f"To provide them, download {url} (sha256 {expected_sha256}) on a machine with internet and put it "
        f"in {Path(torch.hub.get_dir()) / 'checkpoints'} or $REPRO_DATA_DIR, or set REPRO_DATA_MIRROR to a "
        f"mirror folder that contains {mirror_rel}."
    )


def weights_mode(
    profile_wants: str = "imagenet",
    **resolver_kwargs: Any,
) -> tuple[str, str]:
    """Decide ``"imagenet"`` or ``"none"`` for a run, with a human-readable reason.

    Falls back to ``"none"`` (random initialisation) when the checkpoint is absent; a
    file with the wrong checksum still raises :class:`ChecksumError` (fix it rather
    than silently train from scratch). ``resolver_kwargs`` go to
    :func:`resolve_imagenet_weights`.
    """
    if profile_wants == "none":
        return "none", "The profile asks for random initialisation (no ImageNet pre-training)."
    if profile_wants != "imagenet":
        raise ConfigError(None, f"weights must be 'imagenet' or 'none', got {profile_wants!r}")
    try:
        path = resolve_imagenet_weights(**resolver_kwargs)
    except DataUnavailableError:  # its message lists this machine's folders: for the log, not the book
        url = imagenet_weights_url()
        return "none", (
            "ImageNet weights (torchvision ResNet50_Weights.IMAGENET1K_V1) are not available on this machine, "
            "so this run trained ResNet-50 from random initialisation; its numbers are not comparable to the "
            f"paper's ImageNet-pretrained model. To use them, download {url} (sha256 {IMAGENET_SHA256}) and put "
            "it in the torch hub cache (`checkpoints/`), in `$REPRO_DATA_DIR`, or in the mirror "
            "(`$REPRO_DATA_MIRROR`); `resolve_imagenet_weights` lists the exact places."
        )
    return "imagenet", f"ImageNet weights verified (sha256 of {path.name})."


def load_state_dict_file(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """Verify (optional) and load a ``state_dict`` file into ``model``.

    Uses ``torch.load(path, map_location="cpu", weights_only=True)``.

    Returns
    -------
    (missing_keys, unexpected_keys)

    Raises
    ------
    ChecksumError, InputError
        Wrong hash; unreadable file, not a state dict, or shapes/keys that do not fit.
    """
    if expected_sha256 is not None:
        verify_sha256(path, expected_sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "weights file not found") from None
    except Exception as exc:  # pickle / zip errors come in many types
        raise InputError(path, f"cannot read weights file: {exc}") from exc
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(path, "not a state_dict (a mapping of parameter names to tensors)")
    try:
        res = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit the model: {exc}") from exc
    return list(res.missing_keys), list(res.unexpected_keys)


def freeze_stages(model: nn.Module, stage: str | None = "layer3") -> nn.Module:
    """Freeze every stage *before* ``stage`` (``requires_grad=False``); unfreeze the rest.

    ``stage`` is one of :data:`RESNET_STAGES` or ``None`` (train everything). The default
    ``"layer3"`` freezes the stem, ``layer1`` and ``layer2`` and retrains ``layer3``,
    ``layer4`` and the head.
    """
    if stage is not None and stage not in RESNET_STAGES:
        raise ConfigError(None, f"freeze_until must be one of {', '.join(RESNET_STAGES)} or None, got {stage!r}")
    first = 0 if stage is None else RESNET_STAGES.index(stage)
    for i, name in enumerate(RESNET_STAGES):
        for p in _stage_params(model, name):
            p.requires_grad_(i >= first)
    return model


def build_resnet50(
    n_classes: int = 4,
    weights: str = "none",
    weights_path: str | os.PathLike | None = None,
    freeze_until: str | None = "layer3",
    *,
    expected_sha256: str | None = IMAGENET_SHA256,
    strict: bool = True,
    resolver_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """torchvision ResNet-50 with a new ``n_classes``-way ``fc`` head.

    Parameters
    ----------
    weights:
        ``"none"``: random initialisation. ``"imagenet"``: load ``weights_path`` or, when
        ``None``, :func:`resolve_imagenet_weights` (``resolver_kwargs``), verifying
        ``expected_sha256``, into the 1000-class network before the head is replaced.
    strict:
        Passed to ``load_state_dict`` (``False`` accepts a partial checkpoint).
    freeze_until:
        See :func:`freeze_stages`; the new head is always trainable.
    """
    if weights not in ("imagenet", "none"):
        raise ConfigError(None, f"weights must be 'imagenet' or 'none', got {weights!r}")
    if weights == "imagenet" and weights_path is None:
        kw = dict(resolver_kwargs or {})
        kw.setdefault("expected_sha256", expected_sha256 or IMAGENET_SHA256)
        weights_path = resolve_imagenet_weights(**kw)

    def imagenet(net: nn.Module) -> None:
        load_state_dict_file(net, weights_path, expected_sha256=expected_sha256, strict=strict)

    model = models.resnet50(n_classes, before_head=imagenet if weights == "imagenet" else None)
    freeze_stages(model, freeze_until)
    return model


def param_groups(
    model: nn.Module,
    lrs: Sequence[float] = (1e-4, 1e-3, 1e-2),
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with discriminative learning rates.

    The head (``fc``) gets ``lrs[-1]``. The trainable body stages (of ``stem``,
    ``layer1`` ... ``layer4``, in depth order) are split into ``len(lrs) - 1`` contiguous
    chunks (``numpy.array_split``) that get ``lrs[0]``, ``lrs[1]``, ... With the default
    ``freeze_until="layer3"`` and three rates: ``layer3`` -> 1e-4, ``layer4`` -> 1e-3,
    ``fc`` -> 1e-2. Empty chunks are dropped; frozen parameters are left out. Each group
    has keys ``params``, ``lr`` and ``name`` (e.g. ``"layer3"`` or ``"stem+layer1"``).
    """
    if len(lrs) < 1:
        raise ConfigError(None, "lrs must hold at least one learning rate")
    body = [s for s in RESNET_STAGES[:-1] if any(p.requires_grad for p in _stage_params(model, s))]
    groups: list[dict[str, Any]] = []
    if len(lrs) == 1:
        chunks: list[list[str]] = [body + ["fc"]]
    else:
        chunks = [list(c) for c in np.array_split(np.array(body, dtype=object), len(lrs) - 1)] + [["fc"]]
    for names, lr in zip(chunks, lrs):
        params = [p for s in names for p in _stage_params(model, s) if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": float(lr), "name": "+".join(names)})
    return groups
