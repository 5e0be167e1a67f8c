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

import json
import math
import time
from pathlib import Path
from typing import Any

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


def banner_markdown(profile: str) -> str:
    """The profile banner as a MyST admonition (rendered on every page built from ``profile``)."""
    kind, title, text = BANNERS[config.check_profile(profile)]
    return f":::{{admonition}} {title}\n:class: {kind}\n{text}\n:::\n"


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
    def banner(self) -> None:
        """Display the profile banner as a Markdown admonition."""
        from IPython.display import Markdown, display

        display(Markdown(banner_markdown(self.profile)))

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

    def glue_table(self, key: str, df, display: bool = False, record: bool = True):
        """Glue a pandas DataFrame (rendered as HTML) and record its columns.

        Columns named in :data:`MEASURED_COLUMNS` (times, memory peaks: they differ between
        runs) are recorded under ``timings`` (as ``<key>``), the others under ``values``."""
        from myst_nb import glue

        glue(key, df, display=display)
        if record:
            cols = df.reset_index().to_dict(orient="list")
            measured = {c: v for c, v in cols.items() if c in MEASURED_COLUMNS}
            self.record(key, {c: v for c, v in cols.items() if c not in measured})
            if measured:
                self.record(key, measured, timing=True)
        return df

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
        """Print and glue this notebook's wall time in seconds; return it."""
        wall = time.perf_counter() - self._t0
        print(f"{self.name}: wall time {wall:.1f} s ({self.profile} profile)")
        self.glue_timing("wall_time_s", wall)
        return wall
