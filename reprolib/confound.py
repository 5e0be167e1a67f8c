"""The confound audit: how far image size, file size and intensity statistics alone (no pixel of the
lungs) go towards the chest X-ray classes, cross-validated by patient.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .cxr import CLASSES, CXRRecord, load_cxr
from .errors import (
    ConfigError,
    ImageError,
)

GEOMETRY_FEATURES: tuple[str, ...] = ("width", "height", "aspect", "mean_intensity", "std_intensity", "file_bytes")


def image_geometry_features(paths: Sequence[str | os.PathLike], *, max_pixels: int | None = None):
    """Non-pathology image properties, one row per file (pandas DataFrame).

    Columns: ``path``, ``format`` (JPEG/PNG...), ``mode`` (Pillow mode of the file),
    ``width``, ``height`` (original pixels), ``aspect`` (width / height), ``mean_intensity``,
    ``std_intensity`` (8-bit grey levels, 0-255), ``file_bytes``.
    """

    rows = []
    for p in paths:
        p = Path(p)
        try:
            with Image.open(p) as im:
                fmt, mode = im.format, im.mode
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageError(p, f"not a readable image: {exc}") from exc
        arr = np.asarray(load_cxr(p, max_pixels=max_pixels, channels=1), dtype=np.float32)
        h, w = arr.shape
        rows.append({"path": str(p), "format": fmt, "mode": mode, "width": w, "height": h,
                     "aspect": w / h, "mean_intensity": float(arr.mean()), "std_intensity": float(arr.std()),
                     "file_bytes": p.stat().st_size})
    return pd.DataFrame(rows, columns=["path", "format", "mode", *GEOMETRY_FEATURES])


def confound_audit(
    records: Sequence[CXRRecord],
    seed: int = 0,
    *,
    n_splits: int = 5,
    features: Sequence[str] = GEOMETRY_FEATURES,
    table=None,
) -> dict[str, Any]:
    """How well do image geometry/intensity alone predict the class?

    Fits a standardised multinomial logistic regression on ``features`` of
    :func:`image_geometry_features` (or a precomputed ``table`` in record order) and
    predicts each image out of fold with ``StratifiedGroupKFold`` grouped by patient
    (``n_splits`` is reduced to the smallest number of patients in a class, min 2).
    Classes with fewer than two patients cannot be cross-validated by patient and are
    left out (listed in ``excluded_classes``).
    High accuracy means that a classifier can tell the classes apart without looking at
    any pathology (source, age, scanner, resizing).

    Returns
    -------
    dict
        JSON-serialisable: ``accuracy``, ``balanced_accuracy``, ``majority_accuracy``
        (chance level of always predicting the largest class), ``per_class_recall``,
        ``per_class_auc`` (one-vs-rest ROC AUC of the out-of-fold probabilities),
        ``confusion`` (rows true, columns predicted, in ``classes`` order), ``classes``,
        ``excluded_classes``, ``features``, ``n_images``, ``n_patients``, ``n_splits``, ``model``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    records = list(records)
    if table is None:
        table = image_geometry_features([r.path for r in records])
    if len(table) != len(records):
        raise ConfigError(None, f"feature table has {len(table)} rows for {len(records)} records")
    x_all = table[list(features)].to_numpy(dtype=np.float64)
    y_all = np.array([r.target for r in records])
    g_all = np.array(["\x1f".join(r.patient) for r in records])
    n_pat = {c: len(set(g_all[y_all == c].tolist())) for c in sorted(set(y_all.tolist()))}
    excluded = [c for c, n in n_pat.items() if n < 2]
    present = [c for c, n in n_pat.items() if n >= 2]
    if len(present) < 2:
        raise ConfigError(None, f"confound_audit needs two classes with >= 2 patients each, got {n_pat}")
    keep = np.isin(y_all, present)
    x, y, groups = x_all[keep], y_all[keep], g_all[keep]
    k = max(2, min(n_splits, min(n_pat[c] for c in present)))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" warnings for tiny sets
        proba = cross_val_predict(clf, x, y, groups=groups, cv=cv, method="predict_proba")
    pred = np.asarray(present)[proba.argmax(axis=1)]
    cm = confusion_matrix(y, pred, labels=present)
    counts = np.bincount(y, minlength=len(CLASSES))
    auc = {CLASSES[c]: float(roc_auc_score(y == c, proba[:, i])) for i, c in enumerate(present)}
    return {
        "classes": [CLASSES[c] for c in present],
        "excluded_classes": [CLASSES[c] for c in excluded],
        "features": list(features),
        "model": "StandardScaler + LogisticRegression, out-of-fold (StratifiedGroupKFold by patient)",
        "n_images": int(len(y)),
        "n_patients": int(len(set(groups.tolist()))),
        "n_splits": int(k),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "majority_accuracy": float(counts.max() / len(y)),
        "per_class_recall": {CLASSES[c]: float(cm[i, i] / cm[i].sum()) for i, c in enumerate(present)},
        "per_class_auc": auc,
        "confusion": cm.tolist(),
    }
