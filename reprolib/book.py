"""What a notebook needs to publish into the book.

Every value a notebook glues is also written to
``results/<profile>/<notebook>.json`` (the *results contract*), so the tests
and the landing page read the same numbers the prose shows.

Use from a notebook::

    nb = Notebook("04_decovnet", profile=profile)
    nb.banner()
    nb.glue("auc", 0.959)            # {glue:text}`auc:.3f` in Markdown
    nb.glue_figure("roc_curve", fig) # ```{glue:figure} roc_curve
    nb.finish()                      # prints and glues the wall time
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from . import config
from .files import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported for notebooks)

BANNERS = {
    "synthetic": (
        "warning",
        "Built from the synthetic profile",
        "Every number, curve and timing on this page comes from procedural phantoms "
        "(computer-generated chest CTs and X-rays with known labels). They test the "
        "code path; they are not medical results.",
    ),
    "sample": (
        "note",
        "Built from the sample profile",
        "This page runs on a small real public subset of the datasets (listed in "
        "`data_manifests/`). With so few images and volumes the intervals are wide; "
        "the `paper` profile runs the full datasets on a GPU.",
    ),
    "paper": (
        "note",
        "Built from the paper profile",
        "This page runs on the full public datasets with the papers' schedules.",
    ),
}


#: Table columns that hold measurements of the run itself (wall times, traced memory peaks):
#: :meth:`Notebook.glue_table` records them with the timings, not with the results.
MEASURED_COLUMNS = frozenset({"seconds", "seconds_per_slice", "seconds_per_volume", "peak_MB", "copies",
                              "step_copies", "step_max", "preprocess_MB", "preprocess_copies"})


#: Written by notebook 01 of a full-data profile (:func:`reprolib.full_data.acquire`) in its work folder.
DATASETS_USED_FILE = "datasets_used.json"


def _datasets_line(profile: str) -> str:
    """What a full-data build used, from notebook 01's :data:`DATASETS_USED_FILE`: one entry per
    dataset, ``used`` of ``found`` items (documented count); ``""`` for other profiles."""
    path = config.work_dir(profile) / DATASETS_USED_FILE
    if not path.is_file():
        return ""
    rows = json.loads(path.read_text())["datasets"]
    parts = [f"{r['dataset']} {r['used']:,} of {r['found']:,} found ({r['documented']:,} documented)" for r in rows]
    return " Datasets of this build (items used, found, documented): " + "; ".join(parts) + "."


def banner_markdown(profile: str, datasets: bool = True) -> str:
    """The profile banner as a MyST admonition (rendered on every page built from ``profile``):
    under a named schedule (``$REPRO_SCHEDULE``) a warning that names it; for a full-data profile
    (and ``datasets``) the datasets and counts this build used."""
    kind, title, text = BANNERS[config.check_profile(profile)]
    sched = config.schedule()
    if sched:
        kind, title = "warning", f"{title}, {sched} schedule"
        text = (f"This page ran the {profile} profile's code path under its `{sched}` schedule: tiny epochs and "
                "subsets of whatever archives were found (in CI, miniature archives of phantoms). It tests the "
                "code; its numbers are not results.")
    text += _datasets_line(profile) if datasets else ""
    return f":::{{admonition}} {title}\n:class: {kind}\n{text}\n:::\n"


def _cell(value: Any, floatfmt: str) -> str:
    """One table cell as Markdown: no ``nan``/``None`` (an en dash), no raw pipes or newlines."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return floatfmt.format(value)
    if isinstance(value, (list, tuple)):
        value = "×".join(map(str, value))
    text = str(value)
    if text in ("nan", "NaN", "None", "<NA>", "NaT"):
        return "–"
    return text.replace("|", "\\|").replace("\n", " ")


def format_columns(df, formats: "Mapping[str, str]"):
    """A copy of ``df`` in which each column named in ``formats`` holds text: ``formats`` maps a
    column to a :meth:`str.format` pattern (``{"seconds": "{:.2f}"}``), missing values (None, NaN)
    read "–". Columns not named, and names not in ``df``, are left alone."""
    out = df.copy()
    for col, fmt in formats.items():
        if col in out.columns:
            out[col] = [_cell(v, fmt) if _cell(v, fmt) == "–" else fmt.format(v) for v in out[col].tolist()]
    return out


def markdown_table(df, index: bool = True, floatfmt: str = "{:.3f}") -> str:
    """A pandas DataFrame as a MyST pipe table (index as the first column when ``index``).

    Missing values read "–"; floats use ``floatfmt``; the result is meant for
    ``{glue:md}`` inside a ``{table}`` directive, which numbers and captions it as a table."""
    frame = df.reset_index() if index else df
    header = [_cell(c, floatfmt) if not isinstance(c, str) else c.replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 volume"``, ``"3 volumes"``: a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else (plural_form or noun + 's')}"


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays to plain JSON types (NaN -> None)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


class Notebook:
    """Glue helper and results recorder for one notebook run.

    Parameters
    ----------
    name:
        Notebook stem, e.g. ``"04_decovnet"``.
    profile:
        Profile name; selects ``results/<profile>/``.
    results_dir:
        Override of the results directory (default: :func:`reprolib.config.results_dir`).
    """

    def __init__(self, name: str, profile: str, results_dir: str | Path | None = None):
        self.name = name
        self.profile = config.check_profile(profile)
        base = Path(results_dir) if results_dir else config.results_dir(profile)
        self.path = base / f"{name}.json"
        self.values: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        # A fresh run starts a fresh record: stale values must never survive.
        self.path.unlink(missing_ok=True)

    # -- publishing ---------------------------------------------------------
    def banner(self, datasets: bool = True) -> None:
        """Display the profile banner as a Markdown admonition (``datasets=False``: without the
        datasets line, for the chapter that writes it)."""
        from IPython.display import Markdown, display

        display(Markdown(banner_markdown(self.profile, datasets)))

    def record(self, key: str, value: Any, timing: bool = False) -> None:
        """Record ``value`` in the results JSON without displaying it.

        Timings (``timing=True``) are kept apart from values: they differ between
        runs, so they are neither compared for repeatability nor hashed into the
        downstream notebooks' cache keys.
        """
        (self.timings if timing else self.values)[key] = to_jsonable(value)
        payload = {"notebook": self.name, "profile": self.profile, "values": self.values,
                   "timings": self.timings}
        atomic_write_text(self.path, json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def glue(self, key: str, value: Any, display: bool = False, timing: bool = False) -> Any:
        """Glue a scalar/string for ``{glue:text}`` and record it in the results JSON."""
        from myst_nb import glue

        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        glue(key, value, display=display)
        self.record(key, value, timing=timing)
        return value

    def glue_text(self, key: str, value: Any, fmt: str = "{:.3f}", timing: bool = False) -> str:
        """Glue ``value`` pre-formatted as a string (for tables on other pages) and record the raw value.

        ``None`` or NaN glues ``"not available"`` so that every key exists in every profile.
        ``timing=True`` records it with the timings (a measured duration or speed: it differs
        between runs, see :meth:`record`).
        """
        from myst_nb import glue

        missing = value is None or (isinstance(value, float) and not math.isfinite(value))
        text = "not available" if missing else (value if isinstance(value, str) else fmt.format(value))
        glue(key, text, display=False)
        self.record(key, None if missing else value, timing=timing)
        return text

    def glue_timing(self, key: str, seconds: float, digits: int = 2) -> float:
        """Glue a wall time in seconds (recorded under ``timings``)."""
        return self.glue(key, round(float(seconds), digits), timing=True)

    def glue_table(self, key: str, df, display: bool = False, record: bool = True, index: bool = True,
                   floatfmt: str = "{:.3f}", formats: "Mapping[str, str] | None" = None) -> None:
        """Glue a pandas DataFrame as a Markdown table and record its columns (unformatted).

        The page shows it with ``{glue:md}`` inside a ``{table}`` directive (a numbered, captioned
        table that scrolls when wide); floats use ``floatfmt`` unless ``formats`` gives their column
        its own pattern (:func:`format_columns`), so that a table and the prose round one quantity
        alike. Columns named in :data:`MEASURED_COLUMNS` (times, memory peaks: they differ between
        runs) are recorded under ``timings`` (as ``<key>``), the others under ``values``. Returns
        nothing, so that a cell ending with it shows no second, unformatted copy of the table."""
        from IPython.display import Markdown
        from myst_nb import glue

        shown = format_columns(df, formats) if formats else df
        glue(key, Markdown(markdown_table(shown, index=index, floatfmt=floatfmt)), display=display)
        if record:
            cols = df.reset_index().to_dict(orient="list")
            measured = {c: v for c, v in cols.items() if c in MEASURED_COLUMNS}
            self.record(key, {c: v for c, v in cols.items() if c not in measured})
            if measured:
                self.record(key, measured, timing=True)

    @contextlib.contextmanager
    def timer(self, key: str, digits: int = 2):
        """``with nb.timer("train_seconds"): ...`` glues the block's wall time (:meth:`glue_timing`)."""
        t0 = time.perf_counter()
        yield
        self.glue_timing(key, time.perf_counter() - t0, digits)

    def glue_figure(self, key: str, fig, display: bool = False) -> None:
        """Glue a matplotlib figure for ``{glue:figure}`` and close it."""
        import matplotlib.pyplot as plt
        from myst_nb import glue

        glue(key, fig, display=display)
        plt.close(fig)

    def glue_markdown(self, key: str, text: str, timing: bool = False) -> None:
        """Glue a Markdown snippet (e.g. a banner for another page) for ``{glue:md}``;
        ``timing=True`` records it with the timings (text that reports measured times)."""
        from IPython.display import Markdown
        from myst_nb import glue

        glue(key, Markdown(text), display=False)
        self.record(key, text, timing=timing)

    def finish(self) -> float:
        """Glue this notebook's wall time in seconds (recorded with the timings; the page's
        "Reproduce this page" box and the provenance page show the runner's record); return it."""
        wall = time.perf_counter() - self._t0
        self.glue_timing("wall_time_s", wall)
        return wall
