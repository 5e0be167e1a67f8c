"""Cohort-level CT orchestration: preprocess every volume of a profile once.

:func:`preprocess_cohort` reads each case of :func:`reprolib.data.ct_cases`,
runs :func:`reprolib.preprocess.cached_preprocess` (FOV → 1 mm → window, plus
the pseudo-label lung mask) and records, per volume, the input geometry, the
time and the peak memory of the step. The per-volume results are cached as
verified ``.npz`` files; :func:`load_preprocessed` reads them back for the
later notebooks.
"""
from __future__ import annotations

import json
import time
import tracemalloc
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
                      index_path: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Preprocess every case; return one row per volume and write a JSON index.

    Columns: the case's identity, input geometry (:func:`describe_volume`), ``T0``
    (slices at 1 mm), ``lung_ml``, ``qc_ok``, ``flags``, ``seconds`` (read + preprocess),
    ``peak_MB`` (peak traced NumPy memory during the step), ``copies`` (peak / input
    size), ``cache`` (hit/miss) and ``npz`` (cache file).
    """
    from tqdm.auto import tqdm

    from . import io, preprocess

    rows = []
    for case in tqdm(list(cases.itertuples(index=False)), desc="preprocess", disable=not progress):
        tracemalloc.start()
        t0 = time.perf_counter()
        vol = io.read_ct(case.path)
        res, key = preprocess.cached_preprocess(vol, cache_dir, params)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        qc = res.get("qc") or {}
        rows.append({
            **case._asdict(), **describe_volume(vol),
            "T0": int(res["ct_u8"].shape[0]),
            "out_spacing_z_mm": float(res["spacing_mm"][0]),
            "lung_ml": float(qc.get("volume_ml", np.nan)) if qc else np.nan,
            "qc_ok": bool(qc.get("ok", False)) if qc else False,
            "flags": "; ".join(res.get("flags", [])) or "-",
            "seconds": seconds, "peak_MB": peak / 1e6, "copies": peak / max(vol.hu.nbytes, 1),
            "cache": res.get("cache_status", "-"), "npz": str(Path(cache_dir) / f"{key}.npz"),
        })
        del vol, res
    table = pd.DataFrame(rows)
    if index_path is not None:
        atomic_write_text(Path(index_path), table.to_json(orient="records", indent=1))
    return table


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
