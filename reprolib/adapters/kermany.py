"""Kermany et al. (2018), *Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for
Classification*, Mendeley Data v2 (doi 10.17632/rscbjbr9sj.2): the chest X-rays of
``ChestXRay2017.zip``.

Layout of the unpacked zip: ``chest_xray/<split>/<NORMAL|PNEUMONIA>/<file>.jpeg`` with split
``train`` and ``test`` (the Kaggle copy adds a small ``val``). Pneumonia files are named
``person<N>_bacteria_<k>.jpeg`` or ``person<N>_virus_<k>.jpeg``; normal ones ``IM-<id>-<k>.jpeg``,
``NORMAL2-IM-<id>-<k>.jpeg``. The patient is the name up to the image counter.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..cxr import CXRRecord
from ..errors import InputError
from .inventory import Inventory

DATASET = "kermany"
MODALITY = "cxr"
SUBDIR = "mendeley"
LAYOUT = "chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg (the unpacked ChestXRay2017.zip)"
#: Images per split and class in Mendeley v2 (5,856 in all; the Kaggle copy moves 16 of the
#: training images into ``val``, so train + val is compared with ``train``).
EXPECTED = {"train/NORMAL": 1349, "train/PNEUMONIA": 3883, "test/NORMAL": 234, "test/PNEUMONIA": 390}
EXPECTED_SOURCE = "the Mendeley v2 description (5,856 images)"
_SUFFIXES = (".jpeg", ".jpg", ".png")
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+$", re.I)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+$", re.I)


def patient_and_sublabel(stem: str, klass: str) -> tuple[str, str | None]:
    """``("person12", "bacterial")`` for ``person12_bacteria_45``; ``("IM-0115", None)`` for a
    normal image; the whole stem when a name does not follow the documented pattern."""
    if klass == "PNEUMONIA":
        m = _PERSON.match(stem)
        if m:
            return m.group(1), "bacterial" if m.group(2).lower() == "bacteria" else "viral"
        return stem, None
    m = _NORMAL.match(stem)
    return (m.group(1) if m else stem), None


def index(root: str | Path) -> Inventory:
    """The images under ``root`` (the folder holding ``chest_xray/``), one record each.

    Raises :class:`InputError` naming ``root`` and :data:`LAYOUT` when ``chest_xray/train`` is
    absent."""
    root = Path(root)
    base = root / "chest_xray"
    if not (base / "train").is_dir():
        raise InputError(root, f"not the Kermany layout: expected {LAYOUT}")
    counts = {k: 0 for k in EXPECTED}
    records = []
    for split in ("train", "val", "test"):
        for klass in ("NORMAL", "PNEUMONIA"):
            folder = base / split / klass
            if not folder.is_dir():
                continue
            key = f"{'train' if split == 'val' else split}/{klass}"
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() not in _SUFFIXES or f.name.startswith("."):
                    continue
                group, sub = patient_and_sublabel(f.stem, klass)
                records.append(CXRRecord(f, "healthy" if klass == "NORMAL" else "pneumonia", sub, group, DATASET,
                                         age_group="child"))
                counts[key] += 1
    return Inventory(DATASET, root, records, counts, dict(EXPECTED), EXPECTED_SOURCE)
