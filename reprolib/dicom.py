"""DICOM series to a CT volume in HU: headers checked before any pixel is decoded, slices ordered
by position, rescaled, gaps and mixed series refused with the file named.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .errors import DicomError
from .volume import HU_STORED_CLIP_HIGH, HU_STORED_CLIP_LOW, CTVolume, stored_to_hu

_HEADER_ESSENTIALS = ("SeriesInstanceUID", "Rows", "Columns")


def read_header(path: Path):
    """Read one DICOM header (no pixels) or raise DicomError.

    pydicom stops silently at the end of a truncated file; a header that runs into the
    end of the file (no pixel data after it) without the essentials of an image slice
    is reported as truncated.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    size = path.stat().st_size
    if size == 0:
        raise DicomError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), open(path, "rb") as fh:
            warnings.simplefilter("ignore")  # e.g. non-conformant UIDs (COVID-CT-MD)
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            at_end = fh.tell() >= size  # else the reader stopped before PixelData
    except InvalidDicomError:
        raise DicomError(path, "not a DICOM file (no 'DICM' preamble)") from None
    except Exception as exc:  # bad tag lengths, ...
        raise DicomError(path, f"unreadable DICOM header (truncated or corrupt?): {exc}") from exc
    missing = [k for k in _HEADER_ESSENTIALS if k not in ds]
    if at_end and missing:
        raise DicomError(path, f"truncated DICOM file (or not an image slice): the header ends with the file, "
                               f"at byte {size}, without {', '.join(missing)}")
    return ds


def _float_list(ds, keyword: str, n: int, path: Path) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        arr = np.array([float(x) for x in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DicomError(path, f"malformed {keyword}: {value!r}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomError(path, f"malformed {keyword}: {value!r}")
    return arr


def _decode_stored(path: Path, ds_header, *, rows: int, cols: int, slope: float,
                   intercept: float) -> np.ndarray:
    """Decode one slice's stored values, (rows, cols), as int32 or float64."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DicomError(path, f"unreadable DICOM file (truncated or corrupt?): {exc}") from exc
    if "PixelData" not in ds:
        raise DicomError(path, "no pixel data (PixelData element missing)")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomError(path, "multi-frame DICOM is not supported; expected one slice per file")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomError(path, "not a greyscale image (SamplesPerPixel != 1)")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    compressed = bool(tsyntax is not None and tsyntax.is_compressed)
    try:
        if not compressed:
            arr = ds.pixel_array
        else:
            import SimpleITK as sitk

            img = sitk.ReadImage(str(path))
            a = sitk.GetArrayFromImage(img)
            if a.ndim == 3 and a.shape[0] == 1:
                a = a[0]
            # SimpleITK/GDCM applied the rescale: invert it to get stored values.
            arr = np.rint((a.astype(np.float64) - intercept) / slope)
    except DicomError:
        raise
    except Exception as exc:
        raise DicomError(path, f"cannot decode pixel data ({tsyntax}; truncated?): {exc}") from exc
    if arr.shape != (rows, cols):
        raise DicomError(path, f"decoded pixel array has shape {arr.shape}, header says {(rows, cols)}")
    return arr


def _list_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in _IGNORED_NAMES
    )


def read_dicom_series(
    directory: str | os.PathLike,
    *,
    clip_low: int = HU_STORED_CLIP_LOW,
    clip_high: int = HU_STORED_CLIP_HIGH,
    max_gap_factor: float = 1.5,
    spacing_rtol: float = 0.01,
    position_atol_mm: float = 1e-3,
    max_dim: int = 4096,
    max_voxels: int = 2**29,
) -> CTVolume:
    """Read one DICOM series (one file per slice) into int16 HU.

    Slices are sorted by the projection of ImagePositionPatient on the slice
    normal (row × column direction cosines), ascending, falling back to
    SliceLocation when a position is missing; slices at the same position as
    an earlier one (within ``position_atol_mm``) are dropped and counted in
    ``meta["n_duplicates_dropped"]``.

    Parameters
    ----------
    directory : path
        Folder holding the slice files (hidden files and DICOMDIR ignored).
    clip_low, clip_high : int
        Stored-value clipping before rescaling (spec §2, "HU").
    max_gap_factor : float
        A gap larger than this times the median slice spacing means missing
        slices.
    spacing_rtol : float
        Allowed relative deviation of a slice gap from the median gap
        (plus ``position_atol_mm``); more is "non-uniform spacing".
    position_atol_mm : float
        Positions closer than this (mm) are duplicates.
    max_dim, max_voxels : int
        Upper bounds on Rows/Columns and on the voxel count, checked from the
        headers before any pixel memory is allocated (absurd headers).

    Returns
    -------
    CTVolume
        ``hu`` int16 (z, y, x); spacing (dz, dy, dx) mm with dz the median gap.

    Raises
    ------
    DicomError
        Naming the offending file: not DICOM / empty / truncated / no pixel
        data, mixed series, missing slices, non-uniform spacing, a single
        slice, missing, differing or absurd rows/cols, differing pixel
        spacing/orientation, CT without (or with malformed) rescale tags.
    """
    with warnings.catch_warnings():
        # pydicom warns lazily about non-conformant values (COVID-CT-MD uses
        # non-numeric UIDs); they do not affect reading.
        warnings.filterwarnings("ignore", message="Invalid value for VR")
        return _read_dicom_series(
            Path(directory), clip_low=clip_low, clip_high=clip_high, max_gap_factor=max_gap_factor,
            spacing_rtol=spacing_rtol, position_atol_mm=position_atol_mm, max_dim=max_dim,
            max_voxels=max_voxels)


def _matrix(ds, path: Path) -> tuple[int, int]:
    """(Rows, Columns) of one header, or DicomError when missing or not positive integers."""
    try:
        rows, cols = int(ds.get("Rows")), int(ds.get("Columns"))
    except (TypeError, ValueError):
        raise DicomError(path, f"missing or malformed Rows/Columns ({ds.get('Rows')!r}, "
                               f"{ds.get('Columns')!r}): not an image") from None
    if rows < 1 or cols < 1:
        raise DicomError(path, f"Rows/Columns {rows}x{cols}: not an image")
    return rows, cols


def _rescale_value(ds, keyword: str, path: Path) -> float | None:
    """RescaleSlope/RescaleIntercept as a float (None when absent); DicomError when malformed."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DicomError(path, f"malformed {keyword}: {value!r} is not a number") from None


def _instance_number(ds) -> int:
    """InstanceNumber, only a tie-breaker for sorting: 0 when absent or malformed."""
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _read_dicom_series(directory: Path, *, clip_low: int, clip_high: int, max_gap_factor: float,
                       spacing_rtol: float, position_atol_mm: float, max_dim: int,
                       max_voxels: int) -> CTVolume:
    if not directory.is_dir():
        raise DicomError(directory, "not a directory of DICOM slices")
    files = _list_files(directory)
    if not files:
        raise DicomError(directory, "no files in the directory")

    headers = [(p, read_header(p)) for p in files]

    # --- one series only
    uids: dict[str, list[Path]] = {}
    for p, ds in headers:
        uids.setdefault(str(ds.get("SeriesInstanceUID", "<missing>")), []).append(p)
    if len(uids) > 1:
        main_uid = max(uids, key=lambda u: len(uids[u]))
        other = next(u for u in uids if u != main_uid)
        bad = uids[other][0]
        summary = ", ".join(f"{u} ({len(v)} files)" for u, v in uids.items())
        raise DicomError(
            bad, f"mixed series in {directory}: this file has SeriesInstanceUID {other}, "
            f"the directory holds {len(uids)} series: {summary}"
        )

    # --- consistent matrix, pixel spacing, orientation
    p0, ds0 = headers[0]
    matrices = [_matrix(ds, p) for p, ds in headers]
    rows, cols = matrices[0]
    if max(rows, cols) > max_dim or len(headers) * rows * cols > max_voxels:
        raise DicomError(p0, f"absurd dimensions: {len(headers)} slices of {rows}x{cols} "
                             f"(max {max_dim} per axis, {max_voxels} voxels)")
    iop0 = _float_list(ds0, "ImageOrientationPatient", 6, p0)
    ps0 = _float_list(ds0, "PixelSpacing", 2, p0)
    for (p, ds), matrix in zip(headers[1:], matrices[1:]):
        if matrix != (rows, cols):
            raise DicomError(
                p, f"matrix {matrix[0]}x{matrix[1]} differs from {rows}x{cols} of {p0.name}"
            )
        ps = _float_list(ds, "PixelSpacing", 2, p)
        if (ps is None) != (ps0 is None) or (ps is not None and not np.allclose(ps, ps0, atol=1e-4)):
            raise DicomError(p, f"PixelSpacing {ps} differs from {ps0} of {p0.name}")
        iop = _float_list(ds, "ImageOrientationPatient", 6, p)
        if (iop is None) != (iop0 is None) or (iop is not None and not np.allclose(iop, iop0, atol=1e-4)):
            raise DicomError(p, f"ImageOrientationPatient {iop} differs from {iop0} of {p0.name}")

    if iop0 is not None:
        row_dir, col_dir = iop0[:3], iop0[3:]
        normal = np.cross(row_dir, col_dir)
        if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
            raise DicomError(p0, f"ImageOrientationPatient {iop0} is not orthonormal")
    else:
        row_dir, col_dir, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])

    # --- slice positions
    ipps = [_float_list(ds, "ImagePositionPatient", 3, p) for p, ds in headers]
    if all(v is not None for v in ipps):
        positions = np.array([float(np.dot(v, normal)) for v in ipps])
        sort_key = "ImagePositionPatient"
    else:
        positions_l = []
        for p, ds in headers:
            loc = ds.get("SliceLocation")
            if loc is None or loc == "":
                raise DicomError(p, "neither ImagePositionPatient nor SliceLocation: cannot sort slices")
            try:
                positions_l.append(float(loc))
            except (TypeError, ValueError):
                raise DicomError(p, f"malformed SliceLocation: {loc!r}") from None
            if not np.isfinite(positions_l[-1]):
                raise DicomError(p, f"malformed SliceLocation: {loc!r}")
        positions = np.array(positions_l)
        sort_key = "SliceLocation"
    inst = np.array([_instance_number(ds) for _, ds in headers])
    order = np.lexsort((np.arange(len(files)), inst, positions))  # position, then instance, then name

    keep: list[int] = []
    dropped: list[str] = []
    for i in order:
        if keep and abs(positions[i] - positions[keep[-1]]) <= position_atol_mm:
            dropped.append(files[i].name)
            continue
        keep.append(int(i))

    if len(keep) < 2:
        raise DicomError(
            files[keep[0]],
            f"single slice in {directory}: 2D data, not a volume ({len(files)} file(s))",
        )

    pos = positions[keep]
    gaps = np.diff(pos)
    dz = float(np.median(gaps))
    for k, g in enumerate(gaps):
        if g > max_gap_factor * dz:
            raise DicomError(
                files[keep[k + 1]],
                f"missing slice(s): gap of {g:.3f} mm before this slice (after {files[keep[k]].name}), "
                f"median spacing {dz:.3f} mm",
            )
    tol = spacing_rtol * dz + position_atol_mm
    for k, g in enumerate(gaps):
        if abs(g - dz) > tol:
            raise DicomError(
                files[keep[k + 1]],
                f"non-uniform slice spacing: gap of {g:.3f} mm before this slice, median {dz:.3f} mm",
            )

    # --- rescale tags
    modality = str(ds0.get("Modality", "") or "").upper()
    rescale_assumed = False
    slopes, intercepts = [], []
    for i in keep:
        p, ds = headers[i]
        m, b = _rescale_value(ds, "RescaleSlope", p), _rescale_value(ds, "RescaleIntercept", p)
        if m is None or b is None:
            if modality in ("CT", ""):
                raise DicomError(
                    p, f"CT slice without RescaleSlope/RescaleIntercept (Type 1 in the CT Image module): "
                    f"cannot convert to HU (Modality {modality or 'missing'})"
                )
            rescale_assumed = True
            m = 1.0 if m is None else m
            b = 0.0 if b is None else b
        slopes.append(float(m))
        intercepts.append(float(b))
        if slopes[-1] == 0 or not np.isfinite(slopes[-1]) or not np.isfinite(intercepts[-1]):
            raise DicomError(p, f"invalid rescale: slope {m}, intercept {b}")
    if rescale_assumed:
        warnings.warn(
            f"{directory}: Modality {modality} without rescale tags: assuming slope 1, intercept 0",
            stacklevel=3,
        )

    # --- pixels
    hu = np.empty((len(keep), rows, cols), dtype=np.int16)
    for z, i in enumerate(keep):
        p, ds = headers[i]
        stored = _decode_stored(p, ds, rows=rows, cols=cols, slope=slopes[z], intercept=intercepts[z])
        hu[z] = stored_to_hu(stored, slopes[z], intercepts[z], clip_low=clip_low, clip_high=clip_high)

    dy, dx = (float(ps0[0]), float(ps0[1])) if ps0 is not None else (float("nan"),) * 2
    first = ipps[keep[0]]
    origin = tuple(float(v) for v in first) if first is not None else (0.0, 0.0, float(pos[0]))
    direction = np.column_stack([row_dir, col_dir, normal])
    tsyntax = getattr(getattr(ds0, "file_meta", None), "TransferSyntaxUID", None)
    meta = {
        "format": "dicom",
        "n_files": len(files),
        "n_duplicates_dropped": len(dropped),
        "duplicates_dropped": dropped,
        "sorted_by": sort_key,
        "slice_positions_mm": pos.tolist(),
        "files": [files[i].name for i in keep],
        "series_instance_uid": next(iter(uids)),
        "modality": modality,
        "transfer_syntax": str(tsyntax) if tsyntax is not None else None,
        "rescale_slope": slopes[0],
        "rescale_intercept": intercepts[0],
        "rescale_assumed": rescale_assumed,
        "frame": "LPS",
    }
    return CTVolume(hu=hu, spacing_mm=(dz, dy, dx), origin_mm=origin, direction=direction,
                    source=str(directory), is_hu=True, meta=meta)


_IGNORED_NAMES = {"DICOMDIR", "Thumbs.db"}
