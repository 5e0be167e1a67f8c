"""Evaluation: binary and multi-class metrics, confidence intervals, and the statistics
recomputed from DeCoVNet's released test-set probabilities (spec section 8).

Metrics are scikit-learn's (SciPy's for the Wilson interval). ROC AUC and average precision,
which the bootstrap evaluates thousands of times, are computed here in NumPy by the same
definitions (tested equal to scikit-learn's, ties included): scikit-learn's input checks cost
~4 ms a call, so a 2000-draw AUC interval on 32 cases took 8 s instead of 0.5 s. Conventions:

* ``y`` is an integer array of true labels, 1 = positive (COVID-19), 0 = negative.
* ``p`` is a float array of scores, ``p[i]`` = predicted probability of class 1.
* A case is called positive when ``p > threshold`` (strict, as in the official code's
  ``softmax[:, 1] > 0.5``). ROC-based operating points instead use scikit-learn's
  ``p >= t`` at the listed thresholds ``t``; both are stated where they are used.
"""
from __future__ import annotations

import math
import re
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from .errors import InputError

__all__ = [
    "binary_metrics",
    "roc",
    "pr",
    "roc_auc",
    "average_precision",
    "average_precision_step",
    "bootstrap_ci",
    "bootstrap_distribution",
    "wilson_ci",
    "operating_points",
    "youden_point",
    "confusion",
    "per_class_report",
    "f1_intervals",
    "learned",
    "learned_multiclass",
    "read_released_predictions",
    "read_id_list",
    "parse_volume_id",
    "possible_overlap",
    "patient_level",
    "paper_statistics",
]


# ---------------------------------------------------------------------------
# Binary metrics
# ---------------------------------------------------------------------------
def _as_arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} vs {p.size}")
    return y, p


def binary_metrics(y_true, p, threshold: float = 0.5) -> dict[str, float | int]:
    """Confusion counts and rates at ``p > threshold``.

    Returns
    -------
    dict
        ``n, n_pos, n_neg, tp, fn, tn, fp`` (int) and ``accuracy, sensitivity,
        specificity, ppv, npv, f1`` (float; NaN when the denominator is 0), ``threshold``.
    """
    y, p = _as_arrays(y_true, p)
    yhat = (p > threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel())
    nan = np.nan
    return {
        "n": int(y.size), "n_pos": int(tp + fn), "n_neg": int(tn + fp),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "accuracy": float(skm.accuracy_score(y, yhat)),
        "sensitivity": float(skm.recall_score(y, yhat, pos_label=1, zero_division=nan)),
        "specificity": float(skm.recall_score(y, yhat, pos_label=0, zero_division=nan)),
        "ppv": float(skm.precision_score(y, yhat, pos_label=1, zero_division=nan)),
        "npv": float(skm.precision_score(y, yhat, pos_label=0, zero_division=nan)),
        "f1": float(skm.f1_score(y, yhat, pos_label=1, zero_division=nan)),
        "threshold": float(threshold),
    }


class RocCurve(NamedTuple):
    """ROC curve: false-positive rate, true-positive rate, thresholds (``p >= t``)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class PrCurve(NamedTuple):
    """Precision-recall curve (``sklearn.metrics.precision_recall_curve`` order)."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


def roc(y, p, drop_intermediate: bool = False) -> RocCurve:
    """ROC curve via :func:`sklearn.metrics.roc_curve` (all distinct thresholds by default)."""
    y, p = _as_arrays(y, p)
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=drop_intermediate)
    return RocCurve(fpr, tpr, thr)


def pr(y, p) -> PrCurve:
    """Precision-recall curve via :func:`sklearn.metrics.precision_recall_curve`."""
    y, p = _as_arrays(y, p)
    prec, rec, thr = skm.precision_recall_curve(y, p)
    return PrCurve(prec, rec, thr)


def _two_class(y, p, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels and scores checked for a ranking metric: labels 0/1 with both present, finite
    scores. Returns ``(y, p, number of positives)``; ``ValueError`` otherwise (as scikit-learn)."""
    y, p = _as_arrays(y, p)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what} needs labels 0/1; got {np.unique(y).tolist()}")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"only one class present in y: {what} is undefined")
    if not np.isfinite(p).all():
        raise ValueError(f"{what}: scores contain NaN or infinity")
    return y, p, n_pos


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A ∩ B| / (|A| + |B|); 1.0 when both are empty."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if a.shape != b.shape:
        raise InputError(None, f"masks {a.shape} and {b.shape} differ in shape")
    s = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if s == 0 else 2.0 * np.count_nonzero(a & b) / s


def roc_auc(y, p, *, single_class: float | None = None) -> float:
    """Area under the ROC curve as the Mann–Whitney statistic P(p⁺ > p⁻) + ½ P(p⁺ = p⁻), from
    mid-ranks; equals :func:`sklearn.metrics.roc_auc_score` (trapezoids over distinct thresholds).

    ``single_class``: the value to return when ``y`` holds one class only (e.g. NaN for a
    validation fold); by default that raises ``ValueError`` as scikit-learn does."""
    if single_class is not None and len(np.unique(np.asarray(y))) < 2:
        return float(single_class)
    y, p, n_pos = _two_class(y, p, "ROC AUC")
    ranks = stats.rankdata(p)  # ties share their mean rank
    n_neg = y.size - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y, p) -> float:
    """Average precision, sum of (R_n - R_{n-1}) P_n over distinct thresholds, tied scores one
    step, precision *after* the step; equals :func:`sklearn.metrics.average_precision_score`."""
    y, p, n_pos = _two_class(y, p, "average precision")
    order = np.argsort(-p, kind="mergesort")
    scores, hits = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last case of each distinct score
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1.0)
    recall = tp / float(n_pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision_step(y, p) -> float:
    """PR area by the official code's step rule.

    Cases are ranked one at a time by descending ``p`` (ties in reverse input order,
    i.e. a stable ascending sort read backwards); after each case, precision P_i and
    recall R_i are taken, and the area is sum_i (R_i - R_{i-1}) * P_{i-1} with
    P_0 = 1, R_0 = 0, i.e. each recall step is weighted by the precision *before* it.
    On the released file this gives 0.9754 vs scikit-learn's AP 0.9757, which uses
    distinct thresholds (tied scores form one step) and the precision *after* each step.
    """
    y, p = _as_arrays(y, p)
    order = np.argsort(p, kind="stable")[::-1]
    hits = y[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, y.size + 1)
    recall = tp / max(int(hits.sum()), 1)
    prev_precision = np.r_[1.0, precision[:-1]]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * prev_precision))


# ---------------------------------------------------------------------------
# Confidence intervals
# ---------------------------------------------------------------------------
def bootstrap_distribution(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y, p, n_boot: int = 2000, seed: int = 0, stratified: bool = False,
    max_redraws: int = 100,
) -> np.ndarray:
    """``n_boot`` values of ``metric_fn(y*, p*)`` on resamples of cases with replacement.

    ``stratified=False`` resamples all n cases jointly; a resample that holds only one
    class is **redrawn** (up to ``max_redraws`` times in a row, then ``RuntimeError``),
    so every value is defined and the count stays ``n_boot``. ``stratified=True``
    resamples positives and negatives separately (class counts fixed). Reproducible:
    uses ``numpy.random.default_rng(seed)``.
    """
    y, p = _as_arrays(y, p)
    rng = np.random.default_rng(seed)
    n = y.size
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    out = np.empty(int(n_boot), dtype=np.float64)
    for b in range(int(n_boot)):
        if stratified:
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        else:
            for _ in range(max_redraws):
                idx = rng.integers(0, n, n)
                if 0 < y[idx].sum() < n:
                    break
            else:
                raise RuntimeError(f"{max_redraws} resamples in a row held a single class")
        out[b] = metric_fn(y[idx], p[idx])
    return out


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y, p, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0, stratified: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` at level ``1 - alpha``.

    See :func:`bootstrap_distribution` for resampling and single-class handling.
    """
    dist = bootstrap_distribution(metric_fn, y, p, n_boot=n_boot, seed=seed, stratified=stratified)
    lo, hi = np.percentile(dist, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (no continuity correction; SciPy).

    Returns ``(nan, nan)`` when ``n == 0``.
    """
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


# ---------------------------------------------------------------------------
# Operating points
# ---------------------------------------------------------------------------
def operating_points(
    y, p, spec_targets: Sequence[float] = (0.90, 0.95, 0.98), sens_targets: Sequence[float] = (0.90,),
) -> list[dict[str, float | str]]:
    """Best sensitivity at specificity >= each target, and best specificity at
    sensitivity >= each target, over the ROC thresholds (rule ``p >= threshold``).

    Returns
    -------
    list of dict
        ``constraint`` ("specificity" or "sensitivity"), ``target``, ``sensitivity``,
        ``specificity``, ``threshold`` (the highest threshold reaching the optimum).
    """
    curve = roc(y, p)
    sens, spec = curve.tpr, 1.0 - curve.fpr
    rows: list[dict[str, float | str]] = []
    for kind, targets, cons, obj in (("specificity", spec_targets, spec, sens),
                                     ("sensitivity", sens_targets, sens, spec)):
        for t in targets:
            ok = np.flatnonzero(cons >= t - 1e-12)
            if ok.size == 0:
                rows.append({"constraint": kind, "target": float(t), "sensitivity": math.nan,
                             "specificity": math.nan, "threshold": math.nan})
                continue
            best = ok[np.argmax(obj[ok])]  # first = highest threshold among ties
            rows.append({"constraint": kind, "target": float(t), "sensitivity": float(sens[best]),
                         "specificity": float(spec[best]), "threshold": float(curve.thresholds[best])})
    return rows


def youden_point(y, p) -> dict[str, float]:
    """ROC point maximising J = sensitivity + specificity - 1 (highest threshold on ties)."""
    curve = roc(y, p)
    j = curve.tpr - curve.fpr
    i = int(np.argmax(j))
    return {"threshold": float(curve.thresholds[i]), "sensitivity": float(curve.tpr[i]),
            "specificity": float(1.0 - curve.fpr[i]), "youden_j": float(j[i])}


def confusion(y, yhat, labels: Sequence[Any]) -> pd.DataFrame:
    """Confusion matrix (:func:`sklearn.metrics.confusion_matrix`), rows = true, columns = predicted."""
    cm = skm.confusion_matrix(np.asarray(y), np.asarray(yhat), labels=list(labels))
    return pd.DataFrame(cm, index=pd.Index(list(labels), name="true"),
                        columns=pd.Index(list(labels), name="predicted"))


# ---------------------------------------------------------------------------
# Multi-class report (CXR paper)
# ---------------------------------------------------------------------------
def per_class_report(y, yhat, classes: Sequence[Any], alpha: float = 0.05) -> pd.DataFrame:
    """Per-class precision, recall, F1, one-vs-rest accuracy and support, with Wilson CIs.

    Parameters
    ----------
    y, yhat:
        True and predicted labels (any hashable values present in ``classes``).
    classes:
        Label values, in report order.

    Returns
    -------
    pandas.DataFrame
        One row per class plus ``macro avg`` and ``weighted avg`` (scikit-learn's
        averages; their CIs are NaN). Columns: ``precision``, ``precision_lo``,
        ``precision_hi``, ``recall``, ``recall_lo``, ``recall_hi``, ``f1``,
        ``accuracy_ovr``, ``accuracy_ovr_lo``, ``accuracy_ovr_hi``, ``support``.
        Precision's CI is Wilson on TP / predicted, recall's on TP / support, and
        one-vs-rest accuracy's on (TP + TN) / n.
    """
    y, yhat = np.asarray(y), np.asarray(yhat)
    labels = list(classes)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y, yhat, labels=labels, zero_division=np.nan)
    cm = skm.confusion_matrix(y, yhat, labels=labels)
    n = int(y.size)
    rows = []
    for i, c in enumerate(labels):
        tp = int(cm[i, i])
        predicted = int(cm[:, i].sum())
        correct_ovr = n - int(cm[i, :].sum()) - predicted + 2 * tp  # TP + TN
        acc = float(skm.accuracy_score(y == c, yhat == c))
        rows.append({
            "class": c, "precision": float(prec[i]), **_ci("precision", tp, predicted, alpha),
            "recall": float(rec[i]), **_ci("recall", tp, int(support[i]), alpha),
            "f1": float(f1[i]), "accuracy_ovr": acc, **_ci("accuracy_ovr", correct_ovr, n, alpha),
            "support": int(support[i]),
        })
    acc = np.array([r["accuracy_ovr"] for r in rows])
    for avg in ("macro", "weighted"):
        p_, r_, f_, _ = skm.precision_recall_fscore_support(
            y, yhat, labels=labels, average=avg, zero_division=np.nan)
        w = support / support.sum() if avg == "weighted" else np.full(len(labels), 1 / len(labels))
        rows.append({"class": f"{avg} avg", "precision": float(p_), "recall": float(r_), "f1": float(f_),
                     "accuracy_ovr": float(np.sum(w * acc)), "support": int(support.sum())})
    cols = ["precision", "precision_lo", "precision_hi", "recall", "recall_lo", "recall_hi", "f1",
            "accuracy_ovr", "accuracy_ovr_lo", "accuracy_ovr_hi", "support"]
    return pd.DataFrame(rows).set_index("class").reindex(columns=cols)


def _ci(name: str, k: int, n: int, alpha: float) -> dict[str, float]:
    lo, hi = wilson_ci(k, n, alpha)
    return {f"{name}_lo": lo, f"{name}_hi": hi}


# ---------------------------------------------------------------------------
# DeCoVNet released probabilities (spec section 8)
# ---------------------------------------------------------------------------
_ID_RE = re.compile(r"^(?P<series>[A-Za-z]+)-(?P<number>\d+)(?P<suffix>[A-Za-z]?)$")


def parse_volume_id(volume_id: str) -> tuple[str, int, str]:
    """Split ``ncov-0288a`` into ``("ncov", 288, "a")``; ``normal-00003`` -> ``("normal", 3, "")``.

    Raises ``ValueError`` when the ID does not look like ``<letters>-<digits>[letter]``.
    """
    m = _ID_RE.match(volume_id)
    if m is None:
        raise ValueError(f"volume id {volume_id!r} is not of the form <series>-<number>[letter]")
    return m["series"].lower(), int(m["number"]), m["suffix"].lower()


def read_released_predictions(path: str | PathLike, *, header_lines: int = 3,
                              sum_tol: float = 1e-4) -> pd.DataFrame:
    """Read ``20200212-auc95p9.txt``: ``header_lines`` lines, then ``path id p_neg p_covid label``.

    Returns
    -------
    pandas.DataFrame
        One row per volume, file order: ``path`` (str), ``volume_id`` (str),
        ``series`` ("ncov"/"normal"), ``patient`` (int, the ID's integer part:
        ``ncov-0288a`` -> 288), ``suffix`` (repeat-scan letter or ""), ``p_negative``,
        ``p_covid`` (float64), ``label`` (int, 1 = COVID-19).

    Raises
    ------
    InputError
        Naming the file (and line) when it is missing, has too few lines, or a row
        has the wrong number of fields, a bad ID, a non-numeric or out-of-range
        probability, probabilities not summing to 1 within ``sum_tol``, a label other
        than 0/1, or a duplicated ID.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read released predictions: {exc}") from exc
    lines = text.splitlines()
    if len(lines) <= header_lines:
        raise InputError(path, f"expected {header_lines} header lines and then data rows, "
                               f"found only {len(lines)} line(s)")
    records = []
    for lineno, line in enumerate(lines[header_lines:], start=header_lines + 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5:
            raise InputError(path, f"line {lineno}: expected 5 fields 'path id p_negative p_covid label', "
                                   f"got {len(fields)}: {line[:80]!r}")
        vpath, vid, pneg, pcov, lab = fields
        try:
            series, number, suffix = parse_volume_id(vid)
        except ValueError as exc:
            raise InputError(path, f"line {lineno}: {exc}") from exc
        try:
            pneg_f, pcov_f = float(pneg), float(pcov)
        except ValueError:
            raise InputError(path, f"line {lineno}: probabilities must be numbers, got {pneg!r}, {pcov!r}") from None
        if not (0.0 <= pneg_f <= 1.0 and 0.0 <= pcov_f <= 1.0) or abs(pneg_f + pcov_f - 1.0) > sum_tol:
            raise InputError(path, f"line {lineno}: p_negative={pneg} and p_covid={pcov} are not "
                                   f"probabilities in [0, 1] summing to 1")
        if lab not in ("0", "1"):
            raise InputError(path, f"line {lineno}: label must be 0 or 1, got {lab!r}")
        records.append((vpath, vid, series, number, suffix, pneg_f, pcov_f, int(lab)))
    if not records:
        raise InputError(path, "no data rows after the header")
    df = pd.DataFrame(records, columns=["path", "volume_id", "series", "patient", "suffix",
                                        "p_negative", "p_covid", "label"])
    dup = df["volume_id"][df["volume_id"].duplicated()]
    if len(dup):
        raise InputError(path, f"duplicated volume id(s): {', '.join(dup.unique()[:5])}")
    return df


def read_id_list(path: str | PathLike) -> list[str]:
    """Read a list of volume IDs, one per line (blank lines ignored), e.g. the official
    code's ``ncov_all.txt`` / ``normal_all.txt``. Raises InputError on a malformed ID."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ID list: {exc}") from exc
    ids = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if _ID_RE.match(s) is None:
            raise InputError(path, f"line {lineno}: {s!r} is not a volume id <series>-<number>[letter]")
        ids.append(s)
    return ids


def possible_overlap(ids: Sequence[str], other_ids: Iterable[str] | None = None, *,
                     repeat_letters: str = "abc") -> np.ndarray:
    """Flag test volumes whose patient may also have volumes outside the test list.

    A patient is ``(series, number)`` from the ID (``ncov-0244b`` -> ("ncov", 244));
    the series matters because ``ncov-00327`` and ``normal-0327n`` are different people.

    * ``other_ids`` given (e.g. all IDs of the official code's lists): exact rule; a
      patient is flagged when any of ``other_ids`` not in ``ids`` belongs to it.
    * ``other_ids=None``: inferred from the test IDs alone. A suffix letter in
      ``repeat_letters`` marks a repeat scan; letter k (a = 1, b = 2, ...) implies the
      patient has at least k scans, and any letter implies at least 2. A patient is
      flagged when the test list holds fewer of its volumes than implied
      (``ncov-0244b`` alone -> 0244a is elsewhere; ``normal-0137a`` alone -> a sibling is
      elsewhere; ``ncov-0288a`` + ``ncov-0288b`` -> not flagged). Other suffixes (the
      ``n`` of ``normal-0327n``) are not read as repeat marks. Volumes with no suffix
      whose repeat scans all sit outside the list cannot be detected this way.

    Returns
    -------
    numpy.ndarray
        bool ``(len(ids),)``; every volume of a flagged patient is True.
    """
    parsed = [parse_volume_id(i) for i in ids]
    keys = [(s, n) for s, n, _ in parsed]
    if other_ids is not None:
        test = set(ids)
        outside = {parse_volume_id(i)[:2] for i in other_ids if i not in test}
        flagged = {k for k in keys if k in outside}
    else:
        scans: dict[tuple[str, int], list[str]] = {}
        for (s, n, suf) in parsed:
            scans.setdefault((s, n), []).append(suf)
        flagged = set()
        for k, sufs in scans.items():
            ranks = [repeat_letters.index(x) + 1 for x in sufs if x and x in repeat_letters]
            if ranks and len(sufs) < max(max(ranks), 2):
                flagged.add(k)
    return np.array([k in flagged for k in keys], dtype=bool)


def patient_level(df: pd.DataFrame, *, score: str = "p_covid") -> pd.DataFrame:
    """Aggregate volumes to patients ``(series, patient)``: max score, max label, volume count."""
    return (df.groupby(["series", "patient"], sort=True)
              .agg(p=(score, "max"), label=("label", "max"), n_volumes=("volume_id", "size"))
              .reset_index())


def binary_report(y, p, n_boot: int = 2000, seed: int = 0, *, threshold: float = 0.5,
                  alpha: float = 0.05) -> dict[str, Any]:
    """ROC AUC and average precision with percentile bootstrap CIs (volumes resampled,
    single-class resamples redrawn), :func:`binary_metrics` at ``threshold``, and the ROC
    and PR curves (dicts of lists). With only one class present the AUC, AP and their
    CIs are NaN and the curves empty.
    """
    y, p = _as_arrays(y, p)
    out: dict[str, Any] = dict(binary_metrics(y, p, threshold))
    nan = float("nan")
    if 0 < int(y.sum()) < y.size:
        out["roc_auc"] = roc_auc(y, p)
        out["roc_auc_ci_lo"], out["roc_auc_ci_hi"] = bootstrap_ci(roc_auc, y, p, n_boot, alpha, seed)
        out["average_precision"] = average_precision(y, p)
        out["average_precision_ci_lo"], out["average_precision_ci_hi"] = bootstrap_ci(
            average_precision, y, p, n_boot, alpha, seed)
        rc, pc = roc(y, p), pr(y, p)
        out["roc_curve"] = {"fpr": rc.fpr.tolist(), "tpr": rc.tpr.tolist()}
        out["pr_curve"] = {"precision": pc.precision.tolist(), "recall": pc.recall.tolist()}
    else:
        for k in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "average_precision",
                  "average_precision_ci_lo", "average_precision_ci_hi"):
            out[k] = nan
        out["roc_curve"] = {"fpr": [], "tpr": []}
        out["pr_curve"] = {"precision": [], "recall": []}
    for rate, (k, n) in {"accuracy": (out["tp"] + out["tn"], out["n"]), "sensitivity": (out["tp"], out["n_pos"]),
                         "specificity": (out["tn"], out["n_neg"])}.items():
        out[f"{rate}_ci_lo"], out[f"{rate}_ci_hi"] = wilson_ci(k, n, alpha)
    out["bootstrap"] = {"n_boot": int(n_boot), "seed": int(seed), "alpha": float(alpha), "unit": "volume"}
    return out


#: Held-out probabilities that spread less than this (max - min) did not separate anything.
MIN_SCORE_SPREAD = 0.2


def learned(p, auc_ci_lo: float, min_spread: float = MIN_SCORE_SPREAD) -> tuple[bool, str]:
    """Whether a binary classifier's held-out scores show that it learned.

    Not learned when the lower end of its ROC AUC's 95 % interval is at or below 0.5 (the
    held-out data cannot tell it from chance; NaN counts as such) or when its held-out
    probabilities ``p`` spread less than ``min_spread`` (max - min): a model answering about the
    same for every volume has learned nothing usable, whatever its AUC.

    Returns ``(flag, reason)``; the reason states the numbers it was decided on.
    """
    p = np.asarray(p, dtype=float)
    spread = float(p.max() - p.min()) if p.size else 0.0
    reasons = []
    if not (auc_ci_lo > 0.5):  # also NaN
        reasons.append(f"its ROC AUC's 95 % interval reaches down to {auc_ci_lo:.2f}, not above chance (0.5)")
    if spread < min_spread:
        reasons.append(f"its held-out p(COVID) spread only {p.min():.3f}–{p.max():.3f}")
    if reasons:
        return False, " and ".join(reasons)
    return True, (f"its ROC AUC's 95 % interval starts at {auc_ci_lo:.2f}, above chance, and its held-out "
                  f"p(COVID) spread {p.min():.3f}–{p.max():.3f}")


def _macro_recall(y: np.ndarray, yhat: np.ndarray, labels: np.ndarray) -> float:
    present = [c for c in labels if (y == c).any()]
    return float(np.mean([(yhat[y == c] == c).mean() for c in present]))


def learned_multiclass(y, yhat, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[bool, str, dict]:
    """Whether a multi-class classifier learned: the 95 % bootstrap interval of its balanced
    accuracy (mean recall over the classes present) lies above chance (1 / classes present).

    Returns ``(flag, reason, {"balanced_accuracy", "ci_lo", "ci_hi", "chance"})``.
    """
    y, yhat = np.asarray(y), np.asarray(yhat)
    labels = np.unique(y)
    chance = 1.0 / labels.size
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, y.size, y.size)
        draws.append(_macro_recall(y[idx], yhat[idx], labels))
    lo, hi = (float(v) for v in np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    bal = _macro_recall(y, yhat, labels)
    stats_ = {"balanced_accuracy": bal, "ci_lo": lo, "ci_hi": hi, "chance": chance}
    if lo > chance:
        return True, f"its balanced accuracy {bal:.3f} (95 % CI {lo:.3f}–{hi:.3f}) is above chance ({chance:.2f})", stats_
    return False, (f"its balanced accuracy {bal:.3f} (95 % CI {lo:.3f}–{hi:.3f}) does not exceed chance "
                   f"({chance:.2f})"), stats_


def _f1_per_class(y: np.ndarray, yhat: np.ndarray, labels: Sequence[Any]) -> np.ndarray:
    out = np.full(len(labels), np.nan)
    for i, c in enumerate(labels):
        tp = np.sum((y == c) & (yhat == c))
        denom = np.sum(y == c) + np.sum(yhat == c)
        if np.any(y == c):
            out[i] = 2.0 * tp / denom
    return out


def f1_intervals(y, yhat, classes: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (images resampled) of each class's F1 and of the macro F1
    over the classes present: ``{class: (lo, hi), ..., "macro": (lo, hi)}``.

    F1 = 2 TP / (support + predicted); a resample without a class leaves that class's draw out.
    """
    y, yhat = np.asarray(y), np.asarray(yhat)
    labels = list(classes)
    present = [i for i, c in enumerate(labels) if np.any(y == c)]
    rng = np.random.default_rng(seed)
    draws = np.empty((int(n_boot), len(labels)))
    for b in range(int(n_boot)):
        idx = rng.integers(0, y.size, y.size)
        draws[b] = _f1_per_class(y[idx], yhat[idx], labels)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out: dict[str, tuple[float, float]] = {}
    for i, c in enumerate(labels):
        col = draws[:, i][np.isfinite(draws[:, i])]
        out[str(c)] = tuple(float(v) for v in np.percentile(col, q)) if col.size else (math.nan, math.nan)
    macro = np.nanmean(draws[:, present], axis=1) if present else np.array([math.nan])
    out["macro"] = tuple(float(v) for v in np.percentile(macro, q))
    return out


def paired_auc_difference(y, p_a, p_b, n_boot: int = 2000, seed: int = 0,
                          alpha: float = 0.05) -> dict[str, float]:
    """ROC AUC of ``p_a`` minus that of ``p_b`` on the same cases, with a percentile
    bootstrap CI from resampling cases jointly for both (single-class resamples redrawn).

    Returns ``{"difference", "ci_lo", "ci_hi", "auc_a", "auc_b"}``.
    """
    y, p_a = _as_arrays(y, p_a)
    _, p_b = _as_arrays(y, p_b)

    def diff(yy: np.ndarray, idx: np.ndarray) -> float:  # resampled labels and case indices
        i = idx.astype(int)
        return roc_auc(yy, p_a[i]) - roc_auc(yy, p_b[i])

    vals = bootstrap_distribution(diff, y, np.arange(y.size), n_boot=n_boot, seed=seed)
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    a, b_ = roc_auc(y, p_a), roc_auc(y, p_b)
    return {"difference": a - b_, "ci_lo": float(lo), "ci_hi": float(hi), "auc_a": a, "auc_b": b_}


def paper_statistics(
    df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, *, threshold: float = 0.5, alpha: float = 0.05,
    spec_targets: Sequence[float] = (0.90, 0.95, 0.98), sens_targets: Sequence[float] = (0.90,),
    other_ids: Iterable[str] | None = None, repeat_letters: str = "abc",
) -> dict[str, Any]:
    """Everything spec section 8 recomputes from the released probability file.

    Parameters
    ----------
    df:
        Output of :func:`read_released_predictions`.
    n_boot, seed, alpha:
        Percentile bootstrap of the ROC AUC over volumes (non-stratified; single-class
        resamples redrawn).
    threshold:
        Decision rule ``p_covid > threshold``.
    other_ids, repeat_letters:
        Passed to :func:`possible_overlap` for the overlap-excluded figures.

    Returns
    -------
    dict
        Plain Python scalars (JSON-ready) plus lists: ``n, n_pos, n_neg``; ``roc_auc``,
        ``roc_auc_ci_lo/hi``; ``average_precision`` (scikit-learn) and
        ``average_precision_step`` (official step rule); ``binary_metrics`` keys
        (``accuracy, tp, fn, tn, fp, sensitivity, specificity, ppv, npv, f1``);
        ``paper_ppv_label`` / ``paper_npv_label`` (the values the abstract prints under
        those names = sensitivity / specificity); ``operating_points`` (list of dict);
        ``youden_*``; ``patient_n``, ``patient_n_pos``, ``patient_n_neg``,
        ``patient_roc_auc``; ``saturated_n``, ``saturated_n_pos``; ``overlap_method``,
        ``overlap_patients``, ``overlap_volumes``, ``overlap_volume_ids``,
        ``no_overlap_n``, ``no_overlap_roc_auc``, ``no_overlap_accuracy``; ``roc_curve``
        and ``pr_curve`` (dicts of lists).
    """
    y = df["label"].to_numpy(int)
    p = df["p_covid"].to_numpy(float)
    out: dict[str, Any] = {}
    bm = binary_metrics(y, p, threshold)
    out.update({k: bm[k] for k in ("n", "n_pos", "n_neg")})
    out["roc_auc"] = roc_auc(y, p)
    out["roc_auc_ci_lo"], out["roc_auc_ci_hi"] = bootstrap_ci(roc_auc, y, p, n_boot=n_boot, alpha=alpha,
                                                              seed=seed)
    out["bootstrap"] = {"n_boot": int(n_boot), "seed": int(seed), "alpha": float(alpha), "unit": "volume",
                        "stratified": False}
    out["average_precision"] = average_precision(y, p)
    out["average_precision_step"] = average_precision_step(y, p)
    out.update({k: v for k, v in bm.items() if k not in ("n", "n_pos", "n_neg")})
    out["n_at_threshold"] = int(np.sum(p == threshold))
    out["paper_ppv_label"] = bm["sensitivity"]
    out["paper_npv_label"] = bm["specificity"]
    out["operating_points"] = operating_points(y, p, spec_targets, sens_targets)
    yd = youden_point(y, p)
    out.update({"youden_j": yd["youden_j"], "youden_threshold": yd["threshold"],
                "youden_sensitivity": yd["sensitivity"], "youden_specificity": yd["specificity"]})

    pat = patient_level(df)
    out["patient_n"] = int(len(pat))
    out["patient_n_pos"] = int(pat["label"].sum())
    out["patient_n_neg"] = int(len(pat) - pat["label"].sum())
    out["patient_roc_auc"] = roc_auc(pat["label"], pat["p"])

    sat = p == 1.0
    out["saturated_n"] = int(sat.sum())
    out["saturated_n_pos"] = int(y[sat].sum())

    other = None if other_ids is None else list(other_ids)
    flag = possible_overlap(df["volume_id"].tolist(), other, repeat_letters=repeat_letters)
    keep = ~flag
    out["overlap_method"] = "id_lists" if other is not None else "inferred_from_suffixes"
    out["overlap_patients"] = int(df.loc[flag, ["series", "patient"]].drop_duplicates().shape[0])
    out["overlap_volumes"] = int(flag.sum())
    out["overlap_volume_ids"] = df.loc[flag, "volume_id"].tolist()
    out["no_overlap_n"] = int(keep.sum())
    out["no_overlap_roc_auc"] = roc_auc(y[keep], p[keep])
    out["no_overlap_accuracy"] = binary_metrics(y[keep], p[keep], threshold)["accuracy"]

    rc, pc = roc(y, p), pr(y, p)
    out["roc_curve"] = {"fpr": rc.fpr.tolist(), "tpr": rc.tpr.tolist(),
                        "thresholds": [float(t) if np.isfinite(t) else None for t in rc.thresholds]}
    out["pr_curve"] = {"precision": pc.precision.tolist(), "recall": pc.recall.tolist(),
                       "thresholds": pc.thresholds.tolist()}
    return out
