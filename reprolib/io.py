"""CT ingestion: DICOM series, NIfTI, PNG stacks, and atomic NIfTI writing.

Every reader returns a :class:`CTVolume` whose array is indexed ``(z, y, x)``
with the conventions of an axial DICOM series sorted by ascending slice
position (spec §2, "Order"): ``z`` increases along the slice normal (towards
the head for axial scans), ``y`` increases towards the patient's back
(posterior, image rows top to bottom) and ``x`` towards the patient's left
(image columns left to right, radiological display). NIfTI volumes are
reoriented into the same frame, so that the pseudo-label probes of spec §3
(bottom centre = table side) mean the same thing for every format.

Geometry: ``spacing_mm`` is ``(dz, dy, dx)`` in mm, ``origin_mm`` the world
position ``(x, y, z)`` in mm of voxel ``[0, 0, 0]`` in the DICOM patient frame
(LPS), and ``direction`` a 3×3 matrix whose *columns* are the LPS unit vectors
of the array axes x, y, z (ITK convention; ``hu`` axes 2, 1, 0), so that voxel
``hu[k, j, i]`` lies at ``origin + direction @ ([dx, dy, dz] * [i, j, k])``.
The identity direction is a standard axial series.

Pixel decoding (licences)
-------------------------
Headers are read with pydicom (MIT) using ``stop_before_pixels`` for sorting
and validation. Pixel data of *uncompressed* transfer syntaxes are decoded by
pydicom itself (no plug-in). *Compressed* transfer syntaxes (the COVID-CT-MD
files are JPEG Lossless, Process 14, SV1) are decoded with SimpleITK
(Apache-2.0, bundles GDCM, BSD), which is already a dependency. The GPL-3.0
``pylibjpeg-libjpeg`` plug-in is deliberately not used, and ``python-gdcm`` is
not needed. SimpleITK applies RescaleSlope/Intercept while decoding; the reader
inverts that exactly (``v = rint((a - b) / m)``, exact for integer slope and
intercept and for every value representable in the stored bit depth) to get
the stored values back, because spec §2 clips *stored* values before rescaling.

Missing rescale tags (decision)
-------------------------------
Rescale Slope and Rescale Intercept are Type 1 in the DICOM CT Image module.
A series whose Modality is ``CT`` (or is missing) without them is rejected
with :class:`~reprolib.errors.DicomError`: guessing slope 1 / intercept 0 would
silently shift every value by about +1024 HU for the common intercept -1024.
For other modalities (e.g. ``OT`` secondary captures of CT) the identity
(slope 1, intercept 0) is assumed, a warning is issued and
``meta["rescale_assumed"]`` is set to True.
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .dicom import read_dicom_series, read_header
from .errors import DicomError, ImageError, InputError, NiftiError
from .files import atomic_write_bytes
from .volume import INT16_MAX, INT16_MIN, CTVolume

__all__ = [
    "read_nifti",
    "read_png_stack",
    "read_itk_image",
    "read_ct",
    "write_nifti",
    "read_slice_labels",
]


_PNG_SUFFIXES = (".png", ".jpg", ".jpeg")  # 8-bit slice stacks
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


# --------------------------------------------------------------------------- HU


# ------------------------------------------------------------------------ DICOM


# ------------------------------------------------------------------------ NIfTI

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def read_nifti(
    path: str | os.PathLike,
    *,
    is_hu: bool = True,
    orientation: str = "LPS",
    max_dim: int = 4096,
    max_voxels: int = 2**29,
) -> CTVolume:
    """Read a 3D NIfTI volume, reoriented and transposed to (z, y, x).

    The image is brought to the closest canonical (RAS+) orientation with
    ``nib.as_closest_canonical`` and transposed to (z, y, x). With
    ``orientation="LPS"`` (default) the y and x axes are then flipped so that
    the array matches an axial DICOM series (rows towards posterior, columns
    towards the patient's left; see the module docstring); ``"RAS"`` keeps the
    canonical axes (y anterior, x right).

    Parameters
    ----------
    path : path to ``.nii`` or ``.nii.gz``
    is_hu : bool
        True: values are HU, rounded to int16 (out-of-range values are an error).
        False: values are kept (integer types as stored, floats as float32).
    orientation : {"LPS", "RAS"}
    max_dim, max_voxels : int
        Upper bounds on each dimension and on the voxel count (absurd headers).

    Returns
    -------
    CTVolume with spacing (dz, dy, dx) in mm from the reoriented affine.

    Raises
    ------
    NiftiError
        Not NIfTI, empty file, corrupt header (e.g. a wrong ``sizeof_hdr``),
        truncated/corrupt gzip or data, not 3D (a singleton 4th dimension is
        squeezed), NaN/inf values, zero/negative/non-finite spacing, absurd
        dimensions, unsupported voxel types, values outside int16 when ``is_hu``.
    """
    import nibabel as nib

    path = Path(path)
    if orientation not in ("LPS", "RAS"):
        raise ValueError(f"orientation must be 'LPS' or 'RAS', got {orientation!r}")
    if not path.is_file():
        raise NiftiError(path, "no such file")
    if path.stat().st_size == 0:
        raise NiftiError(path, "empty file (0 bytes)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # ImageFileError, gzip/zlib errors, EOFError
        raise NiftiError(path, f"not a readable NIfTI file (corrupt or truncated?): {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(path, f"not a NIfTI image ({type(img).__name__})")

    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
        shape = shape[:3]
    if len(shape) != 3:
        raise NiftiError(path, f"not a 3D volume: shape {shape}")
    if min(shape) < 2:
        raise NiftiError(path, f"not a 3D volume (a dimension of size < 2): shape {shape}")
    if max(shape) > max_dim or int(np.prod(shape, dtype=np.int64)) > max_voxels:
        raise NiftiError(path, f"absurd dimensions {shape} (max {max_dim} per axis, {max_voxels} voxels)")
    # nibabel silently "fixes" zero/negative pixdim on load: check the raw header.
    try:
        from nibabel.openers import ImageOpener

        with ImageOpener(str(path)) as fobj:
            raw_hdr = type(img.header).from_fileobj(fobj, check=False)
        zooms = np.asarray(raw_hdr["pixdim"][1:4], dtype=float)
        sizeof_hdr = int(raw_hdr["sizeof_hdr"])
    except Exception as exc:
        raise NiftiError(path, f"unreadable NIfTI header: {exc}") from exc
    if sizeof_hdr != raw_hdr.sizeof_hdr:  # nibabel tolerates a wrong value; the format does not
        raise NiftiError(path, f"corrupt NIfTI header: sizeof_hdr is {sizeof_hdr}, must be {raw_hdr.sizeof_hdr}")
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise NiftiError(path, f"zero, negative or non-finite voxel spacing (pixdim) {tuple(zooms.tolist())}")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise NiftiError(path, "singular or non-finite affine")

    axcodes = "".join(str(c) for c in nib.aff2axcodes(img.affine))
    try:
        img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise NiftiError(path, f"cannot read image data (truncated or corrupt gzip?): {exc}") from exc

    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise NiftiError(path, f"{int(np.size(data) - np.isfinite(data).sum())} NaN/inf voxel values")
    elif not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        raise NiftiError(path, f"unsupported voxel type {data.dtype}")

    if is_hu:
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if lo < INT16_MIN or hi > INT16_MAX:
            raise NiftiError(path, f"values {lo}..{hi} do not fit int16 HU")
        data = np.rint(data).astype(np.int16) if np.issubdtype(data.dtype, np.floating) \
            else data.astype(np.int16, copy=False)
    elif np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32, copy=False)

    aff = img.affine
    arr = np.transpose(data, (2, 1, 0))  # (i=R, j=A, k=S) -> (z=S, y=A, x=R)
    n_i, n_j = data.shape[0], data.shape[1]
    col_z, col_y, col_x = aff[:3, 2], aff[:3, 1], aff[:3, 0]
    origin_ras = aff[:3, 3].copy()
    if orientation == "LPS":
        arr = arr[:, ::-1, ::-1]
        origin_ras = aff[:3, :3] @ np.array([n_i - 1, n_j - 1, 0]) + aff[:3, 3]
        col_y, col_x = -col_y, -col_x
    arr = np.ascontiguousarray(arr)
    spacing = tuple(float(np.linalg.norm(c)) for c in (col_z, col_y, col_x))
    direction = _LPS_FROM_RAS @ np.column_stack([c / np.linalg.norm(c) for c in (col_x, col_y, col_z)])
    origin = tuple(float(v) for v in _LPS_FROM_RAS @ origin_ras)
    meta = {"format": "nifti", "orientation": orientation, "frame": "LPS",
            "original_axcodes": axcodes}
    return CTVolume(hu=arr, spacing_mm=spacing, origin_mm=origin, direction=direction,
                    source=str(path), is_hu=is_hu, meta=meta)


def _affine_from_volume(spacing_mm: Sequence[float], origin_mm: Sequence[float],
                        direction: np.ndarray) -> np.ndarray:
    """RAS affine for the (x, y, z)-transposed array of a (z, y, x) LPS volume."""
    d = _LPS_FROM_RAS @ np.asarray(direction, dtype=float)  # to RAS; columns (x, y, z)
    sz, sy, sx = (float(s) for s in spacing_mm)
    aff = np.eye(4)
    aff[:3, 0] = d[:, 0] * sx
    aff[:3, 1] = d[:, 1] * sy
    aff[:3, 2] = d[:, 2] * sz
    aff[:3, 3] = _LPS_FROM_RAS @ np.asarray(origin_mm, dtype=float)
    return aff


def write_nifti(
    volume_or_array: CTVolume | np.ndarray,
    spacing_mm: Sequence[float] | None,
    path: str | os.PathLike,
) -> Path:
    """Write a (z, y, x) volume to NIfTI atomically (:func:`reprolib.files.atomic_write_bytes`).

    Parameters
    ----------
    volume_or_array : CTVolume or np.ndarray (z, y, x)
        A plain array is taken to lie in the DICOM-like frame of this module
        (identity LPS direction, origin 0).
    spacing_mm : (dz, dy, dx) in mm, or None to use the CTVolume's spacing.
    path : target ``.nii`` or ``.nii.gz``

    Voxel types: bool is stored as uint8, 64-bit integers as int32 (NIfTI
    tools rarely read 64-bit integers; values beyond int32 are an error),
    float16 as float32; other numeric types as they are.

    The bytes depend on the volume only: spatial units mm, qform and sform code 1,
    ``.nii.gz`` compressed at level 1 with gzip time 0.

    Returns
    -------
    Path of the written file. :func:`read_nifti` reads it back to the same
    array and spacing.

    Raises
    ------
    NiftiError
        Naming ``path``: not 3D, missing or invalid spacing, a suffix other
        than ``.nii``/``.nii.gz``, an unsupported voxel type, or a failed
        write. Nothing is left at ``path`` (nor a temporary file beside it).
    """
    import nibabel as nib

    path = Path(path)
    if isinstance(volume_or_array, CTVolume):
        vol = volume_or_array
        arr, origin, direction = vol.hu, vol.origin_mm, vol.direction
        spacing = vol.spacing_mm if spacing_mm is None else spacing_mm
    else:
        arr, origin, direction = np.asarray(volume_or_array), (0.0, 0.0, 0.0), np.eye(3)
        if spacing_mm is None:
            raise NiftiError(path, "spacing_mm is required for a plain array")
        spacing = spacing_mm
    if arr.ndim != 3:
        raise NiftiError(path, f"write_nifti needs a 3D (z, y, x) array, got shape {arr.shape}")
    try:
        sp = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        raise NiftiError(path, f"invalid spacing {spacing!r} for NIfTI output") from None
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise NiftiError(path, f"invalid spacing {tuple(sp.tolist())} for NIfTI output")
    name = path.name
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise NiftiError(path, "NIfTI output must end with .nii or .nii.gz")
    arr = _nifti_storable(arr, path)
    affine = _affine_from_volume(sp, origin, direction)
    try:
        img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))), affine)
        img.header.set_data_dtype(arr.dtype)
    except Exception as exc:  # nibabel's HeaderDataError for types NIfTI-1 cannot hold
        raise NiftiError(path, f"unsupported voxel type {arr.dtype} for NIfTI output: {exc}") from exc
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    try:
        raw = img.to_bytes()
        atomic_write_bytes(path, gzip.compress(raw, compresslevel=1, mtime=0) if name.endswith(".gz") else raw)
    except OSError as exc:  # disk full, no permission, a folder in the way ...
        raise NiftiError(path, f"cannot write NIfTI: {exc}") from exc
    return path


def _nifti_storable(arr: np.ndarray, path: Path) -> np.ndarray:
    """``arr`` in a voxel type NIfTI-1 stores (see :func:`write_nifti`), or NiftiError."""
    kind = arr.dtype.kind
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if kind in "iu" and arr.dtype.itemsize == 8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        info = np.iinfo(np.int32)
        if lo < info.min or hi > info.max:
            raise NiftiError(path, f"{arr.dtype} values {lo}..{hi} do not fit int32 for NIfTI output")
        return arr.astype(np.int32)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if kind not in "iufc":
        raise NiftiError(path, f"unsupported voxel type {arr.dtype} for NIfTI output")
    return arr


# ------------------------------------------------------------------- PNG stacks


def _numeric_key(p: Path) -> tuple:
    parts = re.split(r"(\d+)", p.stem)
    return tuple((0, int(s)) if s.isdigit() else (1, s) for s in parts if s != "")


def png_stack_files(directory: str | os.PathLike, suffixes: Sequence[str] = _PNG_SUFFIXES) -> list[Path]:
    """The slice files of a PNG stack, sorted numerically by stem (``2.png`` before ``10.png``).

    Checked before any pixel is decoded: the folder exists and holds slice files, and none of
    them is empty (all empty files are counted and the first few named in one error).

    Raises
    ------
    ImageError
        Naming the folder: not a folder, no slice files, or empty (0-byte) files.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(directory, "not a directory of PNG slices")
    files = sorted((p for p in directory.iterdir()
                    if p.is_file() and p.suffix.lower() in suffixes), key=_numeric_key)
    if not files:
        raise ImageError(directory, f"no {'/'.join(suffixes)} files")
    empty = [p.name for p in files if p.stat().st_size == 0]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise ImageError(directory, f"{len(empty)} of {len(files)} slice files are empty (0 bytes): {shown}; "
                                    "re-download the scan (a stack with missing slices is not a volume)")
    return files


def read_png_stack(directory: str | os.PathLike, *, suffixes: Sequence[str] = _PNG_SUFFIXES,
                   spacing_mm: Sequence[float] | None = None) -> CTVolume:
    """Read a CC-CCII-style stack of 8-bit PNG slices (already windowed).

    Files are sorted numerically by stem (``2.png`` before ``10.png``); empty files are refused
    before decoding (:func:`png_stack_files`). The files carry no HU and no spacing:
    ``is_hu=False``; ``spacing_mm`` is the given ``(z, y, x)`` spacing in mm, else
    ``(nan, nan, nan)`` with ``meta["spacing_known"] = False``.

    Returns
    -------
    CTVolume with ``hu`` uint8 (z, y, x).

    Raises
    ------
    ImageError
        Naming the file: unreadable/truncated image, not 8-bit greyscale
        (RGB with unequal channels), image size differing from the first.
    """
    from PIL import Image

    directory = Path(directory)
    spacing = check_spacing(spacing_mm, directory) if spacing_mm is not None else None
    files = png_stack_files(directory, suffixes)
    slices: list[np.ndarray] = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                mode = im.mode
                if mode == "L":
                    a = np.asarray(im, dtype=np.uint8)
                elif mode in ("RGB", "RGBA", "LA", "P"):
                    rgb = np.asarray(im.convert("RGB"))
                    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                        raise ImageError(p, f"colour image (mode {mode}); expected 8-bit greyscale CT")
                    a = np.ascontiguousarray(rgb[..., 0])
                else:
                    raise ImageError(p, f"unsupported image mode {mode}; expected 8-bit greyscale")
        except ImageError:
            raise
        except Exception as exc:  # truncated, not an image, decompression bomb
            raise ImageError(p, f"unreadable image (truncated or corrupt?): {exc}") from exc
        if slices and a.shape != slices[0].shape:
            raise ImageError(p, f"image size {a.shape[::-1]} differs from {slices[0].shape[::-1]} of {files[0].name}")
        slices.append(a)
    if len(slices) < 2:
        raise ImageError(files[0], "single slice: 2D data, not a volume")
    vol = np.stack(slices)
    nan = float("nan")
    meta = {"format": "png", "spacing_known": spacing is not None, "windowed": True,
            "files": [p.name for p in files]}
    return CTVolume(hu=vol, spacing_mm=spacing or (nan, nan, nan), source=str(directory), is_hu=False, meta=meta)


def check_spacing(spacing_mm: Sequence[float], path: str | os.PathLike | None = None) -> tuple[float, float, float]:
    """``(z, y, x)`` voxel spacing in mm as three finite positive floats, else :class:`InputError`."""
    try:
        values = tuple(float(v) for v in spacing_mm)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"spacing {spacing_mm!r} is not three numbers (z, y, x in mm)") from exc
    if len(values) != 3 or not all(np.isfinite(v) and 0 < v <= 50 for v in values):
        raise InputError(path, f"spacing {spacing_mm!r} must be three finite values in (0, 50] mm (z, y, x)")
    return values  # type: ignore[return-value]


# --------------------------------------------------------------- ITK (MHA etc.)


def read_itk_image(path: str | os.PathLike, *, is_hu: bool = True) -> CTVolume:
    """Read a 3D MetaImage/NRRD (e.g. STOIC2021 ``.mha``) with SimpleITK.

    SimpleITK arrays are already (z, y, x) in the LPS frame. Raises
    :class:`~reprolib.errors.InputError` when unreadable or not 3D.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        img = sitk.ReadImage(str(path))
    except Exception as exc:
        raise InputError(path, f"unreadable image: {exc}") from exc
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"not a 3D scalar volume (dimension {img.GetDimension()})")
    arr = sitk.GetArrayFromImage(img)
    if is_hu:
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise InputError(path, "NaN/inf voxel values")
        arr = np.clip(np.rint(arr), INT16_MIN, INT16_MAX).astype(np.int16)
    sx, sy, sz = img.GetSpacing()
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)  # columns: x, y, z axes (same convention)
    return CTVolume(hu=arr, spacing_mm=(sz, sy, sx), origin_mm=tuple(img.GetOrigin()),
                    direction=d, source=str(path), is_hu=is_hu,
                    meta={"format": "itk", "frame": "LPS"})


# --------------------------------------------------------------------- dispatch


def read_ct(path: str | os.PathLike, **kwargs: Any) -> CTVolume:
    """Read a CT from a DICOM folder, a PNG-slice folder, NIfTI or MHA/NRRD.

    Folders holding PNG files are PNG stacks, other folders DICOM series;
    files dispatch on their suffix. Keyword arguments go to the reader.
    """
    path = Path(path)
    if path.is_dir():
        names = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        if any(p.suffix.lower() in _PNG_SUFFIXES for p in names):
            return read_png_stack(path, **kwargs)
        return read_dicom_series(path, **kwargs)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return read_nifti(path, **kwargs)
    if name.endswith(_ITK_SUFFIXES):
        return read_itk_image(path, **kwargs)
    if name.endswith(".dcm"):
        raise DicomError(path, "a single DICOM file; pass the folder that holds the whole series")
    raise InputError(path, "unknown CT format (expected a DICOM/PNG folder, .nii[.gz], .mha, .nrrd)")


def read_slice_labels(labels_npy: str | os.PathLike, index_csv: str | os.PathLike, folder_id: str,
                      dicom_dir: str | os.PathLike, files: Sequence[str]) -> np.ndarray:
    """Per-slice infection labels of one COVID-CT-MD series, in this package's slice order.

    COVID-CT-MD stores the labels as an (N patients, 200) array whose row is the patient's
    *row position* in ``Index.csv`` (the csv skips Label Index 43) and whose columns follow
    the slices sorted by ascending SliceLocation (0020,1041), zero-padded to 200. This
    function finds the row of ``folder_id`` (e.g. ``"P001"``), reads the SliceLocation of
    each file in ``files`` (the reader's order, ``CTVolume.meta["files"]``) and returns the
    labels reordered to that order.

    Returns
    -------
    (len(files),) bool: True where the slice is labelled infected.

    Raises
    ------
    InputError naming the file: unreadable csv/npy, patient not in the csv, wrong array
    shape, labels other than 0/1, labels set beyond the series' slice count, or a slice
    without SliceLocation.
    """
    import csv

    index_csv, labels_npy, dicom_dir = Path(index_csv), Path(labels_npy), Path(dicom_dir)
    try:
        with open(index_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(index_csv, f"cannot read the index csv: {exc}") from exc
    ids = [(r.get("Folder/ID") or "").strip() for r in rows]
    if folder_id not in ids:
        raise InputError(index_csv, f"patient {folder_id!r} is not in the index (column 'Folder/ID')")
    row = ids.index(folder_id)
    try:
        labels = np.load(labels_npy, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(labels_npy, f"cannot read the label array: {exc}") from exc
    if labels.ndim != 2 or labels.shape[0] != len(rows):
        raise InputError(labels_npy, f"label array has shape {labels.shape}; expected ({len(rows)}, slices) "
                                     f"for the {len(rows)} rows of {index_csv.name}")
    lab = labels[row]
    if not np.isin(lab, (0, 1)).all():
        raise InputError(labels_npy, f"row {row} ({folder_id}) holds values other than 0/1")
    n = len(files)
    if n > lab.size or lab[n:].any():
        raise InputError(labels_npy, f"row {row} ({folder_id}) labels slices beyond the series' {n} slices")
    locs = []
    for name in files:
        ds = read_header(dicom_dir / name)
        loc = ds.get("SliceLocation")
        if loc is None:
            raise InputError(dicom_dir / name, "no SliceLocation (0020,1041): cannot align the slice labels")
        locs.append(float(loc))
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(np.asarray(locs), kind="stable")] = np.arange(n)
    return lab[:n].astype(bool)[rank]
