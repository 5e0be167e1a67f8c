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


def test_markdown_table_has_no_missing_cells_and_escapes_pipes():
    import pandas as pd

    df = pd.DataFrame({"n": [3, 4], "rate": [0.12345, float("nan")], "note": ["a|b", None],
                       "ok": [True, False]}, index=pd.Index(["x", "y"], name="case"))
    lines = book.markdown_table(df).splitlines()
    assert lines[0] == "| case | n | rate | note | ok |"
    assert lines[2] == "| x | 3 | 0.123 | a\\|b | yes |"
    assert lines[3] == "| y | 4 | – | – | no |"
    assert book.markdown_table(df, index=False).splitlines()[0] == "| n | rate | note | ok |"


def test_plural():
    assert book.plural(1, "volume") == "1 volume"
    assert book.plural(3, "fold") == "3 folds"
    assert book.plural(2, "patient-level fold") == "2 patient-level folds"
    assert book.plural(1200, "image") == "1,200 images"


def test_format_columns_formats_named_columns_only():
    df = __import__("pandas").DataFrame({"a": [1.234, float("nan")], "b": [2.5, 3.0], "c": ["x", "y"]})
    out = book.format_columns(df, {"a": "{:.1f}", "missing": "{:.2f}"})
    assert out["a"].tolist() == ["1.2", "–"]
    assert out["b"].tolist() == [2.5, 3.0] and out["c"].tolist() == ["x", "y"]
    assert df["a"].iloc[0] == 1.234  # the input is not modified


def test_glue_table_formats_per_column_and_records_numbers(tmp_path, monkeypatch):
    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda key, value, display=False: glued.__setitem__(key, value))
    nb = book.Notebook("02_x", "synthetic", results_dir=tmp_path)
    df = __import__("pandas").DataFrame({"case_id": ["a", "b"], "lung_ml": [1.25, 2.0], "peak_MB": [10.04, 3.0]}).set_index("case_id")
    nb.glue_table("t", df, formats={"lung_ml": "{:.2f}", "peak_MB": "{:.1f}"})
    md = glued["t"].data
    assert "| a | 1.25 | 10.0 |" in md and "| b | 2.00 | 3.0 |" in md
    doc = json.loads((tmp_path / "02_x.json").read_text())
    assert doc["values"]["t"] == {"case_id": ["a", "b"], "lung_ml": [1.25, 2.0]}
    assert doc["timings"]["t"] == {"peak_MB": [10.04, 3.0]}

    nb.glue_table("u", df, record=False)
    assert "u" in glued and "u" not in json.loads((tmp_path / "02_x.json").read_text())["values"]
