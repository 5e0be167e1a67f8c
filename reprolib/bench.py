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
    from .volume import CTVolume

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
    from . import cohort, evaluate, io, localize, models, predict, preprocess, scans, segment, train, volume  # noqa: F401

    torch.manual_seed(0)
    unet = models.UNet2D().eval().to(dev)
    net = models.DeCoVNet(proclf_grids=models.proclf_grids_for(tuple(hw))).eval().to(dev)
    card = predict.CTModelCard(unet_path="-", unet_sha256="-", unet_size=None, decovnet_path="-", decovnet_sha256="-",
                               hw=tuple(int(v) for v in hw), z_step=int(z_step), fc_init="official")
    runs: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    vol = volume.CTVolume(hu=np.load(volume_npy), spacing_mm=tuple(map(float, spacing_mm)))
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
                           "unet_macs": macs, "unet_gflops": gflops(macs, out["seconds"]["unet"]),
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
    from . import bookbuild, runner

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
        bookbuild.prepare_book(profile, site)
        code = f"import sys; from pathlib import Path; from reprolib import bookbuild; sys.exit(bookbuild.build_book(Path({str(site)!r})))"
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
def gflops(macs: float, seconds: float) -> float:
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
    r = pipeline_row(doc)
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
                         f"{gflops(r['macs'], t):6.1f} GFLOP/s  max|diff| {r['max_abs_diff'].get(v, 0.0):.1e}  "
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


def pipeline_row(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The last ``pipeline`` row of ``doc``, or ``None``."""
    rows = job_rows(doc, "pipeline")
    return rows[-1] if rows else None


def job_rows(doc: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return [r for r in doc["rows"] if r["job"] == job]
