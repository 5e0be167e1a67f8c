"""Provenance record and its Markdown page."""
from __future__ import annotations

import random

import numpy as np

from reprolib import provenance


def test_collect_has_what_reviewers_need():
    rec = provenance.collect("sample", seed=3)
    assert rec["profile"] == "sample" and rec["seed"] == 3
    assert set(rec["git"]) == {"commit", "dirty"}
    assert rec["packages"]["torch"] and rec["packages"]["numpy"]
    assert rec["hardware"]["cpu"] and rec["hardware"]["cpu_count"] >= 1
    assert "covid-ct-md" in rec["manifests"] and len(rec["manifests"]["covid-ct-md"]) == 64


def test_seed_everything_repeats():
    provenance.seed_everything(5)
    a = (random.random(), np.random.rand())
    provenance.seed_everything(5)
    assert (random.random(), np.random.rand()) == a


def test_render_markdown_tabulates_notebooks():
    rec = {"started": "2026-01-01T00:00:00+00:00", "provenance": provenance.collect("synthetic", 0),
           "notebooks": [{"name": "01_data_acquisition", "status": "executed", "wall_s": 12.5,
                          "cache_key": "a" * 64, "executed_at": "2026", "cells": [1.0],
                          "slowest_cell": "cell 0: 1.0"}]}
    md = provenance.render_markdown(rec)
    assert md.startswith("# Provenance")
    assert "| 01_data_acquisition | executed | 12 |" in md  # whole seconds, as the chapters show them
    assert "synthetic" in md and "torch" in md


def test_provenance_page_lists_seeds_and_deterministic_settings():
    rec = {"started": "2026", "provenance": provenance.collect("synthetic", 7), "notebooks": []}
    det = rec["provenance"]["deterministic"]
    assert det["profile seed"] == 7 and "seed_everything(7)" in det["global seeds"]
    assert det["torch threads"] >= 1 and "deterministic=" in det["cudnn"]
    md = provenance.render_markdown(rec)
    assert "## Seeds and deterministic settings" in md and "| profile seed | 7 |" in md
    assert "tests/test_pipeline.py" in md


def test_seed_everything_sets_deterministic_torch_without_loading_inductor():
    import subprocess
    import sys

    code = ("import sys, torch; from reprolib import provenance; provenance.seed_everything(3); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules, torch.initial_seed())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False", "3"]


def test_set_deterministic_switches_and_restores(monkeypatch):
    import torch

    from reprolib import provenance

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        provenance.set_deterministic(False, warn_only=False)
        assert not torch.are_deterministic_algorithms_enabled()
        provenance.set_deterministic(True, warn_only=False)
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        import torch._inductor.config as inductor_config  # once loaded, inductor's flag follows the switch

        provenance.set_deterministic(True, warn_only=True)
        assert inductor_config.deterministic is True and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        provenance.set_deterministic(*before)
