"""Lesion localisation over a cohort (chapter 06): every held-out COVID-19 volume localised by
the DeCoVNet of its own fold and scored against its ground truth.

Ground truth is a voxel lesion mask (phantoms) or per-slice infection labels (COVID-CT-MD), which
give *slice-level* hits: the predicted lesion's hit point must lie on an infected slice and inside
the lung mask (:func:`reprolib.hits.score_volume`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from . import cohort, data, dicom, hits, inputs, io, localize, modelfile, models, preprocess
from .errors import ConfigError

#: (CAM method, tile size of the 3DCC response): the linearised head of the paper and Grad-CAM,
#: with 6-pixel tiles (the official code) and 7-pixel tiles (the paper's wording).
VARIANTS = [(m, w) for m in ("linear", "gradcam") for w in (6, 7)]


def r3dcc_survey(index: pd.DataFrame, with_truth: bool) -> tuple[pd.DataFrame, tuple | None]:
    """The unsupervised 3DCC response on every HU volume's pseudo-label lung mask.

    For each usable row of ``index`` (chapter 02's :func:`reprolib.cohort.load_index`):
    voxels where the response fires and the size of its largest 3D component (R3dcc); with
    ``with_truth`` (phantoms) and a COVID-19 volume, whether R3dcc's median voxel hits a lesion
    and the chance that a random lung voxel does.

    Returns ``(table indexed by case_id, example)``; ``example`` is ``(case_id, ct_u8 (Z, Y, X),
    r3dcc (Z, Y, X), lesion or None)`` for the first volume with a non-empty R3dcc, or None.
    """
    usable = index[index.is_hu & index.qc_ok].reset_index(drop=True)
    rows, shown = [], None
    for row in usable.itertuples():
        pre = cohort.load_preprocessed(row.npz)
        fired = localize.variance_response(pre["lung_mask"], window=6)
        comp = localize.r3dcc(fired)
        r = {"case_id": row.case_id, "label": row.label, "fired voxels": int(fired.sum()),
             "R3dcc voxels": int(comp.sum())}
        lesion = None
        if with_truth and row.target == 1:
            lesion = (io.read_nifti(row.lesion_mask).hu > 0).astype(np.uint8)
            lesion = preprocess.resample_mask_z(lesion, pre["ct_u8"].shape[0] / lesion.shape[0])[: comp.shape[0]]
            r["R3dcc hit (median voxel)"] = hits.is_hit(comp, lesion, "median_voxel")
            r["random lung voxel hit probability"] = hits.random_baseline_hit(pre["lung_mask"], lesion)
        if shown is None and comp.any() and (lesion is not None or not with_truth):
            shown = (row.case_id, pre["ct_u8"], comp, lesion)
        rows.append(r)
    return pd.DataFrame(rows).set_index("case_id"), shown


def load_fold_models(work: str | Path, items: Sequence[tuple[Any, int, str]],
                     folds: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[models.DeCoVNet]:
    """Chapter 04's ``decovnet_fold{k}.pt`` in evaluation mode, each checked to be the model that
    did not train on fold ``k``'s held-out volumes (else :class:`ConfigError` naming the file)."""
    nets = []
    for k, (_, te) in enumerate(folds):
        path = Path(work) / f"decovnet_fold{k}.pt"
        net, meta = modelfile.load_model(path)
        if meta["test_case_ids"] != [items[int(i)][2] for i in te]:
            raise ConfigError(path, "this checkpoint belongs to another cohort: rerun notebook 04")
        nets.append(net)
    return nets


def covid_ct_md_slice_labels(profile: str, data_dir: str | Path | None, index: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-scanner-slice infection labels (reader order) of every COVID-19 volume of COVID-CT-MD
    in ``index``, keyed by case id; ``{}`` when the profile has no COVID-CT-MD."""
    labels = {Path(p).name: p for p in inputs.role_files(profile, "covid-ct-md", "ct_labels", data_dir)}
    if not labels:
        return {}
    out = {}
    for r in index[(index.dataset == "covid-ct-md") & (index.target == 1)].itertuples():
        files = dicom.read_dicom_series(r.path).meta["files"]
        out[r.case_id] = io.read_slice_labels(labels["Slice-level-labels-updated-1.npy"], labels["Index.csv"],
                                              r.group, r.path, files)
    return out


def localise_held_out(nets: Sequence[torch.nn.Module], items: Sequence[tuple[np.ndarray, int, str]],
                      cases: pd.DataFrame, folds: Sequence[tuple[Sequence[int], Sequence[int]]], z_step: int,
                      slice_labels: dict[str, np.ndarray] | None = None,
                      variants: Sequence[tuple[str, int]] = VARIANTS) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """Localise every held-out COVID-19 volume with its fold's model, for each CAM variant.

    ``cases`` is the cohort table of :func:`reprolib.cohort.load_classifier_cohort` (full-grid lung
    masks, crop boxes, lesion masks of phantoms). Volumes without voxel masks are scored against
    ``slice_labels`` (case id -> per-scanner-slice labels) carried into the input frame.

    Returns
    -------
    per_volume : one row per volume and variant: ``case_id``, ``fold``, ``CAM``, ``window``,
        ``p_covid``, ``predicted_positive``, ``R3dcc voxels``, ``lesion voxels``, ``seconds`` and
        the :func:`reprolib.hits.score_volume` columns.
    shown : case id -> ``(x, result, truth, slice flags, hit)`` of the first variant, for figures.
    """
    by_id = cases.set_index("case_id")
    slice_labels = slice_labels or {}
    rows, shown = [], {}
    for k, (_, te) in enumerate(folds):
        for i in te:
            x, lab, cid = items[int(i)]
            if lab != 1:
                continue
            row = by_id.loc[cid]
            full = cohort.unpack_mask(row["lung_full"], row["lung_full_shape"])
            gt = np.asarray(row["lesion"]) > 0 if "lesion" in by_id and row["lesion"] is not None else None
            flags = None
            if gt is None and cid in slice_labels:
                flags = hits.labels_in_input_frame(slice_labels[cid], row["bbox"], z_step, full.shape[0])
            lung_in = x[1] > 0.5
            for method, window in variants:
                res = localize.localize(nets[k], torch.from_numpy(x)[None], lung_mask_full=full, bbox=row["bbox"],
                                        z_step=z_step, method=method, cc3d_window=window)
                sc = hits.score_volume(res, lung_in, gt, flags)
                rows.append({"case_id": cid, "fold": k, "CAM": method, "window": window, "p_covid": res.p_covid,
                             "predicted_positive": res.p_covid > 0.5, "R3dcc voxels": int(res.r3dcc.sum()),
                             "lesion voxels": int(res.lesion.sum()), "seconds": sum(res.timings.values()), **sc})
                if (method, window) == tuple(variants[0]):
                    shown[cid] = (x, res, gt, flags, sc["hit"])
    return pd.DataFrame(rows), shown


def lesion_masks(profile: str, data_dir: str | Path | None, work: str | Path) -> list[tuple[str, np.ndarray]]:
    """Real-shaped lesion masks for checking the hit metric itself: the phantoms' lesion masks
    (synthetic profile) or MosMedData's expert masks (used unmodified), as ``(name, bool mask)``."""
    if profile == "synthetic":
        recs = [r for r in data.ct_cases(profile, data_dir, work).itertuples() if r.target == 1]
        return [(r.case_id, io.read_nifti(r.lesion_mask).hu > 0) for r in recs]
    paths = inputs.role_files(profile, "mosmeddata", "lesion_mask", data_dir)
    return [(Path(p).name, io.read_nifti(p, is_hu=False).hu > 0) for p in paths]


def self_hit_table(masks: Sequence[tuple[str, np.ndarray]]) -> pd.DataFrame:
    """Self-hit rate of each mask with the median voxel and with the centroid as hit point:
    rows ``rate``, ``ci_lo``, ``ci_hi``, ``hits``, ``n`` (Wilson 95 %)."""
    rates = {}
    for name, mode in (("median voxel (the code)", "median_voxel"), ("centroid (the paper's wording)", "centroid")):
        rates[name] = hits.hit_rate([hits.is_hit(m, m, mode) for _, m in masks], exclude_none=True)
    return pd.DataFrame([(k,) + tuple(v) for k, v in rates.items()],
                        columns=["hit point", "rate", "ci_lo", "ci_hi", "hits", "n"]).set_index("hit point")
