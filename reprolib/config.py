"""Profiles and paths.

A *profile* (``synthetic``, ``sample``, ``paper``) fixes which data a run uses
and how much compute each notebook spends (epochs, sizes). Profiles live in
``reprolib/profiles/<name>.yml``; paths come from arguments or environment
variables, with defaults relative to the project root.

Environment variables
---------------------
Every ``REPRO_*`` variable is read here, and only here:

``REPRO_ROOT``             the project root (default: the folder above the package)
``REPRO_DATA_DIR``         verified download cache (default ``$XDG_CACHE_HOME/covid-repro``)
``REPRO_DATA_MIRROR``      local mirror laid out as ``<host>/<path>`` of each URL (optional)
``REPRO_WORK_DIR``         intermediate artefacts (default ``<root>/.repro``)
``REPRO_RESULTS_DIR``      glued values as JSON (default ``<root>/results``)
``REPRO_BENCH_JSON``       the benchmark results ``repro bench`` writes and chapter 09 reads
                           (default ``<root>/benchmarks/out/bench.json``)
``REPRO_MEMORY_BUDGET_GB`` what one CT preprocessing call may use (default: see
                           :func:`reprolib.preprocess.memory_budget`)
``REPRO_SCHEDULE``         a named schedule of the profile (its ``schedules`` section, e.g. the
                           paper profile's ``smoke``: same code path, tiny epochs and subsets);
                           unset: the profile's own settings. ``repro run --schedule`` sets it.
"""
from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError  # re-exported for callers

PROFILES = ("synthetic", "sample", "paper")
DEFAULT_PROFILE = "sample"


def project_root() -> Path:
    """The repository root: ``$REPRO_ROOT`` or the parent of the package."""
    env = os.environ.get("REPRO_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def check_profile(name: str) -> str:
    """Return ``name`` if it is a known profile, else raise :class:`ConfigError`."""
    if name not in PROFILES:
        raise ConfigError(None, f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


def schedule() -> str | None:
    """The named schedule of this process (``$REPRO_SCHEDULE``), or ``None`` for the profile's own."""
    return os.environ.get("REPRO_SCHEDULE") or None


def set_schedule(name: str | None) -> None:
    """Set (or, with ``None``, clear) the named schedule of this process and of the notebook
    kernels it starts (``$REPRO_SCHEDULE``)."""
    if name:
        os.environ["REPRO_SCHEDULE"] = name
    else:
        os.environ.pop("REPRO_SCHEDULE", None)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, section by section (nested mappings merge, values replace)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@lru_cache(maxsize=None)
def _load_profile_cached(name: str, sched: str | None = None) -> dict[str, Any]:
    """Read and check ``profiles/<name>.yml``: a mapping with ``profile: <name>``, an
    integer ``seed`` and a ``data`` mapping whose ``datasets`` is a list of names."""
    ref = resources.files("reprolib") / "profiles" / f"{name}.yml"
    try:
        data = yaml.safe_load(ref.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(ref), f"invalid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(ref), f"not UTF-8 text (byte {exc.start}): a profile is a YAML file") from None
    except OSError as exc:
        raise ConfigError(str(ref), f"cannot read the profile: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(ref), "a profile must be a mapping of section -> settings")
    if data.get("profile") != name:
        raise ConfigError(str(ref), f"field 'profile' must be {name!r}, got {data.get('profile')!r}")
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(str(ref), f"field 'seed' must be an integer, got {seed!r}")
    section = data.get("data")
    datasets = section.get("datasets") if isinstance(section, dict) else None
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise ConfigError(str(ref), f"section 'data' must be a mapping with a list 'datasets' of dataset "
                                    f"names, got {section!r}")
    schedules = data.pop("schedules", None) or {}
    if sched is None:
        return data
    if sched not in schedules:
        raise ConfigError(str(ref), f"profile {name!r} has no schedule {sched!r} (REPRO_SCHEDULE / --schedule); "
                                    f"its schedules: {', '.join(schedules) or 'none'}")
    return {**_merge(data, schedules[sched]), "schedule": sched}


def load_profile(name: str) -> dict[str, Any]:
    """Load the settings of profile ``name`` (a fresh copy, safe to modify), with the schedule of
    :func:`schedule` merged in (its name under ``"schedule"``)."""
    import copy

    return copy.deepcopy(_load_profile_cached(check_profile(name), schedule()))


def run_name(profile: str) -> str:
    """The folder name of a run: the profile, or ``<profile>-<schedule>`` under a named schedule,
    so that a smoke run never shares its work or results with a full one."""
    sched = schedule()
    return f"{check_profile(profile)}-{sched}" if sched else check_profile(profile)


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Verified download cache (``$REPRO_DATA_DIR``)."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return _env_path("REPRO_DATA_DIR", xdg / "covid-repro")


def mirror_dir() -> Path | None:
    """Local mirror (``$REPRO_DATA_MIRROR``) or ``None`` when unset."""
    value = os.environ.get("REPRO_DATA_MIRROR")
    return Path(value).expanduser().resolve() if value else None


def work_dir(profile: str) -> Path:
    """Intermediate artefacts of a profile (preprocessed volumes, checkpoints)."""
    return _env_path("REPRO_WORK_DIR", project_root() / ".repro") / run_name(profile) / "work"


def results_dir(profile: str) -> Path:
    """Where each notebook's glued values are written as JSON."""
    return _env_path("REPRO_RESULTS_DIR", project_root() / "results") / run_name(profile)


def bench_json() -> Path:
    """The benchmark JSON: ``$REPRO_BENCH_JSON`` or ``<root>/benchmarks/out/bench.json``."""
    return _env_path("REPRO_BENCH_JSON", project_root() / "benchmarks" / "out" / "bench.json")


def memory_budget_setting() -> str | None:
    """``$REPRO_MEMORY_BUDGET_GB`` as written (``None`` when unset); checked by its reader,
    :func:`reprolib.preprocess.memory_budget`."""
    return os.environ.get("REPRO_MEMORY_BUDGET_GB") or None


def calibration_json() -> Path:
    """The spread of the synthetic profile's trained values over seeds and instruction sets
    (``tests/expected/calibration.json``, written by ``tests/expected/calibrate.py``; absent in an
    installed package)."""
    return project_root() / "tests" / "expected" / "calibration.json"
