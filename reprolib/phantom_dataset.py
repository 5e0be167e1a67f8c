"""The synthetic profile's dataset: CT and chest X-ray phantoms written to disk in the layouts of the
real datasets, split by patient, with a manifest of every file's sha256.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .cxr_phantoms import CXR_LABELS, cxr_phantom, write_png
from .errors import ConfigError
from .files import sha256_file
from .phantom_files import write_dicom_series, write_nifti, write_nifti_mask
from .phantoms import SALT_CT, ct_phantom


def directory_sha256(directory: str | os.PathLike) -> tuple[str, int]:
    """SHA-256 and total bytes of a folder's files.

    The digest is the SHA-256 of the UTF-8 text that ``sha256sum`` would print
    for the files (``"<sha256>  <relative posix path>\\n"`` lines, sorted by path).
    """
    directory = Path(directory)
    files = sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.relative_to(directory).as_posix())
    lines = "".join(f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest(), sum(p.stat().st_size for p in files)


def _split_groups(items: list[tuple[str, str]], seed: int, train_fraction: float = 2 / 3) -> dict[str, str]:
    """Patient-level split stratified by label: {group: "train" | "test"}.

    ``items`` are (group, label) pairs; groups are ordered by SHA-256 of
    ``f"{seed}:{group}"`` within each label and the first ``round(f·n)`` train.
    """
    by_label: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for group, label in items:
        if group not in first:
            first[group] = label
            by_label.setdefault(label, []).append(group)
    split = {}
    for groups in by_label.values():
        ordered = sorted(groups, key=lambda gr: hashlib.sha256(f"{seed}:{gr}".encode()).hexdigest())
        n_train = int(round(train_fraction * len(ordered)))
        if len(ordered) >= 2:
            n_train = min(max(n_train, 1), len(ordered) - 1)
        for i, gr in enumerate(ordered):
            split[gr] = "train" if i < n_train else "test"
    return split


def _record(out_dir: Path, path: Path, dataset: str, role: str, label: str, group: str) -> dict:
    if path.is_dir():
        digest, size = directory_sha256(path)
    else:
        digest, size = sha256_file(path), path.stat().st_size
    return {"dataset": dataset, "role": role, "label": label, "group": group, "split": "",
            "path": path.relative_to(out_dir).as_posix(), "sha256": digest, "bytes": int(size)}


def make_synthetic_dataset(out_dir: str | os.PathLike, ct_count: int = 24,
                           ct_shape: Sequence[int] = (48, 128, 128),
                           ct_spacing_mm: Sequence[float] = (2.5, 1.4, 1.4),
                           cxr_per_class: int = 40, cxr_size: int = 128, seed: int = 0,
                           dicom_every: int = 4, train_fraction: float = 2 / 3) -> list[dict]:
    """Write the synthetic CT and CXR data set and return one record per item.

    Layout under ``out_dir``: ``ct/<case>.nii.gz``, ``ct/<case>_lung.nii.gz``,
    ``ct/<case>_lesion.nii.gz``, ``ct_dicom/<case>/IM####.dcm`` (every
    ``dicom_every``-th case), ``cxr/<label>/<image>.png``.

    Half the CT cases (``ct_count // 2``) are COVID-19; the negatives alternate
    clear / non-COVID finding. CT case i uses seed ``1000 · seed + i``. CXR:
    ``cxr_per_class`` images for each of healthy, pneumonia (alternating
    bacterial/viral), covid19 (two images per patient) and not_certain.

    Returns
    -------
    list of dict
        Keys ``dataset``, ``role``, ``label``, ``group``, ``split``, ``path``
        (relative, posix), ``sha256``, ``bytes``. For ``ct_dicom_dir`` the
        digest is :func:`directory_sha256` of the folder. Same arguments →
        identical files and records.
    """
    if ct_count < 0 or ct_count >= 1000 or cxr_per_class < 0 or cxr_per_class >= 1000:
        raise ConfigError(None, f"ct_count and cxr_per_class must be in [0, 999], got {ct_count}, {cxr_per_class}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []

    rng = np.random.default_rng([SALT_CT, seed, 99])
    is_covid = np.zeros(ct_count, dtype=bool)
    is_covid[rng.permutation(ct_count)[: ct_count // 2]] = True
    n_neg = 0
    for i in range(ct_count):
        case_seed = 1000 * seed + i
        if is_covid[i]:
            label, finding = 1, "covid"
        else:
            label, finding = 0, ("clear" if n_neg % 2 == 0 else "non_covid")
            n_neg += 1
        ph = ct_phantom(case_seed, label, ct_shape, ct_spacing_mm, finding)
        lab = "covid19" if label else "normal"
        cid = ph.case_id
        written = [
            ("ct_nifti", write_nifti(ph, out / "ct" / f"{cid}.nii.gz")),
            ("lung_mask", write_nifti_mask(ph.lung_mask, ph.spacing_mm, out / "ct" / f"{cid}_lung.nii.gz")),
            ("lesion_mask", write_nifti_mask(ph.lesion_mask, ph.spacing_mm, out / "ct" / f"{cid}_lesion.nii.gz")),
        ]
        for role, p in written:
            records.append(_record(out, p, "synthetic-ct", role, lab, cid))
        if dicom_every and i % dicom_every == 0:
            final = out / "ct_dicom" / cid
            tmp = final.with_name(f".{cid}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            write_dicom_series(ph, tmp, shuffle=(i // dicom_every) % 2 == 1, seed=seed)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            records.append(_record(out, final, "synthetic-ct", "ct_dicom_dir", lab, cid))

    for ci, label in enumerate(CXR_LABELS):
        for j in range(cxr_per_class):
            img_seed = 100_000 * seed + 1000 * ci + j
            patient = img_seed - (j % 2 if label == "covid19" else 0)
            sub = {"pneumonia": ("bacterial", "viral")[j % 2]}.get(label)
            ph = cxr_phantom(img_seed, label, cxr_size, patient=patient, sublabel=sub)
            rec_label = f"pneumonia_{ph.sublabel}" if label == "pneumonia" else label
            p = write_png(ph.image, out / "cxr" / label / f"syn-cxr-{img_seed:06d}.png")
            records.append(_record(out, p, "synthetic-cxr", "cxr_image", rec_label, ph.patient_id))

    for ds_name in ("synthetic-ct", "synthetic-cxr"):
        items = [(r["group"], r["label"]) for r in records if r["dataset"] == ds_name]
        split = _split_groups(items, seed, train_fraction)
        for r in records:
            if r["dataset"] == ds_name:
                r["split"] = split[r["group"]]
    return records
