"""Patient-level cross-fitting of the whole-volume classifiers: one fresh model per fold, each fold's
held-out volumes predicted by the model that never saw them, and the fold models saved.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from torch import nn

from . import provenance
from .errors import ConfigError
from .modelfile import save_checkpoint
from .train import History, TrainConfig, fit, predict_volumes
from .volume_data import VolumeDataset


def cross_fit(make_model: Callable[[], nn.Module], items: Sequence[tuple[Any, int, str]],
              folds: Sequence[tuple[Sequence[int], Sequence[int]]], cfg: TrainConfig, *,
              monitor: bool = True, bn_eval: bool | None = None,
              ) -> tuple["pd.DataFrame", list[History], list[nn.Module]]:
    """Train a fresh model per fold and predict that fold's held-out volumes.

    No model selection: every fold's model keeps its **last** weights, so the held-out
    volumes never influence training. With ``monitor=True`` the held-out loss and AUC
    are recorded after each validation epoch for the learning curve only (NaN AUC when
    the fold holds one class). Fold ``k`` initialises and trains with seed ``cfg.seed + k``.

    Returns
    -------
    predictions : DataFrame, one row per held-out volume: ``case_id``, ``label``,
        ``p_covid``, ``fold``, ``seconds`` (forward pass).
    histories : one :class:`History` per fold.
    models : the trained models, in fold order.
    """

    rows, histories, models = [], [], []
    bn = cfg.bn_eval if bn_eval is None else bn_eval
    for k, (tr, te) in enumerate(folds):
        tr_items = [items[int(i)] for i in tr]
        te_items = [items[int(i)] for i in te]
        overlap = {c for _, _, c in tr_items} & {c for _, _, c in te_items}
        if overlap:
            raise ConfigError(None, f"fold {k}: cases on both sides: {sorted(overlap)[:5]}")
        fold_cfg = replace(cfg, seed=cfg.seed + k, checkpoint_dir=(
            None if cfg.checkpoint_dir is None else Path(cfg.checkpoint_dir) / f"fold{k}"))
        provenance.seed_everything(fold_cfg.seed, deterministic=False)  # the fresh model's initial weights too
        model = make_model()
        hist = fit(model, VolumeDataset(tr_items), VolumeDataset(te_items) if monitor else None, fold_cfg)
        y, p, ids, secs = predict_volumes(model, VolumeDataset(te_items), bn_eval=bn)
        rows += [{"case_id": c, "label": int(yy), "p_covid": float(pp), "fold": k, "seconds": float(s)}
                 for c, yy, pp, s in zip(ids, y, p, secs)]
        histories.append(hist)
        models.append(model)
    return pd.DataFrame(rows), histories, models


def predict_folds(nets: Sequence[nn.Module], items: Sequence[tuple[Any, int, str]],
                  folds: Sequence[tuple[Sequence[int], Sequence[int]]], bn_eval: bool = True) -> "pd.DataFrame":
    """Each fold's held-out volumes predicted by that fold's model (:func:`predict_volumes`);
    ``bn_eval=False`` normalises every volume with its own batch statistics, as the official
    test script does. Columns as :func:`cross_fit`'s predictions."""

    rows = []
    for k, (net, (_, te)) in enumerate(zip(nets, folds)):
        y, p, ids, secs = predict_volumes(net, VolumeDataset([items[int(i)] for i in te]), bn_eval=bn_eval)
        rows += [{"case_id": c, "label": int(yy), "p_covid": float(pp), "fold": k, "seconds": float(s)}
                 for c, yy, pp, s in zip(ids, y, p, secs)]
    return pd.DataFrame(rows)


def save_fold_models(work: str | Path, nets: Sequence[nn.Module], items: Sequence[tuple[Any, int, str]],
                     folds: Sequence[tuple[Sequence[int], Sequence[int]]], metadata: dict[str, Any]) -> None:
    """``work/decovnet_fold{k}.pt`` for every fold (with the ids of the volumes it did not train
    on, so that chapter 06 localises each volume with the model that never saw it) and
    ``work/decovnet_last.pt`` (the last fold's model, used by ``repro predict``)."""
    work = Path(work)
    for k, net in enumerate(nets):
        meta = {**metadata, "fold": k, "test_case_ids": [items[int(i)][2] for i in folds[k][1]]}
        save_checkpoint(work / f"decovnet_fold{k}.pt", net, metadata=meta)
    save_checkpoint(work / "decovnet_last.pt", nets[-1], metadata=meta)
