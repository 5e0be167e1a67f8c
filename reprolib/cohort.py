"""Cohort-level CT orchestration: preprocess every volume of a profile once.

:func:`preprocess_cohort` reads each case of :func:`reprolib.data.ct_cases`,
runs :func:`reprolib.preprocess_cache.cached_preprocess` (FOV → 1 mm → window, plus
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
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import crop, evaluate, preprocess_cache
from .book import atomic_write_text


def describe_volume(vol) -> dict[str, Any]:
    """Geometry and intensity summary of a :class:`reprolib.volume.CTVolume`."""
    hu = vol.hu
    lo, p1, p50, p99, hi = np.percentile(hu[:: max(1, hu.shape[0] // 16)], [0, 1, 50, 99, 100])
    sz, sy, sx = vol.spacing_mm
    return {"shape": "×".join(map(str, hu.shape)), "dtype": str(hu.dtype), "is_hu": bool(vol.is_hu),
            "spacing_mm": "unknown" if not vol.spacing_known else f"{sz:.2f} × {sy:.3f} × {sx:.3f}",
            "min": float(lo), "p1": float(p1), "median": float(p50), "p99": float(p99), "max": float(hi),
            "MB": round(hu.nbytes / 1e6, 1)}


def _read_kwargs(case: Any) -> dict[str, Any]:
    """Reader options a case row carries: ``is_hu=False`` where its adapter says the volume is
    not in Hounsfield units (column ``hu`` False, e.g. COVID-19-CT-Seg's Radiopaedia cases)."""
    hu = getattr(case, "hu", None)
    return {"is_hu": False} if isinstance(hu, (bool, np.bool_)) and not hu else {}


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

    from . import io, preprocess, preprocess_cache
    from .memtrace import MemoryTrace, copy_bytes

    rows = []
    for case in tqdm(list(cases.itertuples(index=False)), desc="preprocess", disable=not progress):
        with MemoryTrace() as whole:
            t0 = time.perf_counter()
            vol = io.read_ct(case.path, **_read_kwargs(case))
            res, key = preprocess_cache.cached_preprocess(vol, cache_dir, params, measure_memory=True)
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
    from .errors import InputError

    npz = Path(npz)
    res = preprocess_cache.load_cached(npz, npz.stem)
    if res is None:
        raise InputError(npz, "missing or corrupt preprocessing cache file; rerun notebook 02")
    return res


# ------------------------------------------------------------ classifier cohorts


def classifier_input(ct_u8: np.ndarray, mask: np.ndarray, hw: tuple[int, int] = (224, 336),
                     z_step: int = 1) -> np.ndarray:
    """DeCoVNet / 2DClfNet input of one preprocessed volume.

    Crops CT and lung mask to the mask's bounding box, resizes in-plane to ``hw``
    (:func:`reprolib.crop.make_decovnet_input`) and keeps every ``z_step``-th
    1 mm slice (``z_step=1``: the method as specified; larger steps are a stated
    CPU-budget setting of a profile).

    Parameters
    ----------
    ct_u8 : (T0, H, W) uint8 windowed CT at 1 mm
    mask : (T0, H, W) {0, 1} lung mask

    Returns
    -------
    (2, ceil(T / z_step), hw[0], hw[1]) float32: CT/255 in [0, 1], mask in {0, 1}.
    """

    if int(z_step) < 1:
        raise ValueError(f"z_step must be >= 1, got {z_step!r}")
    x = crop.make_decovnet_input(ct_u8, mask, tuple(hw))
    return np.ascontiguousarray(x[:, :: int(z_step)])


def _phantom_case(i: int, job: dict[str, Any]) -> tuple[np.ndarray, int, dict[str, Any]]:
    """One case of :func:`synthetic_classifier_cohort` (module level so that it pickles)."""
    from . import phantoms, preprocess
    from .volume import CTVolume

    t0 = time.perf_counter()
    label = i % 2
    finding = "covid" if label else ("clear" if (i // 2) % 2 == 0 else "non_covid")
    ph = phantoms.ct_phantom(10_000 * (job["seed"] + 1) + i, label, job["shape"], job["spacing_mm"], finding,
                             finding_scale=job["finding_scale"])
    vol = CTVolume(hu=np.array(ph.hu), spacing_mm=ph.spacing_mm, source=ph.case_id)
    res = preprocess.preprocess_ct(vol, **job["params"])
    x = classifier_input(res["ct_u8"], res["lung_mask"], job["hw"], job["z_step"])
    lesion_1mm = preprocess.resample_mask_z(np.asarray(ph.lesion_mask), res["z_factor"])
    _, _, bbox = crop.crop_to_mask(res["ct_u8"], res["lung_mask"])
    sl = tuple(slice(a, b) for a, b in bbox)
    lesion = crop.resize_inplane(lesion_1mm[sl], job["hw"], order=0)
    lesion = np.ascontiguousarray(lesion[:: job["z_step"]])
    voxel_ml = float(np.prod(ph.spacing_mm)) / 1000.0
    row = {"case_id": ph.case_id, "label": label, "finding": ph.finding, "finding_detail": ph.finding_detail,
           "T": int(x.shape[1]), "lesion_ml": float(np.asarray(ph.lesion_mask).sum()) * voxel_ml,
           "seconds": time.perf_counter() - t0, "lesion": lesion,
           **full_grid_fields(res["lung_mask"], bbox, res["z_factor"], res["n_slices_in"])}
    return x, label, row


def full_grid_fields(mask: np.ndarray, bbox: Any, z_factor: float, n_slices_in: int) -> dict[str, Any]:
    """Table fields that map a classifier input back to its 1 mm volume and scanner slices.

    ``lung_full``: the (T0, H, W) {0, 1} lung mask on the 1 mm grid, bit-packed
    (:func:`unpack_mask` restores it; the localisation chapter computes the 3DCC response
    on it); ``lung_full_shape``; ``bbox``: the crop box ((z0, z1), (y0, y1), (x0, x1));
    ``z_factor``: 1 mm slices per scanner slice; ``n_slices_in``: scanner slices.
    """
    mask = np.asarray(mask)
    return {"lung_full": np.packbits(mask.astype(bool), axis=None), "lung_full_shape": [int(v) for v in mask.shape],
            "bbox": [[int(a), int(b)] for a, b in bbox], "z_factor": float(z_factor), "n_slices_in": int(n_slices_in)}


def unpack_mask(packed: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of the packing in :func:`full_grid_fields`: (shape) uint8 in {0, 1}."""
    shape = tuple(int(v) for v in shape)
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), count=int(np.prod(shape))).reshape(shape)


def synthetic_classifier_cohort(n: int, seed: int = 0, *, shape: tuple[int, int, int] = (48, 128, 128),
                                spacing_mm: tuple[float, float, float] = (2.5, 1.4, 1.4),
                                finding_scale: float = 1.0, hw: tuple[int, int] = (64, 96), z_step: int = 1,
                                preprocess_params: dict[str, Any] | None = None, progress: bool = True,
                                workers: int | None = None) -> tuple[list[tuple[np.ndarray, int, str]], pd.DataFrame]:
    """Phantom volumes for training and testing the classifiers, built in memory.

    Case ``i`` is ``phantoms.ct_phantom(seed=10_000·(seed+1) + i)`` (disjoint from the
    phantoms of notebook 01); labels alternate COVID / negative, negatives alternate
    clear / non-COVID finding. Each volume goes through
    :func:`reprolib.preprocess.preprocess_ct` and its pseudo-label lung mask into
    :func:`classifier_input`. The lesion masks (resampled to 1 mm like the CT, cropped
    and resized like the input) are kept for the localisation chapter. ``workers`` > 1
    builds cases in that many forked processes (same result, case order kept).

    Returns
    -------
    items : list of ``(x (2, T, h, w) float32, label, case_id)``
    table : one row per case: ``case_id``, ``label``, ``finding``, ``finding_detail``,
        ``T``, ``lesion_ml``, ``seconds``, and ``lesion`` ((T, h, w) uint8 lesion mask
        in the input's grid).
    """
    from tqdm.auto import tqdm

    job = dict(seed=int(seed), shape=tuple(shape), spacing_mm=tuple(spacing_mm), finding_scale=float(finding_scale),
               hw=tuple(hw), z_step=int(z_step), params=dict(preprocess_params or {}))
    workers = max(1, min(int(workers or 1), int(n)))
    items, rows = [], []
    if workers == 1:
        results = (_phantom_case(i, job) for i in range(int(n)))
        pool = None
    else:  # processes: phantom generation and preprocessing are single-threaded NumPy
        import concurrent.futures as cf
        import multiprocessing as mp

        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
        results = pool.map(_phantom_case, range(int(n)), [job] * int(n), chunksize=4)
    try:
        for x, label, row in tqdm(results, total=int(n), desc="phantoms", disable=not progress):
            items.append((x, label, row["case_id"]))
            rows.append(row)
    finally:
        if pool is not None:
            pool.shutdown()
    return items, pd.DataFrame(rows)


def patient_folds(groups: "list[str] | np.ndarray", labels: "list[int] | np.ndarray", k: int | None = None,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-level cross-validation folds ``[(train_idx, test_idx), ...]``.

    ``k=None`` (or ``k`` ≥ the number of patients): leave-one-patient-out. Otherwise
    scikit-learn's ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)``. No
    patient is ever on both sides of a fold; every index is tested exactly once.
    """
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

    groups = np.asarray(groups)
    labels = np.asarray(labels)
    if len(groups) != len(labels):
        raise ValueError(f"groups ({len(groups)}) and labels ({len(labels)}) differ in length")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"need at least 2 patients for cross-validation, got {n_groups}")
    if k is None or k >= n_groups:
        splitter = LeaveOneGroupOut()
        return [(tr, te) for tr, te in splitter.split(labels, labels, groups)]
    splitter = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels, groups)]


def real_classifier_cohort(index: pd.DataFrame, unet: Any, hw: tuple[int, int] = (224, 336), z_step: int = 1,
                           unet_size: tuple[int, int] | None = None,
                           progress: bool = True) -> tuple[list[tuple[np.ndarray, int, str]], pd.DataFrame]:
    """Classifier inputs of the preprocessed volumes of notebook 02, with U-Net lung masks.

    Every row of ``index`` (:func:`load_index`) is loaded (:func:`load_preprocessed`),
    segmented slice by slice with ``unet`` (:func:`reprolib.segment.segment_volume`,
    in-plane size ``unet_size``) and turned into :func:`classifier_input`. Label 1 =
    ``covid19``, 0 = anything else. Volumes whose U-Net mask is empty are skipped and
    listed in the table with ``used=False``.

    Returns
    -------
    items : list of ``(x (2, T, h, w) float32, label, case_id)`` (used volumes only)
    table : ``case_id``, ``group``, ``label``, ``source_label``, ``T``, ``mask_ml``,
        ``seconds_unet``, ``used``, ``note``.
    """
    from tqdm.auto import tqdm

    from . import segment  # torch: cohort itself stays importable without it


    items, rows = [], []
    for row in tqdm(list(index.itertuples(index=False)), desc="U-Net masks", disable=not progress):
        pre = load_preprocessed(row.npz)
        t0 = time.perf_counter()
        mask = segment.segment_volume(unet, pre["ct_u8"], batch=8, size=unet_size)
        seconds = time.perf_counter() - t0
        label = int(row.target)
        dz, dy, dx = (float(v) for v in pre["spacing_mm"])
        mask_ml = float(mask.sum()) * dz * dy * dx / 1000.0 if np.isfinite(dz * dy * dx) else float("nan")
        r = {"case_id": row.case_id, "group": row.group, "label": label, "source_label": row.label,
             "mask_ml": mask_ml, "seconds_unet": seconds, "used": False, "note": "-", "T": 0}
        if not mask.any():
            r["note"] = "empty U-Net mask: skipped"
        else:
            x = classifier_input(pre["ct_u8"], mask, hw, z_step)
            if x.shape[1] < 2:
                r["note"] = f"only {x.shape[1]} slice(s) after cropping: skipped"
            else:
                items.append((x, label, row.case_id))
                _, _, bbox = crop.crop_to_mask(pre["ct_u8"], mask)
                r.update(used=True, T=int(x.shape[1]),
                         **full_grid_fields(mask, bbox, pre.get("z_factor", float("nan")), pre.get("n_slices_in", -1)))
        rows.append(r)
    return items, pd.DataFrame(rows)


def build_classifier_cohort(profile_settings: dict[str, Any], seed: int, work: str | Path
                            ) -> tuple[list[tuple[np.ndarray, int, str]], pd.DataFrame,
                                       list[tuple[np.ndarray, np.ndarray]], str]:
    """The classifier cohort of a profile (notebook 04), saved as ``work/classifier_cohort.npz``.

    ``classifier.cohort: phantoms`` builds :func:`synthetic_classifier_cohort` in memory and holds
    out its last ``n_test`` volumes (one fold); ``preprocessed`` takes notebook 02's volumes with
    notebook 03's U-Net masks (:func:`real_classifier_cohort`) and patient-level folds
    (:func:`patient_folds`, ``classifier.folds``; null = leave one patient out).

    Returns ``(items, cases, folds, note)``; ``note`` describes the cohort in one phrase.
    """
    from . import modelfile
    from .book import plural

    C = profile_settings["classifier"]
    work = Path(work)
    hw, z_step = tuple(C["hw"]), int(C["z_step"])
    if C["cohort"] == "phantoms":
        items, cases = synthetic_classifier_cohort(
            C["n"], seed, shape=tuple(C["shape"]), spacing_mm=tuple(C["spacing_mm"]),
            finding_scale=C["finding_scale"], hw=hw, z_step=z_step,
            preprocess_params=profile_settings.get("preprocess", {}), workers=C.get("workers", 1))
        n = len(items)
        folds = [(np.arange(n - C["n_test"]), np.arange(n - C["n_test"], n))]
        cases["group"] = cases["case_id"]
        note = (f"{plural(n, 'phantom')} built in memory ({C['n_test']} held out), findings scaled "
                f"×{C['finding_scale']}, pseudo-label lung masks")
    else:
        pointer = json.loads((work / "unet_checkpoint.json").read_text())
        unet, _ = modelfile.load_model(pointer["path"], expected_sha256=pointer["sha256"])
        index = load_index(work / "ct_index.json")
        items, cases = real_classifier_cohort(index, unet, hw, z_step,
                                              unet_size=tuple(pointer["size"]) if pointer["size"] else None)
        used = cases[cases.used].reset_index(drop=True)
        folds = patient_folds(used.group, used.label, C["folds"], seed)
        note = (f"{plural(len(items), 'real volume')} of {plural(used.group.nunique(), 'patient')} with U-Net "
                f"lung masks, {plural(len(folds), 'patient-level fold')}")
    save_classifier_cohort(work / "classifier_cohort.npz", items, cases, folds)
    return items, cases, folds, note


_ARRAY_COLUMNS = ("lesion", "lung_full")  # per-case uint8 arrays, stored beside the JSON table


def save_classifier_cohort(path: str | Path, items: list[tuple[np.ndarray, int, str]], table: pd.DataFrame,
                           folds: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write a classifier cohort (inputs, labels, ids, per-case table, folds) atomically as ``.npz``
    (inputs stored as float16: CT/255 on an 8-bit grid and a {0, 1} mask are exact within 1e-3)."""
    import io as _io

    from .files import atomic_write_bytes

    arrays: dict[str, Any] = {}
    for i, (x, _, _) in enumerate(items):
        arrays[f"x{i}"] = np.asarray(x, dtype=np.float16)
    arrays["labels"] = np.asarray([lab for _, lab, _ in items], dtype=np.int64)
    arrays["case_ids"] = np.asarray([cid for _, _, cid in items], dtype=str)
    keep = table.drop(columns=list(_ARRAY_COLUMNS), errors="ignore")
    arrays["table_json"] = np.asarray(keep.to_json(orient="records"))
    for col in _ARRAY_COLUMNS:
        if col in table:
            for i, arr in enumerate(table[col]):
                if isinstance(arr, np.ndarray):  # skipped real cases have none
                    arrays[f"{col}{i}"] = np.asarray(arr, dtype=np.uint8)
    for k, (tr, te) in enumerate(folds):
        arrays[f"fold{k}_train"] = np.asarray(tr, dtype=np.int64)
        arrays[f"fold{k}_test"] = np.asarray(te, dtype=np.int64)
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_classifier_cohort(path: str | Path) -> tuple[list[tuple[np.ndarray, int, str]], pd.DataFrame,
                                                       list[tuple[np.ndarray, np.ndarray]]]:
    """Inverse of :func:`save_classifier_cohort` (inputs back as float32). A missing or
    unreadable file raises :class:`reprolib.errors.InputError` naming it."""
    from .errors import InputError

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            labels, ids = z["labels"], z["case_ids"]
            items = [(z[f"x{i}"].astype(np.float32), int(labels[i]), str(ids[i])) for i in range(len(labels))]
            table = pd.DataFrame(json.loads(str(z["table_json"])))
            for col in _ARRAY_COLUMNS:
                if any(f.startswith(col) and f[len(col):].isdigit() for f in z.files):
                    table[col] = [z[f"{col}{i}"] if f"{col}{i}" in z.files else None for i in range(len(table))]
            folds, k = [], 0
            while f"fold{k}_train" in z.files:
                folds.append((z[f"fold{k}_train"], z[f"fold{k}_test"]))
                k += 1
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(path, f"missing or unreadable classifier cohort ({exc}); rerun notebook 04") from exc
    return items, table, folds


# ------------------------------------------------------------ chapter tables (notebooks 02 and 03)
#: Columns of the per-volume table of notebook 02 (:func:`volume_table`).
VOLUME_COLUMNS = ["case_id", "label", "kind", "shape", "spacing_mm", "min", "median", "max", "T0",
                  "lung_ml", "qc_ok", "seconds", "peak_MB", "copies", "step_copies"]


def volume_table(table: pd.DataFrame) -> pd.DataFrame:
    """Notebook 02's table of every volume, indexed by ``case_id``.

    From a :func:`preprocess_cohort` table: label, reader, native shape (S×H×W), spacing (mm),
    HU min / median / max, ``T0`` (slices at 1 mm), pseudo-label lung volume (ml), QC result,
    wall time (s), whole-call peak (MB, one decimal) and in copies, and the largest per-step
    peak (copies). Numbers rounded to two decimals, except the peak in MB."""
    show = table[VOLUME_COLUMNS].round(2)
    show["peak_MB"] = table["peak_MB"].round(1)
    return show.set_index("case_id")


def qc_failed_table(table: pd.DataFrame) -> pd.DataFrame:
    """The volumes of a :func:`preprocess_cohort` table whose pseudo-label failed QC (or that
    have no HU), indexed by ``case_id``: label, lung volume (ml, unrounded) and QC flags."""
    return table.loc[~table.qc_ok, ["case_id", "label", "lung_ml", "flags"]].set_index("case_id")


def phantom_lungs_1mm(lung_mask: str | Path, n_slices: int) -> np.ndarray:
    """A phantom's exact lung mask on the 1 mm grid of its preprocessed CT.

    Reads the NIfTI mask (same orientation as the CT), binarises it (> 0) and resamples it
    along z by ``n_slices / S`` (nearest, :func:`reprolib.preprocess.resample_mask_z`), cut to
    ``n_slices``. Returns (``n_slices``, H, W) uint8 in {0, 1}."""
    from . import io, preprocess

    truth = (io.read_nifti(lung_mask).hu > 0).astype(np.uint8)
    return preprocess.resample_mask_z(truth, n_slices / truth.shape[0])[:n_slices]


def pseudo_label_dice(table: pd.DataFrame) -> np.ndarray:
    """Dice of every phantom's pseudo-label against its exact lungs (:func:`phantom_lungs_1mm`).

    ``table`` is a :func:`preprocess_cohort` table of the synthetic profile (columns ``npz``
    and ``lung_mask``); returns one Dice per row, in row order."""
    out = []
    for row in table.itertuples():
        res = load_preprocessed(row.npz)
        out.append(evaluate.dice(res["lung_mask"], phantom_lungs_1mm(row.lung_mask, res["ct_u8"].shape[0])))
    return np.asarray(out, dtype=float)


def unet_holdout(index: pd.DataFrame, holdout: str | float | int, seed: int = 0
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split notebook 02's volumes for the U-Net by patient: ``(train, held_out)``.

    Only volumes with HU and a pseudo-label that passed QC are used. ``holdout`` is
    ``"split"`` (the manifest's test split is held out), a number of patients (≥ 1) or a
    fraction of the usable volumes (< 1, at least one patient), the patients drawn with
    ``numpy.random.default_rng(seed)``. Raises AssertionError if a patient is on both sides."""
    usable = index[index.is_hu & index.qc_ok].reset_index(drop=True)
    if holdout == "split":
        held = usable[usable.split == "test"]
    else:
        n_hold = holdout if holdout >= 1 else max(1, round(holdout * len(usable)))
        rng = np.random.default_rng(seed)
        patients = sorted(usable.group.unique())
        held_patients = set(rng.choice(patients, size=int(n_hold), replace=False).tolist())
        held = usable[usable.group.isin(held_patients)]
    train = usable[~usable.case_id.isin(held.case_id)]
    assert not set(train.group) & set(held.group), "patient leak between U-Net train and test"
    return train, held


def unet_split_table(train: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """Notebook 03's split table, indexed by ``case_id``: label, role ("train" / "held out"),
    ``T0`` and pseudo-label lung volume (ml), rounded to one decimal."""
    both = pd.concat([train.assign(role="train"), held.assign(role="held out")])
    return both[["case_id", "label", "role", "T0", "lung_ml"]].set_index("case_id").round(1)


def score_unet(unet: Any, held: pd.DataFrame, size: tuple[int, int] | None = None, exact_lungs: bool = False,
               batch: int = 8) -> tuple[pd.DataFrame, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
    """Segment every held-out volume with the U-Net and compare with its pseudo-label.

    For each row of ``held`` (columns ``case_id``, ``npz``; ``lung_mask`` when ``exact_lungs``)
    the windowed 1 mm CT goes through :func:`reprolib.segment.segment_volume` (``batch`` slices
    at a time, working size ``size``). Returns ``(scores, shown)``: ``scores`` indexed by
    ``case_id`` with ``slices``, ``Dice`` and ``IoU`` against the pseudo-label (lung > 0),
    ``seconds`` (wall time of the segmentation) and ``seconds_per_slice``, plus
    ``Dice vs exact lungs`` (:func:`phantom_lungs_1mm`) when ``exact_lungs``; ``shown`` holds
    ``(case_id, ct_u8, pseudo, pred)`` per volume, arrays (T, H, W) uint8."""
    from . import segment  # torch: cohort itself stays importable without it

    rows, shown = [], []
    for row in held.itertuples():
        pre = load_preprocessed(row.npz)
        t0 = time.perf_counter()
        pred = segment.segment_volume(unet, pre["ct_u8"], batch=batch, size=size)
        seconds = time.perf_counter() - t0
        pseudo = pre["lung_mask"]
        inter = np.logical_and(pred > 0, pseudo > 0).sum()
        union = np.logical_or(pred > 0, pseudo > 0).sum()
        r = {"case_id": row.case_id, "slices": pred.shape[0], "Dice": evaluate.dice(pred, pseudo),
             "IoU": float(inter / union) if union else 1.0, "seconds": seconds,
             "seconds_per_slice": seconds / pred.shape[0]}
        if exact_lungs:
            r["Dice vs exact lungs"] = evaluate.dice(pred, phantom_lungs_1mm(row.lung_mask, pred.shape[0]))
        rows.append(r)
        shown.append((row.case_id, pre["ct_u8"], pseudo, pred))
    cols = ["case_id", "slices", "Dice", "IoU", "seconds", "seconds_per_slice"] + \
        (["Dice vs exact lungs"] if exact_lungs else [])
    return pd.DataFrame(rows, columns=cols).set_index("case_id"), shown
