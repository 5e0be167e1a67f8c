"""Tiny notebooks for runner tests: jupytext ``py:percent`` sources with the papermill parameters cell.

``write_notebook(directory, stem, body)`` writes ``<directory>/<stem>.py`` whose code opens a
``reprolib.book.Notebook`` named ``stem`` (as ``nb``) and makes sure ``work_dir`` exists, then runs
``body``. Not collected by pytest.
"""
from __future__ import annotations

from pathlib import Path

HEADER = """# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "synthetic"
seed = 0
device = "cpu"
data_dir = None
work_dir = None
results_dir = None

# %%
import time
from pathlib import Path
from reprolib import book
nb = book.Notebook("{stem}", profile, results_dir)
Path(work_dir).mkdir(parents=True, exist_ok=True)
"""


def write_notebook(directory: Path, stem: str, body: str) -> Path:
    """Write the notebook ``stem`` running ``body`` (source lines; ``# %%`` starts a new cell)."""
    path = Path(directory) / f"{stem}.py"
    path.write_text(HEADER.replace("{stem}", stem) + body.rstrip("\n") + "\n")
    return path
