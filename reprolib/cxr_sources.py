"""Where the sample profile's chest X-rays come from: one adapter per source, and the split of
sources into development, external and same-source held-out images.

* **Kermany** (``kermany-224``): paediatric healthy and pneumonia images (children aged one to
  five); its *train* split is development, its *test* split other children of the same hospital —
  a same-source held-out set, reported as such, never as external.
* **Cohen** (``ieee8023-covid-chestxray``): COVID-19 and adult non-COVID images with age, sex, view,
  location and source URL in ``metadata.csv``. Images whose metadata names the Hannover Medical
  School (``location``) or its repository (``url``) are Hannover originals: they are kept out of
  development, so that no Hannover patient is trained on, and a perceptual hash against the
  Hannover PNGs cross-checks the metadata.
* **Hannover** (``hannover-mhh``): every patient of the repository, COVID-19 only — the external
  set; it measures sensitivity, not specificity.
* **not certain**: CC-CCII CT slices and slices rendered from the profile's CT volumes.

The ``paper`` profile reads the full archives instead (:func:`full_sources`): Kermany's train and
test splits, the whole ieee8023 collection, and the COVID-19 Radiography Database as the external
set, as the seed paper did.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from . import cohort, config, cxr, data, full_data, inputs
from .adapters.cohen import age_group, cohen_metadata, is_hannover_original
from .cxr import CXRRecord, keeps_row, records_from_index
from .errors import ManifestError

KERMANY, COHEN, HANNOVER = "kermany-224", "ieee8023-covid-chestxray", "hannover-mhh"
#: Hamming distance (of 256 bits) under which two images count as the same picture.
PHASH_MAX_DISTANCE = 12


@dataclass
class SampleSources:
    """The sample profile's chest X-rays, sorted by role (see the module docstring)."""

    development: list[CXRRecord]
    external: list[CXRRecord]
    same_source: list[CXRRecord]
    excluded: list[CXRRecord]  # Cohen images that are Hannover originals (by metadata)
    confirmed_by_hash: int = 0  # excluded images a Hannover PNG matches by perceptual hash
    hash_only: list[str] = field(default_factory=list)  # Cohen files a hash matches but metadata does not flag
    linked_patients: set[str] = field(default_factory=set)  # Hannover patients of the excluded images (data.csv)


def _records(profile: str, datasets: Sequence[str], root: Path) -> list[tuple[CXRRecord, dict]]:
    rows = [{"dataset": f.dataset, "role": f.role, "label": f.label, "group": f.group, "path": f.relpath,
             "source_split": f.split}
            for m in data.profile_manifests(profile) if m.dataset in datasets
            for f in m.files if f.role in ("cxr_image", "ct_png")]
    rows = [r for r in rows if keeps_row(r)]
    return list(zip(records_from_index(rows, root), rows))


def sample_sources(profile: str = "sample", data_dir: str | Path | None = None,
                   hash_check: bool = True) -> SampleSources:
    """Sort the profile's chest X-rays by role (module docstring). Kermany images are children,
    Cohen images carry the age group of their metadata; the not-certain CT slices are added by the
    caller (:func:`profile_records`)."""
    root = Path(data_dir) if data_dir else config.data_dir()
    (meta_path,) = [p for p in inputs.role_files(profile, COHEN, "metadata", data_dir) if p.name == "metadata.csv"]
    meta = cohen_metadata(meta_path)
    dev, external, same, excluded = [], [], [], []
    for rec, row in _records(profile, (KERMANY, COHEN, HANNOVER, "cc-ccii"), root):
        if row["dataset"] == KERMANY:
            rec = replace(rec, age_group="child")
            if row["source_split"] == "test":
                same.append(replace(rec, split="same_source"))
            else:
                dev.append(rec)
        elif row["dataset"] == COHEN:
            m = meta.get(Path(rec.path).name)
            if m is None:
                raise ManifestError(meta_path, f"no metadata row for {Path(rec.path).name}")
            rec = replace(rec, age_group=age_group(m["age"]))
            (excluded if is_hannover_original(m) else dev).append(rec)
        elif row["dataset"] == HANNOVER:
            external.append(replace(rec, split="external"))
        else:
            dev.append(rec)
    out = SampleSources(dev, external, same, excluded)
    hannover_ids = hannover_image_patients([p for p in inputs.role_files(profile, HANNOVER, "metadata", data_dir)
                                            if p.name == "data.csv"])
    out.linked_patients = {hannover_ids[Path(r.path).stem] for r in excluded if Path(r.path).stem in hannover_ids}
    if hash_check and external:
        cohen = [r for r in dev + excluded if r.source == COHEN and r.label == "covid19"]
        matched = same_pictures([r.path for r in cohen], [r.path for r in external])
        out.confirmed_by_hash = sum(str(r.path) in matched for r in excluded)
        extra = matched - {str(r.path) for r in excluded}
        out.hash_only = sorted(Path(c).name for c in extra)
        out.excluded += [r for r in dev if str(r.path) in extra]  # a Hannover picture whatever the metadata says
        out.development = [r for r in dev if str(r.path) not in extra]
    return out


def full_sources(profile: str, data_dir: str | Path | None = None) -> SampleSources:
    """The chest X-rays of a full-data profile (the paper's), from the unpacked archives through
    their adapters (:func:`reprolib.full_data.records`): development = the Kermany *train* (and
    *val*) images and the ieee8023 collection's images outside Hannover; same-source held out =
    the Kermany *test* split; external = the COVID-19 Radiography Database (the seed paper's
    external set); excluded = the collection's Hannover originals (by its metadata)."""
    from .adapters import kermany, radiography
    from .adapters.cohen import DATASET as COHEN_FULL

    dev, same, external, excluded = [], [], [], []
    for r in full_data.records(profile, kermany.DATASET, data_dir):
        if Path(r.path).parent.parent.name == "test":
            same.append(replace(r, split="same_source"))
        else:
            dev.append(r)
    meta_files = full_data.role_files(profile, COHEN_FULL, "metadata", data_dir)
    meta = cohen_metadata(meta_files[0]) if meta_files else {}
    for r in full_data.records(profile, COHEN_FULL, data_dir):
        (excluded if is_hannover_original(meta.get(Path(r.path).name, {})) else dev).append(r)
    external = [replace(r, split="external") for r in full_data.records(profile, radiography.DATASET, data_dir)]
    return SampleSources(dev, external, same, excluded)


def profile_sources(profile: str, data_dir: str | Path | None = None) -> SampleSources:
    """The chest X-rays of a real-data profile by role: :func:`full_sources` for a full-data
    profile, :func:`sample_sources` otherwise."""
    return full_sources(profile, data_dir) if full_data.needs_full_data(profile) else sample_sources(profile, data_dir)


def hannover_image_patients(paths: Sequence[Path]) -> dict[str, str]:
    """``{image_id: patient_id}`` of the Hannover repository's ``data.csv`` (every image it lists,
    mirrored or not); ``{}`` without one. The Cohen collection names Hannover pictures by image id."""
    out: dict[str, str] = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if "image_id" not in row or "patient_id" not in row:
                    raise ManifestError(path, "expected the columns image_id and patient_id of the Hannover data.csv")
                out[row["image_id"]] = row["patient_id"]
    return out


def centre_square(img):
    """The largest centred square of a PIL image."""
    w, h = img.size
    m = min(w, h)
    left, top = (w - m) // 2, (h - m) // 2
    return img.crop((left, top, left + m, top + m))


def same_pictures(candidates: Sequence[str | Path], references: Sequence[str | Path],
                  max_distance: int = PHASH_MAX_DISTANCE) -> set[str]:
    """The candidate files that are a copy of a reference picture: 256-bit pHash within
    ``max_distance`` of the reference as it is or of its centred square (the Cohen collection
    stores Hannover pictures as 2000 px centre crops of the originals the Hannover PNGs downscale)."""
    import numpy as np

    from .cxr import load_cxr
    from .dedup import PHASH_SIZE, _hash_bits, hamming_matrix

    if not candidates or not references:
        return set()
    refs = [load_cxr(p, channels=1) for p in references]
    a = _hash_bits(list(candidates), PHASH_SIZE)
    b = _hash_bits(refs + [centre_square(im) for im in refs], PHASH_SIZE)
    best = np.concatenate([d.min(axis=1) for _, d in hamming_matrix(a, b)])
    return {str(c) for c, d in zip(candidates, best) if d <= max_distance}


def profile_records(profile: str, data_dir: str | os.PathLike | None = None,
                    work_dir: str | os.PathLike | None = None, ct_slices_per_volume: int = 8,
                    sources: Any = None) -> tuple[list[CXRRecord], list[CXRRecord]]:
    """``(development, external)`` chest X-ray records of a profile.

    ``sample`` (:func:`sample_sources`): development = Kermany *train* split
    (children), the Cohen collection's COVID-19 and adult non-COVID images without its Hannover
    originals, and the CC-CCII CT slices (``not_certain``), plus ``ct_slices_per_volume`` axial
    slices of every other CT volume preprocessed by notebook 02 (``work_dir/ct_index.json``;
    :func:`reprolib.cxr.ct_slice_records`), so that ``not_certain`` spans several patients and scanners;
    external = every Hannover patient (``split="external"``: another hospital, COVID-19 only) and
    the Kermany *test* split (``split="same_source"``: other children of the training hospital).
    ``synthetic``: the phantoms' own train/test split. Records carry ``split="-"`` (development;
    use :func:`reprolib.cxr.patient_split`) or ``"external"``. ``sources``: an already computed
    :class:`SampleSources` (its hash check takes seconds).
    """
    if profile == "synthetic":
        work = Path(work_dir) if work_dir else config.work_dir(profile)
        base = work / "synthetic_data"
        dev, ext = [], []
        for r in data.synthetic_records(work):
            if r["role"] != "cxr_image":
                continue
            label, sub = (("not_certain", "phantom") if r["label"] == "not_certain"
                          else cxr.label_from_mirror(r["label"]))
            rec = CXRRecord(base / r["path"], label, sub, r["group"], r["dataset"],
                            "external" if r["split"] == "test" else "-")
            (ext if rec.split == "external" else dev).append(rec)
        return dev, ext
    src = sources if sources is not None else profile_sources(profile, data_dir)
    dev, ext = list(src.development), src.external + src.same_source
    if ct_slices_per_volume and work_dir is not None and (Path(work_dir) / "ct_index.json").is_file():
        index = cohort.load_index(Path(work_dir) / "ct_index.json")
        if not full_data.needs_full_data(profile):  # the sample adds the CC-CCII slices as they come
            index = index[~index.dataset.isin(cxr.NOT_CERTAIN_DATASETS)]
        index = index[index.npz.notna()]
        dev += cxr.ct_slice_records(index, Path(work_dir) / "ct_slices", int(ct_slices_per_volume))
    return dev, ext
