"""One adapter per full public dataset: index an unpacked official distribution in the layout
its publisher documents, as the records the pipeline uses (:class:`reprolib.cxr.CXRRecord`).

Each adapter module has ``DATASET`` (the manifest name), ``SUBDIR`` (where the archive is
unpacked under ``$REPRO_DATA_DIR``, as its manifest's ``paper`` section says), ``LAYOUT`` (the
expected layout, quoted in errors) and ``index(root) -> Inventory``. An adapter checks the
layout before reading anything and names the folder and what it expected when it differs.

* :mod:`.kermany` — Kermany et al. 2018, Mendeley v2 ``ChestXRay2017.zip``.
* :mod:`.cohen` — the ieee8023 COVID-19 chest X-ray collection (``metadata.csv`` + ``images/``).
* :mod:`.radiography` — the COVID-19 Radiography Database (Kaggle), class folders.
* :mod:`.covid_ct_md` — COVID-CT-MD (figshare), one DICOM series per subject folder.

MosMedData, CC-CCII and COVID-19-CT-Seg have no adapter yet: their class counts and archive
layouts could not be confirmed from the publishers' documentation offline.
"""
from __future__ import annotations

from .inventory import Inventory

__all__ = ["Inventory", "ADAPTERS", "adapter"]


def _registry() -> dict[str, object]:
    from . import cohen, covid_ct_md, kermany, radiography

    return {m.DATASET: m for m in (covid_ct_md, kermany, cohen, radiography)}


ADAPTERS: tuple[str, ...] = ("covid-ct-md", "kermany", "ieee8023-covid-chestxray", "covid-19-radiography-database")


def adapter(dataset: str):
    """The adapter module of ``dataset``, or ``None`` when there is none yet."""
    return _registry().get(dataset)
