"""Figures of the Performance chapter (09): DeCoVNet time against depth, the stages of one CT.

Each function takes what :mod:`reprolib.bench` extracts from a benchmark document and returns the
figure; the notebook glues it."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure


def decovnet_time_vs_T(frame: "pd.DataFrame", paper_seconds: float, slice_size: str, where: str) -> "Figure":
    """Seconds per volume against depth T, one line per variant (a cross for a variant measured at
    a single T), with the paper's whole-pipeline GPU time as a dashed line.

    ``frame``: :func:`reprolib.bench_page.decovnet_frame`; ``slice_size`` (``"224×336"``) and ``where``
    (:func:`reprolib.bench_page.device_label`) label the axes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for variant, g in frame.groupby("variant", sort=False):
        g = g.sort_values("T")
        if len(g) > 1:
            ax.plot(g["T"], g["seconds"], marker="o", label=variant)
        else:
            ax.scatter(g["T"], g["seconds"], marker="x", label=f"{variant} (measured once)")
    ax.axhline(paper_seconds, ls="--", c="0.4", label="paper: whole pipeline per CT, GPU")
    ax.set(xlabel=f"slices T ({slice_size})", ylabel="seconds per volume", title=f"DeCoVNet inference, {where}")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pipeline_stages(stages: "pd.DataFrame", slices: int, slice_size: str, where: str) -> "Figure":
    """One horizontal stacked bar per speed (``stages``: :func:`reprolib.bench_page.pipeline_stages`,
    rows = speeds, columns = stages in order), each segment a stage's seconds, the bar's total at
    its end; the title names the volume (``slices`` 1 mm slices of ``slice_size``) and ``where``
    it ran."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * max(1, len(stages))))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    y = list(range(len(stages)))[::-1]  # the first speed (the baseline) on top
    left = [0.0] * len(stages)
    for k, stage in enumerate(stages.columns):
        widths = stages[stage].tolist()
        ax.barh(y, widths, left=left, color=colors[k % len(colors)], label=stage)
        left = [a + b for a, b in zip(left, widths)]
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {total:.1f} s", va="center", fontsize=8)
    ax.set_yticks(y, list(stages.index))
    ax.set_xlim(0, max(left, default=1.0) * 1.15)
    ax.set(xlabel="seconds", title=f"one CT volume, {slices} slices of {slice_size} at 1 mm, {where}")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    fig.tight_layout()
    return fig
