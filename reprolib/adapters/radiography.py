"""The COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021), Kaggle
``tawsifurrahman/covid19-radiography-database``, version 4 and later.

Layout of the unpacked download: ``COVID-19_Radiography_Dataset/<class>/images/<class>-<n>.png``
(299×299 PNG, with ``masks/`` beside ``images/``) for the classes ``COVID``, ``Normal``,
``Lung_Opacity`` and ``Viral Pneumonia``, plus one ``<class>.metadata.xlsx`` per class. The
database gives no patient identifiers: each image is its own group, so patient-level splits
cannot be guaranteed (said wherever these images are used). ``Lung_Opacity`` (non-COVID lung
infections) has no class of the seed paper and is counted as skipped.
"""
from __future__ import annotations

from pathlib import Path

from ..cxr import CXRRecord
from ..errors import InputError
from .inventory import Inventory

DATASET = "covid-19-radiography-database"
MODALITY = "cxr"
SUBDIR = "kaggle/covid19-radiography-database"
LAYOUT = ("COVID-19_Radiography_Dataset/{COVID,Normal,Lung_Opacity,Viral Pneumonia}/images/*.png "
          "(the unpacked Kaggle download, version 4 or later)")
#: Images per class of version 4 (21,165 in all), from the dataset's Kaggle description.
EXPECTED = {"COVID": 3616, "Normal": 10192, "Lung_Opacity": 6012, "Viral Pneumonia": 1345}
EXPECTED_SOURCE = "the Kaggle description of version 4 (21,165 images)"
_CLASSES = {"COVID": ("covid19", None), "Normal": ("healthy", None), "Viral Pneumonia": ("pneumonia", "viral")}


def index(root: str | Path) -> Inventory:
    """The images under ``root`` (the folder holding ``COVID-19_Radiography_Dataset/``);
    :class:`InputError` naming ``root`` and :data:`LAYOUT` when that folder is absent."""
    root = Path(root)
    base = root / "COVID-19_Radiography_Dataset"
    if not base.is_dir():
        raise InputError(root, f"not the COVID-19 Radiography Database layout: expected {LAYOUT}")
    counts = {k: 0 for k in EXPECTED}
    records, skipped = [], 0
    for klass in EXPECTED:
        folder = base / klass / "images"
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.png")):
            counts[klass] += 1
            if klass not in _CLASSES:
                skipped += 1
                continue
            label, sub = _CLASSES[klass]
            records.append(CXRRecord(f, label, sub, f.stem, DATASET))
    notes = [f"{counts['Lung_Opacity']} Lung_Opacity images skipped (no class of the seed paper)"] if skipped else []
    notes.append("no patient identifiers: each image is its own group")
    return Inventory(DATASET, root, records, counts, dict(EXPECTED), EXPECTED_SOURCE, skipped=skipped, notes=notes)
