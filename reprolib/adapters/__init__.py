"""One adapter per full public dataset: index an unpacked official distribution in the layout
its publisher documents, as the records the pipeline uses (:class:`reprolib.cxr.CXRRecord`).

Each adapter module has ``DATASET`` (the manifest name), ``MODALITY`` (``ct`` or ``cxr``), ``SUBDIR`` (where the archive is
unpacked under ``$REPRO_DATA_DIR``, as its manifest's ``paper`` section says), ``LAYOUT`` (the
expected layout, quoted in errors) and ``index(root) -> Inventory``. An adapter checks the
layout before reading anything and names the folder and what it expected when it differs.

* :mod:`.kermany` — Kermany et al. 2018, Mendeley v2 ``ChestXRay2017.zip``.
* :mod:`.cohen` — the ieee8023 COVID-19 chest X-ray collection (``metadata.csv`` + ``images/``).
* :mod:`.radiography` — the COVID-19 Radiography Database (Kaggle), class folders.
* :mod:`.covid_ct_md` — COVID-CT-MD (figshare), one DICOM series per subject folder.
* :mod:`.mosmeddata` — MosMedData COVID19_1110, NIfTI studies by severity category, lesion masks.
* :mod:`.cc_ccii` — CC-CCII, class / patient / scan folders of windowed slice images.
* :mod:`.covid_19_ct_seg` — COVID-19-CT-Seg (Zenodo), 20 NIfTI CTs with lung and infection masks.

An adapter may also have ``role_files(root, role) -> list[Path]``: the archive's files of a
manifest role (``metadata``, ``lesion_mask``, ``ct_labels``) that a notebook reads besides the
records (:func:`reprolib.full_data.role_files`). Where a layout could not be confirmed from the
publisher's documentation offline, the adapter's docstring says so and its error quotes
``LAYOUT``.
"""
from __future__ import annotations

from .inventory import Inventory

__all__ = ["Inventory", "ADAPTERS", "adapter"]


def _registry() -> dict[str, object]:
    from . import cc_ccii, cohen, covid_19_ct_seg, covid_ct_md, kermany, mosmeddata, radiography

    return {m.DATASET: m for m in (covid_ct_md, mosmeddata, cc_ccii, covid_19_ct_seg, kermany, cohen, radiography)}


ADAPTERS: tuple[str, ...] = ("covid-ct-md", "mosmeddata", "cc-ccii", "covid-19-ct-seg", "kermany",
                             "ieee8023-covid-chestxray", "covid-19-radiography-database")


def adapter(dataset: str):
    """The adapter module of ``dataset``, or ``None`` when there is none yet."""
    return _registry().get(dataset)
