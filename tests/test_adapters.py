"""Adapters of the full public datasets, each on a miniature archive written here in the
publisher's layout (folder and file naming), with the counts worked out by hand."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reprolib import adapters, full_data
from reprolib.adapters import cc_ccii, cohen, covid_19_ct_seg, covid_ct_md, kermany, mosmeddata, radiography
from reprolib.errors import InputError


def _image(path: Path, suffix_format: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(path, suffix_format)


def _kermany(root: Path) -> None:
    for rel in ("train/NORMAL/IM-0115-0001.jpeg", "train/NORMAL/NORMAL2-IM-0927-0001.jpeg",
                "train/PNEUMONIA/person1_bacteria_1.jpeg", "train/PNEUMONIA/person1_bacteria_2.jpeg",
                "train/PNEUMONIA/person3_virus_6.jpeg", "val/NORMAL/NORMAL2-IM-1427-0001.jpeg",
                "test/NORMAL/IM-0001-0001.jpeg", "test/PNEUMONIA/person100_virus_184.jpeg"):
        _image(root / "chest_xray" / rel)
    (root / "chest_xray" / "train" / "NORMAL" / ".DS_Store").write_bytes(b"x")  # not an image


def test_kermany_reads_labels_patients_and_counts(tmp_path, monkeypatch):
    _kermany(tmp_path)
    inv = kermany.index(tmp_path)
    by_name = {r.path.name: r for r in inv.records}
    assert len(by_name) == 8 and all(r.source == "kermany" and r.age_group == "child" for r in inv.records)
    assert (by_name["person1_bacteria_2.jpeg"].label, by_name["person1_bacteria_2.jpeg"].sublabel,
            by_name["person1_bacteria_2.jpeg"].group) == ("pneumonia", "bacterial", "person1")
    assert by_name["person3_virus_6.jpeg"].sublabel == "viral"
    assert (by_name["NORMAL2-IM-0927-0001.jpeg"].label, by_name["NORMAL2-IM-0927-0001.jpeg"].group) == (
        "healthy", "NORMAL2-IM-0927")
    assert by_name["IM-0115-0001.jpeg"].group == "IM-0115"
    # val counts with train, as the Kaggle copy moved those images out of Mendeley's train split
    assert inv.counts == {"train/NORMAL": 3, "train/PNEUMONIA": 3, "test/NORMAL": 1, "test/PNEUMONIA": 1}
    assert inv.status == "partial" and inv.summary().startswith("partial: 8 of 5856 items (train/NORMAL 3 of 1349")
    monkeypatch.setattr(kermany, "EXPECTED", dict(inv.counts))
    assert kermany.index(tmp_path).status == "found"


def test_adapters_refuse_another_layout_naming_the_folder(tmp_path):
    _image(tmp_path / "NORMAL" / "IM-0115-0001.jpeg")  # class folders without chest_xray/<split>/
    for mod in (kermany, cohen, radiography, covid_ct_md, mosmeddata, cc_ccii, covid_19_ct_seg):
        with pytest.raises(InputError, match="layout: expected") as err:
            mod.index(tmp_path)
        assert str(tmp_path) in str(err.value)


COHEN_COLUMNS = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "intubated",
                 "view", "modality", "date", "location", "folder", "filename", "doi", "url", "license",
                 "clinical_notes", "other_notes"]


def _cohen(root: Path, rows: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COHEN_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COHEN_COLUMNS})
            if r.get("write", True) and r["folder"] == "images":
                _image(root / "images" / r["filename"])


def _cohen_rows() -> list[dict]:
    x = {"modality": "X-ray", "folder": "images", "view": "PA"}
    return [
        {**x, "patientid": 2, "age": 65, "finding": "Pneumonia/Viral/COVID-19", "filename": "a.jpg", "location": "Italy"},
        {**x, "patientid": 2, "age": 65, "finding": "Pneumonia/Viral/COVID-19", "filename": "b.jpg"},
        {**x, "patientid": 7, "age": 40, "finding": "No Finding", "filename": "c.png"},
        {**x, "patientid": 8, "age": 9, "finding": "Pneumonia/Bacterial/Streptococcus", "filename": "d.jpeg"},
        {**x, "patientid": 9, "age": "", "finding": "Pneumonia/Viral/Influenza", "filename": "e.jpg"},
        {**x, "patientid": 10, "age": 50, "finding": "Tuberculosis", "filename": "f.jpg"},
        {**x, "patientid": 11, "age": 50, "finding": "Pneumonia/Viral/COVID-19", "filename": "gone.jpg", "write": False},
        {"modality": "CT", "folder": "volumes", "patientid": 12, "finding": "Pneumonia/Viral/COVID-19",
         "filename": "ct.nii.gz"},
    ]


def test_cohen_reads_metadata_and_counts_against_its_own_rows(tmp_path):
    _cohen(tmp_path, _cohen_rows())
    inv = cohen.index(tmp_path)
    got = {r.path.name: (r.label, r.sublabel, r.group, r.age_group) for r in inv.records}
    assert got == {"a.jpg": ("covid19", None, "2", "adult"), "b.jpg": ("covid19", None, "2", "adult"),
                   "c.png": ("healthy", None, "7", "adult"), "d.jpeg": ("pneumonia", "bacterial", "8", "child"),
                   "e.jpg": ("pneumonia", "viral", "9", "-")}
    # 7 X-ray rows of images/ (the CT volume is not one); 6 files present, one of them tuberculosis
    assert inv.counts == {"X-ray images": 6} and inv.expected == {"X-ray images": 7} and inv.skipped == 1
    assert inv.status == "partial"


def _radiography(root: Path) -> None:
    base = root / "COVID-19_Radiography_Dataset"
    for klass, n in (("COVID", 2), ("Normal", 3), ("Lung_Opacity", 1), ("Viral Pneumonia", 1)):
        for i in range(1, n + 1):
            _image(base / klass / "images" / f"{klass}-{i}.png", "PNG")
        (base / klass / "masks").mkdir()
    (base / "COVID.metadata.xlsx").write_bytes(b"")


def test_radiography_maps_three_classes_and_skips_lung_opacity(tmp_path, monkeypatch):
    _radiography(tmp_path)
    inv = radiography.index(tmp_path)
    labels = sorted((r.label, r.sublabel, r.group) for r in inv.records)
    assert labels == [("covid19", None, "COVID-1"), ("covid19", None, "COVID-2"), ("healthy", None, "Normal-1"),
                      ("healthy", None, "Normal-2"), ("healthy", None, "Normal-3"),
                      ("pneumonia", "viral", "Viral Pneumonia-1")]
    assert inv.counts == {"COVID": 2, "Normal": 3, "Lung_Opacity": 1, "Viral Pneumonia": 1} and inv.skipped == 1
    assert any("no patient identifiers" in n for n in inv.notes)
    monkeypatch.setattr(radiography, "EXPECTED", dict(inv.counts))
    assert radiography.index(tmp_path).status == "found"


def test_full_data_counts_a_complete_archive_as_found(tmp_path, monkeypatch):
    _kermany(tmp_path / kermany.SUBDIR)
    monkeypatch.setattr(kermany, "EXPECTED", {"train/NORMAL": 3, "train/PNEUMONIA": 3, "test/NORMAL": 1,
                                              "test/PNEUMONIA": 1})
    _cohen(tmp_path / cohen.SUBDIR, _cohen_rows())
    lines = full_data.report("paper", tmp_path)
    by_ds = {line.split()[1].rstrip(":"): line for line in lines}
    assert by_ds["kermany"].startswith("found   kermany: found: 8 of 8 items")
    assert by_ds["ieee8023-covid-chestxray"].startswith("partial ieee8023-covid-chestxray: partial: 6 of 7")
    assert by_ds["covid-19-radiography-database"].startswith("missing covid-19-radiography-database: not found under "
                                                            "$REPRO_DATA_DIR/kaggle/covid19-radiography-database")
    assert by_ds["mosmeddata"].startswith("missing mosmeddata: not found under $REPRO_DATA_DIR/mosmed.ai")
    assert "kermany" not in {g.dataset for g in full_data.missing("paper", tmp_path)}
    assert str(tmp_path) not in "\n".join(lines)  # locations as $REPRO_DATA_DIR/..., never this machine's path
    assert set(adapters.ADAPTERS) == {"covid-ct-md", "mosmeddata", "cc-ccii", "covid-19-ct-seg", "kermany",
                                      "ieee8023-covid-chestxray", "covid-19-radiography-database"}


def test_covid_ct_md_one_case_per_subject_folder(tmp_path, monkeypatch):
    for klass, subject, n in (("COVID-19 subjects", "P001", 3), ("COVID-19 subjects", "P002", 2),
                              ("Cap subjects", "cap002", 2), ("Normal subjects", "normal001", 1),
                              ("Normal subjects", "normal002", 0)):
        d = tmp_path / klass / subject
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"98C14734-ASSH_{100 + i}.dcm").write_bytes(b"\0" * 132 + b"DICM")  # indexed, not read
    inv = covid_ct_md.index(tmp_path)
    rows = {r["group"]: (r["label"], r["target"], r["kind"], r["n_files"]) for r in inv.records}
    assert rows == {"P001": ("covid19", 1, "dicom", 3), "P002": ("covid19", 1, "dicom", 2),
                    "cap002": ("cap", 0, "dicom", 2), "normal001": ("normal", 0, "dicom", 1)}
    assert inv.counts == {"COVID-19 subjects": 2, "Cap subjects": 1, "Normal subjects": 1}
    assert inv.notes == ["1 subject folders without DICOM files (first: Normal subjects/normal002)"]
    assert inv.status == "partial"
    monkeypatch.setattr(covid_ct_md, "EXPECTED", dict(inv.counts))
    assert covid_ct_md.index(tmp_path).status == "found"
    with pytest.raises(InputError, match="COVID-CT-MD layout"):
        covid_ct_md.index(tmp_path / "COVID-19 subjects")


def _nifti(path: Path, shape=(4, 6, 5)) -> None:
    """A small NIfTI volume (content irrelevant to the adapters: they index, never read)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))


def test_mosmeddata_reads_categories_and_masks(tmp_path, monkeypatch):
    base = tmp_path / "COVID19_1110"
    for cat, study in (("CT-0", 1), ("CT-0", 2), ("CT-1", 255), ("CT-1", 256), ("CT-3", 1101)):
        _nifti(base / "studies" / cat / f"study_{study:04d}.nii.gz")
    (base / "studies" / "CT-1" / "notes.txt").write_text("x")  # not a study
    _nifti(base / "masks" / "study_0255_mask.nii.gz")
    (base / "dataset_registry.xlsx").write_bytes(b"")
    inv = mosmeddata.index(tmp_path)
    got = {r["group"]: (r["label"], r["target"], r["severity"], r["kind"]) for r in inv.records}
    assert got == {"study_0001": ("normal", 0, "CT-0", "nifti"), "study_0002": ("normal", 0, "CT-0", "nifti"),
                   "study_0255": ("covid19", 1, "CT-1", "nifti"), "study_0256": ("covid19", 1, "CT-1", "nifti"),
                   "study_1101": ("covid19", 1, "CT-3", "nifti")}
    assert inv.counts == {"CT-0": 2, "CT-1": 2, "CT-2": 0, "CT-3": 1, "CT-4": 0, "masks": 1}
    assert sum(inv.expected.values()) == 1110 + 50 and inv.status == "partial"
    assert [p.name for p in mosmeddata.role_files(tmp_path, "lesion_mask")] == ["study_0255_mask.nii.gz"]
    assert mosmeddata.role_files(tmp_path, "metadata") == []
    monkeypatch.setattr(mosmeddata, "EXPECTED", dict(inv.counts))
    assert mosmeddata.index(tmp_path).status == "found"


def test_cc_ccii_one_case_per_scan_folder_grouped_by_patient(tmp_path):
    for klass, patient, scan, n in (("NCP", "1", "1001", 3), ("NCP", "1", "1002", 2), ("CP", "7", "3001", 2),
                                    ("Normal", "9", "4001", 1), ("Normal", "9", "4002", 0)):
        d = tmp_path / klass / patient / scan
        d.mkdir(parents=True)
        for z in range(n):
            _image(d / f"{z:04d}.png", "PNG")
    inv = cc_ccii.index(tmp_path)
    got = {r["case_id"]: (r["label"], r["target"], r["group"], r["kind"], r["n_files"]) for r in inv.records}
    assert got == {"cc-ccii:NCP-1-1001": ("covid19", 1, "NCP-1", "png", 3),
                   "cc-ccii:NCP-1-1002": ("covid19", 1, "NCP-1", "png", 2),
                   "cc-ccii:CP-7-3001": ("common_pneumonia", 0, "CP-7", "png", 2),
                   "cc-ccii:Normal-9-4001": ("normal", 0, "Normal-9", "png", 1)}
    assert inv.counts == {"NCP": 2, "CP": 1, "Normal": 1} and sum(inv.expected.values()) == 3842
    assert inv.notes[0] == "1 scan folders without slice images (first: Normal/9/4002)"


def test_covid_19_ct_seg_pairs_each_ct_with_its_masks(tmp_path):
    cts = ["coronacases_org_001", "coronacases_org_002", "radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm"]
    for stem in cts:
        _nifti(tmp_path / "COVID-19-CT-Seg_20cases" / f"{stem}.nii.gz")
    for folder in ("Lung_Mask", "Infection_Mask"):
        for stem in ("coronacases_001", "radiopaedia_4_85506_1"):
            _nifti(tmp_path / folder / f"{stem}.nii.gz")
    inv = covid_19_ct_seg.index(tmp_path)
    by = {r["group"]: r for r in inv.records}
    assert sorted(by) == ["coronacases_001", "coronacases_002", "radiopaedia_4_85506_1"]
    assert all(r["label"] == "covid19" and r["target"] == 1 and r["kind"] == "nifti" for r in inv.records)
    assert by["coronacases_001"]["lesion_mask"].endswith("Infection_Mask/coronacases_001.nii.gz")
    assert by["radiopaedia_4_85506_1"]["lung_mask"].endswith("Lung_Mask/radiopaedia_4_85506_1.nii.gz")
    assert by["coronacases_002"]["lesion_mask"] == ""  # no mask written for it
    assert (by["coronacases_001"]["hu"], by["radiopaedia_4_85506_1"]["hu"]) == (True, False)
    assert inv.counts == {"coronacases": 2, "radiopaedia": 1}
    assert inv.notes[0] == "1 CTs without an infection mask (first: coronacases_org_002.nii.gz)"
    assert len(covid_19_ct_seg.role_files(tmp_path, "lesion_mask")) == 2
