"""Miniature archives of the paper profile's datasets, in each publisher's real layout.

:func:`write` draws phantoms (:mod:`reprolib.phantoms`, :mod:`reprolib.cxr_phantoms`) and
writes them with each distribution's folder and file naming: DICOM series for COVID-CT-MD,
NIfTI studies and masks for MosMedData and COVID-19-CT-Seg, windowed slice PNGs for CC-CCII,
JPEG / PNG images for Kermany, the ieee8023 collection (with its ``metadata.csv``) and the
COVID-19 Radiography Database. The adapters (:mod:`reprolib.adapters`) read them as they read
the real archives, so the paper profile's code path runs end to end on a CPU in minutes
(``repro data mini-archives DIR``, then ``REPRO_DATA_DIR=DIR repro run --profile paper
--schedule smoke``). A few items of each class are written: more than the smoke schedule's
``per_class`` subset, fewer than the documented counts, so the pages read "partial".
"""
from __future__ import annotations

import csv
import io as _io
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .adapters import cc_ccii, cohen, covid_19_ct_seg, covid_ct_md, kermany, mosmeddata, radiography
from .cxr_phantoms import cxr_phantom, write_png
from .files import atomic_write_bytes, atomic_write_text
from .phantom_files import write_dicom_series, write_nifti, write_nifti_mask
from .phantoms import CTPhantom, ct_phantom
from .preprocess import window  # [-1200, 600] HU to 8 bits, as CC-CCII's slices come

#: Phantom grid (z, y, x) and spacing (mm) of the CT archives: the 120 × 180 × 180 mm half-scale
#: chest of the synthetic profile's classifier cohort, in few voxels.
CT_SHAPE, CT_SPACING_MM = (32, 96, 96), (3.75, 1.875, 1.875)
#: Pixels of the chest X-ray images.
CXR_SIZE = 96
#: The Cohen columns this build reads, in the collection's order.
COHEN_COLUMNS = ("patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "view", "modality",
                 "date", "location", "folder", "filename", "doi", "url", "license", "clinical_notes")


def _ct(seed: int, finding: str) -> CTPhantom:
    """A phantom CT: ``covid`` (label 1), ``non_covid`` or ``clear`` (label 0)."""
    return ct_phantom(seed, int(finding == "covid"), shape=CT_SHAPE, spacing_mm=CT_SPACING_MM,
                      finding=None if finding == "covid" else finding, finding_scale=2.0)


def _jpeg(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    atomic_write_bytes(path, buf.getvalue())


def covid_ct_md_archive(root: Path, per_class: int, seed: int) -> int:
    for k, (klass, stem, finding) in enumerate((("COVID-19 subjects", "P{:03d}", "covid"),
                                               ("Cap subjects", "cap{:03d}", "non_covid"),
                                               ("Normal subjects", "normal{:03d}", "clear"))):
        for i in range(1, per_class + 1):
            write_dicom_series(_ct(seed + 100 * k + i, finding), root / klass / stem.format(i))
    return 3 * per_class


def mosmeddata_archive(root: Path, per_class: int, seed: int) -> int:
    base, n = root / "COVID19_1110", 0
    for cat, finding in (("CT-0", "clear"), ("CT-1", "covid"), ("CT-2", "covid")):
        for _ in range(per_class if cat != "CT-2" else 1):
            n += 1
            ph = _ct(seed + 200 + n, finding)
            write_nifti(ph, base / "studies" / cat / f"study_{n:04d}.nii.gz")
            if cat == "CT-1":
                write_nifti_mask(ph.lesion_mask, ph.spacing_mm, base / "masks" / f"study_{n:04d}_mask.nii.gz")
    return n


def cc_ccii_archive(root: Path, per_class: int, seed: int) -> int:
    n = 0
    for k, (klass, finding) in enumerate((("NCP", "covid"), ("CP", "non_covid"), ("Normal", "clear"))):
        for p in range(per_class):
            patient = str(1000 * (k + 1) + p)
            for scan in range(1 + (p == 0)):  # the first patient of each class has two scans
                ph = _ct(seed + 300 + 10 * k + 3 * p + scan, finding)
                folder = root / klass / patient / str(2000 + 10 * p + scan)
                for z, sl in enumerate(window(ph.hu)):
                    write_png(sl, folder / f"{z:04d}.png")
                n += 1
    return n


def covid_19_ct_seg_archive(root: Path, per_class: int, seed: int) -> int:
    stems = [f"coronacases_org_{i:03d}" for i in range(1, per_class + 1)]
    stems.append("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm")
    for i, stem in enumerate(stems):
        ph = _ct(seed + 400 + i, "covid")
        # the Radiopaedia volumes come intensity-normalised (0-255), not in HU
        shown = ph if stem.startswith("coronacases") else replace(ph, hu=window(ph.hu).astype(np.int16))
        write_nifti(shown, root / covid_19_ct_seg.CT_DIR / f"{stem}.nii.gz")
        out = covid_19_ct_seg.mask_stem(stem) + ".nii.gz"
        write_nifti_mask(ph.lung_mask, ph.spacing_mm, root / covid_19_ct_seg.LUNG_DIR / out)
        write_nifti_mask(ph.lesion_mask, ph.spacing_mm, root / covid_19_ct_seg.INFECTION_DIR / out)
    return len(stems)


def kermany_archive(root: Path, per_class: int, seed: int) -> int:
    n = 0
    for split, count in (("train", per_class + 1), ("test", per_class), ("val", 1)):
        for j in range(count):
            n += 1
            healthy = cxr_phantom(seed + 500 + n, "healthy", CXR_SIZE, patient=seed + 500 + n)
            _jpeg(healthy.image, root / "chest_xray" / split / "NORMAL" / f"IM-{n:04d}-0001.jpeg")
            sub = ("bacteria", "virus")[j % 2]
            sick = cxr_phantom(seed + 600 + n, "pneumonia", CXR_SIZE, patient=seed + 600 + n,
                               sublabel="bacterial" if sub == "bacteria" else "viral")
            _jpeg(sick.image, root / "chest_xray" / split / "PNEUMONIA" / f"person{n}_{sub}_{j + 1}.jpeg")
    return 2 * n


def cohen_archive(root: Path, per_class: int, seed: int) -> int:
    rows = []
    plan = ([("covid19", "Pneumonia/Viral/COVID-19", "Italy", 60)] * (per_class + 1)
            + [("healthy", "No Finding", "Spain", 45), ("pneumonia", "Pneumonia/Bacterial/Streptococcus", "USA", 50)]
            * per_class
            + [("covid19", "Pneumonia/Viral/COVID-19", "Hannover Medical School, Hannover, Germany", 70),
               ("healthy", "Tuberculosis", "China", 40)])
    for i, (label, finding, location, age) in enumerate(plan, start=1):
        ph = cxr_phantom(seed + 700 + i, label, CXR_SIZE, sublabel="bacterial" if label == "pneumonia" else None)
        name = f"mini-{i:03d}.png"
        write_png(ph.image, root / "images" / name)
        rows.append({"patientid": str(i), "age": str(age), "finding": finding, "view": "PA", "modality": "X-ray",
                     "location": location, "folder": "images", "filename": name, "url": "https://example.org/mini"})
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COHEN_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({c: r.get(c, "") for c in COHEN_COLUMNS} for r in rows)
    atomic_write_text(root / "metadata.csv", buf.getvalue())
    return len(rows)


def radiography_archive(root: Path, per_class: int, seed: int) -> int:
    base, n = root / "COVID-19_Radiography_Dataset", 0
    for k, (klass, label) in enumerate((("COVID", "covid19"), ("Normal", "healthy"), ("Lung_Opacity", "pneumonia"),
                                        ("Viral Pneumonia", "pneumonia"))):
        for i in range(1, per_class + 2):
            ph = cxr_phantom(seed + 800 + 10 * k + i, label, CXR_SIZE, sublabel="viral" if label == "pneumonia" else None)
            write_png(ph.image, base / klass / "images" / f"{klass}-{i}.png")
            write_png(ph.lung_mask * np.uint8(255), base / klass / "masks" / f"{klass}-{i}.png")
            n += 1
    return n


#: dataset -> (adapter, writer): every dataset of the paper profile with an archive adapter.
WRITERS = {
    covid_ct_md.DATASET: (covid_ct_md, covid_ct_md_archive),
    mosmeddata.DATASET: (mosmeddata, mosmeddata_archive),
    cc_ccii.DATASET: (cc_ccii, cc_ccii_archive),
    covid_19_ct_seg.DATASET: (covid_19_ct_seg, covid_19_ct_seg_archive),
    kermany.DATASET: (kermany, kermany_archive),
    cohen.DATASET: (cohen, cohen_archive),
    radiography.DATASET: (radiography, radiography_archive),
}


def write(data_dir: str | Path, per_class: int = 3, seed: int = 0, datasets=None) -> dict[str, int]:
    """Write the miniature archive of each dataset (default: all of :data:`WRITERS`) under
    ``data_dir/<adapter SUBDIR>``; returns the items written per dataset. ``per_class`` items of
    each class (a few datasets add one more of some kind, e.g. a second scan)."""
    out = {}
    for name in tqdm(list(datasets or WRITERS), desc="miniature archives", unit="dataset"):
        mod, writer = WRITERS[name]
        out[name] = writer(Path(data_dir) / mod.SUBDIR, per_class, seed)
    return out
