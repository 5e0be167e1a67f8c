"""The results contract and the glue helper."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reprolib import book
from reprolib.errors import ConfigError


def test_glue_records_values_and_timings(tmp_path):
    nb = book.Notebook("04_test", "synthetic", tmp_path)
    nb.glue("auc", np.float32(0.5))
    nb.glue("n", np.int64(3))
    nb.record("curve", np.arange(3))
    nb.glue_timing("step_s", 1.23456)
    wall = nb.finish()
    doc = json.loads((tmp_path / "04_test.json").read_text())
    assert doc["notebook"] == "04_test" and doc["profile"] == "synthetic"
    assert doc["values"] == {"auc": 0.5, "n": 3, "curve": [0, 1, 2]}
    assert doc["timings"]["step_s"] == 1.23
    assert doc["timings"]["wall_time_s"] == pytest.approx(wall, abs=0.01)
    assert not list(tmp_path.glob("*.part"))  # atomic writes leave no temporaries


def test_new_run_discards_stale_values(tmp_path):
    book.Notebook("x", "sample", tmp_path).glue("old", 1)
    nb = book.Notebook("x", "sample", tmp_path)
    assert not (tmp_path / "x.json").exists()
    nb.glue("new", 2)
    assert json.loads((tmp_path / "x.json").read_text())["values"] == {"new": 2}


def test_to_jsonable():
    assert book.to_jsonable({"a": np.float64("nan"), 1: (np.int32(2),)}) == {"a": None, "1": [2]}


def test_banner_for_each_profile():
    assert "phantoms" in book.banner_markdown("synthetic")
    assert ":class: warning" in book.banner_markdown("synthetic")
    assert "sample" in book.banner_markdown("sample")
    with pytest.raises(ConfigError, match="unknown profile"):
        book.banner_markdown("nope")


def test_glue_table_records_measured_columns_with_the_timings(tmp_path, monkeypatch):
    import json

    import pandas as pd

    from reprolib import book

    monkeypatch.setattr("myst_nb.glue", lambda *a, **k: None)
    nb = book.Notebook("02_x", "synthetic", results_dir=tmp_path)
    df = pd.DataFrame({"case_id": ["a", "b"], "lung_ml": [1.5, 2.0], "seconds": [0.3, 0.4],
                       "copies": [2.5, 2.6]}).set_index("case_id")
    nb.glue_table("volume_table", df)
    doc = json.loads((tmp_path / "02_x.json").read_text())
    assert doc["values"]["volume_table"] == {"case_id": ["a", "b"], "lung_ml": [1.5, 2.0]}
    assert doc["timings"]["volume_table"] == {"seconds": [0.3, 0.4], "copies": [2.5, 2.6]}
