"""Model files: one format for every network the project trains, serves or benchmarks.

A model file holds the weights *and* what rebuilds the network (its kind and constructor
arguments), so :func:`load_model` needs nothing but the path — as nnU-Net stores its plans in
the checkpoint. It is written atomically with a ``<file>.sha256`` sidecar (``sha256sum`` format)
and read with ``torch.load(weights_only=True)`` after the digest is checked: no arbitrary object
is ever unpickled. A training checkpoint (``last.pt``, for resumption) is a model file with the
optimiser and RNG states added.

* :func:`save_model` / :func:`load_model` — a trained network and its metadata.
* :func:`save_checkpoint` / :func:`load_checkpoint` — the same file with optimiser, epoch and
  extra tensors, for the training engine.
* :func:`architecture` / :func:`build` — kind + constructor arguments, and back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import models
from .errors import ChecksumError, ConfigError, InputError
from .files import atomic_write
from .files import sha256_file as file_sha256

CHECKPOINT_FORMAT = "covid-repro-checkpoint/1"

#: Network kinds a model file can name, and what builds each from its constructor arguments.
KINDS: dict[str, Callable[..., nn.Module]] = {
    "UNet2D": models.UNet2D,
    "DeCoVNet": models.DeCoVNet,
    "Clf2DNet": models.Clf2DNet,
    "ResNet50": models.resnet50,
}


def architecture(model: nn.Module) -> dict[str, Any] | None:
    """``{"kind": ..., "init_kwargs": {...}}`` of a network of :data:`KINDS` (``None`` for any
    other module: its file then loads only into a network the caller builds)."""
    kind = getattr(model, "model_kind", None)
    kwargs = getattr(model, "init_kwargs", None)
    if kind not in KINDS or kwargs is None:
        return None
    return {"kind": kind, "init_kwargs": kwargs}


def build(arch: dict[str, Any] | None, path: str | os.PathLike | None = None) -> nn.Module:
    """The untrained network an :func:`architecture` record describes."""
    if not arch or arch.get("kind") not in KINDS:
        raise InputError(path, f"the model file does not say which network it holds (architecture {arch!r}); "
                               f"known kinds: {', '.join(KINDS)}")
    try:
        return KINDS[arch["kind"]](**arch.get("init_kwargs", {}))
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"cannot build {arch['kind']} from {arch.get('init_kwargs')}: {exc}") from exc


_GIT_CACHE: dict[str, Any] = {}


def _git_state() -> dict[str, Any] | None:
    if "state" not in _GIT_CACHE:
        try:
            from .provenance import git_state

            _GIT_CACHE["state"] = git_state()
        except Exception:  # provenance is optional here; never fail a save for it
            _GIT_CACHE["state"] = None
    return _GIT_CACHE["state"]


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    epoch: int | None = None, metadata: dict[str, Any] | None = None,
                    tensors: dict[str, torch.Tensor] | None = None) -> str:
    """Write a checkpoint atomically and its ``<path>.sha256`` sidecar.

    The file is a plain dict loadable with ``torch.load(weights_only=True)``:
    ``format``, ``architecture_json`` (JSON string: the network's kind and constructor
    arguments, :func:`architecture`), ``model`` (state dict, CPU tensors), ``optimizer`` (state dict or
    None), ``epoch``, ``metadata_json`` (JSON string: ``metadata`` plus ``epoch``,
    ``torch`` version and ``git`` state) and ``tensors`` (extra tensors, e.g. RNG
    states). The sidecar reads ``<hex>  <file name>`` (``sha256sum`` format). File and
    sidecar are replaced so that an interruption at any point leaves a file the sidecar
    names (:func:`_commit_with_sidecar`): a killed run resumes from a verified checkpoint.

    Returns
    -------
    str, the file's hex SHA-256.
    """
    path = Path(path)
    meta = dict(metadata or {})
    meta.setdefault("epoch", epoch)
    meta.setdefault("torch", torch.__version__)
    meta.setdefault("git", _git_state())
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False, default=str)
    except ValueError as exc:
        raise ConfigError(path, f"checkpoint metadata must be JSON without NaN ({exc})") from exc
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture_json": json.dumps(architecture(model), sort_keys=True),
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "epoch": None if epoch is None else int(epoch),
        "metadata_json": meta_json,
        "tensors": {k: v.detach().cpu() for k, v in (tensors or {}).items()},
    }
    _commit_with_sidecar(path, lambda f: torch.save(payload, f))
    return file_sha256(path)


def _commit_with_sidecar(path: Path, write: Callable[[Any], object]) -> None:
    """Replace ``path`` and its ``.sha256`` sidecar so that a kill at any moment leaves a
    file that matches a digest of its sidecar.

    The new file is written complete under a temporary name; the sidecar first lists the
    new digest *and* the current file's; then the file is moved into place; then the
    sidecar keeps the new digest only. Every write is atomic, so at each point in between
    the file on disk is one the sidecar names."""
    side = Path(f"{path}.sha256")
    tmp = path.with_name(f".{path.name}.new")
    atomic_write(tmp, write)
    new = file_sha256(tmp)
    old = []
    if path.is_file() and side.is_file():  # the current file's digest, if its sidecar vouches for it
        current = file_sha256(path)
        old = [current] if current in sidecar_digests(path) else []
    if old and old != [new]:
        atomic_write(side, lambda f: f.write("".join(f"{d}  {path.name}\n" for d in [new, *old]).encode()))
    os.replace(tmp, path)
    atomic_write(side, lambda f: f.write(f"{new}  {path.name}\n".encode()))


def sidecar_digests(path: str | os.PathLike) -> list[str]:
    """Every digest ``<path>.sha256`` lists (one; two only while :func:`save_checkpoint` replaces
    the file). Raises :class:`InputError` naming the file when the sidecar is missing or empty."""
    path = Path(path)
    side = Path(f"{path}.sha256")
    if not side.is_file():
        raise InputError(path, f"no checksum: sidecar {side.name} missing (rerun the step that wrote it)")
    digests = [line.split()[0].lower() for line in side.read_text().splitlines() if line.strip()]
    if not digests:
        raise InputError(side, "empty sha256 sidecar")
    return digests


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def read_sha256_sidecar(path: str | os.PathLike) -> str:
    """The digest stored in ``<path>.sha256`` (written by :func:`save_checkpoint`).

    Raises :class:`InputError` naming the file when the sidecar is missing or empty.
    """
    return sidecar_digests(path)[0]


def load_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, verify: bool = True,
                    strict: bool = True) -> dict[str, Any]:
    """Verify and load a checkpoint written by :func:`save_checkpoint`.

    The SHA-256 is checked against ``expected_sha256`` or else the ``.sha256``
    sidecar (any digest it lists: see :func:`save_checkpoint`; ``verify=False`` skips the
    check). Loading uses
    ``torch.load(map_location="cpu", weights_only=True)``: no arbitrary unpickling.

    Returns
    -------
    dict with ``model`` (state dict), ``optimizer``, ``epoch``, ``metadata`` (parsed
    JSON), ``tensors``, ``sha256``, ``architecture`` (:func:`architecture`'s record or None); the state is also loaded into ``model`` /
    ``optimizer`` when given.

    Raises
    ------
    ChecksumError
        The digest differs (the message names the file).
    InputError
        The file or its sidecar is missing, or it is not a covid-repro checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    digest = file_sha256(path)
    if verify:
        accepted = [expected_sha256.strip().lower()] if expected_sha256 is not None else sidecar_digests(path)
        if digest.lower() not in accepted:
            raise ChecksumError(path, " or ".join(accepted), digest)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, f"not a {CHECKPOINT_FORMAT} file")
    try:
        meta = json.loads(payload["metadata_json"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"checkpoint metadata is not valid JSON ({exc})") from exc
    if model is not None:
        try:
            model.load_state_dict(payload["model"], strict=strict)
        except RuntimeError as exc:
            raise InputError(path, f"weights do not fit the model: {exc}") from exc
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise InputError(path, "checkpoint holds no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    try:
        arch = json.loads(payload.get("architecture_json") or "null")
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"checkpoint architecture is not valid JSON ({exc})") from exc
    return {"model": payload["model"], "optimizer": payload.get("optimizer"), "epoch": payload.get("epoch"),
            "metadata": meta, "tensors": payload.get("tensors", {}), "sha256": digest, "architecture": arch}


def save_model(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None) -> str:
    """Write a trained network (weights, kind, constructor arguments, ``metadata``) as a model
    file with its sha256 sidecar; returns the file's hex SHA-256. The network must be one of
    :data:`KINDS`, so that :func:`load_model` can rebuild it from the file alone."""
    if architecture(model) is None:
        raise ConfigError(path, f"{type(model).__name__} is not a model kind of this project ({', '.join(KINDS)})")
    return save_checkpoint(path, model, metadata=metadata)


def load_model(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """``(network in eval mode, metadata)`` from a model file, after checking its digest
    (``expected_sha256``, else the sidecar). No constructor argument is needed."""
    ck = load_checkpoint(path, expected_sha256=expected_sha256)
    model = build(ck["architecture"], path)
    try:
        model.load_state_dict(ck["model"], strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit the {ck['architecture']['kind']} it names: {exc}") from exc
    return model.eval(), ck["metadata"]
