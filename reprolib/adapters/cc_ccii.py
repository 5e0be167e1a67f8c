"""CC-CCII, the China Consortium of Chest CT Image Investigation (Zhang et al., Cell 181:1423,
2020): CT scans as folders of 8-bit slice images, in three classes.

Layout of the unpacked zip parts (``COVID19-*.zip``, ``CP-*.zip``, ``Normal-*.zip``) from
http://ncov-ai.big.ac.cn/download: ``{NCP,CP,Normal}/<patient_id>/<scan_id>/<slice>.{png,jpg}``
(NCP: novel coronavirus pneumonia, CP: common pneumonia). The slices are already windowed: no
Hounsfield units and no spacing, so the CT preprocessing cannot be applied as specified; the
pipeline flags these scans (``kind`` ``png``). The download page's own folder names inside the
zips could not be checked offline: an archive that unpacks differently is refused naming this
layout.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io import png_stack_files
from .inventory import Inventory

DATASET = "cc-ccii"
MODALITY = "ct"
SUBDIR = "ncov-ai.big.ac.cn"
LAYOUT = "{NCP,CP,Normal}/<patient_id>/<scan_id>/*.png (the unpacked zip parts of the download page)"
#: Scans per class, from the consortium's dataset statistics (patients: 897 NCP, 964 CP, 849 normal).
EXPECTED = {"NCP": 1449, "CP": 1347, "Normal": 1046}
EXPECTED_SOURCE = "the CC-CCII dataset statistics (3,842 scans of 2,710 patients)"
_LABELS = {"NCP": "covid19", "CP": "common_pneumonia", "Normal": "normal"}


def index(root: str | Path) -> Inventory:
    """One case per scan folder holding slice images (rows as :func:`reprolib.data.ct_cases`,
    ``group`` the patient); :class:`InputError` naming ``root`` when no class folder exists."""
    root = Path(root)
    if not any((root / k).is_dir() for k in EXPECTED):
        raise InputError(root, f"not the CC-CCII layout: expected {LAYOUT}")
    counts = {k: 0 for k in EXPECTED}
    records, empty = [], []
    for klass, label in _LABELS.items():
        folder = root / klass
        patients = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        for patient in patients:
            for scan in sorted(p for p in patient.iterdir() if p.is_dir()):
                n = len(png_stack_files(scan)) if any(scan.iterdir()) else 0
                if n == 0:
                    empty.append(f"{klass}/{patient.name}/{scan.name}")
                    continue
                counts[klass] += 1
                records.append({"case_id": f"{DATASET}:{klass}-{patient.name}-{scan.name}", "dataset": DATASET,
                                "label": label, "target": int(label == "covid19"), "group": f"{klass}-{patient.name}",
                                "split": "-", "path": str(scan), "kind": "png", "n_files": n})
    notes = [f"{len(empty)} scan folders without slice images (first: {empty[0]})"] if empty else []
    notes.append("windowed 8-bit slices: no Hounsfield units, no spacing")
    return Inventory(DATASET, root, records, counts, dict(EXPECTED), EXPECTED_SOURCE, notes=notes)
