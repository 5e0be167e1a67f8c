"""The hostile-input corpus of ``tests/test_corpus.py``: every case generated at test time.

Nothing binary is committed: each :class:`Case` builds its inputs (tiny DICOM series with
pydicom, NIfTI files with nibabel, images with Pillow or by hand, YAML manifests and
profiles, upload payloads) into the test's ``tmp_path`` and returns a :class:`Scenario`
saying what to call and what must happen:

* rejected inputs: the exact :mod:`reprolib.errors` class, the file the message must name,
  the words that must describe the problem, and the output folder (if the API writes one)
  that must hold nothing new afterwards;
* valid-but-unusual inputs (``error=None``): a ``check`` of the loaded values;
* uploads (``status`` set): the HTTP status, and the words the JSON ``detail`` must hold.

Register a case with :func:`case`; ids are ``<category prefix>-<what>``.
"""
from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

CATEGORIES: tuple[str, ...] = ("dicom", "nifti", "image", "manifest/config", "upload")


@dataclass
class Ctx:
    """What a case builder gets: a fresh folder, pytest's monkeypatch, the upload client."""

    tmp: Path
    monkeypatch: Any
    client: Callable[[], Any]


@dataclass
class Scenario:
    """One call and its expected outcome (see the module docstring)."""

    call: Callable[[], Any]
    error: type[BaseException] | None = None
    name: str | None = None
    words: tuple[str, ...] = ()
    out_dir: Path | None = None
    check: Callable[[Any], None] | None = None
    status: int | None = None


@dataclass(frozen=True)
class Case:
    """A named, categorised scenario builder."""

    id: str
    category: str
    build: Callable[[Ctx], Scenario]


CASES: list[Case] = []


def case(category: str, name: str) -> Callable[[Callable[[Ctx], Scenario]], Callable[[Ctx], Scenario]]:
    """Register ``fn`` as the case ``name`` of ``category``."""
    assert category in CATEGORIES, category

    def deco(fn: Callable[[Ctx], Scenario]) -> Callable[[Ctx], Scenario]:
        assert all(c.id != name for c in CASES), name
        CASES.append(Case(name, category, fn))
        return fn

    return deco


def counts(cases: list[Case] | None = None) -> dict[str, int]:
    """Cases per category, in :data:`CATEGORIES` order."""
    cases = CASES if cases is None else cases
    return {c: sum(k.category == c for k in cases) for c in CATEGORIES}


# =============================================================================== DICOM
SHAPE = (6, 7)  # rows != cols catches transpositions


def slice_values(k: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Distinct int16 stored values of slice ``k``."""
    return (np.arange(shape[0] * shape[1]).reshape(shape) * 3 + 50 * k).astype(np.int16)


def dicom_slice(path: Path, values: np.ndarray, z: float | None, *, uid: str, instance: int = 1,
                slope: Any = 1.0, intercept: Any = -1024.0, modality: str = "CT",
                pixel_bytes: bytes | None = None, with_pixels: bool = True,
                rows: int | None = None, cols: int | None = None, **extra: Any) -> Path:
    """One uncompressed signed 16-bit CT slice; ``None`` slope/intercept leaves the tag out."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = uid
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if z is not None:
        ds.ImagePositionPatient = [-5.0, -5.0, float(z)]
    ds.PixelSpacing = [0.7, 0.8]
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = values.shape[0] if rows is None else rows
    ds.Columns = values.shape[1] if cols is None else cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    for key, value in extra.items():
        setattr(ds, key, value)
    if with_pixels:
        ds.PixelData = values.astype("<i2").tobytes() if pixel_bytes is None else pixel_bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_series(d: Path, n: int = 4, *, zs: list[float] | None = None, uid: str | None = None,
                 per_slice: dict[int, dict] | None = None, names: list[str] | None = None,
                 **kw: Any) -> list[Path]:
    """``n`` slices 2 mm apart (or at ``zs``); ``per_slice[k]`` overrides slice k's keywords."""
    from pydicom.uid import generate_uid

    zs = [2.0 * k for k in range(n)] if zs is None else zs
    uid = uid or generate_uid()
    out = []
    for k, z in enumerate(zs):
        args = {**kw, **(per_slice or {}).get(k, {})}
        values = args.pop("values", slice_values(k))
        name = names[k] if names else f"s{k:03d}.dcm"
        out.append(dicom_slice(d / name, values, z, uid=args.pop("uid", uid), instance=k + 1, **args))
    return out


def _reader(path: Path) -> Callable[[], Any]:
    from reprolib.io import read_ct

    return lambda: read_ct(path)


def _dicom_error(path: Path, name: str, *words: str, out_dir: Path | None = None,
                 call: Callable[[], Any] | None = None) -> Scenario:
    from reprolib.errors import DicomError

    return Scenario(call or _reader(path), DicomError, name, words, out_dir)


def _predict_ct_into(path: Path, out: Path) -> Callable[[], Any]:
    """``predict_ct`` with stand-in models, writing into ``out``: the reader must fail first."""
    from reprolib.predict import predict_ct

    out.mkdir(parents=True, exist_ok=True)
    return lambda: predict_ct(object(), object(), path, None, out_dir=out)  # type: ignore[arg-type]


@case("dicom", "dicom-truncated-header")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s")
    files[1].write_bytes(files[1].read_bytes()[:200])  # cut inside the file meta group
    return _dicom_error(ctx.tmp / "s", files[1].name, "truncated")


@case("dicom", "dicom-truncated-mid-dataset")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s")
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[:420])  # header intact up to a tag in the middle of the dataset
    return _dicom_error(ctx.tmp / "s", files[2].name, "truncated")


@case("dicom", "dicom-truncated-pixel-data")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s")
    files[3].write_bytes(files[3].read_bytes()[:-30])
    out = ctx.tmp / "predictions"
    return _dicom_error(ctx.tmp / "s", files[3].name, "pixel data", "truncated", out_dir=out,
                        call=_predict_ct_into(ctx.tmp / "s", out))


@case("dicom", "dicom-zero-byte-slice")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s")
    files[1].write_bytes(b"")
    return _dicom_error(ctx.tmp / "s", files[1].name, "empty")


@case("dicom", "dicom-missing-pixeldata")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", per_slice={2: {"with_pixels": False}})
    return _dicom_error(ctx.tmp / "s", files[2].name, "no pixel data")


@case("dicom", "dicom-ct-missing-rescale-slope")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", slope=None)
    return _dicom_error(ctx.tmp / "s", files[0].name, "RescaleSlope", "HU")


@case("dicom", "dicom-ct-missing-rescale-intercept-one-slice")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", per_slice={2: {"intercept": None}})
    return _dicom_error(ctx.tmp / "s", files[2].name, "RescaleIntercept")


@case("dicom", "dicom-rescale-slope-zero")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", per_slice={1: {"slope": 0}})
    return _dicom_error(ctx.tmp / "s", files[1].name, "rescale", "slope")


@case("dicom", "dicom-rescale-slope-not-a-number")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", per_slice={1: {"slope": "9.87654"}})
    raw = files[1].read_bytes()
    assert raw.count(b"9.87654 ") == 1
    files[1].write_bytes(raw.replace(b"9.87654 ", b"abc     "))  # pydicom refuses to write it
    return _dicom_error(ctx.tmp / "s", files[1].name, "RescaleSlope", "not a number")


@case("dicom", "dicom-mixed-series")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", n=5, per_slice={3: {"uid": "1.2.826.0.1.3680043.8.498.99"}})
    return _dicom_error(ctx.tmp / "s", files[3].name, "mixed series", "SeriesInstanceUID")


@case("dicom", "dicom-missing-slice")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", zs=[0, 2, 4, 8, 10, 12])
    return _dicom_error(ctx.tmp / "s", files[3].name, "missing slice")


@case("dicom", "dicom-inconsistent-spacing")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", zs=[0, 2, 4, 6.6, 8.6, 10.6])
    return _dicom_error(ctx.tmp / "s", files[3].name, "non-uniform", "spacing")


@case("dicom", "dicom-wrong-pixel-data-length")
def _(ctx: Ctx) -> Scenario:
    short = slice_values(1)[:-1].astype("<i2").tobytes()  # one row short; the file itself is whole
    files = dicom_series(ctx.tmp / "s", per_slice={1: {"pixel_bytes": short}})
    return _dicom_error(ctx.tmp / "s", files[1].name, "pixel data")


@case("dicom", "dicom-rows-cols-mismatch")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", per_slice={2: {"values": np.zeros((7, 6), np.int16)}})
    return _dicom_error(ctx.tmp / "s", files[2].name, "7x6", "differs")


@case("dicom", "dicom-rows-empty")
def _(ctx: Ctx) -> Scenario:
    import pydicom

    files = dicom_series(ctx.tmp / "s")

    ds = pydicom.dcmread(files[1])
    ds.Rows = None  # present, without a value
    ds.save_as(files[1])
    return _dicom_error(ctx.tmp / "s", files[1].name, "Rows")


@case("dicom", "dicom-absurd-dimensions")
def _(ctx: Ctx) -> Scenario:
    # every header claims 40000 x 40000 pixels (3.2 GB per slice) over a few bytes of data
    files = dicom_series(ctx.tmp / "s", rows=40000, cols=40000)
    return _dicom_error(ctx.tmp / "s", files[0].name, "absurd", "40000")


@case("dicom", "dicom-multiframe")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", per_slice={0: {"NumberOfFrames": 2}})
    return _dicom_error(ctx.tmp / "s", files[0].name, "multi-frame")


@case("dicom", "dicom-no-slice-position")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s", zs=[None, None, None])  # type: ignore[list-item]
    return _dicom_error(ctx.tmp / "s", files[0].name, "ImagePositionPatient", "SliceLocation")


@case("dicom", "dicom-junk-file-only")
def _(ctx: Ctx) -> Scenario:
    d = ctx.tmp / "s"
    d.mkdir()
    (d / "IM0001.dcm").write_bytes(b"MZ\x90\x00 this is an executable, not DICOM" * 8)
    return _dicom_error(d, "IM0001.dcm", "not a DICOM")


@case("dicom", "dicom-empty-folder")
def _(ctx: Ctx) -> Scenario:
    from reprolib.dicom import read_dicom_series

    d = ctx.tmp / "empty_series"
    d.mkdir()
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files do not count
    (d / "DICOMDIR").write_bytes(b"\0" * 10)
    return _dicom_error(d, "empty_series", "no files", call=lambda: read_dicom_series(d))


@case("dicom", "dicom-single-file-given")
def _(ctx: Ctx) -> Scenario:
    files = dicom_series(ctx.tmp / "s")
    return _dicom_error(files[0], files[0].name, "single DICOM file", "folder")


@case("dicom", "dicom-accept-unusual-names-and-order")
def _(ctx: Ctx) -> Scenario:
    """Valid: extension-less names in reverse order, a DICOMDIR and a hidden file alongside."""
    d = ctx.tmp / "s"
    dicom_series(d, n=5, names=["9", "7", "5", "3", "1"], slope=2.0, intercept=-1000.0)
    (d / "DICOMDIR").write_bytes(b"ignored")
    (d / ".hidden").write_bytes(b"ignored")

    def check(vol: Any) -> None:
        assert vol.meta["files"] == ["9", "7", "5", "3", "1"]
        assert vol.hu.dtype == np.int16 and vol.hu.shape == (5, *SHAPE)
        for k in range(5):
            np.testing.assert_array_equal(vol.hu[k], slice_values(k).astype(np.int64) * 2 - 1000)
        assert vol.spacing_mm == (2.0, 0.7, 0.8)

    return Scenario(_reader(d), check=check)


@case("dicom", "dicom-accept-phantom-series")
def _(ctx: Ctx) -> Scenario:
    """Valid: the phantom writer's series (shuffled names, air outside the field of view)."""
    from reprolib.phantom_files import write_dicom_series
    from reprolib.phantoms import ct_phantom

    ph = ct_phantom(0, 1, shape=(12, 48, 48))
    write_dicom_series(ph, ctx.tmp / "ph", shuffle=True)

    def check(vol: Any) -> None:
        # stored = HU + 1024, and stored values >= 3000 are clipped (spec section 2)
        np.testing.assert_array_equal(vol.hu, np.minimum(np.asarray(ph.hu), 3000 - 1024))
        assert vol.spacing_mm == tuple(float(s) for s in ph.spacing_mm)

    return Scenario(_reader(ctx.tmp / "ph"), check=check)


# =============================================================================== NIfTI
def nifti(path: Path, arr: np.ndarray, affine: np.ndarray | None = None, *, version: int = 1,
          header_patch: dict[int, bytes] | None = None) -> Path:
    """Save ``arr`` (i, j, k[, t]) as NIfTI-1/2, then overwrite raw header bytes at offsets."""
    import nibabel as nib

    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    nib.save(cls(arr, np.eye(4) if affine is None else affine), str(path))
    if header_patch:
        raw = bytearray(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
        for off, b in header_patch.items():
            raw[off:off + len(b)] = b
        path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


def _cube(dtype: Any = np.int16, shape: tuple[int, ...] = (4, 5, 6)) -> np.ndarray:
    return (np.arange(int(np.prod(shape))).reshape(shape) % 200 - 100).astype(dtype)


def _nifti_error(path: Path, *words: str, call: Callable[[], Any] | None = None,
                 out_dir: Path | None = None, name: str | None = None) -> Scenario:
    from reprolib.errors import NiftiError

    return Scenario(call or _reader(path), NiftiError, name or path.name, words, out_dir)


_PIXDIM = 76  # float32[8]; pixdim[1..3] are the voxel sizes
_NO_FORMS = {252: np.zeros(2, "<i2").tobytes()}  # qform_code = sform_code = 0: affine from pixdim


@case("nifti", "nifti-truncated-gzip")
def _(ctx: Ctx) -> Scenario:
    p = nifti(ctx.tmp / "t.nii.gz", np.random.default_rng(0).integers(-999, 999, (30, 30, 30)).astype(np.int16))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    out = ctx.tmp / "predictions"
    return _nifti_error(p, "truncated", call=_predict_ct_into(p, out), out_dir=out)


@case("nifti", "nifti-truncated-raw-data")
def _(ctx: Ctx) -> Scenario:
    p = nifti(ctx.tmp / "short.nii", _cube(shape=(20, 20, 20)))
    p.write_bytes(p.read_bytes()[:352 + 100])  # header intact, 100 of 16000 data bytes
    return _nifti_error(p, "truncated")


@case("nifti", "nifti-bad-sizeof-hdr")
def _(ctx: Ctx) -> Scenario:
    p = nifti(ctx.tmp / "hdr.nii", _cube(), header_patch={0: struct.pack("<i", 1234)})
    return _nifti_error(p, "NIfTI")


@case("nifti", "nifti-bad-magic")
def _(ctx: Ctx) -> Scenario:
    p = nifti(ctx.tmp / "magic.nii", _cube(), header_patch={344: b"xyz\0"})
    return _nifti_error(p, "NIfTI")


@case("nifti", "nifti-garbage-in-gzip")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "garbage.nii.gz"
    p.write_bytes(gzip.compress(np.random.default_rng(1).bytes(2000)))
    return _nifti_error(p, "NIfTI")


@case("nifti", "nifti-empty-file")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "empty.nii"
    p.write_bytes(b"")
    return _nifti_error(p, "empty")


@case("nifti", "nifti-empty-gzip-file")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "empty.nii.gz"
    p.write_bytes(b"")
    return _nifti_error(p, "empty")


@case("nifti", "nifti-nan-voxels")
def _(ctx: Ctx) -> Scenario:
    a = _cube(np.float32)
    a[1, 2, 3] = np.nan
    return _nifti_error(nifti(ctx.tmp / "nan.nii.gz", a), "NaN")


@case("nifti", "nifti-inf-voxels")
def _(ctx: Ctx) -> Scenario:
    a = _cube(np.float64)
    a[0, 0, 0], a[3, 4, 5] = np.inf, -np.inf
    return _nifti_error(nifti(ctx.tmp / "inf.nii", a), "2 NaN/inf")


@case("nifti", "nifti-4d-volume")
def _(ctx: Ctx) -> Scenario:
    return _nifti_error(nifti(ctx.tmp / "fmri.nii.gz", _cube(shape=(4, 5, 6, 3))), "not a 3D", "(4, 5, 6, 3)")


@case("nifti", "nifti-2d-image")
def _(ctx: Ctx) -> Scenario:
    return _nifti_error(nifti(ctx.tmp / "flat.nii", _cube(shape=(8, 9))), "not a 3D")


@case("nifti", "nifti-zero-spacing")
def _(ctx: Ctx) -> Scenario:
    patch = {**_NO_FORMS, _PIXDIM + 12: struct.pack("<f", 0.0)}  # pixdim[3] = 0
    return _nifti_error(nifti(ctx.tmp / "zero.nii.gz", _cube(), header_patch=patch), "spacing", "pixdim")


@case("nifti", "nifti-negative-spacing")
def _(ctx: Ctx) -> Scenario:
    patch = {**_NO_FORMS, _PIXDIM + 4: struct.pack("<f", -0.8)}  # pixdim[1] < 0
    return _nifti_error(nifti(ctx.tmp / "neg.nii", _cube(), header_patch=patch), "negative", "spacing")


@case("nifti", "nifti-nan-spacing")
def _(ctx: Ctx) -> Scenario:
    patch = {**_NO_FORMS, _PIXDIM + 8: struct.pack("<f", float("nan"))}
    return _nifti_error(nifti(ctx.tmp / "nanpix.nii", _cube(), header_patch=patch), "non-finite", "spacing")


@case("nifti", "nifti-absurd-dimension")
def _(ctx: Ctx) -> Scenario:
    # header: 30000 x 30000 x 30000 int16 (54 TB); the file holds 64 bytes of data
    p = nifti(ctx.tmp / "huge.nii", _cube(shape=(2, 4, 4)), header_patch={40: struct.pack("<8h", 3, 30000, 30000,
                                                                                          30000, 1, 1, 1, 1)})
    return _nifti_error(p, "absurd", "30000")


@case("nifti", "nifti-absurd-voxel-count")
def _(ctx: Ctx) -> Scenario:
    p = nifti(ctx.tmp / "many.nii.gz", _cube(shape=(2, 4, 4)),
              header_patch={40: struct.pack("<8h", 3, 4000, 4000, 4000, 1, 1, 1, 1)})
    return _nifti_error(p, "absurd", "voxels")


@case("nifti", "nifti-complex-voxels")
def _(ctx: Ctx) -> Scenario:
    return _nifti_error(nifti(ctx.tmp / "cplx.nii", _cube(np.complex64)), "unsupported voxel type", "complex")


@case("nifti", "nifti-values-beyond-int16")
def _(ctx: Ctx) -> Scenario:
    a = _cube(np.float32)
    a[2, 2, 2] = 1e6
    return _nifti_error(nifti(ctx.tmp / "big.nii", a), "int16")


def _write_nifti_case(ctx: Ctx, arr: Any, spacing: Any, name: str, *words: str) -> Scenario:
    from reprolib.io import write_nifti

    out = ctx.tmp / "masks"
    out.mkdir()
    (out / "keep.nii.gz").write_bytes(b"an earlier result that must survive")
    return _nifti_error(out / name, *words, call=lambda: write_nifti(arr, spacing, out / name), out_dir=out)


@case("nifti", "write-nifti-2d-array")
def _(ctx: Ctx) -> Scenario:
    return _write_nifti_case(ctx, np.zeros((5, 6), np.uint8), (1, 1, 1), "mask.nii.gz", "3D")


@case("nifti", "write-nifti-nan-spacing")
def _(ctx: Ctx) -> Scenario:
    return _write_nifti_case(ctx, np.zeros((3, 5, 6), np.uint8), (1, float("nan"), 1), "mask.nii.gz", "spacing")


@case("nifti", "write-nifti-missing-spacing")
def _(ctx: Ctx) -> Scenario:
    return _write_nifti_case(ctx, np.zeros((3, 5, 6), np.uint8), None, "mask.nii.gz", "spacing")


@case("nifti", "write-nifti-bad-suffix")
def _(ctx: Ctx) -> Scenario:
    return _write_nifti_case(ctx, np.zeros((3, 5, 6), np.uint8), (1, 1, 1), "mask.nrrd", ".nii")


@case("nifti", "write-nifti-unsupported-dtype")
def _(ctx: Ctx) -> Scenario:
    arr = np.full((3, 5, 6), "x", dtype=object)
    return _write_nifti_case(ctx, arr, (1, 1, 1), "mask.nii.gz", "voxel type", "object")


@case("nifti", "write-nifti-int64-beyond-int32")
def _(ctx: Ctx) -> Scenario:
    arr = np.zeros((3, 5, 6), np.int64)
    arr[0, 0, 0] = 2**40
    return _write_nifti_case(ctx, arr, (1, 1, 1), "labels.nii.gz", "int32")


@case("nifti", "write-nifti-accept-int64-labels")
def _(ctx: Ctx) -> Scenario:
    """Valid: int64 labels (numpy's default integer) are stored in a type NIfTI tools read."""
    from reprolib.io import read_nifti, write_nifti

    arr = (np.arange(3 * 5 * 6).reshape(3, 5, 6) % 7).astype(np.int64)
    p = ctx.tmp / "labels.nii.gz"

    def check(path: Any) -> None:
        back = read_nifti(path, is_hu=False)
        assert back.hu.dtype == np.int32
        np.testing.assert_array_equal(back.hu, arr)
        assert back.spacing_mm == (2.0, 1.0, 0.5)
        assert sorted(q.name for q in p.parent.iterdir()) == ["labels.nii.gz"]

    return Scenario(lambda: write_nifti(arr, (2.0, 1.0, 0.5), p), check=check)


@case("nifti", "nifti-accept-scaled-uint16")
def _(ctx: Ctx) -> Scenario:
    """Valid: stored uint16 with scl_slope 1 / scl_inter -1024 gives exact HU."""
    import nibabel as nib

    stored = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 37).astype(np.uint16)
    img = nib.Nifti1Image(stored, np.diag([0.8, 0.7, 2.5, 1.0]))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(ctx.tmp / "scaled.nii.gz"))

    def check(vol: Any) -> None:
        expected = stored.astype(np.int64).transpose(2, 1, 0)[:, ::-1, ::-1] - 1024
        np.testing.assert_array_equal(vol.hu, expected)
        assert vol.hu.dtype == np.int16 and vol.spacing_mm == pytest.approx((2.5, 0.7, 0.8))

    return Scenario(_reader(ctx.tmp / "scaled.nii.gz"), check=check)


@case("nifti", "nifti-accept-nifti2-big-endian")
def _(ctx: Ctx) -> Scenario:
    """Valid: a NIfTI-2 file with big-endian int16 voxels."""
    arr = _cube(np.dtype(">i2"))
    p = nifti(ctx.tmp / "v2.nii", arr, version=2)

    def check(vol: Any) -> None:
        np.testing.assert_array_equal(vol.hu, arr.astype(np.int16).transpose(2, 1, 0)[:, ::-1, ::-1])

    return Scenario(_reader(p), check=check)


# =============================================================================== images
def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_bytes(arr: np.ndarray, **save: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def gray(n: int = 24, m: int = 20) -> np.ndarray:
    """A deterministic uint8 gradient-and-noise test image (n rows, m columns)."""
    rng = np.random.default_rng(n * 31 + m)
    return ((np.add.outer(np.arange(n) * 5, np.arange(m) * 3) + rng.integers(0, 40, (n, m))) % 256).astype(np.uint8)


def jpeg_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG whose header declares ``width x height`` over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIG + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def jpeg_header_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to declare ``width x height``."""
    raw = bytearray(jpeg_bytes(gray(16, 16)))
    i = raw.index(b"\xff\xc0")
    raw[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def ztxt_bomb() -> bytes:
    """A PNG with a compressed text chunk that expands to 4 MB (Pillow caps text at 1 MB)."""
    good = png_bytes(gray(8, 8))
    chunk = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (4 * 2**20), 9))
    return good[:33] + chunk + good[33:]  # after the 8-byte signature and the 25-byte IHDR


def _image_error(path: Path, *words: str, call: Callable[[], Any] | None = None, out_dir: Path | None = None,
                 name: str | None = None) -> Scenario:
    from reprolib.cxr import load_cxr
    from reprolib.errors import ImageError

    return Scenario(call or (lambda: load_cxr(path)), ImageError, name or path.name, words, out_dir)


def _predict_cxr_into(path: Path, out: Path) -> Callable[[], Any]:
    """``predict_cxr`` with a stand-in model, writing into ``out``: the loader must fail first."""
    from reprolib.predict import predict_cxr

    out.mkdir(parents=True, exist_ok=True)
    return lambda: predict_cxr(object(), path, None, out_dir=out)  # type: ignore[arg-type]


def _gray_check(expected: np.ndarray, tol: int = 0, size: tuple[int, int] | None = None) -> Callable[[Any], None]:
    def check(img: Any) -> None:
        assert img.mode == "RGB"
        a = np.asarray(img)
        assert a.dtype == np.uint8 and a.shape == (*expected.shape, 3)
        assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
        assert np.abs(a[..., 0].astype(int) - expected.astype(int)).max() <= tol

    return check


def _accept_image(ctx: Ctx, name: str, data: bytes, expected: np.ndarray, tol: int = 0) -> Scenario:
    from reprolib.cxr import load_cxr

    p = ctx.tmp / name
    p.write_bytes(data)
    return Scenario(lambda: load_cxr(p), check=_gray_check(expected, tol))


@case("image", "image-truncated-png")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "cut.png"
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    p.write_bytes(data[: len(data) // 2])
    out = ctx.tmp / "predictions"
    return _image_error(p, "truncated", call=_predict_cxr_into(p, out), out_dir=out)


@case("image", "image-truncated-jpeg")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "cut.jpg"
    data = jpeg_bytes(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
    p.write_bytes(data[: len(data) // 2])
    return _image_error(p, "truncated")


@case("image", "image-png-bad-crc")
def _(ctx: Ctx) -> Scenario:
    raw = bytearray(png_bytes(gray()))
    raw[29] ^= 0xFF  # IHDR CRC
    p = ctx.tmp / "crc.png"
    p.write_bytes(bytes(raw))
    return _image_error(p, "corrupt")


@case("image", "image-png-decompression-bomb")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "bomb.png"
    p.write_bytes(png_header_bomb())
    return _image_error(p, "decompression-bomb")


@case("image", "image-png-under-pillow-limit-over-ours")
def _(ctx: Ctx) -> Scenario:
    from reprolib.cxr import load_cxr

    p = ctx.tmp / "wide.png"
    p.write_bytes(png_header_bomb(9000, 9000))  # 81 Mpx: under Pillow's own limit, over the app's
    return _image_error(p, "decompression-bomb", "81000000", call=lambda: load_cxr(p, max_pixels=50_000_000))


@case("image", "image-jpeg-decompression-bomb")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "bomb.jpg"
    p.write_bytes(jpeg_header_bomb())
    return _image_error(p, "decompression-bomb")


@case("image", "image-png-text-chunk-bomb")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "ztxt.png"
    p.write_bytes(ztxt_bomb())
    return _image_error(p, "too large")


@case("image", "image-not-an-image-with-png-suffix")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "report.png"
    p.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" * 10)
    return _image_error(p, "not a readable image")


@case("image", "image-missing-file")
def _(ctx: Ctx) -> Scenario:
    return _image_error(ctx.tmp / "nowhere.png", "not found")


@case("image", "image-zero-byte-file")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "zero.png"
    p.write_bytes(b"")
    out = ctx.tmp / "predictions"
    return _image_error(p, "empty", call=_predict_cxr_into(p, out), out_dir=out)


@case("image", "image-directory-not-file")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "xray.png"
    p.mkdir()
    return _image_error(p, "not a file")


@case("image", "image-float-tiff-with-nan")
def _(ctx: Ctx) -> Scenario:
    from PIL import Image

    a = gray().astype(np.float32)
    a[3, 4] = np.nan
    p = ctx.tmp / "float.tif"
    Image.fromarray(a).save(p)
    return _image_error(p, "NaN")


@case("image", "image-accept-16-bit-png")
def _(ctx: Ctx) -> Scenario:
    """Valid: 16-bit grey is scaled to 8 bits (v * 255 / 65535), not clipped."""
    k = np.arange(256, dtype=np.uint16).reshape(16, 16)
    return _accept_image(ctx, "sixteen.png", png_bytes(k * 257), k)


@case("image", "image-accept-palette-png")
def _(ctx: Ctx) -> Scenario:
    """Valid: a palette image is shown through its palette (here inverted grey), not as raw indices."""
    from PIL import Image

    idx = gray()
    im = Image.fromarray(idx, mode="L").convert("P")  # identity palette ...
    im.putpalette([c for i in range(256) for c in (255 - i,) * 3])  # ... replaced by an inverted one
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return _accept_image(ctx, "palette.png", buf.getvalue(), 255 - idx)


@case("image", "image-accept-rgba-png")
def _(ctx: Ctx) -> Scenario:
    """Valid: RGBA grey X-ray; the alpha channel is dropped, the stored grey levels kept."""
    g = gray()
    alpha = np.random.default_rng(2).integers(0, 256, g.shape, dtype=np.uint8)
    return _accept_image(ctx, "alpha.png", png_bytes(np.stack([g, g, g, alpha], axis=2)), g)


@case("image", "image-accept-grey-alpha-png")
def _(ctx: Ctx) -> Scenario:
    from PIL import Image

    g = gray()
    im = Image.fromarray(np.stack([g, np.full_like(g, 7)], axis=2), mode="LA")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return _accept_image(ctx, "la.png", buf.getvalue(), g)


@case("image", "image-accept-1x1")
def _(ctx: Ctx) -> Scenario:
    """Valid (if useless): one pixel loads as a 1x1 grey image; resizing is the transform's job."""
    return _accept_image(ctx, "dot.png", png_bytes(np.array([[137]], np.uint8)), np.array([[137]], np.uint8))


@case("image", "image-accept-cmyk-jpeg")
def _(ctx: Ctx) -> Scenario:
    g = np.full((16, 16), 180, np.uint8)
    return _accept_image(ctx, "cmyk.jpg", jpeg_bytes(g, mode="CMYK"), g, tol=3)


@case("image", "image-accept-jpeg-named-png")
def _(ctx: Ctx) -> Scenario:
    """Valid: the content decides the format, not the suffix."""
    g = np.full((16, 24), 90, np.uint8)
    return _accept_image(ctx, "really_a_jpeg.png", jpeg_bytes(g), g, tol=1)


@case("image", "image-accept-bilevel-png")
def _(ctx: Ctx) -> Scenario:
    from PIL import Image

    bits = gray() > 128
    buf = io.BytesIO()
    Image.fromarray(bits).save(buf, format="PNG")  # mode "1"
    return _accept_image(ctx, "bits.png", buf.getvalue(), bits.astype(np.uint8) * 255)


# ===================================================================== manifests and configs
SHA = "ab" * 32


def manifest_doc(**file_fields: Any) -> dict:
    """A valid one-file manifest; ``file_fields`` override (or, as ``...``, delete) file fields."""
    f = {"url": "https://example.org/data/a.png", "sha256": SHA, "bytes": 10, "label": "healthy",
         "group": "p1", "split": "train", "role": "cxr_image"}
    for k, v in file_fields.items():
        if v is ...:
            del f[k]
        else:
            f[k] = v
    return {"dataset": "toy", "title": "Toy", "citation": "Nobody (2026)", "licence": "CC0-1.0",
            "upstream": {"url": "https://example.org"}, "files": [f]}


def _manifest_file(ctx: Ctx, doc: Any = None, text: str | bytes | None = None, name: str = "toy.yml") -> Path:
    import yaml

    p = ctx.tmp / name
    if text is None:
        text = yaml.safe_dump(doc, sort_keys=False)
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


def _manifest_error(p: Path, *words: str) -> Scenario:
    from reprolib.data import load_manifest
    from reprolib.errors import ManifestError

    return Scenario(lambda: load_manifest(p), ManifestError, p.name, words)


@case("manifest/config", "manifest-missing-file-url")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(url=...)), "files[0]", "'url'")


@case("manifest/config", "manifest-missing-licence")
def _(ctx: Ctx) -> Scenario:
    doc = manifest_doc()
    del doc["licence"]
    return _manifest_error(_manifest_file(ctx, doc), "'licence'")


@case("manifest/config", "manifest-sha256-wrong-length")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(sha256=SHA[:40])), "sha256", "64 hex")


@case("manifest/config", "manifest-sha256-not-hex")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(sha256="g" * 64)), "sha256", "hex")


@case("manifest/config", "manifest-sha256-padded")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(sha256=f" {SHA} ")), "sha256")


@case("manifest/config", "manifest-bytes-negative")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(bytes=-5)), "bytes", "-5")


@case("manifest/config", "manifest-bytes-absent")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(bytes=...)), "'bytes'", "missing")


@case("manifest/config", "manifest-bytes-string")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(bytes="10 kB")), "bytes", "integer")


@case("manifest/config", "manifest-bytes-boolean")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(bytes=True)), "bytes", "integer")


@case("manifest/config", "manifest-duplicate-url")
def _(ctx: Ctx) -> Scenario:
    doc = manifest_doc()
    doc["files"].append(dict(doc["files"][0], sha256="cd" * 32))
    return _manifest_error(_manifest_file(ctx, doc), "files[1]", "duplicate url")


@case("manifest/config", "manifest-url-not-http")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, manifest_doc(url="file:///etc/passwd")), "http")


@case("manifest/config", "manifest-yaml-is-a-list")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, text="- dataset: toy\n- files: []\n"), "mapping")


@case("manifest/config", "manifest-yaml-empty")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, text=""), "mapping")


@case("manifest/config", "manifest-invalid-yaml")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, text="dataset: toy\nfiles: [\n  - url: x\n"), "invalid YAML")


@case("manifest/config", "manifest-files-not-a-list")
def _(ctx: Ctx) -> Scenario:
    doc = manifest_doc()
    doc["files"] = {"a.png": doc["files"][0]}
    return _manifest_error(_manifest_file(ctx, doc), "'files'", "dict")


@case("manifest/config", "manifest-file-entry-not-mapping")
def _(ctx: Ctx) -> Scenario:
    doc = manifest_doc()
    doc["files"] = ["https://example.org/data/a.png"]
    return _manifest_error(_manifest_file(ctx, doc), "files[0]", "mapping")


@case("manifest/config", "manifest-not-utf8")
def _(ctx: Ctx) -> Scenario:
    return _manifest_error(_manifest_file(ctx, text=b"dataset: \xff\xfe toy\n"), "UTF-8")


@case("manifest/config", "manifest-is-a-directory")
def _(ctx: Ctx) -> Scenario:
    p = ctx.tmp / "toy.yml"
    p.mkdir()
    return _manifest_error(p, "cannot read")


@case("manifest/config", "manifest-accept-uppercase-sha256")
def _(ctx: Ctx) -> Scenario:
    """Valid: an upper-case hash is the same hash; it is stored lower-case."""
    from reprolib.data import load_manifest

    p = _manifest_file(ctx, manifest_doc(sha256=SHA.upper()))

    def check(m: Any) -> None:
        assert m.files[0].sha256 == SHA and m.source == str(p)

    return Scenario(lambda: load_manifest(p), check=check)


def _fetch_scenario(ctx: Ctx, payload: bytes, mirror_bytes: bytes, stale: bytes | None) -> Scenario:
    import hashlib

    from reprolib.data import fetch, parse_manifest
    from reprolib.errors import ChecksumError

    doc = manifest_doc(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    e = parse_manifest(doc, "toy.yml").files[0]
    mirror, cache = ctx.tmp / "mirror", ctx.tmp / "cache"
    (mirror / e.relpath).parent.mkdir(parents=True)
    (mirror / e.relpath).write_bytes(mirror_bytes)
    cache.mkdir()
    if stale is not None:  # a corrupt earlier copy in the cache: must be dropped, never served
        (cache / e.relpath).parent.mkdir(parents=True)
        (cache / e.relpath).write_bytes(stale)

    def call() -> Any:
        try:
            return fetch(e, data_dir=cache, mirror=mirror, download=False)
        finally:
            left = sorted(str(q.relative_to(cache)) for q in cache.rglob("*") if q.is_file())
            assert left == [], f"files left in the cache: {left}"

    return Scenario(call, ChecksumError, "a.png", ("sha256 mismatch",))


@case("manifest/config", "fetch-truncated-mirror-copy")
def _(ctx: Ctx) -> Scenario:
    payload = b"0123456789" * 100
    return _fetch_scenario(ctx, payload, payload[:500], None)


@case("manifest/config", "fetch-stale-cache-and-corrupt-mirror")
def _(ctx: Ctx) -> Scenario:
    payload = b"0123456789" * 100
    return _fetch_scenario(ctx, payload, payload[:-1] + b"X", payload[:10])


def _profile_root(ctx: Ctx, name: str, text: str | bytes) -> Path:
    """Serve profiles from ``ctx.tmp/profiles`` (the package's own are not touched)."""
    from types import SimpleNamespace

    from reprolib import config

    root = ctx.tmp / "pkg"
    (root / "profiles").mkdir(parents=True)
    p = root / "profiles" / f"{name}.yml"
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    config._load_profile_cached.cache_clear()
    ctx.monkeypatch.setattr(config, "resources", SimpleNamespace(files=lambda package: root))
    return p


def _config_error(call: Callable[[], Any], name: str | None, *words: str) -> Scenario:
    from reprolib.errors import ConfigError

    def run() -> Any:
        from reprolib import config

        try:
            return call()
        finally:
            config._load_profile_cached.cache_clear()

    return Scenario(run, ConfigError, name, words)


_GOOD_PROFILE = "profile: synthetic\nseed: 0\ndata:\n  datasets: []\n"


@case("manifest/config", "config-unknown-profile-path-like")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    return _config_error(lambda: config.load_profile("../profiles/sample"), "../profiles/sample", "unknown profile")


@case("manifest/config", "config-profile-not-a-string")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    return _config_error(lambda: config.work_dir(None), "None", "unknown profile")  # type: ignore[arg-type]


@case("manifest/config", "config-malformed-profile-yaml")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    p = _profile_root(ctx, "synthetic", "profile: synthetic\ndata: {datasets: [a, b}\n")
    return _config_error(lambda: config.load_profile("synthetic"), str(p), "invalid YAML")


@case("manifest/config", "config-profile-not-a-mapping")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    p = _profile_root(ctx, "sample", "- profile: sample\n- seed: 0\n")
    return _config_error(lambda: config.load_profile("sample"), str(p), "mapping")


@case("manifest/config", "config-profile-name-mismatch")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    p = _profile_root(ctx, "paper", _GOOD_PROFILE)
    return _config_error(lambda: config.load_profile("paper"), str(p), "'profile'", "'paper'")


@case("manifest/config", "config-profile-data-section-malformed")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    p = _profile_root(ctx, "synthetic", "profile: synthetic\nseed: 0\ndata: 5\n")
    return _config_error(lambda: config.load_profile("synthetic"), str(p), "'data'", "datasets")


@case("manifest/config", "config-profile-seed-not-integer")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    p = _profile_root(ctx, "synthetic", "profile: synthetic\nseed: zero\ndata:\n  datasets: []\n")
    return _config_error(lambda: config.load_profile("synthetic"), str(p), "'seed'", "integer")


@case("manifest/config", "config-profile-not-utf8")
def _(ctx: Ctx) -> Scenario:
    from reprolib import config

    p = _profile_root(ctx, "synthetic", b"profile: synthetic\nseed: 0\ndescription: \xff\xfe\n")
    return _config_error(lambda: config.load_profile("synthetic"), str(p), "UTF-8")


# ================================================================================= uploads
def zip_bytes(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    """A zip of ``entries``; names in ``links`` are stored as symbolic links."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in links:
                info.external_attr = (0o120777 << 16)
            zf.writestr(info, data)
    return buf.getvalue()


def _series_zip(ctx: Ctx, **kw: Any) -> bytes:
    files = dicom_series(ctx.tmp / "series", **kw)
    return zip_bytes({f"series/{f.name}": f.read_bytes() for f in files})


def _nifti_bytes(ctx: Ctx, arr: np.ndarray, version: int = 1) -> bytes:
    return nifti(ctx.tmp / "payload.nii", arr, version=version).read_bytes()


def _upload(ctx: Ctx, endpoint: str, name: str, data: bytes, status: int, *words: str,
            check: Callable[[Any], None] | None = None, content_type: str = "application/octet-stream",
            ) -> Scenario:
    def call() -> Any:
        return ctx.client().post(f"/api/predict/{endpoint}", files={"file": (name, data, content_type)})

    return Scenario(call, None, Path(name.replace("\\", "/")).name, words, status=status, check=check)


def _probabilities_ok(j: dict) -> None:
    assert abs(sum(j["probabilities"].values()) - 1.0) < 1e-6 and j["heatmap_png_base64"]


@case("upload", "upload-cxr-accept-16-bit-png")
def _(ctx: Ctx) -> Scenario:
    k = np.arange(4096, dtype=np.uint16).reshape(64, 64) * 16
    return _upload(ctx, "cxr", "sixteen.png", png_bytes(k), 200, check=_probabilities_ok)


@case("upload", "upload-cxr-accept-odd-size")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "cxr", "odd.png", png_bytes(gray(64, 97)), 200, check=_probabilities_ok)


@case("upload", "upload-cxr-refuse-too-small")
def _(ctx: Ctx) -> Scenario:
    """A 1x1 PNG is a valid image but no radiograph: refused with the minimum size, not scored."""
    return _upload(ctx, "cxr", "dot.png", png_bytes(np.array([[137]], np.uint8)), 422, "too small", "64 px")


@case("upload", "upload-cxr-accept-palette-png-declared-jpeg")
def _(ctx: Ctx) -> Scenario:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(gray(64, 64)).convert("P").save(buf, format="PNG")
    return _upload(ctx, "cxr", "scan.jpg", buf.getvalue(), 200, check=_probabilities_ok, content_type="image/jpeg")


@case("upload", "upload-cxr-jpeg-decompression-bomb")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "cxr", "bomb.jpg", jpeg_header_bomb(), 422, "decompression-bomb")


@case("upload", "upload-cxr-text-chunk-bomb")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "cxr", "ztxt.png", ztxt_bomb(), 422, "too large")


@case("upload", "upload-cxr-traversal-filename")
def _(ctx: Ctx) -> Scenario:
    data = png_bytes(gray(64, 64))
    sc = _upload(ctx, "cxr", "../../evil.png", data[: len(data) // 2], 422, "truncated")
    outside = ctx.tmp.parent / "evil.png"
    inner = sc.call

    def call() -> Any:
        r = inner()
        assert not outside.exists() and "/tmp" not in r.json()["detail"]
        return r

    sc.call = call
    return sc


@case("upload", "upload-ct-empty")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "ct", "scan.nii.gz", b"", 400, "empty")


@case("upload", "upload-ct-bare-dicom-file")
def _(ctx: Ctx) -> Scenario:
    f = dicom_series(ctx.tmp / "s", n=2)[0]
    return _upload(ctx, "ct", "IM0001.dcm", f.read_bytes(), 415, "zipped DICOM")


@case("upload", "upload-ct-nifti-nan")
def _(ctx: Ctx) -> Scenario:
    a = _cube(np.float32)
    a[0, 1, 2] = np.nan
    return _upload(ctx, "ct", "nan.nii", _nifti_bytes(ctx, a), 422, "NaN")


@case("upload", "upload-ct-nifti-4d")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "ct", "fmri.nii.gz", gzip.compress(_nifti_bytes(ctx, _cube(shape=(4, 5, 6, 2)))), 422,
                   "not a 3D")


@case("upload", "upload-ct-gzip-nifti-truncated-data")
def _(ctx: Ctx) -> Scenario:
    raw = _nifti_bytes(ctx, _cube(shape=(20, 20, 20)))
    return _upload(ctx, "ct", "cut.nii.gz", gzip.compress(raw[:352 + 64]), 422, "truncated")


@case("upload", "upload-ct-nifti2-reaches-reader")
def _(ctx: Ctx) -> Scenario:
    """A NIfTI-2 upload is recognised as NIfTI (then refused by the reader for its NaN)."""
    a = _cube(np.float32)
    a[1, 1, 1] = np.nan
    return _upload(ctx, "ct", "v2.nii", _nifti_bytes(ctx, a, version=2), 422, "NaN")


@case("upload", "upload-ct-zip-missing-slice")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "ct", "gap.zip", _series_zip(ctx, zs=[0, 2, 4, 8, 10, 12]), 422, "missing slice")


@case("upload", "upload-ct-zip-mixed-series")
def _(ctx: Ctx) -> Scenario:
    data = _series_zip(ctx, n=4, per_slice={1: {"uid": "1.2.826.0.1.3680043.8.498.77"}})
    return _upload(ctx, "ct", "mixed.zip", data, 422, "mixed series")


@case("upload", "upload-ct-zip-too-many-entries")
def _(ctx: Ctx) -> Scenario:
    data = zip_bytes({f"s/{i}.dcm": b"x" for i in range(12)})  # the corpus app allows 10
    return _upload(ctx, "ct", "many.zip", data, 413, "entries")


@case("upload", "upload-ct-zip-symlink")
def _(ctx: Ctx) -> Scenario:
    data = zip_bytes({"s/1.dcm": b"/etc/passwd"}, links=("s/1.dcm",))
    return _upload(ctx, "ct", "link.zip", data, 400, "link")


@case("upload", "upload-ct-zip-drive-letter")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "ct", "drive.zip", zip_bytes({"C:/Windows/evil.dcm": b"x"}), 400, "path traversal")


@case("upload", "upload-ct-zip-backslash-traversal")
def _(ctx: Ctx) -> Scenario:
    return _upload(ctx, "ct", "back.zip", zip_bytes({"s\\..\\..\\evil.dcm": b"x"}), 400, "path traversal")


@case("upload", "upload-ct-zip-only-macos-metadata")
def _(ctx: Ctx) -> Scenario:
    data = zip_bytes({"__MACOSX/s/._1.dcm": b"x", "s/.DS_Store": b"y"})
    return _upload(ctx, "ct", "meta.zip", data, 422, "no files")


@case("upload", "upload-ct-zip-bad-crc")
def _(ctx: Ctx) -> Scenario:
    raw = bytearray(zip_bytes({"s/1.dcm": b"DICM" * 200}))
    raw[14] ^= 0xFF  # CRC-32 in the local header ...
    i = raw.rindex(b"PK\x01\x02")
    raw[i + 16] ^= 0xFF  # ... and in the central directory: the data no longer match
    return _upload(ctx, "ct", "crc.zip", bytes(raw), 422, "corrupt")
