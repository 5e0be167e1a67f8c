"""What a profile's notebooks read, whatever its data: one entry point per kind of item.

* ``synthetic``: the phantoms notebook 01 wrote (:func:`reprolib.data.ct_cases`);
* ``sample``: the verified files its manifests list (:mod:`reprolib.data`);
* ``paper``: the unpacked official archives, through one adapter per dataset
  (:mod:`reprolib.full_data`, :mod:`reprolib.adapters`) — never the sample's files.
"""
from __future__ import annotations

from pathlib import Path

from . import adapters, config, data, full_data

CASE_COLUMNS = ("case_id", "dataset", "label", "target", "group", "split", "path", "kind", "n_files")


def ct_cases(profile: str, data_dir: str | Path | None = None, work_dir: str | Path | None = None):
    """One row per CT volume of ``profile`` (pandas DataFrame with at least :data:`CASE_COLUMNS`;
    see :func:`reprolib.data.ct_cases`). A full-data profile lists the CT series its adapters
    find, cut to its schedule's subset; columns an adapter adds (``severity``, mask paths) stay."""
    import pandas as pd

    if not full_data.needs_full_data(profile):
        return data.ct_cases(profile, data_dir, work_dir)
    rows = []
    for name in config.load_profile(profile)["data"]["datasets"]:
        mod = adapters.adapter(name)
        if mod is not None and mod.MODALITY == "ct":
            rows += full_data.records(profile, name, data_dir)
    return pd.DataFrame(rows, columns=None if rows else list(CASE_COLUMNS))


def role_files(profile: str, dataset: str, role: str, data_dir: str | Path | None = None) -> list[Path]:
    """The files of ``role`` (``metadata``, ``lesion_mask``, ``ct_labels``,
    ``released_predictions`` ...) of ``dataset`` in ``profile``; ``[]`` when it has none."""
    if full_data.needs_full_data(profile):
        return full_data.role_files(profile, dataset, role, data_dir)
    return data.fetch_role(profile, dataset, role, data_dir)


def acquire(profile: str, work_dir: str | Path, data_dir: str | Path | None = None, seed: int = 0) -> "data.Acquisition":
    """Notebook 01's data step: :func:`reprolib.full_data.acquire` for a full-data profile,
    :func:`reprolib.data.acquire` (manifest files or phantoms) otherwise."""
    if full_data.needs_full_data(profile):
        return full_data.acquire(profile, work_dir, data_dir)
    return data.acquire(profile, work_dir, data_dir=data_dir, seed=seed)
