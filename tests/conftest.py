"""Shared fixtures: isolated state directories and the optional data mirror."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mirror_path() -> Path | None:
    """The offline mirror: ``$REPRO_DATA_MIRROR`` or ``../shared/mirror`` beside the checkout."""
    env = os.environ.get("REPRO_DATA_MIRROR")
    cand = Path(env) if env else ROOT.parent / "shared" / "mirror"
    return cand if (cand / "index.tsv").is_file() else None


@pytest.fixture
def mirror() -> Path:
    m = mirror_path()
    if m is None:
        pytest.skip("data mirror not found: set REPRO_DATA_MIRROR (CI uses ../shared/mirror)")
    return m


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point every REPRO_* directory into tmp_path."""
    dirs = {name: tmp_path / name for name in ("data", "work", "results")}
    monkeypatch.setenv("REPRO_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("REPRO_WORK_DIR", str(dirs["work"]))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(dirs["results"]))
    monkeypatch.delenv("REPRO_DATA_MIRROR", raising=False)
    return dirs
