"""Tests for reprolib.io: DICOM/NIfTI/PNG readers, HU conversion, NIfTI writing."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from reprolib.dicom import read_dicom_series
from reprolib.errors import DicomError, ImageError, InputError, NiftiError
from reprolib.io import read_ct, read_nifti, read_png_stack, write_nifti
from reprolib.volume import CTVolume, stored_to_hu

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

# --------------------------------------------------------------------- helpers

ROWS, COLS = 6, 7  # rows != cols catches transposition errors
PIX = (0.7, 0.8)   # PixelSpacing = (row spacing dy, column spacing dx)


def write_slice(path: Path, stored: np.ndarray, z: float | None, *, series_uid: str,
                slope: float | None = 2.0, intercept: float | None = -1024.0, instance: int = 1,
                modality: str = "CT", slice_location: float | None = None,
                pixel_spacing=PIX, with_pixels: bool = True) -> Path:
    """Write one uncompressed signed-16-bit DICOM CT slice with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if z is not None:
        ds.ImagePositionPatient = [-10.0, -20.0, float(z)]
    if slice_location is not None:
        ds.SliceLocation = float(slice_location)
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = 2.5
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if with_pixels:
        ds.PixelData = stored.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_values(k: int) -> np.ndarray:
    """Distinct stored values for slice k, including values to be clipped."""
    v = (np.arange(ROWS * COLS, dtype=np.int32).reshape(ROWS, COLS) * 7 + 100 * k).astype(np.int16)
    v[0, 0] = -2000   # <= -2000 -> 0
    v[0, 1] = -2500   # <= -2000 -> 0
    v[1, 0] = 3500    # >= 3000 -> 3000
    v[1, 1] = -1999   # kept
    return v


def expected_hu(stored: np.ndarray, slope=2, intercept=-1024) -> np.ndarray:
    v = stored.astype(np.int64)
    v[v <= -2000] = 0
    v[v >= 3000] = 3000
    return (slope * v + intercept).astype(np.int16)


def make_series(d: Path, zs, *, uid: str | None = None, **kw) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    return [write_slice(d / f"s{k:03d}.dcm", slice_values(k), z, series_uid=uid, instance=k + 1, **kw)
            for k, z in enumerate(zs)]


def world(vol: CTVolume, k: int, j: int, i: int) -> np.ndarray:
    """LPS position (mm) of voxel hu[k, j, i]."""
    dz, dy, dx = vol.spacing_mm
    return np.asarray(vol.origin_mm) + vol.direction @ (np.array([dx, dy, dz]) * [i, j, k])


# ------------------------------------------------------------------ HU values


def test_stored_to_hu_hand_values():
    stored = np.array([-3000, -2000, -1999, 0, 1024, 2999, 3000, 4000])
    # slope 2, intercept -1024: -3000,-2000 -> 0 -> -1024; -1999 -> -5022; >= 3000 -> 3000 -> 4976
    assert stored_to_hu(stored, 2, -1024).tolist() == [-1024, -1024, -5022, -1024, 1024, 4974, 4976, 4976]
    assert stored_to_hu(stored, 2, -1024).dtype == np.int16
    # typical unsigned 12-bit CT, slope 1 / intercept -1024
    assert stored_to_hu(np.array([0, 100, 3000, 4095], np.uint16), 1, -1024).tolist() == [-1024, -924, 1976, 1976]
    # non-integer rescale is rounded: 0.5*3 - 1000.4 = -998.9 -> -999
    assert stored_to_hu(np.array([3]), 0.5, -1000.4).tolist() == [-999]


# ---------------------------------------------------------------- DICOM series


def test_dicom_series_sorted_dedup_exact_hu(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    uid = generate_uid()
    zs = [0.0, 2.5, 5.0, 7.5, 10.0]
    names = ["e.dcm", "a.dcm", "d.dcm", "b.dcm", "c.dcm"]  # file order != position order
    rng = np.random.default_rng(0)
    for k in rng.permutation(len(zs)):
        write_slice(d / names[k], slice_values(k), zs[k], series_uid=uid, instance=k + 1)
    # exact duplicate position (same z as slice 2), written under a name that sorts first
    write_slice(d / "0dup.dcm", slice_values(2), zs[2], series_uid=uid, instance=99)
    (d / ".DS_Store").write_bytes(b"ignored hidden file")

    vol = read_dicom_series(d)
    assert vol.hu.shape == (5, ROWS, COLS) and vol.hu.dtype == np.int16
    for k in range(5):
        np.testing.assert_array_equal(vol.hu[k], expected_hu(slice_values(k)))
    assert vol.hu[0, 0, 0] == -1024 and vol.hu[0, 1, 0] == 2 * 3000 - 1024 and vol.hu[0, 1, 1] == 2 * -1999 - 1024
    assert vol.spacing_mm == pytest.approx((2.5, 0.7, 0.8))
    assert vol.meta["n_duplicates_dropped"] == 1
    assert vol.meta["files"] == ["e.dcm", "a.dcm", "d.dcm", "b.dcm", "c.dcm"]
    assert vol.meta["slice_positions_mm"] == pytest.approx(zs)
    assert vol.origin_mm == pytest.approx((-10.0, -20.0, 0.0))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    assert vol.is_hu and read_ct(d).hu.tolist() == vol.hu.tolist()


def test_dicom_slice_location_fallback(tmp_path):
    d = tmp_path / "s"
    uid = generate_uid()
    d.mkdir()
    for k, loc in enumerate([30.0, 10.0, 20.0]):
        write_slice(d / f"{k}.dcm", slice_values(k), None, series_uid=uid, slice_location=loc)
    vol = read_dicom_series(d)
    assert vol.meta["sorted_by"] == "SliceLocation"
    np.testing.assert_array_equal(vol.hu[0], expected_hu(slice_values(1)))  # location 10
    np.testing.assert_array_equal(vol.hu[2], expected_hu(slice_values(0)))  # location 30


def _raises_naming(exc_type, fn, name: str, problem: str):
    with pytest.raises(exc_type) as ei:
        fn()
    assert name in str(ei.value), str(ei.value)
    assert problem in str(ei.value), str(ei.value)
    return ei.value


def test_dicom_mixed_series(tmp_path):
    files = make_series(tmp_path / "s", [0, 2, 4, 6])
    write_slice(files[2], slice_values(2), 4, series_uid=generate_uid())
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), files[2].name, "mixed series")


def test_dicom_missing_slice(tmp_path):
    files = make_series(tmp_path / "s", [0, 2, 4, 6, 8, 10])
    files[3].unlink()  # z = 6 missing: gap 4 mm > 1.5 x 2 mm
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), files[4].name, "missing slice")


def test_dicom_non_uniform_spacing(tmp_path):
    files = make_series(tmp_path / "s", [0, 2, 4, 6.5, 8.5, 10.5])  # 2.5 mm gap: < 3 mm but not uniform
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), files[3].name, "non-uniform")


def test_dicom_single_slice(tmp_path):
    files = make_series(tmp_path / "s", [0])
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), files[0].name, "single slice")


def test_dicom_not_dicom_file(tmp_path):
    make_series(tmp_path / "s", [0, 2, 4])
    (tmp_path / "s" / "notes.txt").write_text("not a DICOM file\n")
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), "notes.txt", "not a DICOM")


def test_dicom_truncated_and_no_pixels(tmp_path):
    files = make_series(tmp_path / "s", [0, 2, 4])
    raw = files[1].read_bytes()
    files[1].write_bytes(raw[:-20])  # pixel data cut short
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), files[1].name, "pixel data")
    files = make_series(tmp_path / "t", [0, 2, 4])
    write_slice(files[2], slice_values(2), 4, series_uid=str(pydicom.dcmread(files[0]).SeriesInstanceUID),
                with_pixels=False)
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "t"), files[2].name, "no pixel data")


def test_dicom_differing_rows_cols(tmp_path):
    files = make_series(tmp_path / "s", [0, 2, 4])
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    write_slice(files[1], np.zeros((ROWS + 1, COLS), np.int16), 2, series_uid=uid)
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "s"), files[1].name, "differs")


def test_dicom_missing_rescale(tmp_path):
    # CT without rescale tags: rejected (Type 1 in the CT Image module)
    files = make_series(tmp_path / "ct", [0, 2, 4], slope=None, intercept=None)
    _raises_naming(DicomError, lambda: read_dicom_series(tmp_path / "ct"), files[0].name, "RescaleSlope")
    # other modality: identity assumed, flagged, warned
    make_series(tmp_path / "ot", [0, 2, 4], slope=None, intercept=None, modality="OT")
    with pytest.warns(UserWarning, match="assuming slope 1"):
        vol = read_dicom_series(tmp_path / "ot")
    assert vol.meta["rescale_assumed"] is True
    np.testing.assert_array_equal(vol.hu[1], expected_hu(slice_values(1), slope=1, intercept=0))


@pytest.mark.slow
@pytest.mark.mirror
def test_real_covid_ct_md_jpeg_lossless(mirror):
    """P002 of COVID-CT-MD: JPEG Lossless (Process 14) DICOM, 133 slices of 512x512."""
    hits = sorted((mirror / "raw.githubusercontent.com" / "ShahinSHH" / "COVID-CT-MD").glob(
        "*/Sample data/COVID-19 subjects/P002"))
    if not hits:
        pytest.skip("COVID-CT-MD sample P002 not in the data mirror")
    d = hits[0]
    vol = read_dicom_series(d)
    assert vol.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70"  # really compressed
    assert vol.hu.shape == (133, 512, 512) and vol.hu.dtype == np.int16
    assert vol.spacing_mm[0] == pytest.approx(2.0, abs=0.01)
    assert 0.5 < vol.spacing_mm[1] < 0.9 and vol.spacing_mm[1] == vol.spacing_mm[2]
    pos = np.asarray(vol.meta["slice_positions_mm"])
    assert np.all(np.diff(pos) > 0)
    assert vol.hu.min() >= -1100 and 500 < vol.hu.max() < 3100
    # air outside the patient is about -1000 HU
    assert abs(float(np.median(vol.hu[:, :40, :40])) + 1000) < 50
    # second method: SimpleITK/GDCM series reader, sorted by GDCM itself
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(d))
    reader.SetFileNames(names)
    ref = sitk.GetArrayFromImage(reader.Execute())
    if [Path(n).name for n in names] != vol.meta["files"]:
        ref = ref[::-1]  # GDCM may sort descending; content must match either way
    np.testing.assert_array_equal(vol.hu, ref.astype(np.int16))


# ----------------------------------------------------------------------- NIfTI


def test_nifti_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(-1024, 2000, size=(5, 6, 7)).astype(np.int16)
    p = write_nifti(arr, (2.5, 0.7, 0.8), tmp_path / "out" / "v.nii.gz")
    vol = read_nifti(p)
    np.testing.assert_array_equal(vol.hu, arr)
    assert vol.spacing_mm == pytest.approx((2.5, 0.7, 0.8))
    assert [q.name for q in p.parent.iterdir()] == ["v.nii.gz"]  # no temp file left behind
    # CTVolume with geometry round-trips origin and direction too
    v = CTVolume(hu=arr, spacing_mm=(2.5, 0.7, 0.8), origin_mm=(-10, -20, 30))
    back = read_nifti(write_nifti(v, None, tmp_path / "v2.nii"))
    np.testing.assert_array_equal(back.hu, arr)
    assert back.origin_mm == pytest.approx((-10, -20, 30))
    np.testing.assert_allclose(back.direction, np.eye(3), atol=1e-12)
    # a feet-first volume (z axis pointing inferior) comes back flipped to ascending z,
    # and every voxel keeps its world position
    ff = CTVolume(hu=arr, spacing_mm=(2.5, 0.7, 0.8), origin_mm=(-10, -20, 30), direction=np.diag([1.0, 1, -1]))
    back = read_nifti(write_nifti(ff, None, tmp_path / "ff.nii"))
    np.testing.assert_array_equal(back.hu, arr[::-1])
    for k, j, i in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        np.testing.assert_allclose(world(back, 4 - k, j, i), world(ff, k, j, i), atol=1e-4)


def test_nifti_orientation_canonical(tmp_path):
    ni, nj, nk = 4, 5, 6
    d = np.arange(ni * nj * nk, dtype=np.int16).reshape(ni, nj, nk)  # d[i, j, k] in RAS index space
    sx, sy, sz = 0.7, 0.8, 2.5
    ras = np.diag([sx, sy, sz, 1.0])
    nib.save(nib.Nifti1Image(d, ras), tmp_path / "ras.nii.gz")
    # same voxels stored LPS-style: i runs right->left, j anterior->posterior
    lps = np.diag([-sx, -sy, sz, 1.0])
    lps[:3, 3] = [(ni - 1) * sx, (nj - 1) * sy, 0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(d[::-1, ::-1, :]), lps), tmp_path / "lps.nii.gz")
    # same voxels with permuted storage axes (k, i, j)
    perm = np.zeros((4, 4))
    perm[:3, 0], perm[:3, 1], perm[:3, 2], perm[3, 3] = [0, 0, sz], [sx, 0, 0], [0, sy, 0], 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(d.transpose(2, 0, 1)), perm), tmp_path / "perm.nii.gz")

    expected = d.transpose(2, 1, 0)[:, ::-1, ::-1]  # (z=S, y=P, x=L)
    for name in ("ras", "lps", "perm"):
        vol = read_nifti(tmp_path / f"{name}.nii.gz")
        np.testing.assert_array_equal(vol.hu, expected, err_msg=name)
        assert vol.spacing_mm == pytest.approx((sz, sy, sx))
    # hand check: the right-anterior-superior corner voxel is at z=-1 (superior), y=0, x=0
    assert vol.hu[-1, 0, 0] == d[-1, -1, -1]
    # the anterior-right-inferior voxel d[ni-1, nj-1, 0] is at z=0, y=0 (anterior), x=0 (right)
    assert vol.hu[0, 0, 0] == d[ni - 1, nj - 1, 0]
    ras_vol = read_nifti(tmp_path / "lps.nii.gz", orientation="RAS")
    np.testing.assert_array_equal(ras_vol.hu, d.transpose(2, 1, 0))


def test_nifti_errors(tmp_path):
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii")
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "nan.nii"), "nan.nii", "NaN")

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), tmp_path / "4d.nii")
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "4d.nii"), "4d.nii", "not a 3D")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.int16), np.eye(4)), tmp_path / "4d1.nii")
    assert read_nifti(tmp_path / "4d1.nii").hu.shape == (6, 5, 4)  # singleton 4th dim squeezed

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "zero.nii")
    raw = bytearray((tmp_path / "zero.nii").read_bytes())  # patch the header: pixdim[2] = 0,
    raw[84:88] = np.float32(0).tobytes()                     # qform_code = sform_code = 0
    raw[252:256] = np.zeros(2, "<i2").tobytes()
    (tmp_path / "zero.nii").write_bytes(bytes(raw))
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "zero.nii"), "zero.nii", "spacing")
    raw[84:88] = np.float32(-1.5).tobytes()
    (tmp_path / "neg.nii").write_bytes(bytes(raw))
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "neg.nii"), "neg.nii", "negative")

    big = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 40)).astype(np.int16)
    nib.save(nib.Nifti1Image(big, np.eye(4)), tmp_path / "t.nii.gz")
    raw = (tmp_path / "t.nii.gz").read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(raw[: len(raw) // 2])
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "t.nii.gz"), "t.nii.gz", "corrupt")

    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "junk.nii.gz"), "junk.nii.gz", "NIfTI")

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 1), np.int16), np.eye(4)), tmp_path / "flat.nii")
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "flat.nii"), "flat.nii", "not a 3D")
    _raises_naming(NiftiError, lambda: read_nifti(tmp_path / "t.nii.gz", max_dim=32), "t.nii.gz", "absurd")


# ------------------------------------------------------------------ PNG stacks


def test_png_stack_numeric_order_and_errors(tmp_path):
    d = tmp_path / "png"
    d.mkdir()
    for k in range(12):  # lexicographic order would put 10, 11 before 2
        Image.fromarray(np.full((5, 8), k * 10, np.uint8)).save(d / f"{k}.png")
    vol = read_png_stack(d)
    assert vol.hu.shape == (12, 5, 8) and vol.hu.dtype == np.uint8
    assert vol.hu[:, 0, 0].tolist() == [k * 10 for k in range(12)]
    assert not vol.is_hu and np.all(np.isnan(vol.spacing_mm)) and vol.meta["spacing_known"] is False
    assert read_ct(d).meta["format"] == "png"

    Image.fromarray(np.zeros((6, 8), np.uint8)).save(d / "12.png")
    _raises_naming(ImageError, lambda: read_png_stack(d), "12.png", "size")
    (d / "12.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _raises_naming(ImageError, lambda: read_png_stack(d), "12.png", "unreadable")


@pytest.mark.mirror
def test_real_cc_ccii_png(mirror):
    hits = sorted((mirror / "raw.githubusercontent.com" / "placerda" / "pulmo-sense").glob("*/ccccii/CP/0/3132"))
    if not hits:
        pytest.skip("CC-CCII scan 3132 not in the data mirror")
    vol = read_ct(hits[0])
    assert vol.hu.shape == (42, 512, 512) and vol.hu.dtype == np.uint8 and not vol.is_hu


# -------------------------------------------------------------------- dispatch


def test_read_ct_dispatch(tmp_path):
    make_series(tmp_path / "dcm", [0, 2, 4])
    assert read_ct(tmp_path / "dcm").meta["format"] == "dicom"
    write_nifti(np.zeros((3, 4, 5), np.int16), (1, 1, 1), tmp_path / "a.nii")
    assert read_ct(tmp_path / "a.nii").meta["format"] == "nifti"
    (tmp_path / "x.xyz").write_text("?")
    _raises_naming(InputError, lambda: read_ct(tmp_path / "x.xyz"), "x.xyz", "unknown CT format")
    _raises_naming(InputError, lambda: read_ct(tmp_path / "missing"), "missing", "no such")


def test_write_nifti_replaces_atomically(tmp_path):
    p = tmp_path / "v.nii.gz"
    write_nifti(np.zeros((3, 4, 5), np.int16), (1, 1, 1), p)
    write_nifti(np.ones((3, 4, 5), np.int16), (1, 1, 1), p)
    assert read_nifti(p).hu.min() == 1
    assert sorted(q.name for q in tmp_path.iterdir()) == ["v.nii.gz"]
    with pytest.raises(InputError, match="spacing"):
        write_nifti(np.zeros((3, 4, 5)), (1, 0, 1), tmp_path / "bad.nii")


# ----------------------------------------------------------------------------- slice labels
def _label_files(tmp_path, locations, labels_row, n_rows=3, row=1):
    from reprolib.phantom_files import write_dicom_series
    from reprolib.phantoms import ct_phantom

    ph = ct_phantom(0, 0, shape=(12, 48, 48), finding="clear")
    d = tmp_path / "series"
    files = write_dicom_series(ph, d)
    for f in files[len(locations):]:
        f.unlink()
    files = files[: len(locations)]
    import pydicom

    for f, loc in zip(files, locations):  # overwrite SliceLocation only: the labels follow it
        ds = pydicom.dcmread(f)
        ds.SliceLocation = loc
        ds.save_as(f)
    (tmp_path / "Index.csv").write_text("Label Index,Diagnosis,Relative Path,Folder/ID\n"
                                        + "".join(f"{i},COVID-19,./x/,P{i:03d}\n" for i in range(n_rows)))
    arr = np.zeros((n_rows, 10), np.int32)
    arr[row, : len(labels_row)] = labels_row
    np.save(tmp_path / "labels.npy", arr)
    return d, [f.name for f in files]


def test_read_slice_labels_follow_slice_location(tmp_path):
    from reprolib.io import read_slice_labels

    # reader order 0..4; SliceLocation descending, so label column k is reader slice 4 - k
    d, files = _label_files(tmp_path, [40.0, 30.0, 20.0, 10.0, 0.0], [1, 1, 0, 0, 0])
    got = read_slice_labels(tmp_path / "labels.npy", tmp_path / "Index.csv", "P001", d, files)
    assert got.dtype == bool and got.tolist() == [False, False, False, True, True]
    with pytest.raises(InputError, match="P009"):
        read_slice_labels(tmp_path / "labels.npy", tmp_path / "Index.csv", "P009", d, files)
    with pytest.raises(InputError, match="beyond"):
        read_slice_labels(tmp_path / "labels.npy", tmp_path / "Index.csv", "P001", d, files[:1])
    np.save(tmp_path / "bad.npy", np.zeros((2, 10), np.int32))
    with pytest.raises(InputError, match="bad.npy"):
        read_slice_labels(tmp_path / "bad.npy", tmp_path / "Index.csv", "P001", d, files)


def test_read_slice_labels_real_p001(mirror):
    from reprolib.io import read_slice_labels

    root = mirror / "raw.githubusercontent.com" / "ShahinSHH" / "COVID-CT-MD"
    dirs = sorted(root.glob("*/Sample data/COVID-19 subjects/P001"))
    npys = sorted(root.glob("*/Slice-level-labels-updated-1.npy"))
    if not dirs or not npys:
        pytest.skip("COVID-CT-MD P001 or its slice labels not in the data mirror")
    files = [p.name for p in sorted(dirs[0].iterdir())]
    import pydicom

    pos = [float(pydicom.dcmread(dirs[0] / f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    files = [f for _, f in sorted(zip(pos, files))]  # the reader's order (ascending position)
    lab = read_slice_labels(npys[0], npys[0].parent / "Index.csv", "P001", dirs[0], files)
    # mirror README: 80 of 148 slices positive, slices 26-124 in SliceLocation order
    assert lab.shape == (148,) and lab.sum() == 80
    assert np.flatnonzero(lab)[[0, -1]].tolist() == [26, 124]
