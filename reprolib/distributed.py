"""Data-parallel training under torchrun: the process group, each rank's share of a batch, and the collectives the training engine needs.

On CPU the ranks talk over gloo, on GPUs over NCCL. Without a process group every helper is the
identity of a single process, so the engine calls them unconditionally.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .errors import ReproError


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` = CUDA when available; under DDP a bare ``"cuda"`` means this rank's GPU."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    ctx = dist_context()
    if dev.type == "cuda" and dev.index is None and ctx.active:
        dev = torch.device("cuda", ctx.local_rank)
    return dev


def wrap_ddp(model: nn.Module, dev: torch.device, ctx: DistContext) -> nn.Module:
    """``DistributedDataParallel(model)`` under a process group, else ``model`` itself.

    Buffers are not broadcast at every forward pass: the ranks' BatchNorm running
    statistics are merged after each step instead (:func:`merged_batchnorm`).
    """
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dev.index if dev.index is not None else ctx.local_rank] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


@contextlib.contextmanager
def merged_batchnorm(model: nn.Module | None, ctx: DistContext):
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


def all_sum(values: Sequence[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (identity without DDP)."""
    if not ctx.active:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without DDP)."""
    if not ctx.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def shard(n: int, ctx: DistContext, pad: bool = True) -> list[int]:
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
    worst = max(gather(diff, ctx))
    if worst != 0.0:
        raise ReproError(f"data-parallel replicas diverged: max |weight difference| to rank 0 = {worst:.3e}")
    return worst
