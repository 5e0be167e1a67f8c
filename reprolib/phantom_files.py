"""Phantom CT volumes written as a scanner or archive would: NIfTI volumes and masks, and DICOM series.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DicomError, NiftiError
from .files import atomic_write_bytes
from .io import write_nifti as write_volume_nifti
from .phantoms import SALT_CT, CTPhantom
from .volume import CTVolume


def _phantom_volume(arr_zyx: np.ndarray, spacing_mm: Sequence[float]) -> CTVolume:
    """A phantom array centred on the scanner origin: voxel 0 at -(n - 1) / 2 spacings (LPS)."""
    sz, sy, sx = (float(s) for s in spacing_mm)
    d, h, w = arr_zyx.shape
    origin = (-0.5 * (w - 1) * sx, -0.5 * (h - 1) * sy, -0.5 * (d - 1) * sz)  # (x, y, z) of voxel 0
    return CTVolume(hu=arr_zyx, spacing_mm=(sz, sy, sx), origin_mm=origin)


def write_nifti(ph: CTPhantom, path: str | os.PathLike) -> Path:
    """Write the HU volume as int16 NIfTI-1 (``.nii`` or ``.nii.gz``) with :func:`reprolib.io.write_nifti`.

    The data array is (x, y, z) with an RAS affine built from ``spacing_mm`` (LPS → RAS flips
    x and y), so ``np.asarray(img.dataobj).transpose(2, 1, 0)`` is ``ph.hu`` again and the
    header zooms are (sx, sy, sz); the bytes are reproducible.
    """
    return write_volume_nifti(_phantom_volume(np.asarray(ph.hu, dtype=np.int16), ph.spacing_mm), None, path)


def write_nifti_mask(mask: np.ndarray, spacing_mm: Sequence[float], path: str | os.PathLike) -> Path:
    """Write a {0, 1} (z, y, x) mask as uint8 NIfTI with the same geometry as :func:`write_nifti`."""
    m = np.asarray(mask)
    if m.size and (m.min() < 0 or m.max() > 1):
        raise NiftiError(Path(path), f"mask values must be 0 or 1, got range [{m.min()}, {m.max()}]")
    return write_volume_nifti(_phantom_volume(m.astype(np.uint8), spacing_mm), None, path)


def _ds(v: float) -> str:
    """A DICOM decimal string (≤ 16 characters)."""
    s = f"{v:.10g}"
    return s if len(s) <= 16 else f"{v:.6g}"


def _dicom_stored(ph: CTPhantom, slope: float, intercept: float, directory: Path) -> tuple[np.ndarray, int]:
    if not (np.isfinite(slope) and slope > 0 and np.isfinite(intercept)):
        raise DicomError(directory, f"rescale slope must be positive and finite, "
                                    f"got slope={slope}, intercept={intercept}")
    stored = np.rint((ph.hu.astype(np.float64) - intercept) / slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= 0 and hi <= 65535:
        return stored.astype("<u2"), 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype("<i2"), 1
    raise DicomError(directory, f"stored values span [{lo:.0f}, {hi:.0f}]: slope={slope}, "
                                f"intercept={intercept} do not fit 16 bits")


def write_dicom_series(ph: CTPhantom, directory: str | os.PathLike, slope: float = 1.0,
                       intercept: float = -1024.0, shuffle: bool = False, seed: int = 0) -> list[Path]:
    """Write one uncompressed CT Image Storage file per slice.

    Parameters
    ----------
    ph : CTPhantom
    directory : path
        Created if missing; must not hold other ``.dcm`` files.
    slope, intercept : float
        Rescale: stored = round((HU - intercept) / slope), HU = slope · stored
        + intercept (exact when the division is integral). Stored as uint16
        (PixelRepresentation 0) if it fits, else int16.
    shuffle : bool
        Assign file names ``IM0000.dcm…`` in a random order (tests sorting).
    seed : int
        With ``ph.case_id``, fixes the UIDs and the shuffle order.

    Returns
    -------
    list of Path
        ``paths[k]`` holds slice k (z = z0 + k · sz, k = 0 most inferior).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory = Path(directory)
    stored, pixel_rep = _dicom_stored(ph, float(slope), float(intercept), directory)
    d, h, w = ph.hu.shape
    names = [f"IM{i:04d}.dcm" for i in range(d)]
    if shuffle:
        order = np.random.default_rng([SALT_CT, seed, 7]).permutation(d)
        names = [names[int(i)] for i in order]
    directory.mkdir(parents=True, exist_ok=True)
    stray = sorted(p.name for p in directory.glob("*.dcm") if p.name not in set(names))
    if stray:
        raise DicomError(directory, f"directory already holds other DICOM files ({stray[0]}, ...); use an empty one")

    key = [ph.case_id, str(seed)]
    study_uid = generate_uid(entropy_srcs=key + ["study"])
    series_uid = generate_uid(entropy_srcs=key + ["series"])
    frame_uid = generate_uid(entropy_srcs=key + ["frame"])
    sz, sy, sx = ph.spacing_mm
    x0, y0, z0 = -0.5 * (w - 1) * sx, -0.5 * (h - 1) * sy, -0.5 * (d - 1) * sz
    major = int(pydicom.__version__.split(".")[0])
    paths = []
    for k in range(d):
        sop_uid = generate_uid(entropy_srcs=key + ["sop", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200301"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.Modality = "CT"
        ds.Manufacturer = "covid-repro synthetic phantom"
        ds.PatientName = ph.case_id
        ds.PatientID = ph.case_id
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        zk = z0 + k * sz
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(zk)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds(zk)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = h, w
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_rep
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.PixelData = stored[k].tobytes()
        buf = io.BytesIO()
        if major >= 3:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        else:  # pydicom 2.4
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.preamble = b"\0" * 128
            pydicom.dcmwrite(buf, ds, write_like_original=False)
        path = directory / names[k]
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
