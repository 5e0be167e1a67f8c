"""Benchmarks: what the companion costs on this hardware (``repro bench`` / ``make bench``).

Each measurement is a *job* run in a fresh process (``spawn``), so that its peak resident
memory (``ru_maxrss``) is its own and no warm cache of an earlier job flatters it:

* ``decovnet`` — DeCoVNet inference per volume at T = 100 and 300 (224×336), eager fp32 and
  the fast variants of :func:`reprolib.models.inference_runner`, each checked against eager.
* ``unet`` — the lung U-Net per 512² slice (batches of 8), eager and TorchScript.
* ``resnet50`` — the chest X-ray ResNet-50, images per second at 224² (batches of 16).
* ``preprocess`` — :func:`reprolib.preprocess.preprocess_ct` on a synthetic 300×512×512 chest:
  wall time and peak RSS (process high-water mark, and above the loaded input), once with the
  ``baseline`` engine (the earlier path: SciPy labelling, gathered cubic sums) and once ``fast``.
* ``pipeline`` — the whole :func:`reprolib.predict.predict_ct` of one synthetic 300-slice 512²
  volume (NIfTI read → preprocessing → U-Net on every 1 mm slice → DeCoVNet + CAM
  localisation), at the ``reference`` speed (eager fp32 U-Net at 512², the baseline) and at the
  ``fast`` one, in one process with the same paper-size networks (untrained, seed 0: time does
  not depend on the weights); stage times, the ratio, the U-Net's GFLOP/s beside this CPU's
  measured matrix-multiply peak, |Δp(COVID)| between the runs and the resolution ceiling of the
  fast path's lung mask (:func:`resolution_ceiling`).
* ``book`` — the book's rebuild for a profile that has been built (``sample``, else
  ``synthetic``): the notebooks' cold execution time as the runner recorded it, the cached
  ``repro run`` measured now, and the HTML build of a scratch copy, cold and cached.

Times are medians of ``repeats`` calls after one warm-up call, with the torch thread count
stated; every network figure stands beside its multiply–accumulate count and the achieved
GFLOP/s (2 FLOP per MAC). Untrained weights: speed does not depend on their values.
:func:`run` writes one JSON document (default ``benchmarks/out/bench.json``, atomically);
the book's Performance chapter reads it. ``quick=True`` shrinks every job (small inputs, one
repeat, no book rebuild) for tests and for a page built without a full benchmark.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import config
from .book import format_columns as book_format_columns

__all__ = ["JOBS", "PAPER_SECONDS_PER_CT_GPU", "plan", "run", "run_job", "summarize",
           "format_table", "load"]

#: The paper's whole-pipeline time per CT volume on a GPU (spec §8/§9).
PAPER_SECONDS_PER_CT_GPU = 1.93
#: The speed target of DeCoVNet at T = 300 on 2 CPU threads (fast variant / eager fp32).
TARGET_RATIO = 0.5
#: The preprocessing targets for a 512×512×300 volume (seconds, peak RSS in MB).
TARGET_PREPROCESS_S = 3.0
TARGET_PREPROCESS_RSS_MB = 1536.0
#: Fast variants must reproduce eager fp32 within this (max |logit difference|).
TOLERANCE = 1e-4
#: Targets of issue L: preprocessing ``fast`` / ``baseline`` and the whole ``repro predict ct``
#: ``fast`` / ``reference`` (300 slices of 512², measured in the same run).
TARGET_PREPROCESS_RATIO = 0.6
TARGET_PIPELINE_RATIO = 0.25
FORMAT = "covid-repro-bench/2"


# --------------------------------------------------------------------------- helpers
def _rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc``; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _peak_rss_mb() -> float:
    """High-water mark of this process's resident set in MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, list[float], Any]:
    """(median seconds, all seconds, output) of ``fn()`` after one warm-up call."""
    import statistics

    out = fn()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def _device_setup(device: str, threads: int):
    import torch

    torch.set_num_threads(int(threads))
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return torch, dev, sync


def _net_job(res: dict[str, Any], net, x, variants: Sequence[str], repeats: int, sync, per: int = 1) -> None:
    """Time ``net`` on ``x`` eager and in each variant; record seconds per item and max |diff|."""
    from . import models

    res["macs"] = models.count_macs(net, tuple(x.shape)) // per
    eager = models.inference_runner(net, "eager")
    t, times, ref = _timed(lambda: eager(x), repeats, sync)
    res["seconds"] = {"eager": t / per}
    res["all_seconds"] = {"eager": [v / per for v in times]}
    res["max_abs_diff"] = {"eager": 0.0}
    ref = ref.float()
    for variant in variants:
        if variant == "eager":
            continue
        t0 = time.perf_counter()
        run_v = models.inference_runner(net, variant, example=x[:, :, :16] if x.dim() == 5 else x[:1])
        prep = time.perf_counter() - t0
        tv, times, out = _timed(functools.partial(run_v, x), repeats, sync)
        res["seconds"][variant] = tv / per
        res["all_seconds"][variant] = [v / per for v in times]
        res["max_abs_diff"][variant] = float((out.float() - ref).abs().max())
        res.setdefault("prepare_seconds", {})[variant] = prep


# --------------------------------------------------------------------------- jobs
def job_decovnet(T: int, hw: Sequence[int] = (224, 336), variants: Sequence[str] = ("jit", "channels_last"),
                 threads: int = 2, repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    """DeCoVNet on one ``(1, 2, T, H, W)`` random volume: seconds per volume by variant."""
    torch, dev, sync = _device_setup(device, threads)
    from . import models

    torch.manual_seed(0)
    net = models.DeCoVNet(proclf_grids=models.proclf_grids_for(tuple(hw))).eval().to(dev)
    x = torch.rand(1, 2, int(T), *map(int, hw), device=dev)
    res: dict[str, Any] = {"T": int(T), "input": [1, 2, int(T), *map(int, hw)]}
    _net_job(res, net, x, variants, repeats, sync)
    return res


def job_unet(batch: int = 8, size: int = 512, variants: Sequence[str] = ("jit",), threads: int = 2,
             repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    """The lung U-Net on ``batch`` slices of ``size``²: seconds per slice by variant."""
    torch, dev, sync = _device_setup(device, threads)
    from . import models

    torch.manual_seed(0)
    net = models.UNet2D().eval().to(dev)
    x = torch.rand(int(batch), 1, int(size), int(size), device=dev)
    res: dict[str, Any] = {"batch": int(batch), "size": int(size), "per": "slice"}
    _net_job(res, net, x, variants, repeats, sync, per=int(batch))
    return res


def job_resnet50(batch: int = 16, size: int = 224, variants: Sequence[str] = ("jit",), threads: int = 2,
                 repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    """ResNet-50 (4 classes) on ``batch`` images of ``size``²: seconds per image by variant."""
    torch, dev, sync = _device_setup(device, threads)
    from . import cxr_model

    torch.manual_seed(0)
    net = cxr_model.build_resnet50(4, weights="none", freeze_until=None).eval().to(dev)
    x = torch.rand(int(batch), 3, int(size), int(size), device=dev)
    res: dict[str, Any] = {"batch": int(batch), "size": int(size), "per": "image"}
    _net_job(res, net, x, variants, repeats, sync, per=int(batch))
    res["images_per_s"] = {k: 1.0 / v for k, v in res["seconds"].items()}
    return res


def _synthetic_volume_file(slices: int, size: int, spacing_z: float, folder: Path) -> Path:
    """A synthetic int16 chest (:func:`reprolib.memtrace.synthetic_chest`) saved as ``.npy``."""
    import numpy as np

    from .memtrace import synthetic_chest

    path = folder / f"chest_{slices}x{size}x{size}.npy"
    if not path.is_file():
        np.save(path, synthetic_chest(int(slices), int(size)))
    return path


def job_preprocess(volume_npy: str, spacing_mm: Sequence[float], workers: int = 2, repeats: int = 1,
                   engine: str = "fast") -> dict[str, Any]:
    """:func:`preprocess_ct` on a saved volume (``workers`` processes, ``engine``): wall time and peak RSS.

    Peak RSS is this process's high-water mark plus, with ``workers`` > 1, that of the forked
    pseudo-label worker (``RUSAGE_CHILDREN``): an upper bound of the memory the call needs."""
    import numpy as np

    from . import preprocess as pp
    from .io import CTVolume

    hu = np.load(volume_npy)
    base = _rss_mb()
    vol = CTVolume(hu=hu, spacing_mm=tuple(float(v) for v in spacing_mm))
    times = []
    out = None
    for _ in range(max(1, repeats)):
        out = None
        t0 = time.perf_counter()
        out = pp.preprocess_ct(vol, qc_lung_volume_ml=(0.0, 1e9), workers=workers, engine=engine)
        times.append(time.perf_counter() - t0)
    import statistics

    own = _peak_rss_mb()
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peak = own + (child if workers > 1 else 0.0)
    return {"shape": list(hu.shape), "spacing_mm": list(map(float, spacing_mm)), "shape_1mm": list(out["ct_u8"].shape),
            "workers": int(workers), "engine": engine, "seconds": statistics.median(times), "all_seconds": times, "peak_rss_MB": peak,
            "peak_rss_main_MB": own, "peak_rss_worker_MB": child if workers > 1 else 0.0,
            "input_loaded_rss_MB": base, "peak_above_input_MB": own - base, "input_MB": hu.nbytes / 2**20,
            "lung_ml": float(out["qc"]["volume_ml"])}


def matmul_peak_gflops(threads: int = 2, device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """This machine's practical fp32 peak: the best GFLOP/s of ``repeats`` n×n matrix products."""
    torch, dev, sync = _device_setup(device, threads)
    a, b = torch.rand(n, n, device=dev), torch.rand(n, n, device=dev)
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def resolution_ceiling(mask, size: Sequence[int], batch: int = 16) -> float:
    """Dice of a (T, H, W) {0, 1} mask with itself after the fast U-Net path's resampling: each
    slice resized to ``size`` (bilinear, antialiased, as :func:`reprolib.segment.segment_volume`
    resizes its input), back to (H, W) bilinearly (as it resizes the logits) and thresholded at
    0.5. The most any mask computed at ``size`` can agree with one computed at full size."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    m = np.asarray(mask).astype(bool)
    both = total = 0
    for i in range(0, len(m), batch):
        x = torch.from_numpy(m[i:i + batch].astype(np.float32))[:, None]
        small = F.interpolate(x, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False, antialias=True)
        back = F.interpolate(small, size=m.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy() > 0.5
        both += int(np.count_nonzero(back & m[i:i + batch]))
        total += int(back.sum()) + int(m[i:i + batch].sum())
    return 2.0 * both / total if total else 1.0


def job_pipeline(volume_npy: str, spacing_mm: Sequence[float], threads: int = 2,
                 hw: Sequence[int] = (224, 336), z_step: int = 1, device: str = "cpu",
                 speeds: Sequence[str] = ("reference", "fast")) -> dict[str, Any]:
    """The whole ``repro predict ct`` of one volume at each of ``speeds``, in this process.

    The same paper-size U-Net (at the slices' own size) and DeCoVNet (``hw``, every
    ``z_step``-th slice), untrained with seed 0 (time does not depend on the weights), serve every
    speed; :func:`reprolib.predict.predict_ct` reads the NIfTI, preprocesses, segments,
    classifies and localises. Records per speed the stage seconds (``total`` = the call's wall
    time), the U-Net settings, MACs and GFLOP/s, p(COVID) and the lung voxels; the Dice of each
    lung mask with the first speed's and |Δp(COVID)| (a check of the computation: an untrained
    U-Net's mask says nothing about segmentation); for a speed that resizes the slices, the
    :func:`resolution_ceiling` of the volume's pseudo-label at that size; and this CPU's
    matrix-multiply peak (:func:`matmul_peak_gflops`)."""
    import numpy as np

    torch, dev, sync = _device_setup(device, threads)
    # everything predict_ct imports, imported before the clock starts for any speed
    from . import cohort, evaluate, io, localize, models, predict, preprocess, scans, segment, train  # noqa: F401

    torch.manual_seed(0)
    unet = models.UNet2D().eval().to(dev)
    net = models.DeCoVNet(proclf_grids=models.proclf_grids_for(tuple(hw))).eval().to(dev)
    card = predict.CTModelCard(unet_path="-", unet_sha256="-", unet_size=None, decovnet_path="-", decovnet_sha256="-",
                               hw=tuple(int(v) for v in hw), z_step=int(z_step), fc_init="official")
    runs: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    vol = io.CTVolume(hu=np.load(volume_npy), spacing_mm=tuple(map(float, spacing_mm)))
    shape = list(vol.hu.shape)
    label = preprocess.preprocess_ct(vol, qc_lung_volume_ml=(0.0, 1e9), workers=2)["lung_mask"]

    with tempfile.TemporaryDirectory() as tmp:
        nii = io.write_nifti(vol, None, Path(tmp) / "ct.nii.gz")
        del vol
        for speed in speeds:
            t0 = time.perf_counter()
            out = predict.predict_ct(unet, net, nii, card, speed=speed)
            sync()
            total = time.perf_counter() - t0
            t, h, w = out["shape_1mm"]
            side = out["unet"]["size"] or [h, w]
            macs = models.count_macs(unet, (1, 1, *side)) * t
            runs[speed] = {"seconds": {**out["seconds"], "total": total}, "unet": out["unet"],
                           "unet_macs": macs, "unet_gflops": _gflops(macs, out["seconds"]["unet"]),
                           "p_covid": float(out["p_covid"]), "lung_voxels": int(out["lung_mask"].sum())}
            masks[speed] = out["lung_mask"].astype(bool)
            shape_1mm = out["shape_1mm"]
    ref = masks[speeds[0]]
    for speed in speeds:
        runs[speed]["dice_vs_" + speeds[0]] = evaluate.dice(ref, masks[speed])
        runs[speed]["abs_dp_vs_" + speeds[0]] = abs(runs[speed]["p_covid"] - runs[speeds[0]]["p_covid"])
        size = runs[speed]["unet"]["size"]
        runs[speed]["resolution_ceiling"] = (resolution_ceiling(label, size)
                                             if size and label.shape == tuple(shape_1mm) else None)
    return {"shape": shape,
            "spacing_mm": list(map(float, spacing_mm)), "slices_1mm": int(shape_1mm[0]), "shape_1mm": list(shape_1mm),
            "speeds": runs, "baseline": speeds[0], "peak_gflops": matmul_peak_gflops(threads, device),
            "label_fraction": float(label.mean()), "weights": "untrained (seed 0)",
            "peak_rss_MB": _peak_rss_mb()}


def book_profile() -> str | None:
    """The profile whose book the rebuild benchmark measures: ``sample``, else ``synthetic``,
    whichever has a successful ``repro run`` (``None`` when neither has)."""
    from . import runner

    for profile in ("sample", "synthetic"):
        try:
            status = json.loads((runner.state_dir(profile) / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if status.get("state") == "ok":
            return profile
    return None


def job_book(profile: str | None = None) -> dict[str, Any]:
    """The book's rebuild, cold and cached, for a profile that has been built (:func:`book_profile`).

    * cold notebooks: the wall time of every notebook when it last executed, as the runner
      recorded it (``.repro/<profile>/provenance.json``); re-executing them here would cost
      the whole build (minutes for ``synthetic``, about half an hour for ``sample``);
    * cached notebooks: ``repro run`` measured now — every notebook whose inputs are unchanged
      is skipped by the execution cache;
    * HTML: ``jupyter-book build --all`` of a scratch copy of the book measured now, from an
      empty ``_build`` (cold) and again over it (cached; ``--all`` rebuilds every page).
    """
    from . import runner

    profile = profile or book_profile()
    out: dict[str, Any] = {"profile": profile}
    if profile is None:
        out["skipped"] = "no profile has a successful `repro run`; run `make book` first"
        return out
    behind = runner.stale(profile)
    if behind:  # a "cached" rebuild would execute these: not what this job measures
        out["skipped"] = (f"the {profile} book is not up to date with the code ({', '.join(behind)} would run); "
                          f"run `make book PROFILE={profile}` first")
        return out
    record = json.loads((runner.state_dir(profile) / "provenance.json").read_text())
    nbs = record.get("notebooks", [])
    out["recorded"] = {"notebooks": len(nbs), "cold_seconds": float(sum(n["wall_s"] for n in nbs)),
                       "executed_between": [min(n["executed_at"] for n in nbs), max(n["executed_at"] for n in nbs)]
                       if nbs else None}
    root = config.project_root()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    rc = subprocess.run([str(Path(sys.executable).with_name("repro")), "run", "--profile", profile, "--quiet"],
                        env=env, cwd=root, capture_output=True, text=True)
    out["cached_run_seconds"] = time.perf_counter() - t0
    if rc.returncode != 0:
        raise RuntimeError(f"repro run --profile {profile} failed during the book benchmark:\n"
                           f"{rc.stdout[-2000:]}\n{rc.stderr[-2000:]}")
    out["cached_executed"], out["cached_skipped"] = rc.stdout.count("[run ]"), rc.stdout.count("[skip]")
    with tempfile.TemporaryDirectory(prefix="repro-bench-book-") as tmp:
        site = Path(tmp)
        for name in ("_config.yml", "_toc.yml"):
            shutil.copy2(root / name, site / name)
        shutil.copytree(root / "book", site / "book", ignore=shutil.ignore_patterns("generated", "generated.tmp"))
        shutil.copytree(root / "notebooks", site / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
        runner.prepare_book(profile, site)
        code = f"import sys; from pathlib import Path; from reprolib import runner; sys.exit(runner.build_book(Path({str(site)!r})))"
        for phase in ("html_cold", "html_cached"):
            t1 = time.perf_counter()
            hb = subprocess.run([sys.executable, "-c", code], env=env, cwd=site, capture_output=True, text=True)
            out[f"{phase}_seconds"] = time.perf_counter() - t1
            if hb.returncode != 0:
                raise RuntimeError(f"the HTML build failed during the book benchmark:\n{hb.stdout[-1500:]}\n"
                                   f"{hb.stderr[-3000:]}")
    out["cold_seconds"] = out["recorded"]["cold_seconds"] + out["html_cold_seconds"]
    out["cached_seconds"] = out["cached_run_seconds"] + out["html_cached_seconds"]
    return out


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "decovnet": job_decovnet, "unet": job_unet, "resnet50": job_resnet50, "preprocess": job_preprocess,
    "pipeline": job_pipeline, "book": job_book,
}


def _child(name: str, kwargs: dict[str, Any], queue) -> None:
    try:
        res = JOBS[name](**kwargs)
        res.setdefault("peak_rss_MB", _peak_rss_mb())
        queue.put(("ok", res))
    except BaseException as exc:  # reported by the parent with the job's name
        import traceback

        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_job(name: str, isolate: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Run one job, in a fresh ``spawn`` process when ``isolate`` (its own peak RSS and
    warm-up), else in this process (quick runs: no interpreter start-up per job)."""
    t0 = time.perf_counter()
    if isolate:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(name, kwargs, q))
        p.start()
        status, res = q.get()
        p.join()
    else:
        import torch

        threads = torch.get_num_threads()
        try:
            status, res = "ok", JOBS[name](**kwargs)
            res.setdefault("peak_rss_MB", _peak_rss_mb())
        finally:
            torch.set_num_threads(threads)
    if status != "ok":
        raise RuntimeError(f"benchmark job {name}({kwargs}) failed: {res}")
    res.update(job=name, params={k: v for k, v in kwargs.items() if k != "volume_npy"},
               job_seconds=time.perf_counter() - t0)
    return res


# --------------------------------------------------------------------------- plan / run
def plan(quick: bool = False, threads: int = 2, device: str = "cpu",
         depths: Sequence[int] = (100, 300), variants: Sequence[str] = ("jit", "channels_last"),
         repeats: int = 3, pipeline_slices: int = 300, book: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """The jobs of one benchmark run, in order. ``quick``: tiny inputs, one repeat, no book."""
    if quick:
        return [("decovnet", dict(T=8, hw=(32, 48), variants=variants, threads=threads, repeats=1, device=device)),
                ("unet", dict(batch=2, size=32, variants=("jit",), threads=threads, repeats=1, device=device)),
                ("resnet50", dict(batch=1, size=32, variants=("jit",), threads=threads, repeats=1, device=device)),
                ("preprocess", dict(slices=24, size=64, spacing_mm=(2.5, 1.0, 1.0), workers=2, engine="baseline")),
                ("preprocess", dict(slices=24, size=64, spacing_mm=(2.5, 1.0, 1.0), workers=2, engine="fast")),
                ("pipeline", dict(slices=12, size=64, spacing_mm=(2.5, 1.0, 1.0), threads=threads, hw=(32, 48),
                                  device=device))]
    from .models import bf16_native

    jobs: list[tuple[str, dict[str, Any]]] = []
    native, _ = bf16_native(device)
    for i, T in enumerate(sorted(depths)):
        # TorchScript at every depth; the other variants once, at the smallest (channels-last is
        # slower than eager on CPUs here; bf16 only where the hardware has bf16 arithmetic)
        v = tuple(variants) if i == 0 else tuple(x for x in variants if x == "jit") or tuple(variants)[:1]
        v += ("bf16",) if i == 0 and native and "bf16" not in v else ()
        jobs.append(("decovnet", dict(T=int(T), variants=v, threads=threads, repeats=repeats, device=device)))
    jobs += [("unet", dict(batch=8, size=512, variants=("jit",), threads=threads, repeats=repeats, device=device)),
             ("resnet50", dict(batch=16, size=224, variants=("jit",), threads=threads, repeats=repeats, device=device)),
             # a 512×512×300 chest at 1.25 mm (375 slices at 1 mm), preprocessed by two processes,
             # the earlier path first, then the fast one
             ("preprocess", dict(slices=300, size=512, spacing_mm=(1.25, 0.7, 0.7), workers=2, repeats=repeats,
                                 engine="baseline")),
             ("preprocess", dict(slices=300, size=512, spacing_mm=(1.25, 0.7, 0.7), workers=2, repeats=repeats,
                                 engine="fast")),
             # the whole `repro predict ct` of a 300-slice 512² chest at 1 mm, reference then fast
             ("pipeline", dict(slices=int(pipeline_slices), size=512, spacing_mm=(1.0, 0.7, 0.7),
                               threads=threads, device=device))]
    if book:
        jobs.append(("book", dict(profile=None)))
    return jobs


def run(jobs: list[tuple[str, dict[str, Any]]] | None = None, out: str | Path | None = None,
        echo: Callable[[str], None] = print, isolate: bool | None = None, progress: bool = True,
        **plan_kwargs: Any) -> dict[str, Any]:
    """Run ``jobs`` (default :func:`plan`), print a table and write the JSON document ``out``.

    ``isolate`` (default: not ``quick``) runs each job in a fresh process."""
    from .files import atomic_write_text
    from .models import bf16_native
    from .provenance import git_state, hardware, package_versions

    jobs = plan(**plan_kwargs) if jobs is None else jobs
    out = Path(out) if out is not None else config.bench_json()
    quick = bool(plan_kwargs.get("quick", False))
    isolate = (not quick) if isolate is None else bool(isolate)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmp:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            tqdm = None
        bar = tqdm(jobs, desc="benchmarks", unit="job", disable=not progress) if tqdm is not None else jobs
        for name, kw in bar:
            kw = dict(kw)
            if name in ("preprocess", "pipeline"):
                kw["volume_npy"] = str(_synthetic_volume_file(kw.pop("slices"), kw.pop("size"), 0, Path(tmp)))
            if tqdm is not None:
                bar.set_postfix_str(f"{name} {kw.get('T', '')}".strip())
            rows.append(run_job(name, isolate=isolate, **kw))
            (bar.write if tqdm is not None and progress and echo is print else echo)(
                format_row(rows[-1]) + f"   [job {rows[-1]['job_seconds']:.0f} s]")
    import torch

    doc = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": time.perf_counter() - t0,
           "quick": quick, "isolated": isolate, "rows": rows,
           "hardware": {**hardware(), "threads": plan_kwargs.get("threads", 2),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "git": git_state(), "packages": package_versions(("torch", "numpy", "scipy", "covid-repro")),
           "paper_seconds_per_ct_gpu": PAPER_SECONDS_PER_CT_GPU,
           "bf16": dict(zip(("native", "why"), bf16_native(plan_kwargs.get("device", "cpu")))),
           "targets": {"decovnet_fast_over_eager": TARGET_RATIO, "tolerance": TOLERANCE,
                       "preprocess_seconds": TARGET_PREPROCESS_S, "preprocess_peak_rss_MB": TARGET_PREPROCESS_RSS_MB}}
    doc["summary"] = summarize(doc)
    atomic_write_text(out, json.dumps(doc, indent=1, sort_keys=True, default=float) + "\n")
    echo(format_table(doc))
    echo(f"wrote {out} ({doc['seconds']:.0f} s)")
    return doc


def load(path: str | Path | None = None) -> dict[str, Any] | None:
    """A benchmark document, or ``None`` when the file does not exist.

    Raises :class:`reprolib.errors.InputError` naming the file when it is not one."""
    from .errors import InputError

    path = Path(path) if path is not None else config.bench_json()
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable benchmark JSON ({exc}); rerun `make bench`") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "rows" not in doc:
        raise InputError(path, f"not a {FORMAT} document; rerun `make bench`")
    return doc


# --------------------------------------------------------------------------- reporting
def _gflops(macs: float, seconds: float) -> float:
    return 2.0 * macs / seconds / 1e9 if seconds > 0 else float("nan")


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Headline figures: DeCoVNet fast/eager ratio at the largest T, preprocessing and pipeline."""
    rows = doc["rows"]
    s: dict[str, Any] = {"quick": bool(doc.get("quick"))}
    dec = [r for r in rows if r["job"] == "decovnet"]
    if dec:
        top = max(dec, key=lambda r: r["T"])
        exact = {v: t for v, t in top["seconds"].items()
                 if v != "eager" and top["max_abs_diff"].get(v, 1.0) <= TOLERANCE}
        best = min(exact, key=exact.get) if exact else None
        ratio = exact[best] / top["seconds"]["eager"] if best else float("nan")
        s["decovnet"] = {"T": top["T"], "eager_seconds": top["seconds"]["eager"], "fastest_exact_variant": best,
                         "fast_seconds": exact.get(best), "ratio": ratio, "target": TARGET_RATIO,
                         "met": bool(best) and ratio <= TARGET_RATIO,
                         "max_abs_diff": top["max_abs_diff"].get(best) if best else None}
    pre = [r for r in rows if r["job"] == "preprocess"]
    fast_pre = [r for r in pre if r.get("engine", "fast") == "fast"]
    if fast_pre:
        r = fast_pre[-1]
        base = next((b for b in reversed(pre) if b.get("engine") == "baseline"), None)
        ratio = r["seconds"] / base["seconds"] if base else float("nan")
        s["preprocess"] = {"shape": r["shape"], "seconds": r["seconds"], "peak_rss_MB": r["peak_rss_MB"],
                           "baseline_seconds": base["seconds"] if base else None, "ratio": ratio,
                           "target_ratio": TARGET_PREPROCESS_RATIO, "met_ratio": bool(base) and ratio <= TARGET_PREPROCESS_RATIO,
                           "target_seconds": TARGET_PREPROCESS_S, "target_peak_rss_MB": TARGET_PREPROCESS_RSS_MB,
                           "met_seconds": r["seconds"] <= TARGET_PREPROCESS_S,
                           "met_rss": r["peak_rss_MB"] <= TARGET_PREPROCESS_RSS_MB}
    r = _pipeline_row(doc)
    if r is not None:
        ref, fast = r["speeds"][r["baseline"]], r["speeds"].get("fast")
        s["pipeline"] = {"slices_1mm": r["slices_1mm"], "reference_seconds": ref["seconds"]["total"],
                         "unet_share": ref["seconds"]["unet"] / ref["seconds"]["total"],
                         "paper_gpu_seconds": PAPER_SECONDS_PER_CT_GPU, "peak_gflops": r["peak_gflops"],
                         "target_ratio": TARGET_PIPELINE_RATIO, "reference_p_covid": ref.get("p_covid"),
                         "reference_lung_fraction": ref.get("lung_voxels", 0) / max(1, math.prod(r["shape_1mm"]))}
        if fast is not None:
            ratio = fast["seconds"]["total"] / ref["seconds"]["total"]
            s["pipeline"].update(fast_seconds=fast["seconds"]["total"], ratio=ratio, met=ratio <= TARGET_PIPELINE_RATIO,
                                 dice=fast["dice_vs_" + r["baseline"]], abs_dp=fast["abs_dp_vs_" + r["baseline"]],
                                 fast_unet_size=fast["unet"]["size"], bf16=fast["unet"]["bf16"],
                                 resolution_ceiling=fast.get("resolution_ceiling"))
    book = [r for r in rows if r["job"] == "book" and "cold_seconds" in r]
    if book:
        s["book"] = {"profile": book[-1]["profile"], "cold_seconds": book[-1]["cold_seconds"],
                     "cached_seconds": book[-1]["cached_seconds"]}
    return s


def format_row(r: dict[str, Any]) -> str:
    """One printed line (or block) per job result."""
    job = r["job"]
    if job in ("decovnet", "unet", "resnet50"):
        what = {"decovnet": f"T={r.get('T')}", "unet": f"{r.get('size')}² slice",
                "resnet50": f"{r.get('size')}² image"}[job]
        base = r["seconds"]["eager"]
        lines = []
        for v, t in r["seconds"].items():
            lines.append(f"{job:<9} {what:<11} {v:<14} {t:9.4f} s  ×{t / base:5.2f}  {r['macs'] / 1e9:7.2f} GMAC  "
                         f"{_gflops(r['macs'], t):6.1f} GFLOP/s  max|diff| {r['max_abs_diff'].get(v, 0.0):.1e}  "
                         f"peak {r['peak_rss_MB']:.0f} MB  ({r['params'].get('threads')} threads)")
        return "\n".join(lines)
    if job == "preprocess":
        return (f"preprocess ({r.get('engine', 'fast')}) {'×'.join(map(str, r['shape']))} -> "
                f"{'×'.join(map(str, r['shape_1mm']))} at 1 mm: "
                f"{r['seconds']:.2f} s, peak RSS {r['peak_rss_MB']:.0f} MB ({r['peak_above_input_MB']:.0f} MB above "
                f"the loaded input)")
    if job == "pipeline":
        lines = []
        for speed, run_ in r["speeds"].items():
            st = run_["seconds"]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in st.items() if k != "total")
            lines.append(f"predict ct ({speed}) {'×'.join(map(str, r['shape']))} ({r['slices_1mm']} slices at 1 mm): "
                         f"{st['total']:.1f} s ({parts}); U-Net at {run_['unet']['size'] or 'full size'} "
                         f"{run_['unet_gflops']:.1f} GFLOP/s (matmul peak {r['peak_gflops']:.0f}); mask Dice "
                         f"{run_['dice_vs_' + r['baseline']]:.4f}, |Δp| {run_['abs_dp_vs_' + r['baseline']]:.1e} "
                         f"vs {r['baseline']}; resolution ceiling {or_nan(run_.get('resolution_ceiling')):.4f}")
        return "\n".join(lines) + f"\n  peak RSS {r['peak_rss_MB']:.0f} MB"
    if job == "book":
        if "skipped" in r:
            return f"book: not measured ({r['skipped']})"
        return (f"book ({r['profile']}): cold {r['cold_seconds']:.0f} s (notebooks {r['recorded']['cold_seconds']:.0f} s "
                f"as recorded + html {r['html_cold_seconds']:.0f} s), cached {r['cached_seconds']:.0f} s (repro run "
                f"{r['cached_run_seconds']:.1f} s, {r['cached_skipped']} skipped, {r['cached_executed']} executed + html "
                f"{r['html_cached_seconds']:.0f} s)")
    return json.dumps(r)


def or_nan(x: float | None) -> float:
    """``x``, or NaN where it is missing (a measured 0.0 stays 0.0)."""
    return float("nan") if x is None else float(x)


def format_table(doc: dict[str, Any]) -> str:
    """The summary lines printed at the end of a run."""
    s = doc.get("summary", {})
    lines = ["", "summary" + (" (quick run: tiny inputs; the targets apply to the full benchmark)"
                              if s.get("quick") else "")]
    if "decovnet" in s:
        d = s["decovnet"]
        lines.append(f"  DeCoVNet T={d['T']}: {d['fastest_exact_variant']} {or_nan(d['fast_seconds']):.2f} s vs "
                     f"eager {d['eager_seconds']:.2f} s = ×{d['ratio']:.2f} (target ≤ {d['target']}: "
                     f"{'met' if d['met'] else 'NOT met'}), max |diff| {or_nan(d['max_abs_diff']):.1e}")
    if "preprocess" in s:
        p = s["preprocess"]
        lines.append(f"  preprocessing {'×'.join(map(str, p['shape']))}: {p['seconds']:.2f} s (target ≤ "
                     f"{p['target_seconds']:g}: {'met' if p['met_seconds'] else 'NOT met'}), peak RSS "
                     f"{p['peak_rss_MB']:.0f} MB (target ≤ {p['target_peak_rss_MB']:.0f}: "
                     f"{'met' if p['met_rss'] else 'NOT met'}); ×{or_nan(p['ratio']):.2f} of the baseline engine "
                     f"(target ≤ {p['target_ratio']}: {'met' if p['met_ratio'] else 'NOT met'})")
    if "pipeline" in s:
        p = s["pipeline"]
        lines.append(f"  repro predict ct, {p['slices_1mm']} slices: reference {p['reference_seconds']:.1f} s "
                     f"(U-Net {100 * p['unet_share']:.0f} %) vs {p['paper_gpu_seconds']} s on the paper's GPU")
        if "ratio" in p:
            lines.append(f"  fast {p['fast_seconds']:.1f} s = ×{p['ratio']:.2f} of reference (target ≤ "
                         f"{p['target_ratio']}: {'met' if p['met'] else 'NOT met'}), |Δp| {p['abs_dp']:.1e}, "
                         f"resolution ceiling of the lung mask: Dice {or_nan(p['resolution_ceiling']):.4f}")
    if "book" in s:
        lines.append(f"  book rebuild ({s['book']['profile']}): cold {s['book']['cold_seconds']:.0f} s, cached "
                     f"{s['book']['cached_seconds']:.0f} s")
    hw = doc.get("hardware", {})
    lines.append(f"  hardware: {hw.get('cpu')} ({hw.get('cpu_count')} logical cores), {hw.get('threads')} threads, "
                 f"GPU {hw.get('gpu') or 'none'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``repro bench`` (also ``python -m reprolib.bench``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="repro bench", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


def add_arguments(ap) -> None:
    ap.add_argument("--quick", action="store_true", help="tiny inputs, one repeat, no book rebuild (seconds)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per job (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    ap.add_argument("--depths", type=int, nargs="+", default=[100, 300], help="DeCoVNet T values")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["jit", "channels_last"],
                    help="fast DeCoVNet variants besides eager (jit, channels_last, bf16, compile)")
    ap.add_argument("--pipeline-slices", type=int, default=300, help="slices of the predict-ct volume (1 mm)")
    ap.add_argument("--only", nargs="+", choices=sorted(JOBS), help="run only these jobs")
    ap.add_argument("--no-book", action="store_true", help="leave out the book rebuild")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: $REPRO_BENCH_JSON or "
                                                          "benchmarks/out/bench.json)")


def run_from_args(args) -> int:
    jobs = plan(quick=args.quick, threads=args.threads, device=args.device, depths=args.depths,
                variants=args.variants, repeats=args.repeats, pipeline_slices=args.pipeline_slices,
                book=not args.no_book)
    out = args.out
    if args.only:
        jobs = [j for j in jobs if j[0] in args.only]
        if out is None:  # the book reads the default file: never replace it with a partial run
            out = config.bench_json().with_name("bench-partial.json")
    run(jobs, out=out, quick=args.quick, threads=args.threads, device=args.device)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


# --------------------------------------------------------------------------- the Performance chapter
#: What the landing page and the report say instead of a quick benchmark's figure.
NOT_MEASURED = "not measured in this build (run make bench, then rebuild the book)"
#: The pipeline stages of :func:`job_pipeline`, in the order they run.
PIPELINE_STAGES = ("read", "preprocess", "unet", "decovnet_and_localisation")


def load_for_page(path: str | Path, quick_out: str | Path) -> tuple[dict[str, Any], str, bool]:
    """The benchmark document the Performance chapter shows: ``(doc, source, ran_here)``.

    ``path`` is read when it exists (``source`` is ``"full"``, or ``"quick"`` for a file written by
    ``repro bench --quick``); otherwise the quick benchmark runs here, writes ``quick_out`` and
    ``source`` is ``"quick"`` with ``ran_here`` true, printing nothing (the page states what it ran)."""
    doc = load(path)
    if doc is not None:
        return doc, ("quick" if doc.get("quick") else "full"), False
    doc = run(plan(quick=True), out=quick_out, quick=True, progress=False, echo=lambda line: None)
    return doc, "quick", True


def _rows(doc: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return [r for r in doc["rows"] if r["job"] == job]


def on_gpu(doc: dict[str, Any], job: str | None = None) -> bool:
    """Whether the network jobs of ``doc`` (or its ``job`` rows) ran on a CUDA device.

    A job's ``device`` parameter decides (``auto`` means CUDA where the hardware record names a
    GPU); jobs without one (preprocessing) and a GPU that was merely present do not count."""
    gpu = (doc.get("hardware") or {}).get("gpu")
    devices = [str(r.get("params", {}).get("device")) for r in doc["rows"]
               if (job is None or r["job"] == job) and "device" in r.get("params", {})]
    return bool(devices) and all(d.startswith("cuda") or (d == "auto" and bool(gpu)) for d in devices)


def gpu_name(doc: dict[str, Any]) -> str | None:
    """The GPU's name from the hardware record when the networks were measured on it, else ``None``."""
    return ((doc.get("hardware") or {}).get("gpu") or None) if on_gpu(doc) else None


def gpu_seconds_pipeline(doc: dict[str, Any]) -> float | None:
    """Seconds of the whole CT pipeline per volume measured on a GPU by a full benchmark, else
    ``None`` (no pipeline row, a CPU run, or a quick run: its tiny volume says nothing)."""
    r = _pipeline_row(doc)
    if doc.get("quick") or r is None or not on_gpu(doc, "pipeline"):
        return None
    return float(r["speeds"].get("fast", r["speeds"][r["baseline"]])["seconds"]["total"])


def device_label(doc: dict[str, Any], job: str) -> str:
    """Where ``job`` ran, for a sentence or a plot title: ``"CPU, 2 threads"`` or ``"GPU, <name>"``."""
    if on_gpu(doc, job):
        return f"GPU, {(doc.get('hardware') or {}).get('gpu') or 'unnamed'}"
    rows = _rows(doc, job)
    threads = (rows[-1].get("params", {}) if rows else {}).get("threads", (doc.get("hardware") or {}).get("threads"))
    return f"CPU, {threads} threads"


def hardware_phrase(doc: dict[str, Any]) -> str:
    """The machine in one phrase: CPU, logical cores, torch version, threads per job and GPU."""
    hw = doc.get("hardware") or {}
    return (f"{hw.get('cpu')} ({hw.get('cpu_count')} logical cores), torch {doc['packages'].get('torch')}, "
            f"{hw.get('threads')} threads per job; GPU: {hw.get('gpu') or 'none'}")


def sizes(doc: dict[str, Any]) -> dict[str, str]:
    """The input sizes every figure of ``doc`` was measured at, as short phrases (width × height):
    ``decovnet_slice`` (DeCoVNet slice, e.g. ``"224×336"``), ``unet_input`` and ``resnet_input``
    (a U-Net slice and a ResNet-50 image, ``"512×512"``), ``pre_shape`` and ``pipe_shape`` (volumes as
    width×height×slices), ``pre_spacing`` (their slice spacing) and ``pipe_slice`` (in-plane size of
    the pipeline's slices). Jobs missing from ``doc`` are left out."""
    out: dict[str, str] = {}
    dec = _rows(doc, "decovnet")
    if dec:
        out["decovnet_slice"] = "×".join(map(str, dec[-1]["input"][3:]))
    for job in ("unet", "resnet50"):
        for r in _rows(doc, job)[-1:]:
            out["unet_input" if job == "unet" else "resnet_input"] = f"{r['size']}×{r['size']}"
    for job, key in (("preprocess", "pre"), ("pipeline", "pipe")):
        for r in _rows(doc, job)[-1:]:
            out[f"{key}_shape"] = "×".join(map(str, r["shape"][::-1]))
            out[f"{key}_spacing"] = f"{r['spacing_mm'][0]:g} mm"
            out[f"{key}_slice"] = "×".join(map(str, r["shape"][1:][::-1]))
    return out


def headline_forward(doc: dict[str, Any], source: str) -> str:
    """DeCoVNet's forward pass at the largest T for other pages, with where and at what size it
    was measured; :data:`NOT_MEASURED` for a quick benchmark (its tiny input says nothing)."""
    if source == "quick" or "decovnet" not in doc.get("summary", {}):
        return NOT_MEASURED
    d = doc["summary"]["decovnet"]
    fast = (f"{d['fast_seconds']:.2f} s {d['fastest_exact_variant']}" if d["fastest_exact_variant"]
            else "no fast variant within tolerance")
    return (f"{d['eager_seconds']:.2f} s eager, {fast} ({device_label(doc, 'decovnet')}, "
            f"T = {d['T']} slices of {sizes(doc)['decovnet_slice']})")


def headline_pipeline(doc: dict[str, Any], source: str) -> str:
    """The whole CT pipeline per volume for other pages: reference and fast seconds, the number of
    slices and their size and where it ran; :data:`NOT_MEASURED` for a quick benchmark."""
    p = doc.get("summary", {}).get("pipeline")
    if source == "quick" or not p:
        return NOT_MEASURED
    fast = (f", {p['fast_seconds']:.1f} s fast (U-Net at {_wxh(p['fast_unet_size'])})"
            if "fast_seconds" in p and p["fast_unet_size"] else
            (f", {p['fast_seconds']:.1f} s fast" if "fast_seconds" in p else ""))
    return (f"{p['reference_seconds']:.1f} s reference{fast} for {p['slices_1mm']} slices of "
            f"{sizes(doc)['pipe_slice']} ({device_label(doc, 'pipeline')})")


def source_phrase(doc: dict[str, Any], source: str, path: str | Path, ran_here: bool,
                  build_commit: str | None = None) -> str:
    """Where the page's figures come from, as a Markdown phrase: the benchmark file by name (never
    its full path), when and at which commit it was written, or the quick run of this build."""
    name = Path(path).name
    if ran_here:
        return f"the quick benchmark this page ran itself, because no `{name}` was found"
    commit = (doc.get("git") or {}).get("commit") or "?"
    made = f"`{name}`, written by `repro bench{' --quick' if source == 'quick' else ''}` on {doc['created'][:10]} " \
           f"at commit `{commit[:12]}`"
    return made + ("" if commit == build_commit else f" (this book: `{(build_commit or '?')[:12]}`)")


def quick_banner(source: str, path: str | Path, ran_here: bool) -> str:
    """The warning shown above every figure of a quick benchmark (empty for a full one)."""
    if source != "quick":
        return ""
    why = (f"No benchmark JSON was found (`{Path(path).name}`, which `make bench` writes; `REPRO_BENCH_JSON` "
           "may name another file), so this page ran the *quick* benchmark itself" if ran_here else
           f"The benchmark JSON (`{Path(path).name}`) holds a *quick* run (`repro bench --quick`)")
    return (":::{admonition} Quick benchmark\n:class: warning\n" + why + ": tiny inputs, stated beside each "
            "figure, one repeat, no book rebuild. Its times describe nothing but the code path; the targets "
            "below apply to the full benchmark, and no figure of it reaches the landing page, the report or "
            "the claims ledger. Run `make bench`, then rebuild the book.\n:::")


def gpu_note(doc: dict[str, Any]) -> str:
    """Whether the figures above are GPU figures, as a Markdown sentence for the page's GPU section."""
    if on_gpu(doc):
        return "The network and pipeline figures above were measured on it."
    return ("Every figure above is a CPU figure. `repro bench --device cuda` on a machine with a GPU "
            "measures the same jobs there, and this page then names the GPU.")


def _eager_first(seconds: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(seconds.items(), key=lambda kv: kv[0] != "eager")


def decovnet_frame(doc: dict[str, Any]):
    """One row per DeCoVNet depth and variant: T, variant, median seconds, ratio to eager, GMAC,
    achieved GFLOP/s (2 FLOP per MAC), max |Δ logit| to eager fp32, peak RSS and threads."""
    import pandas as pd

    rows = [{"T": r["T"], "variant": v, "seconds": t, "× eager": t / r["seconds"]["eager"], "GMAC": r["macs"] / 1e9,
             "GFLOP/s": _gflops(r["macs"], t), "max |Δ logit|": r["max_abs_diff"].get(v, 0.0),
             "peak RSS (MB)": r.get("peak_rss_MB"), "threads": r.get("params", {}).get("threads")}
            for r in _rows(doc, "decovnet") for v, t in _eager_first(r["seconds"])]
    return pd.DataFrame(rows, columns=["T", "variant", "seconds", "× eager", "GMAC", "GFLOP/s", "max |Δ logit|",
                                       "peak RSS (MB)", "threads"])


#: Display precision of the DeCoVNet table (the page's sentences use the same).
DECOVNET_FORMATS = {"seconds": "{:.2f}", "× eager": "{:.2f}", "GMAC": "{:.1f}", "GFLOP/s": "{:.1f}",
                    "max |Δ logit|": "{:.1e}", "peak RSS (MB)": "{:.0f}"}


def decovnet_table(doc: dict[str, Any]):
    """:func:`decovnet_frame` for the page: indexed by (T, variant), each column at its precision."""
    return book_format_columns(decovnet_frame(doc), DECOVNET_FORMATS).set_index(["T", "variant"])


def nets_frame(doc: dict[str, Any]):
    """One row per network (U-Net, ResNet-50) and variant: input, seconds per item, items per
    second, GMAC and GFLOP/s per item, max |Δ| to eager and the batch."""
    import pandas as pd

    names = {"unet": "lung U-Net", "resnet50": "CXR ResNet-50"}
    rows = [{"network": names[r["job"]], "input": f"{r['size']}×{r['size']} {r['per']}", "variant": v,
             "seconds per item": t, "items/s": 1 / t, "GMAC": r["macs"] / 1e9, "GFLOP/s": _gflops(r["macs"], t),
             "max |Δ|": r["max_abs_diff"].get(v, 0.0), "batch": r["batch"]}
            for r in doc["rows"] if r["job"] in names for v, t in _eager_first(r["seconds"])]
    return pd.DataFrame(rows, columns=["network", "input", "variant", "seconds per item", "items/s", "GMAC",
                                       "GFLOP/s", "max |Δ|", "batch"])


#: Display precision of the U-Net / ResNet-50 table.
NETS_FORMATS = {"seconds per item": "{:.4f}", "items/s": "{:.1f}", "GMAC": "{:.2f}", "GFLOP/s": "{:.1f}",
                "max |Δ|": "{:.1e}"}


def nets_table(doc: dict[str, Any]):
    """:func:`nets_frame` for the page: indexed by (network, variant), each column at its precision."""
    return book_format_columns(nets_frame(doc), NETS_FORMATS).set_index(["network", "variant"])


def preprocess_verdict(doc: dict[str, Any]) -> str:
    """The preprocessing targets, met or not: ``"time met, memory not met"``."""
    p = doc["summary"]["preprocess"]
    return f"time {'met' if p['met_seconds'] else 'not met'}, memory {'met' if p['met_rss'] else 'not met'}"


def pipeline_stages(doc: dict[str, Any]):
    """Seconds of each stage of the (last) pipeline row: a DataFrame, one row per speed (the
    baseline first), the stages of :data:`PIPELINE_STAGES` as columns, in pipeline order."""
    import pandas as pd

    r = _pipeline_row(doc)
    if r is None:
        return pd.DataFrame(columns=list(PIPELINE_STAGES), dtype=float)
    runs = r["speeds"]
    order = _speed_order(r)
    return pd.DataFrame([[float(runs[sp]["seconds"][k]) for k in PIPELINE_STAGES] for sp in order],
                        index=pd.Index(order, name="speed"), columns=list(PIPELINE_STAGES))


def _pipeline_row(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The last ``pipeline`` row of ``doc``, or ``None``."""
    rows = _rows(doc, "pipeline")
    return rows[-1] if rows else None


def _wxh(hw: Sequence[int]) -> str:
    """An (h, w) size as the page writes it, width × height: ``"336×224"``."""
    return "×".join(map(str, list(hw)[::-1]))


def _speed_order(row: dict[str, Any]) -> list[str]:
    """The speeds of a pipeline row, its baseline first (the JSON file stores them sorted)."""
    return [row["baseline"]] + sorted(k for k in row["speeds"] if k != row["baseline"])


def pipeline_frame(doc: dict[str, Any]):
    """The predict-ct comparison, one row per speed: total seconds, ratio to the baseline, U-Net
    input, U-Net seconds and GFLOP/s, share of the measured matmul peak, bf16, |Δp(COVID)| against
    the baseline run and the :func:`resolution_ceiling` of a speed that resizes the slices."""
    import pandas as pd

    r = _pipeline_row(doc)
    cols = ["seconds", "× reference", "U-Net input", "U-Net (s)", "U-Net GFLOP/s", "% of peak", "bf16",
            "|Δp| vs reference", "mask Dice ceiling"]
    if r is None:
        return pd.DataFrame(columns=cols)
    base = r["speeds"][r["baseline"]]["seconds"]["total"]
    rows = []
    for sp in _speed_order(r):
        run_ = r["speeds"][sp]
        side = run_["unet"]["size"] or list(r["shape_1mm"][1:])
        rows.append([run_["seconds"]["total"], run_["seconds"]["total"] / base, _wxh(side),
                     run_["seconds"]["unet"], run_["unet_gflops"], 100 * run_["unet_gflops"] / r["peak_gflops"],
                     "yes" if run_["unet"]["bf16"] else "no", run_["abs_dp_vs_" + r["baseline"]],
                     run_.get("resolution_ceiling")])
    return pd.DataFrame(rows, index=pd.Index(_speed_order(r), name="speed"), columns=cols)


def pipeline_table(doc: dict[str, Any]):
    """:func:`pipeline_frame` for the page."""
    return book_format_columns(pipeline_frame(doc), {
        "seconds": "{:.1f}", "× reference": "{:.2f}", "U-Net (s)": "{:.1f}", "U-Net GFLOP/s": "{:.1f}",
        "% of peak": "{:.0f}", "|Δp| vs reference": "{:.1e}", "mask Dice ceiling": "{:.4f}"})


def build_ceilings(work_dir: str | Path, side: int = 256) -> list[float]:
    """:func:`resolution_ceiling` at ``side``² of the lung pseudo-label of every volume this build
    preprocessed (notebook 02's verified cache, ``work_dir/preprocessed/*.npz``) whose slices are
    larger than that; ``[]`` when there is none (phantoms are smaller)."""
    from . import cohort

    out = []
    for npz in sorted((Path(work_dir) / "preprocessed").glob("*.npz")):
        mask = cohort.load_preprocessed(npz).get("lung_mask")
        if mask is not None and mask.any() and max(mask.shape[1:]) > side:
            out.append(resolution_ceiling(mask, (side, side)))
    return out


def ceiling_phrase(doc: dict[str, Any], build: Sequence[float] = ()) -> str:
    """What the fast path's resizing can cost a lung mask (Markdown): the pipeline summary's
    :func:`resolution_ceiling` of the synthetic chest and, from ``build`` (:func:`build_ceilings`),
    the range over this build's real volumes; or why there is nothing to bound."""
    p = doc.get("summary", {}).get("pipeline") or {}
    if p.get("resolution_ceiling") is None:
        return ("at this benchmark's slice size the fast path does not resize the slices, so it "
                "cannot cost a mask anything")
    side = _wxh(p["fast_unet_size"])
    real = (f"; for the lung pseudo-labels of this build's {len(build)} real CT volumes it is "
            f"{min(build):.4f} to {max(build):.4f}" if build else "; this build has no real CT volume to measure it on")
    return (f"the synthetic chest's lung pseudo-label, taken to {side} px and back the way the fast path resizes "
            f"the U-Net's input and output, keeps Dice {p['resolution_ceiling']:.4f} with itself, the most any "
            f"{side}-px mask of these lungs can agree with a full-size one{real} (how much of that a trained "
            "paper-size U-Net keeps cannot be measured here: no such network is available offline)")


def own_models_phrase(profile: str, work_dir: str | Path | None = None, results_dir: str | Path | None = None,
                      slice_hw: tuple[int, int] = (512, 512)) -> str:
    """What ``--speed fast`` changes for the U-Net this build trained (Markdown): nothing where its
    working size is within the fast cap and bf16 is not native, else the size and precision it uses."""
    from . import predict
    from .errors import InputError

    try:
        card = predict.ct_card(profile, work_dir, results_dir)
    except InputError:
        return "this build has no trained CT models to compare"
    exact = predict.unet_settings(card.unet_size, slice_hw, "exact")
    fast = predict.unet_settings(card.unet_size, slice_hw, "fast")
    side = _wxh(exact["size"] or slice_hw)
    if fast["size"] == exact["size"] and not fast["bf16"]:
        return (f"the U-Net of this build works at {side} px, within the fast path's cap of "
                f"{predict.FAST_UNET_SIDE} px, and this machine has no native bf16: for the book's own models "
                "`--speed fast` computes the same mask as `--speed exact`")
    fside = _wxh(fast["size"] or slice_hw)
    return (f"for the book's own models `--speed fast` runs the U-Net at {fside} px instead of {side}"
            f"{' in bf16' if fast['bf16'] else ''}: compare its masks with `--speed exact` before relying on them")


def rebuild_frame(doc: dict[str, Any]):
    """The book's rebuild, rows ``cold`` and ``cached``: notebook seconds, HTML seconds, total and
    notebooks executed; missing values (NaN) when the benchmark did not measure it."""
    import pandas as pd

    cols = ["notebooks (s)", "HTML (s)", "total (s)", "notebooks executed"]
    measured = [r for r in _rows(doc, "book") if "cold_seconds" in r]
    if not measured:
        return pd.DataFrame(float("nan"), index=pd.Index(["cold", "cached"], name="build"), columns=cols)
    b = measured[-1]
    return pd.DataFrame([[b["recorded"]["cold_seconds"], b["html_cold_seconds"], b["cold_seconds"],
                          b["recorded"]["notebooks"]],
                         [b["cached_run_seconds"], b["html_cached_seconds"], b["cached_seconds"],
                          b["cached_executed"]]], index=pd.Index(["cold", "cached"], name="build"), columns=cols)


def rebuild_table(doc: dict[str, Any]):
    """:func:`rebuild_frame` for the page: seconds to 0.1 s, whole notebooks."""
    return book_format_columns(rebuild_frame(doc), {"notebooks (s)": "{:.1f}", "HTML (s)": "{:.1f}",
                                               "total (s)": "{:.1f}", "notebooks executed": "{:.0f}"})


def rebuild_phrase(doc: dict[str, Any]) -> str:
    """Which book the rebuild was measured on (Markdown), or why it was not."""
    measured = [r for r in _rows(doc, "book") if "cold_seconds" in r]
    if measured:
        b = measured[-1]
        return (f"measured on the `{b['profile']}` book, {b['recorded']['notebooks']} notebooks, of which the "
                f"cached `repro run` skipped {b['cached_skipped']}")
    why = next((r["skipped"] for r in _rows(doc, "book") if "skipped" in r), "quick run or `--no-book`")
    return f"not measured by this benchmark ({why})"
