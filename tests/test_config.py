"""Profiles and paths."""
from __future__ import annotations

import pytest

from reprolib import config
from reprolib.errors import ConfigError


@pytest.mark.parametrize("name", config.PROFILES)
def test_profiles_load(name):
    prof = config.load_profile(name)
    assert prof["profile"] == name and isinstance(prof["seed"], int)
    assert isinstance(prof["data"]["datasets"], list)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'big'"):
        config.load_profile("big")


def test_load_profile_returns_a_copy():
    a = config.load_profile("synthetic")
    a["seed"] = 99
    assert config.load_profile("synthetic")["seed"] != 99


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("REPRO_WORK_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(tmp_path / "m"))
    assert config.data_dir() == tmp_path / "d"
    assert config.work_dir("sample") == tmp_path / "w" / "sample" / "work"
    assert config.results_dir("synthetic") == tmp_path / "r" / "synthetic"
    assert config.mirror_dir() == tmp_path / "m"
    monkeypatch.delenv("REPRO_DATA_MIRROR")
    assert config.mirror_dir() is None
