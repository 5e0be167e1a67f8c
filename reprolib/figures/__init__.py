"""Figures of the book, one module per part (matplotlib; no backend is forced).

``figures`` itself holds the helpers every part uses (:func:`montage`, :func:`load_gray`); the
submodules draw the figures of one part of the pipeline each: ``preprocessing`` (chapters 01–03),
``classifier`` (04–05), ``localisation`` (06), ``cxr`` (07–08), ``performance`` (09) and
``diagrams`` (the pipeline and the DeCoVNet architecture). Each function takes the data it draws
and returns the figure; the notebooks glue it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def montage(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 6,
            size: float = 2.0, cmap: str = "gray", suptitle: str | None = None):
    """A grid of 2D images (any dtype; each shown with its own grey range). Returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.ravel()[i]
        ax.imshow(img, cmap=cmap)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def load_gray(path: str | Path, max_side: int = 256) -> np.ndarray:
    """Read an image as 8-bit grey, thumbnailed to ``max_side`` px for display."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        im.thumbnail((max_side, max_side))
        return np.asarray(im)
