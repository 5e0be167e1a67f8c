"""COVID-19-CT-Seg (Ma et al., Med Phys 48:1197, 2021; Zenodo record 3757476): 20 COVID-19 CT
volumes as NIfTI with lung and infection masks.

The record holds four zips; each is expected unpacked into a folder of its own name under
``$REPRO_DATA_DIR/zenodo.org/records/3757476``: ``COVID-19-CT-Seg_20cases/`` (the CTs: ten
``coronacases_org_<nnn>.nii.gz`` in HU and ten ``radiopaedia_org_covid-19-pneumonia-<id>-dcm.nii.gz``,
intensity-normalised, not HU), ``Lung_Mask/``, ``Infection_Mask/`` and ``Lung_and_Infection_Mask/``,
whose files drop ``_org`` (``coronacases_<nnn>``, ``radiopaedia_<id>``). The folder names inside
the zips could not be checked offline: an archive that unpacks differently is refused naming
this layout.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError
from .inventory import Inventory

DATASET = "covid-19-ct-seg"
MODALITY = "ct"
SUBDIR = "zenodo.org/records/3757476"
LAYOUT = ("COVID-19-CT-Seg_20cases/{coronacases_org_<nnn>,radiopaedia_org_covid-19-pneumonia-<id>-dcm}.nii.gz "
          "beside Lung_Mask/ and Infection_Mask/ (each zip of the record unpacked into a folder of its name)")
EXPECTED = {"coronacases": 10, "radiopaedia": 10}
EXPECTED_SOURCE = "the Zenodo record (20 cases: 10 from coronacases.org, 10 from Radiopaedia)"
CT_DIR, LUNG_DIR, INFECTION_DIR = "COVID-19-CT-Seg_20cases", "Lung_Mask", "Infection_Mask"
_RADIOPAEDIA = re.compile(r"^radiopaedia_org_covid-19-pneumonia-(.+)-dcm$")


def mask_stem(ct_stem: str) -> str:
    """The mask files' name of a CT (``coronacases_org_001`` -> ``coronacases_001``,
    ``radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm`` -> ``radiopaedia_4_85506_1``)."""
    m = _RADIOPAEDIA.match(ct_stem)
    return f"radiopaedia_{m.group(1)}" if m else ct_stem.replace("coronacases_org_", "coronacases_")


def _stem(path: Path) -> str:
    return path.name.split(".nii")[0]


def index(root: str | Path) -> Inventory:
    """One case per CT (rows as :func:`reprolib.data.ct_cases`, every case COVID-19, with its
    ``lung_mask`` and ``lesion_mask`` paths, empty where the mask is absent); :class:`InputError`
    naming ``root`` when ``COVID-19-CT-Seg_20cases/`` is absent."""
    root = Path(root)
    cts = root / CT_DIR
    if not cts.is_dir():
        raise InputError(root, f"not the COVID-19-CT-Seg layout: expected {LAYOUT}")
    counts = {k: 0 for k in EXPECTED}
    records, no_mask = [], []
    for f in sorted(cts.glob("*.nii*")):
        stem = _stem(f)
        source = "radiopaedia" if stem.startswith("radiopaedia") else "coronacases"
        counts[source] += 1
        masks = {}
        for key, folder in (("lung_mask", LUNG_DIR), ("lesion_mask", INFECTION_DIR)):
            found = sorted((root / folder).glob(f"{mask_stem(stem)}.nii*")) if (root / folder).is_dir() else []
            masks[key] = str(found[0]) if found else ""
        if not masks["lesion_mask"]:
            no_mask.append(f.name)
        records.append({"case_id": f"{DATASET}:{mask_stem(stem)}", "dataset": DATASET, "label": "covid19",
                        "target": 1, "group": mask_stem(stem), "split": "-", "path": str(f), "kind": "nifti",
                        "n_files": 1, "hu": source == "coronacases", **masks})
    notes = [f"{len(no_mask)} CTs without an infection mask (first: {no_mask[0]})"] if no_mask else []
    notes.append("the Radiopaedia volumes are intensity-normalised, not HU")
    return Inventory(DATASET, root, records, counts, dict(EXPECTED), EXPECTED_SOURCE, notes=notes)


def role_files(root: str | Path, role: str) -> list[Path]:
    """``lesion_mask``: the infection masks; ``[]`` for other roles."""
    folder = Path(root) / INFECTION_DIR
    return sorted(folder.glob("*.nii*")) if role == "lesion_mask" and folder.is_dir() else []
