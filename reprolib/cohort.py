"""Cohort-level CT orchestration: preprocess every volume of a profile once.

:func:`preprocess_cohort` reads each case of :func:`reprolib.data.ct_cases`,
runs :func:`reprolib.preprocess.cached_preprocess` (FOV → 1 mm → window, plus
the pseudo-label lung mask) and records, per volume, the input geometry, the
time and the peak memory. The per-volume results are cached as verified
``.npz`` files; :func:`load_preprocessed` reads them back for the later
notebooks.

Memory is measured with :mod:`tracemalloc` (:mod:`reprolib.memtrace`) in the
unit of the requirement: one *copy* = the volume a step works on stored as
int16 (native S×H×W for FOV and pseudo-label, 1 mm T0×H×W for the others).
Two figures per volume: the largest **per-step** peak above the step's inputs
(``step_copies``; target at most 3) and the peak of the **whole call**, read
plus preprocessing (``peak_MB``, ``copies``). Per-step figures are measured
when a volume is computed and stored in its cache file; a cache hit reports
the stored figures, and the largest volume is always re-measured with the
current code (``memory_source``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .book import atomic_write_text


def describe_volume(vol) -> dict[str, Any]:
    """Geometry and intensity summary of a :class:`reprolib.io.CTVolume`."""
    hu = vol.hu
    lo, p1, p50, p99, hi = np.percentile(hu[:: max(1, hu.shape[0] // 16)], [0, 1, 50, 99, 100])
    sz, sy, sx = vol.spacing_mm
    return {"shape": "×".join(map(str, hu.shape)), "dtype": str(hu.dtype), "is_hu": bool(vol.is_hu),
            "spacing_mm": "unknown" if not vol.spacing_known else f"{sz:.2f} × {sy:.3f} × {sx:.3f}",
            "min": float(lo), "p1": float(p1), "median": float(p50), "p99": float(p99), "max": float(hi),
            "MB": round(hu.nbytes / 1e6, 1)}


def preprocess_cohort(cases: pd.DataFrame, cache_dir: str | Path, params: dict[str, Any] | None = None,
                      index_path: str | Path | None = None, progress: bool = True,
                      remeasure_largest: bool = True) -> pd.DataFrame:
    """Preprocess every case; return one row per volume and write a JSON index.

    Columns: the case's identity, input geometry (:func:`describe_volume`), ``T0``
    (slices at 1 mm), ``lung_ml``, ``qc_ok``, ``flags``, ``seconds`` (read + preprocess),
    ``voxels`` (of the larger of the native and 1 mm volumes), ``peak_MB`` (peak traced
    NumPy memory of the whole call: read + preprocess, or read +
    cache load on a hit), ``copies`` (that peak in int16 copies of the larger of the native
    and 1 mm volumes), ``step_copies`` and ``step_max`` (the largest per-step peak above
    the step's inputs, in copies of that step's working volume, and its step; NaN / "-"
    when unknown), ``preprocess_MB`` and ``preprocess_copies`` (peak of the traced
    :func:`reprolib.preprocess.preprocess_ct` call alone, above its input), ``memory_steps`` (per-step records, :func:`reprolib.preprocess.memory_record`),
    ``memory_source`` ("this run", "cache", "re-measured" or "-"), ``cache`` (hit/miss)
    and ``npz`` (cache file).

    With ``remeasure_largest`` (default) the HU volume with the most voxels is
    preprocessed once more, uncached, when its figures came from the cache, so that the
    largest volume's per-step peaks always describe the current code.
    """
    from tqdm.auto import tqdm

    from . import io, preprocess
    from .memtrace import MemoryTrace, copy_bytes

    rows = []
    for case in tqdm(list(cases.itertuples(index=False)), desc="preprocess", disable=not progress):
        with MemoryTrace() as whole:
            t0 = time.perf_counter()
            vol = io.read_ct(case.path)
            res, key = preprocess.cached_preprocess(vol, cache_dir, params, measure_memory=True)
            seconds = time.perf_counter() - t0
        t_out = int(res["ct_u8"].shape[0])
        unit = max(copy_bytes(vol.hu.shape), copy_bytes((t_out,) + vol.hu.shape[1:]))
        qc = res.get("qc") or {}
        mem = res.get("memory") or {}
        rows.append({
            **case._asdict(), **describe_volume(vol),
            "T0": t_out,
            "out_spacing_z_mm": float(res["spacing_mm"][0]),
            "lung_ml": float(qc.get("volume_ml", np.nan)) if qc else np.nan,
            "qc_ok": bool(qc.get("ok", False)) if qc else False,
            "flags": "; ".join(res.get("flags", [])) or "-",
            "voxels": unit // 2,
            "seconds": seconds, "peak_MB": whole.peak_bytes / 1e6, "copies": whole.peak_bytes / max(unit, 1),
            **_step_columns(mem, "this run" if res.get("cache_status") != "hit" else "cache"),
            "cache": res.get("cache_status", "-"), "npz": str(Path(cache_dir) / f"{key}.npz"),
        })
        del vol, res
    table = pd.DataFrame(rows)
    if remeasure_largest and len(table) and table.is_hu.any():
        i = int(table.voxels.where(table.is_hu, -1).idxmax())
        if table.at[i, "memory_source"] != "this run":
            vol = io.read_ct(table.at[i, "path"])
            mem = preprocess.measured_preprocess(vol, params)["memory"]
            for k, v in _step_columns(mem, "re-measured").items():
                table.at[i, k] = v
            del vol
    if index_path is not None:
        atomic_write_text(Path(index_path), table.to_json(orient="records", indent=1))
    return table


def _step_columns(mem: dict[str, Any], source: str) -> dict[str, Any]:
    """The per-step columns of :func:`preprocess_cohort` from a ``memory`` record."""
    steps = list(mem.get("steps") or [])
    return {"step_copies": float(mem.get("max_step_copies", np.nan)) if steps else np.nan,
            "step_max": mem.get("max_step", "-") if steps else "-",
            "preprocess_MB": float(mem.get("peak_MB", np.nan)) if steps else np.nan,
            "preprocess_copies": float(mem.get("copies", np.nan)) if steps else np.nan,
            "memory_steps": steps, "memory_source": source if steps else "-"}


def memory_summary(table: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Memory figures for notebook 02 from a :func:`preprocess_cohort` table.

    Picks the HU volume with the most voxels (native or 1 mm) that has per-step
    figures and returns ``(summary, steps)``: ``steps`` has one row per step (step,
    working shape, seconds, peak MB above the step's inputs, copies); ``summary`` holds
    ``case_id``, ``shape_native``, ``shape_1mm``, ``copy_mb_native`` and ``copy_mb_1mm``
    (one int16 copy), ``max_step_copies`` and ``max_step``, ``target_copies``,
    ``target_met`` ("met" / "not met"), ``preprocess_MB`` and ``preprocess_copies``
    (the whole :func:`reprolib.preprocess.preprocess_ct` call), ``source`` (where the
    figures come from) and ``cohort_max_step_copies`` (over every volume with figures).
    Empty values (NaN, "-") when no volume has figures.
    """
    from .memtrace import TARGET_COPIES, copy_bytes

    cols = ["step", "shape", "seconds", "peak_MB", "copies"]
    has = table["memory_steps"].map(lambda v: isinstance(v, list) and len(v) > 0) if len(table) else []
    have = table[has] if len(table) else table
    if not len(have):
        empty = {"case_id": "-", "shape_native": "-", "shape_1mm": "-", "copy_mb_native": np.nan,
                 "copy_mb_1mm": np.nan, "max_step_copies": np.nan, "max_step": "-",
                 "target_copies": TARGET_COPIES, "target_met": "not measured", "preprocess_MB": np.nan,
                 "preprocess_copies": np.nan, "source": "-", "cohort_max_step_copies": np.nan}
        return empty, pd.DataFrame(columns=cols)
    row = have.loc[have["voxels"].idxmax()]
    steps = pd.DataFrame(row["memory_steps"])[cols]
    native = tuple(int(v) for v in row["shape"].split("×"))
    one_mm = (int(row["T0"]),) + native[1:]
    worst = steps.loc[steps.copies.idxmax()]
    summary = {"case_id": row["case_id"], "shape_native": "×".join(map(str, native)),
               "shape_1mm": "×".join(map(str, one_mm)),
               "copy_mb_native": copy_bytes(native) / 1e6, "copy_mb_1mm": copy_bytes(one_mm) / 1e6,
               "max_step_copies": float(worst.copies), "max_step": str(worst.step),
               "target_copies": TARGET_COPIES,
               "target_met": "met" if float(worst.copies) <= TARGET_COPIES else "not met",
               "preprocess_MB": float(row["preprocess_MB"]), "preprocess_copies": float(row["preprocess_copies"]),
               "source": str(row["memory_source"]),
               "cohort_max_step_copies": float(have["step_copies"].max())}
    return summary, steps


def load_index(index_path: str | Path) -> pd.DataFrame:
    """The table written by :func:`preprocess_cohort`."""
    return pd.DataFrame(json.loads(Path(index_path).read_text()))


def load_preprocessed(npz: str | Path) -> dict[str, Any]:
    """A verified preprocessing result (``ct_u8`` (T0,H,W) uint8, ``lung_mask`` or None, ...).

    The file's key and every array's sha256 are checked; a missing or corrupt file raises
    :class:`reprolib.errors.InputError` naming it (rerun notebook 02 to rebuild it).
    """
    from . import preprocess
    from .errors import InputError

    npz = Path(npz)
    res = preprocess._load_cached(npz, npz.stem)
    if res is None:
        raise InputError(npz, "missing or corrupt preprocessing cache file; rerun notebook 02")
    return res


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary arrays (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)
