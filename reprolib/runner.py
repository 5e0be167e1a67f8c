"""Execute the book's notebooks in order with papermill, with an execution cache.

Each notebook source is a jupytext ``py:percent`` file ``notebooks/NN_name.py``
with a cell tagged ``parameters``. :func:`run` converts it to ``.ipynb`` and
executes it with papermill, in numeric order. A notebook is *skipped* when its
cache key is unchanged; the key hashes

* the notebook source,
* the ``reprolib`` code the notebook can run: the modules it imports, transitively, and the
  package data they read (:mod:`reprolib.codehash`),
* the parameters papermill injects,
* the data manifests of the profile (the inputs' sha256 live there),
* the published values (``results/<profile>/<nb>.json``) of every upstream notebook, and
* the content of the input files the notebook declares on a line
  ``# repro-inputs: name ...`` of its source (names from :data:`INPUT_FILES`, e.g.
  ``bench``: the benchmark JSON that ``make bench`` writes), or ``missing``.

A failing cell stops the run: the runner prints notebook, cell and traceback,
keeps the failed notebook under ``.repro/<profile>/failed/`` and marks the run
failed so that ``repro book`` refuses to build from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import codehash, config
from .book import atomic_write_text
from .errors import ConfigError, NotebookExecutionError

NB_RE = re.compile(r"^(\d{2})_[a-z0-9_]+\.py$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebooks_dir() -> Path:
    return config.project_root() / "notebooks"


def state_dir(profile: str) -> Path:
    """``.repro/<profile>``: executed notebooks, cache index, run record."""
    return config.work_dir(profile).parent


def list_notebooks(directory: str | Path | None = None) -> list[Path]:
    """Notebook sources ``NN_name.py`` in numeric order."""
    directory = Path(directory) if directory else notebooks_dir()
    found = sorted(p for p in directory.glob("*.py") if NB_RE.match(p.name))
    if not found:
        raise ConfigError(directory, "no notebook sources named NN_name.py")
    numbers = [p.name[:2] for p in found]
    dupes = {n for n in numbers if numbers.count(n) > 1}
    if dupes:
        raise ConfigError(directory, f"two notebooks share the number(s) {sorted(dupes)}")
    return found


def select(notebooks: list[Path], only: list[str] | None = None, start: str | None = None) -> list[Path]:
    """Filter by ``--only NN`` (repeatable) and ``--from NN``."""
    numbers = {p.name[:2] for p in notebooks}
    for n in (only or []) + ([start] if start else []):
        if n.zfill(2) not in numbers:
            raise ConfigError(None, f"no notebook numbered {n!r}; have {sorted(numbers)}")
    chosen = notebooks
    if only:
        wanted = {n.zfill(2) for n in only}
        chosen = [p for p in chosen if p.name[:2] in wanted]
    if start:
        chosen = [p for p in chosen if p.name[:2] >= start.zfill(2)]
    return chosen


# --------------------------------------------------------------------------- hashing
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_hash(source: Path) -> str:
    """The ``reprolib`` code (and package data) that notebook ``source`` can run
    (:func:`reprolib.codehash.notebook_hash`): the modules it imports, transitively."""
    return codehash.notebook_hash(source)


def results_path(profile: str, stem: str, results_dir: Path | None = None) -> Path:
    return (results_dir or config.results_dir(profile)) / f"{stem}.json"


def published_values_hash(path: Path) -> str:
    """Hash of a results file's ``values`` (timings excluded), or ``"missing"``."""
    try:
        values = json.loads(path.read_text())["values"]
    except (OSError, ValueError, KeyError):
        return "missing"
    return _sha(json.dumps(values, sort_keys=True).encode())


def _bench_json(profile: str) -> Path:
    return config.bench_json()


def _calibration_json(profile: str) -> Path | None:
    return config.calibration_json() if profile == "synthetic" else None  # only synthetic pages show it


#: Files a notebook may declare as inputs (``# repro-inputs: bench``): name -> finder of the file a
#: profile's run reads (None: that profile does not read it).
INPUT_FILES: dict[str, Callable[[str], Path | None]] = {"bench": _bench_json, "calibration": _calibration_json}
INPUTS_RE = re.compile(r"^# repro-inputs:((?:[ \t]+[a-z][a-z0-9_]*)+)", re.M)  # names, then any comment


def declared_inputs(source: Path, profile: str = "sample") -> dict[str, str]:
    """``{name: sha256 of the file, "missing" or "not read"}`` for the inputs ``source`` declares,
    as a run of ``profile`` reads them.

    Raises :class:`ConfigError` naming the notebook for an unknown input name."""
    names = [n for m in INPUTS_RE.finditer(source.read_text(encoding="utf-8")) for n in m.group(1).split()]
    out = {}
    for name in names:
        if name not in INPUT_FILES:
            raise ConfigError(source, f"unknown repro-inputs name {name!r}; known: {sorted(INPUT_FILES)}")
        path = INPUT_FILES[name](profile)
        out[name] = "not read" if path is None else (_sha(path.read_bytes()) if path.is_file() else "missing")
    return out


def manifests_hash(profile: str) -> str:
    """The profile's data manifests as one cache-key part (``"unavailable"`` when one is
    broken: notebook 01 then reports it with a clear error)."""
    from . import data, full_data

    try:
        parts = data.manifest_hashes(profile)
        if full_data.needs_full_data(profile):  # the unpacked archives as found: a new download reruns
            parts["archives"] = full_data.archives_digest(profile)
        return json.dumps(parts, sort_keys=True)
    except Exception:
        return "unavailable"


def key_parts(source: Path, parameters: dict[str, Any], data_hash: str, code_hash: str,
              upstream: list[str], inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """What a notebook's cache key hashes (see the module docstring)."""
    parts = {
        "source": _sha(source.read_bytes()),
        "reprolib": code_hash,
        "parameters": parameters,
        "data": data_hash,
        "upstream": upstream,
    }
    if inputs:  # absent for notebooks without declared inputs: their keys stay as they were
        parts["inputs"] = inputs
    return parts


def cache_key(source: Path, parameters: dict[str, Any], data_hash: str, code_hash: str,
              upstream: list[str], inputs: dict[str, str] | None = None) -> str:
    parts = key_parts(source, parameters, data_hash, code_hash, upstream, inputs)
    return _sha(json.dumps(parts, sort_keys=True, default=str).encode())


def input_digests(parts: dict[str, Any]) -> dict[str, str]:
    """Short digests of a notebook's inputs for its "Reproduce this page" box: its source, the
    ``reprolib`` code, the profile's data manifests, the upstream notebooks' published values and
    any declared input file (12 hex digits each; parameters are left out: they hold paths)."""
    out = {k: parts[k][:12] for k in ("source", "reprolib")}
    out["data manifests"] = _sha(str(parts["data"]).encode())[:12]
    out["upstream values"] = _sha(json.dumps(parts["upstream"]).encode())[:12]
    for name, digest in (parts.get("inputs") or {}).items():
        out[name] = digest[:12]
    return out


# --------------------------------------------------------------------------- execution
@dataclass
class NotebookRecord:
    name: str
    status: str  # executed | cached | failed | not selected | stale
    wall_s: float
    cache_key: str
    executed_at: str
    cells: list[float] = field(default_factory=list)
    slowest_cell: str = ""
    inputs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_parameters(profile: str, seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """The papermill parameters every notebook takes."""
    prof = config.load_profile(profile)
    return {
        "profile": profile,
        "seed": prof["seed"] if seed is None else seed,
        "device": device or prof.get("device", "cpu"),
        "data_dir": str(config.data_dir()),
        "work_dir": str(config.work_dir(profile)),
        "results_dir": str(config.results_dir(profile)),
    }


def _kernel_env() -> None:
    """Make papermill's ``python3`` kernel the interpreter running us."""
    share = Path(sys.prefix) / "share" / "jupyter"
    paths = [str(share)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def _cell_timings(nb) -> list[float]:
    return [float(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0) for c in nb.cells]


def execute(source: Path, output: Path, parameters: dict[str, Any], cwd: Path,
            log_output: bool = True) -> Any:
    """Convert ``source`` with jupytext and run it with papermill into ``output``.

    Raises :class:`NotebookExecutionError` (notebook, cell, traceback) when a cell fails;
    the partially executed notebook is still written to ``output``.
    """
    import jupytext
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    _kernel_env()
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_in = output.with_name(output.stem + ".input.ipynb")
    nbformat.write(nb, tmp_in)
    try:
        return pm.execute_notebook(str(tmp_in), str(output), parameters=parameters, kernel_name="python3",
                                   cwd=str(cwd), progress_bar=False, log_output=log_output)
    except PapermillExecutionError as exc:
        tb = ANSI_RE.sub("", "\n".join(exc.traceback or []))
        raise NotebookExecutionError(source.stem, exc.cell_index, exc.ename, exc.evalue, tb) from None
    finally:
        tmp_in.unlink(missing_ok=True)


@dataclass
class RunReport:
    profile: str
    records: list[NotebookRecord]
    ok: bool
    seconds: float
    failure: NotebookExecutionError | None = None

    @property
    def skipped(self) -> list[str]:
        return [r.name for r in self.records if r.status == "cached"]

    @property
    def executed(self) -> list[str]:
        return [r.name for r in self.records if r.status == "executed"]


def load_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def run(profile: str, only: list[str] | None = None, start: str | None = None, force: bool = False,
        seed: int | None = None, device: str | None = None, notebooks: str | Path | None = None,
        echo: Callable[[str], None] = print, log_output: bool = True) -> RunReport:
    """Run the selected notebooks of ``profile`` in order; see the module docstring."""
    from . import provenance
    from .full_data import refuse_if_incomplete

    t0 = time.perf_counter()
    config.check_profile(profile)
    refuse_if_incomplete(profile)  # the paper profile without its full data: stop, never substitute
    nb_dir = Path(notebooks) if notebooks else notebooks_dir()
    all_nbs = list_notebooks(nb_dir)
    chosen = {p.name for p in select(all_nbs, only, start)}
    params = default_parameters(profile, seed, device)
    results_dir = Path(params["results_dir"])
    sdir = state_dir(profile)
    executed_dir, failed_dir = sdir / "executed", sdir / "failed"
    index_path, record_path = sdir / "cache.json", sdir / "provenance.json"
    index = load_json(index_path, {})
    previous = {r["name"]: r for r in load_json(record_path, {}).get("notebooks", [])}
    data_hash = manifests_hash(profile)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(sdir / "status.json", json.dumps({"state": "running", "started": started}))

    records: list[NotebookRecord] = []
    upstream: list[str] = []
    failure = None
    for src in all_nbs:
        stem = src.stem
        parts = key_parts(src, params, data_hash, code_hash(src), list(upstream), declared_inputs(src, profile))
        key = _sha(json.dumps(parts, sort_keys=True, default=str).encode())
        out = executed_dir / f"{stem}.ipynb"
        res = results_path(profile, stem, results_dir)
        if src.name not in chosen:  # keep what the last run that executed it recorded
            if stem in previous:
                rec = NotebookRecord(**previous[stem])
                rec.status = "not selected" if index.get(stem) == key else "stale"
                records.append(rec)
            upstream.append(published_values_hash(res))
            continue
        if not force and index.get(stem) == key and out.is_file() and res.is_file():
            prev = previous.get(stem)
            rec = NotebookRecord(**prev) if prev else NotebookRecord(stem, "cached", 0.0, key, "?")
            rec.status = "cached"
            records.append(rec)
            echo(f"[skip] {stem}: unchanged (cache key {key[:12]})")
            upstream.append(published_values_hash(res))
            continue
        echo(f"[run ] {stem} ({profile})")
        # Forget the notebook's cache entry before it runs: if this process is killed mid-way,
        # the rerun executes it again instead of trusting its half-rewritten results file.
        if index.pop(stem, None) is not None:
            atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True))
        t_nb = time.perf_counter()
        tmp_out = sdir / "running" / f"{stem}.ipynb"
        try:
            nb = execute(src, tmp_out, params, cwd=nb_dir, log_output=log_output)
        except NotebookExecutionError as exc:
            failed_dir.mkdir(parents=True, exist_ok=True)
            if tmp_out.exists():
                os.replace(tmp_out, failed_dir / f"{stem}.ipynb")
            out.unlink(missing_ok=True)
            records.append(NotebookRecord(stem, "failed", time.perf_counter() - t_nb, key,
                                          datetime.now(timezone.utc).isoformat(timespec="seconds")))
            failure = exc
            echo(format_failure(exc, failed_dir / f"{stem}.ipynb"))
            break
        executed_dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_out, out)
        cells = _cell_timings(nb)
        slow = max(range(len(cells)), key=cells.__getitem__) if cells else None
        rec = NotebookRecord(stem, "executed", time.perf_counter() - t_nb, key,
                             datetime.now(timezone.utc).isoformat(timespec="seconds"), cells,
                             f"cell {slow}: {cells[slow]:.1f}" if slow is not None else "", input_digests(parts))
        records.append(rec)
        index[stem] = key
        atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True))
        echo(f"[done] {stem}: {rec.wall_s:.1f} s")
        upstream.append(published_values_hash(res))

    ok = failure is None
    record = {"started": started, "ok": ok, "provenance": provenance.collect(profile, params["seed"]),
              "parameters": params, "notebooks": [r.as_dict() for r in records]}
    atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True, default=str))
    stale = [r.name for r in records if r.status == "stale"]
    state = "failed" if not ok else ("stale" if stale else "ok")
    atomic_write_text(sdir / "status.json", json.dumps({"state": state, "started": started, "stale": stale,
                                                       "failed": failure.notebook if failure else None}))
    report = RunReport(profile, records, ok, time.perf_counter() - t0, failure)
    skipped = ", ".join(report.skipped) or "none"
    echo(f"repro run --profile {profile}: {'ok' if ok else 'FAILED'} in {report.seconds:.1f} s; "
         f"executed {len(report.executed)}, skipped (cached) {len(report.skipped)}: {skipped}")
    return report


def stale(profile: str, notebooks: str | Path | None = None) -> list[str]:
    """Notebooks that :func:`run` would execute now (inputs changed, or never executed).

    Computes every cache key as :func:`run` does, with the upstream values published so far,
    without executing anything."""
    config.check_profile(profile)
    nbs = list_notebooks(Path(notebooks) if notebooks else notebooks_dir())
    params = default_parameters(profile)
    sdir = state_dir(profile)
    index = load_json(sdir / "cache.json", {})
    data_hash = manifests_hash(profile)
    out, upstream = [], []
    for src in nbs:
        key = cache_key(src, params, data_hash, code_hash(src), list(upstream), declared_inputs(src, profile))
        res = results_path(profile, src.stem, Path(params["results_dir"]))
        if index.get(src.stem) != key or not (sdir / "executed" / f"{src.stem}.ipynb").is_file() or not res.is_file():
            out.append(src.stem)
        upstream.append(published_values_hash(res))
    return out


def format_failure(exc: NotebookExecutionError, saved: Path) -> str:
    return (f"\n[FAIL] notebook {exc.notebook}, cell {exc.cell}: {exc.ename}: {exc.evalue}\n"
            f"{exc.traceback}\n"
            f"The partially executed notebook is in {saved}. No book is built from a failed run.")


# --------------------------------------------------------------------------- book


