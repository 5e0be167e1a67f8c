"""reprolib.scans: what a user's path is, the up-front checks, scan hashes, folders and lists of scans."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from reprolib import scans
from reprolib.errors import ImageError, InputError


def png_stack(folder, n=4, empty=()):
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        p = folder / f"{i}.png"
        if i in empty:
            p.write_bytes(b"")
        else:
            Image.fromarray(np.full((16, 16), 10 * i, np.uint8)).save(p)
    return folder


def test_kinds_from_names(tmp_path):
    png = png_stack(tmp_path / "png")
    (tmp_path / "dcm").mkdir()
    (tmp_path / "dcm" / "IM0001").write_bytes(b"x")
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "b.mha").write_bytes(b"x")
    assert [scans.scan_kind(p) for p in (png, tmp_path / "dcm", tmp_path / "a.nii.gz", tmp_path / "b.mha")] == [
        "png", "dicom", "nifti", "itk"]
    with pytest.raises(InputError, match="single DICOM file"):
        (tmp_path / "one.dcm").write_bytes(b"x")
        scans.scan_kind(tmp_path / "one.dcm")
    with pytest.raises(InputError, match="no such file"):
        scans.scan_kind(tmp_path / "missing.nii")


def test_png_stack_without_spacing_is_refused_with_the_fix(tmp_path):
    png = png_stack(tmp_path / "scan")
    with pytest.raises(InputError, match=r"scan: PNG/JPEG slices carry no voxel spacing: give it with --spacing Z,Y,X"):
        scans.check_scan(png)
    assert scans.check_scan(png, (1.0, 0.7, 0.7)) == {"kind": "png", "spacing_mm": [1.0, 0.7, 0.7],
                                                      "spacing_source": "--spacing"}
    for bad in ((1.0, 0.7), (1.0, float("nan"), 0.7), (0.0, 1, 1), ("a", 1, 1)):
        with pytest.raises(InputError, match="spacing"):
            scans.check_scan(png, bad)


def test_empty_slices_are_counted_and_named(tmp_path):
    png = png_stack(tmp_path / "scan", n=12, empty=(2, 3, 5, 7, 8, 9, 11))
    with pytest.raises(ImageError, match=r"7 of 12 slice files are empty \(0 bytes\): 2.png, 3.png, 5.png, 7.png, "
                                         r"8.png and 2 more"):
        scans.check_scan(png, (1, 1, 1))
    dcm = tmp_path / "dcm"
    dcm.mkdir()
    (dcm / "a").write_bytes(b"DICM")
    (dcm / "b").write_bytes(b"")
    with pytest.raises(InputError, match=r"1 of 2 files are empty \(0 bytes\): b"):
        scans.check_scan(dcm)
    (tmp_path / "e.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"e.nii.gz: empty file"):
        scans.check_scan(tmp_path / "e.nii.gz")


def test_read_png_stack_takes_the_given_spacing(tmp_path):
    from reprolib.io import read_png_stack

    png = png_stack(tmp_path / "scan")
    vol = read_png_stack(png, spacing_mm=(2.5, 0.8, 0.8))
    assert vol.spacing_mm == (2.5, 0.8, 0.8) and vol.meta["spacing_known"] and vol.hu[1, 0, 0] == 20
    assert np.isnan(read_png_stack(png).spacing_mm).all()


def test_scan_sha256_covers_names_and_contents(tmp_path):
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"volume")
    h = hashlib.sha256(b"volume\0").hexdigest()
    assert scans.scan_sha256(f) == h
    png = png_stack(tmp_path / "scan")
    before = scans.scan_sha256(png)
    (png / "4.png").rename(png / "5.png")
    assert scans.scan_sha256(png) != before


def test_batch_folders_lists_and_ids(tmp_path):
    batch = tmp_path / "batch"
    png_stack(batch / "p1")
    (batch / "ct.nii.gz").write_bytes(b"x")
    (batch / "ct.mha").write_bytes(b"x")
    (batch / "notes.txt").write_text("scans of the week")
    assert scans.is_batch_folder(batch) and not scans.is_batch_folder(batch / "p1")
    found = scans.list_scans(batch)
    assert [p.name for p in found] == ["ct.mha", "ct.nii.gz", "p1"]
    assert scans.scan_ids(found) == ["ct", "ct-2", "p1"]
    lst = tmp_path / "scans.txt"
    lst.write_text("# weekly\nbatch/p1\n\nbatch/ct.nii.gz  # the NIfTI\n")
    assert scans.read_scan_list(lst) == [batch / "p1", batch / "ct.nii.gz"]
    lst.write_text("batch/p1\nbatch/nowhere\n")
    with pytest.raises(InputError, match=r"scans.txt: 1 listed path\(s\) do not exist: line 2: batch/nowhere"):
        scans.read_scan_list(lst)
    with pytest.raises(InputError, match="no scans"):
        (tmp_path / "emptydir").mkdir()
        scans.list_scans(tmp_path / "emptydir")
