"""Diagrams drawn with matplotlib: the book's pipeline and the DeCoVNet architecture."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

#: The pipeline diagram's stages and arrows (data, beside this module).
PIPELINE_FILE = Path(__file__).with_name("pipeline.yml")


def pipeline_layout() -> tuple[list[tuple[int, int, str, str, str]], list[tuple[int, int]]]:
    """``(stages, edges)`` of ``pipeline.yml``: stages as (row, column, title, detail, chapter),
    edges as pairs of stage indices."""
    import yaml

    doc = yaml.safe_load(PIPELINE_FILE.read_text(encoding="utf-8"))
    stages = [(int(s["at"][0]), int(s["at"][1]), s["title"], s["detail"], s["chapter"]) for s in doc["stages"]]
    return stages, [(int(a), int(b)) for a, b in doc["edges"]]


def pipeline_diagram():
    """The book's pipeline: CT branch (two rows) and chest X-ray branch, each box naming its chapter."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    stages, edges = pipeline_layout()
    fig, ax = plt.subplots(figsize=(12, 5.2))
    w, h, dx, dy = 2.5, 1.15, 3.1, 1.75
    centre = {}
    for i, (row, col, title, detail, chapter) in enumerate(stages):
        x, y = col * dx, -row * dy
        colour = "#dbe9f6" if row < 2 else "#fde4c8"
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=colour, ec="0.3"))
        ax.text(x, y + 0.3, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x, y - 0.15, detail, ha="center", va="center", fontsize=7.5)
        ax.text(x + w / 2 - 0.05, y - h / 2 + 0.08, f"ch. {chapter}", ha="right", va="bottom", fontsize=7, color="0.35")
        centre[i] = (x, y)
    for a, b in edges:
        (x0, y0), (x1, y1) = centre[a], centre[b]
        if y0 == y1:
            sgn = 1 if x1 > x0 else -1
            start, end = (x0 + sgn * w / 2, y0), (x1 - sgn * w / 2, y1)
        else:
            start, end = (x0, y0 - h / 2), (x1, y1 + h / 2)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.2))
    ax.text(-w / 2, 0.95, "Chest CT (seed paper 000, DeCoVNet)", fontsize=9, color="0.25")
    ax.text(-w / 2, -2 * dy + 0.8, "Chest X-ray (seed paper 003, ResNet-50)", fontsize=9, color="0.25")
    ax.set_xlim(-w / 2 - 0.2, 3 * dx + w / 2 + 0.2)
    ax.set_ylim(-2 * dy - h / 2 - 0.2, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return fig


def architecture_diagram(rows: Sequence[Mapping[str, Any]], title: str = "DeCoVNet"):
    """A network as a row of stages, one box per row of :func:`reprolib.models.model_summary`:
    box height grows with the logarithm of the stage's output size; the box names the stage,
    its output shape (channels × T × H × W) and its parameters."""
    import math

    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(8, 1.9 * n), 3.6))
    sizes = [math.prod(r["output_shape"][1:]) if r["output_shape"] else 1 for r in rows]
    top = math.log10(max(sizes) + 1)
    for i, (r, size) in enumerate(zip(rows, sizes)):
        hgt = 0.6 + 2.0 * math.log10(size + 1) / top
        ax.add_patch(FancyBboxPatch((i * 1.9, -hgt / 2), 1.5, hgt, boxstyle="round,pad=0.04", fc="#dbe9f6", ec="0.3"))
        shape = "×".join(map(str, r["output_shape"][1:])) if r["output_shape"] else ""
        ax.text(i * 1.9 + 0.75, hgt / 2 + 0.28, r["name"], ha="center", fontsize=9, weight="bold")
        ax.text(i * 1.9 + 0.75, 0.1, shape.replace("×", "×\n", 1), ha="center", va="center", fontsize=7.5)
        ax.text(i * 1.9 + 0.75, -hgt / 2 - 0.3, f"{r['params']:,} params", ha="center", fontsize=7, color="0.35")
        if i:
            ax.annotate("", xy=(i * 1.9, 0), xytext=(i * 1.9 - 0.4, 0),
                        arrowprops=dict(arrowstyle="-|>", color="0.25"))
    ax.set_xlim(-0.3, n * 1.9)
    ax.set_ylim(-1.9, 2.0)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    return fig
