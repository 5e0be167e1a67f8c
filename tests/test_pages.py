"""What the chapters publish: glued keys exist in every profile and say what the data say."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reprolib import book, pages


@pytest.fixture
def nb(tmp_path, monkeypatch):
    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda key, value, display=False: glued.__setitem__(key, value))
    note = book.Notebook("04_decovnet", "sample", results_dir=tmp_path)
    note.glued = glued
    return note


def test_released_statistics_without_data_glue_every_key_as_not_available(nb):
    pages.released_statistics(nb, None)
    for key in pages.RELEASED_FORMATS:
        assert nb.glued[f"rel_{key}"] == "not available" and nb.values[f"rel_{key}"] is None
    assert "synthetic profile" in nb.glued["released_skipped"].data


def test_trained_decovnet_reports_a_flat_model_as_not_learned(nb):
    rng = np.random.default_rng(0)
    oof = pd.DataFrame({"label": [0, 1] * 5, "p_covid": 0.5 + 0.02 * rng.standard_normal(10)})
    pages.trained_decovnet(nb, oof, oof, seed=0)
    assert nb.values["our_learned"] is False
    assert nb.glued["our_learned_word"] == "did not learn"
    assert "spread only" in nb.values["our_learned_reason"] or "chance" in nb.values["our_learned_reason"]
    assert nb.values["our_roc_auc_bn_train"] == nb.values["our_roc_auc"]
    sharp = pd.DataFrame({"label": [0, 1] * 10, "p_covid": [0.1, 0.9] * 10})
    pages.trained_decovnet(nb, sharp, sharp, seed=0)
    assert nb.values["our_learned"] is True and nb.values["our_roc_auc"] == 1.0


def test_hit_rates_count_outside_points_and_glue_the_margin(nb):
    rows = []
    for i, (hit, inside, vox) in enumerate([(True, True, 30), (False, False, 12), (False, None, 0), (True, True, 8)]):
        for cam in ("linear", "gradcam"):
            for w in (6, 7):
                rows.append({"case_id": f"c{i}", "fold": 0, "CAM": cam, "window": w, "p_covid": 0.9,
                             "predicted_positive": True, "R3dcc voxels": 5 if i else 0, "lesion voxels": vox,
                             "seconds": 1.0, "hit": hit, "hit_centroid": hit, "hit_largest_cam": hit,
                             "random_baseline": 0.25, "dice": None, "point_in_lung": inside})
    pages.hit_rates(nb, pd.DataFrame(rows), kind="slice-level")
    assert nb.values["cam_hit_rate"] == 0.5 and nb.values["cam_margin"] == pytest.approx(0.25)
    assert nb.values["cam_points_outside_lung"] == 1 and nb.values["cam_empty_predictions"] == 1
    assert nb.glued["cam_points_outside_phrase"] == "1 of 4 volumes"
    assert nb.glued["r3dcc_empty_phrase"] == "1 of 4 volumes"
    assert "nan" not in nb.glued["hit_table"].data.lower()


def test_seed_spread_is_empty_outside_the_synthetic_profile(nb, tmp_path, monkeypatch):
    pages.seed_spread(nb, {"our_roc_auc": "ROC AUC"})
    assert nb.values["seed_spread"] == ""
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"04_decovnet": {"our_roc_auc": {"min": 0.9, "median": 0.95, "max": 1.0, "n": 10}}}))
    monkeypatch.setattr("reprolib.config.calibration_json", lambda: cal)
    syn = book.Notebook("04_decovnet", "synthetic", results_dir=tmp_path)
    syn.glue("our_roc_auc", 0.97)
    pages.seed_spread(syn, {"our_roc_auc": "ROC AUC"})
    assert "| ROC AUC | 0.970 | 0.950 | 0.900–1.000 | 10 |" in syn.values["seed_spread"]
