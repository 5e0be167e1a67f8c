"""Near-duplicate images by perceptual hash: the external validation set against the development
images (the seed paper's de-duplication), and the Hannover originals inside the Cohen collection.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .cxr import CXRRecord, load_cxr, records_frame

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

PHASH_SIZE = 16  # 16 x 16 = 256-bit pHash, the spec's "Hamming <= 12 of 256"


def phash(path_or_image: str | os.PathLike | Image.Image, hash_size: int = PHASH_SIZE):
    """Perceptual hash (``imagehash.phash``, ``hash_size**2`` bits) of a file or PIL image.

    Files are read as 8-bit grayscale with :func:`load_cxr` (ImageError on bad files).
    """
    import imagehash

    img = path_or_image if isinstance(path_or_image, Image.Image) else load_cxr(path_or_image, channels=1)
    return imagehash.phash(img, hash_size=hash_size)


def _hash_bits(items: Sequence[Any], hash_size: int) -> np.ndarray:
    """Hashes (or files/images, hashed here) -> packed ``uint8`` array ``(N, bits/8)``."""
    import imagehash

    rows = []
    for it in items:
        h = it if isinstance(it, imagehash.ImageHash) else phash(it, hash_size=hash_size)
        rows.append(np.packbits(np.asarray(h.hash, dtype=bool).ravel()))
    nbytes = hash_size * hash_size // 8
    return np.stack(rows) if rows else np.zeros((0, nbytes), dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned integer array (same shape, small int)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, x.itemsize).sum(axis=-1)


def hamming_matrix(a: np.ndarray, b: np.ndarray, *, max_bytes: int = 1 << 25):
    """Yield ``(start, D)`` blocks of the Hamming distance matrix of packed hashes.

    ``a``: uint8 ``(N, B)``, ``b``: uint8 ``(M, B)``; each ``D`` is int ``(n, M)`` for rows
    ``start:start+n`` of ``a``; blocks keep the XOR temporary under ``max_bytes``.
    """
    if a.shape[1] % 8 == 0:
        a64, b64 = a.view(np.uint64), b.view(np.uint64)
    else:
        a64, b64 = a, b
    width = a64.shape[1] * a64.itemsize
    step = max(1, max_bytes // max(1, b64.shape[0] * width))
    for s in range(0, a64.shape[0], step):
        x = a64[s:s + step, None, :] ^ b64[None, :, :]
        yield s, _popcount(x).sum(axis=2, dtype=np.int64)


def find_duplicates(
    candidates: Sequence[Any],
    references: Sequence[Any],
    max_distance: int = 12,
    *,
    hash_size: int = PHASH_SIZE,
) -> list[tuple[Any, Any, int]]:
    """Pairs ``(candidate, reference, distance)`` with pHash Hamming distance <= ``max_distance``.

    ``candidates`` / ``references`` hold paths, PIL images or ``imagehash.ImageHash``
    values (hashes are computed once); items are returned as given, ordered by candidate
    then distance. Distances are computed blockwise with numpy bit operations.
    """
    a = _hash_bits(candidates, hash_size)
    b = _hash_bits(references, hash_size)
    out: list[tuple[Any, Any, int]] = []
    if len(a) == 0 or len(b) == 0:
        return out
    for s, d in hamming_matrix(a, b):
        ii, jj = np.nonzero(d <= max_distance)
        order = np.lexsort((jj, d[ii, jj], ii))  # by candidate, then distance, then reference
        for i, j in zip(ii[order], jj[order]):
            out.append((candidates[s + int(i)], references[int(j)], int(d[i, j])))
    return out


def deduplicate(
    candidates: Sequence[Any],
    references: Sequence[Any],
    max_distance: int = 12,
    *,
    hash_size: int = PHASH_SIZE,
) -> tuple[list[Any], list[Any]]:
    """Split ``candidates`` into ``(kept, removed)``: removed ones are within ``max_distance``
    of some reference. Order is preserved."""
    a = _hash_bits(candidates, hash_size)
    b = _hash_bits(references, hash_size)
    dup = np.zeros(len(candidates), dtype=bool)
    if len(a) and len(b):
        for s, d in hamming_matrix(a, b):
            dup[s:s + len(d)] = (d <= max_distance).any(axis=1)
    kept = [c for c, x in zip(candidates, dup) if not x]
    removed = [c for c, x in zip(candidates, dup) if x]
    return kept, removed


def removal_summary(external: Sequence[CXRRecord], pairs: Sequence[tuple[Any, Any, int]]
                    ) -> tuple[list[CXRRecord], "pd.DataFrame", "pd.DataFrame"]:
    """What de-duplication leaves of ``external``: ``pairs`` are :func:`find_duplicates`' near-copy
    pairs ``(external path, development path, distance)``.

    Returns ``(kept records, table per label of images before / removed / kept, records frame)``.
    """
    dup_paths = {str(c) for c, _, _ in pairs}
    kept = [r for r in external if str(r.path) not in dup_paths]
    frame = records_frame(external)
    removed = frame[frame.path.astype(str).isin(dup_paths)].groupby("label").size()
    table = (frame.groupby("label").size().rename("before").to_frame()
             .join(removed.rename("removed")).fillna(0).astype(int))
    table["kept"] = table.before - table.removed
    return kept, table, frame
