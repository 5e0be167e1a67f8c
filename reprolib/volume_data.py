"""The whole-volume classifiers' training data: volumes with labels, and class balance.

:class:`VolumeDataset` yields (x (2, T, H, W) float32, label, case id) from arrays or .npz
files, augmented on request; :func:`oversample_indices` and :func:`class_weights` are the two
ways the engine balances the classes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import InputError, VolumeError


def _load_array(src: Any, key: str | None) -> np.ndarray:
    """An ndarray from an array, a tensor, a ``.npy`` or a ``.npz`` path."""
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, torch.Tensor):
        return src.detach().cpu().numpy()
    path = Path(src)
    if not path.is_file():
        raise InputError(path, "volume file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if isinstance(data, np.ndarray):
                return data
            names = list(data.keys())
            if key is not None and key in names:
                return data[key]
            if len(names) == 1:
                return data[names[0]]
            raise VolumeError(path, f"npz holds {names}; expected key {key!r} or a single array")
    except VolumeError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise VolumeError(path, f"unreadable volume file ({exc})") from exc


class VolumeDataset(torch.utils.data.Dataset):
    """Whole-volume classification items.

    Parameters
    ----------
    items : sequence of (source, label, case_id)
        ``source``: ndarray / tensor (2, T, H, W) float32, or a path to a ``.npy`` or
        ``.npz`` (array under ``key``, or its only array).
    augment : callable or None
        An augmentation with ``sample(gen)``/``apply(x, params)`` (or any
        ``f(x, gen)``), applied by :meth:`load` when a generator is given.
    key : str
        Array name inside ``.npz`` files.

    ``__getitem__(i)`` returns ``(x (2, T, H, W) float32 tensor, label int, case_id)``,
    augmented with the dataset's own ``generator`` (seed 0) when ``augment`` is set.
    """

    def __init__(self, items: Sequence[tuple[Any, int, str]], augment: Callable | None = None,
                 key: str = "x", generator: torch.Generator | None = None):
        self.items = [(src, int(lab), str(cid)) for src, lab, cid in items]
        self.augment = augment
        self.key = key
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [lab for _, lab, _ in self.items]

    @property
    def case_ids(self) -> list[str]:
        return [cid for _, _, cid in self.items]

    def load(self, i: int, generator: torch.Generator | None = None,
             augment: bool = True) -> tuple[torch.Tensor, int, str]:
        """Item ``i``; augmented only when ``augment`` and a generator are given."""
        src, lab, cid = self.items[i]
        arr = _load_array(src, self.key)
        where = src if isinstance(src, (str, os.PathLike)) else cid
        if arr.ndim != 4 or arr.shape[0] != 2:
            raise VolumeError(where, f"expected a (2, T, H, W) volume, got shape {arr.shape}")
        x = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise VolumeError(where, "volume contains NaN or infinite values")
        if augment and self.augment is not None and generator is not None:
            x = self.augment(x, generator)
        return x, lab, cid

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        return self.load(i, self.generator)


def oversample_indices(labels: Sequence[int], rng: np.random.Generator) -> list[int]:
    """All indices plus random duplicates that top every class up to the largest class.

    Duplicates are drawn without replacement within a class (whole extra copies first
    when a class needs more than its own size). The result is not shuffled.

    Returns
    -------
    list of int, length ``n_classes · max count``.
    """
    labels = np.asarray(labels)
    out = list(range(len(labels)))
    if len(labels) == 0:
        return out
    classes, counts = np.unique(labels, return_counts=True)
    top = counts.max()
    for c, n in zip(classes, counts):
        need = int(top - n)
        if need == 0:
            continue
        idx = np.flatnonzero(labels == c)
        reps, rest = divmod(need, len(idx))
        extra = list(np.tile(idx, reps)) + list(rng.choice(idx, size=rest, replace=False))
        out.extend(int(i) for i in extra)
    return out


def class_weights(labels: Sequence[int], n_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency CE weights ``n / (K · n_c)`` (absent classes get weight 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)
