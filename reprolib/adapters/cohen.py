"""The ieee8023 COVID-19 image data collection (Cohen et al. 2020,
https://github.com/ieee8023/covid-chestxray-dataset): ``metadata.csv`` beside ``images/``.

Each row of ``metadata.csv`` names one file (``folder``/``filename``) with ``patientid``,
``finding`` (e.g. ``Pneumonia/Viral/COVID-19``, ``Pneumonia/Bacterial/Streptococcus``,
``No Finding``), ``modality``, ``view``, ``age``, ``location`` and ``url``. Chest X-rays
(``modality`` X-ray, folder ``images``) become records: COVID-19 findings ``covid19``,
``No Finding`` ``healthy``, other pneumonias ``pneumonia`` (bacterial / viral where the finding
says); other findings (tuberculosis, ...) are counted as skipped. Images from the Hannover
Medical School (:func:`reprolib.cxr_sources.is_hannover_original`) keep their rows: the caller
decides, as for the sample, to keep them out of development.
"""
from __future__ import annotations

from pathlib import Path

from ..cxr import CXRRecord
from ..cxr_sources import age_group, cohen_metadata
from ..errors import InputError
from .inventory import Inventory

DATASET = "ieee8023-covid-chestxray"
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
