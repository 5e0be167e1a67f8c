"""The ieee8023 COVID-19 image data collection (Cohen et al. 2020,
https://github.com/ieee8023/covid-chestxray-dataset): ``metadata.csv`` beside ``images/``.

Each row of ``metadata.csv`` names one file (``folder``/``filename``) with ``patientid``,
``finding`` (e.g. ``Pneumonia/Viral/COVID-19``, ``Pneumonia/Bacterial/Streptococcus``,
``No Finding``), ``modality``, ``view``, ``age``, ``location`` and ``url``. Chest X-rays
(``modality`` X-ray, folder ``images``) become records: COVID-19 findings ``covid19``,
``No Finding`` ``healthy``, other pneumonias ``pneumonia`` (bacterial / viral where the finding
says); other findings (tuberculosis, ...) are counted as skipped. Images from the Hannover
Medical School (:func:`is_hannover_original`) keep their rows: the caller
decides, as for the sample, to keep them out of development.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..cxr import CXRRecord
from ..errors import InputError, ManifestError
from .inventory import Inventory

#: Adults from this age (years); Kermany's children are one to five.
ADULT_AGE = 18


def age_group(age: Any) -> str:
    """``"adult"`` (≥ :data:`ADULT_AGE` years), ``"child"`` or ``"-"`` (unknown)."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        return "-"
    return "adult" if years >= ADULT_AGE else "child"


def cohen_metadata(path: str | Path) -> dict[str, dict[str, str]]:
    """The Cohen collection's ``metadata.csv`` as ``{filename: row}``; :class:`ManifestError`
    naming the file when it lacks the columns used here."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(path, f"unreadable Cohen metadata ({exc})") from None
    need = {"filename", "patientid", "age", "location", "url"}
    if not rows or not need <= set(rows[0]):
        raise ManifestError(path, f"expected the columns {sorted(need)} of the Cohen metadata.csv")
    return {r["filename"]: r for r in rows}


def is_hannover_original(row: dict[str, str]) -> bool:
    """A Cohen row whose ``location`` names Hannover or whose ``url`` is the Hannover repository."""
    return "hannover" in row.get("location", "").lower() or "ml-workgroup" in row.get("url", "").lower()


DATASET = "ieee8023-covid-chestxray"
MODALITY = "cxr"
SUBDIR = "github.com/ieee8023/covid-chestxray-dataset"
LAYOUT = "metadata.csv and images/ (a clone of github.com/ieee8023/covid-chestxray-dataset)"
EXPECTED_SOURCE = "the clone's own metadata.csv (every X-ray row with its file)"


def label_of(finding: str) -> tuple[str, str | None] | None:
    """``(class, sub-label)`` of a ``finding``, or ``None`` for a finding outside the four classes."""
    f = (finding or "").strip()
    if "COVID-19" in f:
        return "covid19", None
    if f.lower() == "no finding":
        return "healthy", None
    if f.lower().startswith("pneumonia"):
        return "pneumonia", "bacterial" if "/bacterial" in f.lower() else ("viral" if "/viral" in f.lower() else None)
    return None


def index(root: str | Path) -> Inventory:
    """The chest X-rays listed in ``root/metadata.csv``; :class:`InputError` naming ``root`` when
    ``metadata.csv`` or ``images/`` is absent."""
    root = Path(root)
    if not (root / "metadata.csv").is_file() or not (root / "images").is_dir():
        raise InputError(root, f"not the ieee8023 layout: expected {LAYOUT}")
    rows = cohen_metadata(root / "metadata.csv").values()
    xrays = [r for r in rows if "x-ray" in r.get("modality", "x-ray").lower() and r.get("folder", "images") == "images"]
    records, skipped = [], 0
    for r in xrays:
        path = root / "images" / r["filename"]
        lab = label_of(r.get("finding", ""))
        if not path.is_file():
            continue
        if lab is None:
            skipped += 1
            continue
        records.append(CXRRecord(path, lab[0], lab[1], str(r["patientid"]), DATASET, age_group=age_group(r.get("age"))))
    found = len(records) + skipped
    return Inventory(DATASET, root, records, {"X-ray images": found}, {"X-ray images": len(xrays)}, EXPECTED_SOURCE,
                     skipped=skipped, notes=[f"{skipped} images with findings outside the four classes"] if skipped else [])


def role_files(root: str | Path, role: str) -> list[Path]:
    """``metadata``: the clone's ``metadata.csv``; ``[]`` for other roles."""
    path = Path(root) / "metadata.csv"
    return [path] if role == "metadata" and path.is_file() else []
