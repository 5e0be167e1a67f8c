"""COVID-CT-MD (Afshar et al., Sci Data 8:121, 2021): chest CT of 169 COVID-19, 60 CAP and 76
normal patients as DICOM series, on figshare (collection 5129081).

Layout, as the publisher's README describes it and its ``Sample data`` folder names it:
``{COVID-19 subjects,Cap subjects,Normal subjects}/<subject>/<slice>.dcm`` (subjects ``P001``,
``cap001``, ``normal001`` ...). The figshare zips are expected to unpack to these folders under
``$REPRO_DATA_DIR/figshare.com/COVID-CT-MD``; the full archive's own folder names could not be
checked offline, so an archive that unpacks differently is refused naming this layout. The
slices of a series are ordered by SliceLocation when read (:func:`reprolib.io.read_ct`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .inventory import Inventory

DATASET = "covid-ct-md"
MODALITY = "ct"
SUBDIR = "figshare.com/COVID-CT-MD"
LAYOUT = "{COVID-19 subjects,Cap subjects,Normal subjects}/<subject>/*.dcm"
#: Patients per class, from the publisher's README and data descriptor.
EXPECTED = {"COVID-19 subjects": 169, "Cap subjects": 60, "Normal subjects": 76}
EXPECTED_SOURCE = "the publisher's README (169 COVID-19, 60 CAP, 76 normal patients)"
_LABELS = {"COVID-19 subjects": "covid19", "Cap subjects": "cap", "Normal subjects": "normal"}
#: The slice-level infection labels and their index, at the archive's top as in the publisher's repository.
LABEL_FILES = ("Index.csv", "Slice-level-labels-updated-1.npy")


def index(root: str | Path) -> Inventory:
    """One case per subject folder holding ``.dcm`` files, as the rows of
    :func:`reprolib.data.ct_cases` (``case_id``, ``dataset``, ``label``, ``target``, ``group``,
    ``split``, ``path``, ``kind``, ``n_files``); :class:`InputError` naming ``root`` when none of
    the class folders exists."""
    root = Path(root)
    if not any((root / k).is_dir() for k in EXPECTED):
        raise InputError(root, f"not the COVID-CT-MD layout: expected {LAYOUT}")
    counts = {k: 0 for k in EXPECTED}
    records, empty = [], []
    for klass, label in _LABELS.items():
        folder = root / klass
        if not folder.is_dir():
            continue
        for subject in sorted(p for p in folder.iterdir() if p.is_dir()):
            n = sum(1 for f in subject.iterdir() if f.suffix.lower() == ".dcm")
            if n == 0:
                empty.append(f"{klass}/{subject.name}")
                continue
            counts[klass] += 1
            records.append({"case_id": f"{DATASET}:{subject.name}", "dataset": DATASET, "label": label,
                            "target": int(label == "covid19"), "group": subject.name, "split": "-",
                            "path": str(subject), "kind": "dicom", "n_files": n})
    notes = [f"{len(empty)} subject folders without DICOM files (first: {empty[0]})"] if empty else []
    return Inventory(DATASET, root, records, counts, dict(EXPECTED), EXPECTED_SOURCE, notes=notes)


def role_files(root: str | Path, role: str) -> list[Path]:
    """``ct_labels``: :data:`LABEL_FILES` when both are at ``root``; ``[]`` otherwise."""
    files = [Path(root) / n for n in LABEL_FILES]
    return files if role == "ct_labels" and all(f.is_file() for f in files) else []
