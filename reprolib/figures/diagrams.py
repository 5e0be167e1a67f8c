"""Diagrams drawn with matplotlib: the book's pipeline and the DeCoVNet architecture."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

#: The pipeline's stages as (row, column, title, detail, chapter); arrows follow :data:`PIPELINE_EDGES`.
PIPELINE_STAGES = [
    (0, 0, "Chest CT", "DICOM / NIfTI, HU", "01"),
    (0, 1, "Preprocessing", "FOV, z → 1 mm,\nwindow → 8 bit", "02"),
    (0, 2, "Lung pseudo-labels", "−320 HU threshold,\nlargest air component", "02"),
    (0, 3, "2D U-Net", "slice by slice,\ntrained on pseudo-labels", "03"),
    (1, 3, "Crop + resize", "lung box, 224×336,\n[CT, mask] channels", "04"),
    (1, 2, "DeCoVNet", "3D CNN →\np(COVID-19)", "04–05"),
    (1, 1, "CAM + 3DCC", "activation map ∩ fragmented\nlung → lesion", "06"),
    (1, 0, "Hit rate", "lesion centre in a\nmarked lesion?", "06"),
    (2, 0, "Chest X-ray", "PNG / JPEG", "01"),
    (2, 1, "ResNet-50", "4 classes, transfer\nlearning", "07"),
    (2, 2, "External validation", "de-duplicated,\nother hospitals", "08"),
    (2, 3, "Web page + retrain", "repro serve,\nrepro retrain", "–"),
]
PIPELINE_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11)]


def pipeline_diagram():
    """The book's pipeline: CT branch (two rows) and chest X-ray branch, each box naming its chapter."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 5.2))
    w, h, dx, dy = 2.5, 1.15, 3.1, 1.75
    centre = {}
    for i, (row, col, title, detail, chapter) in enumerate(PIPELINE_STAGES):
        x, y = col * dx, -row * dy
        colour = "#dbe9f6" if row < 2 else "#fde4c8"
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=colour, ec="0.3"))
        ax.text(x, y + 0.3, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x, y - 0.15, detail, ha="center", va="center", fontsize=7.5)
        ax.text(x + w / 2 - 0.05, y - h / 2 + 0.08, f"ch. {chapter}", ha="right", va="bottom", fontsize=7, color="0.35")
        centre[i] = (x, y)
    for a, b in PIPELINE_EDGES:
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
