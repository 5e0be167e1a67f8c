"""Run provenance: code version, software, hardware, data, seeds and timings.

:func:`collect` returns a JSON-able dict; :func:`render_markdown` turns the
run record written by the runner into the book's provenance page.
"""
from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from . import config

KEY_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "scikit-learn", "pandas",
                "nibabel", "pydicom", "SimpleITK", "imagehash", "matplotlib", "seaborn",
                "jupyter-book", "myst-nb", "papermill", "jupytext", "covid-repro")


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit id and dirty flag of the project checkout (``None`` outside git)."""
    root = root or config.project_root()

    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions(names=KEY_PACKAGES) -> dict[str, str | None]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """CPU model, logical cores, torch threads and GPU (if any)."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "machine": platform.machine(), "os": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch missing or broken CUDA: provenance must not fail
        info["gpu"] = None
    return info


def collect(profile: str, seed: int) -> dict[str, Any]:
    """Everything a reviewer needs to know about where and how a run happened."""
    from . import data

    try:
        manifests = data.manifest_hashes(profile)
    except Exception as exc:  # recorded, not fatal
        manifests = {"error": str(exc)}
    return {"git": git_state(), "python": sys.version.split()[0], "packages": package_versions(),
            "hardware": hardware(), "profile": profile, "seed": seed,
            "deterministic": deterministic_settings(seed),
            "manifests": manifests,
            "env": {k: os.environ[k] for k in ("REPRO_DATA_MIRROR", "OMP_NUM_THREADS", "CI")
                    if k in os.environ}}


def deterministic_settings(seed: int) -> dict[str, Any]:
    """The seeds and switches that make a run repeatable, as the provenance page lists them."""
    info: dict[str, Any] = {
        "profile seed": seed,
        "global seeds": f"every notebook calls provenance.seed_everything({seed}): Python random, NumPy's "
                        "global generator and torch (CPU and CUDA)",
        "training draws": "epoch order from (seed, epoch); each volume's augmentation and slice draws from "
                          "(seed, epoch, position in the epoch), independent of rank and micro-batch; "
                          "fold k of a cross-fit trains with seed + k",
        "data draws": "splits, phantoms, bootstrap and subsampling use numpy.random.default_rng(seed) "
                      "(or a seed derived from it) passed explicitly",
        "torch.use_deterministic_algorithms": "True (warn_only) while training",
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
    }
    try:
        import torch

        info["torch threads"] = torch.get_num_threads()
        info["cudnn"] = (f"deterministic={torch.backends.cudnn.deterministic}, "
                         f"benchmark={torch.backends.cudnn.benchmark}")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    info["CUBLAS_WORKSPACE_CONFIG"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    info["repeatability"] = ("two runs of the synthetic profile from scratch on the same CPU and thread count "
                             "publish identical values (integers and strings bitwise, floats within 1e-6; "
                             "tests/test_pipeline.py); a different thread count or GPU changes float "
                             "summation order, hence the last digits of trained results")
    return info


def set_deterministic(mode: bool = True, warn_only: bool = True) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=...)`` without importing TorchInductor.

    The public call imports ``torch._inductor`` to set its ``deterministic`` flag, ~3 s in every
    fresh process (each notebook, each ``repro`` command). The eager switch is set here; inductor's
    flag follows when inductor is already loaded, and :func:`reprolib.models.inference_runner`
    copies the switch into it before ``torch.compile``.
    """
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # pragma: no cover - a torch without the private setter
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    setter(mode, warn_only=warn_only)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = mode


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels (:func:`set_deterministic`)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
        if deterministic:
            set_deterministic(True, warn_only=True)
    except ImportError:
        pass


def _md_table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(record: dict[str, Any]) -> str:
    """The book's provenance page from the runner's ``provenance.json``."""
    prov = record["provenance"]
    git = prov["git"]
    hw = prov["hardware"]
    from .book import banner_markdown

    parts = [
        "# Provenance",
        "",
        banner_markdown(prov["profile"]),
        "This page is generated by `repro book` from `results/"
        f"{prov['profile']}/provenance.json`, written by `repro run`. Nothing on it is typed by hand.",
        "",
        "## Run",
        _md_table([
            ["profile", prov["profile"]],
            ["seed", prov["seed"]],
            ["git commit", f"`{git['commit']}`" + (" (uncommitted changes)" if git["dirty"] else "")],
            ["Python", prov["python"]],
            ["CPU", f"{hw['cpu']} ({hw['cpu_count']} logical cores, torch threads {hw.get('torch_threads')})"],
            ["GPU", hw.get("gpu") or "none"],
            ["OS", hw["os"]],
            ["started", record.get("started")],
        ], ["item", "value"]),
        "",
        "## Seeds and deterministic settings",
        _md_table([[k, "not set" if v is None else v] for k, v in prov["deterministic"].items()], ["setting", "value"]),
        "",
        "## Notebooks",
        "Wall time of each notebook and its slowest cell (papermill cell metadata). A *cached* notebook "
        "was not re-executed: its inputs hashed the same as in the run that produced it.",
        "",
        _md_table([
            [n["name"], n["status"], f"{n['wall_s']:.0f}", n.get("slowest_cell", ""), n["executed_at"],
             f"`{n['cache_key'][:12]}`"]
            for n in record["notebooks"]
        ], ["notebook", "status", "wall time (s)", "slowest cell (s)", "executed at", "cache key"]),
        "",
        "## Software",
        _md_table([[k, v or "not installed"] for k, v in prov["packages"].items()], ["package", "version"]),
        "",
        "## Data manifests",
        _md_table([[k, f"`{v}`"] for k, v in prov["manifests"].items()], ["dataset", "manifest sha256"]),
        "",
    ]
    return "\n".join(parts)


def median_time(fn, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def short_hash(*parts: Any, n: int = 12) -> str:
    """A short, stable hex digest of JSON-able ``parts`` (names a run's checkpoint folder)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:n]
