"""Training and inference engine shared by the U-Net, DeCoVNet and 2DClfNet (spec §4, §5).

Contents
--------
* :class:`TrainConfig` — every training knob, with the spec's defaults.
* :func:`fit` (whole-volume classifiers), :func:`fit_unet` (2D U-Net on slabs of
  slices), both resumable from ``checkpoint_dir/last.pt`` with bitwise-identical
  results on CPU, returning a :class:`History`; :func:`predict_volumes`.
* Checkpoints (``best.pt``, ``last.pt``) are model files of :mod:`reprolib.modelfile`.

Around it: :mod:`reprolib.augment` (volume augmentation), :mod:`reprolib.volume_data`
(datasets, class balance), :mod:`reprolib.distributed` (``torchrun``: when a process group
is initialised, both fits wrap the model in ``DistributedDataParallel`` and every rank takes
its share of each *global* batch), :mod:`reprolib.segment` (U-Net slabs and whole-volume
segmentation) and :mod:`reprolib.crossfit` (patient-level folds).

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
then rank 1's, ... micro-batches would have (:func:`merged_batchnorm`), so all
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import evaluate, provenance
from .augment import AUGMENTATIONS, IntensityAugment, make_augment
from .distributed import (
    DistContext,
    all_sum,
    barrier,
    check_replicas,
    dist_context,
    gather,
    merged_batchnorm,
    resolve_device,
    shard,
    wrap_ddp,
)
from .errors import ConfigError
from .modelfile import load_checkpoint, save_checkpoint
from .models import BatchNormSnapshot, channels_last, model_device, set_eval_mode
from .segment import load_pair, seg_scores, slab_indices, unet_batch, work_size
from .volume_data import VolumeDataset, class_weights, oversample_indices

__all__ = [
    "DECOVNET_LR",
    "UNET_LR",
    "TrainConfig",
    "History",
    "step_generator",
    "fit",
    "fit_unet",
    "predict_volumes",
]

#: Adam learning rate of the official DeCoVNet config (spec §5).
DECOVNET_LR = 1e-5
#: Adam learning rate of the official U-Net config (spec §4).
UNET_LR = 1e-3
_BALANCE = ("oversample", "weighted_ce", "none")
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
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(None, f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
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


# --------------------------------------------------------------- augmentation math


# ------------------------------------------------------------- augmentation classes


# ------------------------------------------------------------------------ datasets


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
        mine = shard(len(order), ctx)
        batches = [mine[i:i + local_batch] for i in range(0, len(mine), local_batch)]
        model.train()
        total, count = 0.0, 0
        bar = _progress(batches, show, desc=f"epoch {epoch + 1}", leave=False)
        for positions in bar:
            with merged_batchnorm(run.model, ctx):
                loss = run.step([(order[p], step_generator(cfg.seed, epoch, p)) for p in positions])
            loss_sum, n = all_sum([loss * len(positions), len(positions)], ctx, model_device(model))
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
        barrier(ctx)  # no rank runs ahead of the checkpoint rank 0 is writing
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
        mine = shard(len(dataset), ctx, pad=False)
        parts = gather((mine, _logits_over(model, _Subset(dataset, mine), device, bn_eval, progress)), ctx)
        inv = np.argsort([p for pos, _ in parts for p in pos], kind="stable")
        ids = [c for _, r in parts for c in r[2]]
        return (np.concatenate([r[0] for _, r in parts])[inv], torch.cat([r[1] for _, r in parts])[inv],
                [ids[i] for i in inv], np.concatenate([r[3] for _, r in parts])[inv])
    was_training = model.training
    ys, outs, ids, secs = [], [], [], []
    with BatchNormSnapshot(model, active=not bn_eval), torch.inference_mode():
        set_eval_mode(model, bn_eval)
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
    dev = resolve_device(device) if device is not None else model_device(model)
    y, logits, ids, secs = _logits_over(model, dataset, dev, bn_eval, progress)
    p = torch.softmax(logits.double(), dim=1)[:, positive].numpy() if len(y) else np.zeros(0)
    return y, p, ids, secs


def _start(model: nn.Module, cfg: TrainConfig, lr: float, dev: torch.device
           ) -> tuple[torch.optim.Optimizer, DistContext, nn.Module]:
    """Seed, move the model, build Adam and wrap the model for DDP when a process group is up:
    ``(optimizer, context, network to call)``."""
    provenance.seed_everything(cfg.seed, deterministic=False)
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    ctx = dist_context()
    return optimizer, ctx, wrap_ddp(model, dev, ctx)


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
    dev = resolve_device(cfg.device)
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
    dev = resolve_device(cfg.device)
    lr = UNET_LR if cfg.lr is None else float(cfg.lr)
    aug = IntensityAugment() if cfg.augment != "none" else None
    ce = nn.CrossEntropyLoss()
    with _GlobalState(cfg.max_threads):
        optimizer, ctx, net = _start(model, cfg, lr, dev)

        def forward_loss(chunk: list[tuple[int, torch.Generator]]) -> torch.Tensor:
            xs, ts = [], []
            for i, gen in chunk:
                ct, mask = load_pair(volumes[i])
                cand = slab_indices(ct.shape[0], slab)
                k = min(int(slices_per_step), len(cand))
                pick = cand[torch.randperm(len(cand), generator=gen)[:k].numpy()]
                x, t = unet_batch(ct, mask, np.sort(pick), work_size(ct.shape[1:], size, downsample), dev)
                if aug is not None:
                    x = aug.apply(x.transpose(0, 1), aug.sample(gen)).transpose(0, 1)
                xs.append(x)
                ts.append(t)
            return ce(net(torch.cat(xs)), torch.cat(ts))

        def validate() -> dict[str, float]:
            was_training = model.training
            losses, mious, dices = [], [], []
            with BatchNormSnapshot(model, active=not cfg.bn_eval), torch.inference_mode():
                set_eval_mode(model, cfg.bn_eval)
                try:
                    for v in shard(len(val_volumes), ctx, pad=False):  # every volume without DDP
                        ct, mask = load_pair(val_volumes[v])
                        z = slab_indices(ct.shape[0], val_slab or slab)
                        ws = work_size(ct.shape[1:], size, downsample)
                        preds, targets, tot = [], [], 0.0
                        for j in range(0, len(z), chunk):
                            x, t = unet_batch(ct, mask, z[j:j + chunk], ws, dev)
                            logits = model(x)
                            tot += float(F.cross_entropy(logits, t, reduction="sum"))
                            preds.append(logits.argmax(1).cpu())
                            targets.append(t.cpu())
                        pred, target = torch.cat(preds), torch.cat(targets)
                        losses.append(tot / target.numel())
                        miou, dice = seg_scores(pred, target)
                        mious.append(miou)
                        dices.append(dice)
                finally:
                    model.train(was_training)
            parts = gather((losses, mious, dices), ctx)
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


# ------------------------------------------------------------------ cross-fitting


