"""MosMedData (Morozov et al. 2020, arXiv:2005.06465), COVID19_1110: 1,110 chest CT studies as
NIfTI, by severity category, with expert lesion masks for 50 studies of CT-1.

Layout of the unpacked archive: ``COVID19_1110/studies/CT-<k>/study_<nnnn>.nii.gz`` for the
categories CT-0 (no COVID-19 findings) to CT-4 (over 75 % of the lung affected), and
``COVID19_1110/masks/study_<nnnn>_mask.nii.gz``. This is the layout published code that reads the
archive uses; the publisher's README could not be read offline, so the manifest says so and an
archive that unpacks differently is refused naming this layout. Every study is its own group
(no patient identifier beyond the study).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError
from .inventory import Inventory

DATASET = "mosmeddata"
MODALITY = "ct"
SUBDIR = "mosmed.ai"
LAYOUT = "COVID19_1110/studies/CT-{0,1,2,3,4}/study_<nnnn>.nii.gz and COVID19_1110/masks/study_<nnnn>_mask.nii.gz"
#: Studies per category and lesion masks, from the dataset's README and the manifest's ``paper`` section.
EXPECTED = {"CT-0": 254, "CT-1": 684, "CT-2": 125, "CT-3": 45, "CT-4": 2, "masks": 50}
EXPECTED_SOURCE = "the MosMedData README (1,110 studies, 50 masks)"
_STUDY = re.compile(r"^study_\d+\.nii(\.gz)?$")
_MASK = re.compile(r"^study_\d+_mask\.nii(\.gz)?$")


def _base(root: Path) -> Path:
    base = Path(root) / "COVID19_1110"
    if not (base / "studies").is_dir():
        raise InputError(root, f"not the MosMedData layout: expected {LAYOUT}")
    return base


def index(root: str | Path) -> Inventory:
    """One case per study (rows as :func:`reprolib.data.ct_cases`; ``label`` ``normal`` for CT-0,
    ``covid19`` otherwise, the category in ``severity``); :class:`InputError` naming ``root`` when
    ``COVID19_1110/studies`` is absent."""
    root = Path(root)
    base = _base(root)
    counts = {k: 0 for k in EXPECTED}
    records = []
    for cat in (k for k in EXPECTED if k.startswith("CT-")):
        folder = base / "studies" / cat
        for f in sorted(folder.glob("study_*.nii*")) if folder.is_dir() else []:
            if not _STUDY.match(f.name):
                continue
            counts[cat] += 1
            label = "normal" if cat == "CT-0" else "covid19"
            study = f.name.split(".")[0]
            records.append({"case_id": f"{DATASET}:{study}", "dataset": DATASET, "label": label,
                            "target": int(label == "covid19"), "group": study, "split": "-", "path": str(f),
                            "kind": "nifti", "n_files": 1, "severity": cat})
    counts["masks"] = len(role_files(root, "lesion_mask"))
    return Inventory(DATASET, root, records, counts, dict(EXPECTED), EXPECTED_SOURCE)


def role_files(root: str | Path, role: str) -> list[Path]:
    """The archive's files of ``role``: ``lesion_mask`` (the expert masks); ``[]`` otherwise."""
    masks = _base(Path(root)) / "masks"
    if role != "lesion_mask" or not masks.is_dir():
        return []
    return sorted(f for f in masks.iterdir() if _MASK.match(f.name))
