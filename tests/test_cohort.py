"""preprocess_cohort's memory columns (per-step peaks, whole call, cache hits, re-measuring)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reprolib import cohort
from reprolib.io import write_nifti
from reprolib.memtrace import TARGET_COPIES, synthetic_chest
from reprolib.volume import CTVolume


def test_cohort_records_step_peaks_and_remeasures_largest(tmp_path):
    rows = []
    for i, (s, size) in enumerate([(20, 96), (30, 128)]):
        path = tmp_path / f"ct{i}.nii.gz"
        write_nifti(CTVolume(hu=synthetic_chest(s, size, seed=i), spacing_mm=(2.0, 3.0, 3.0)), None, path)
        rows.append({"case_id": f"c{i}", "label": "normal", "target": 0, "path": str(path), "kind": "nifti"})
    cases = pd.DataFrame(rows)
    params = {"qc_lung_volume_ml": [1, 1e6]}
    first = cohort.preprocess_cohort(cases, tmp_path / "cache", params, tmp_path / "index.json", progress=False)
    assert list(first.cache) == ["miss", "miss"] and list(first.memory_source) == ["this run"] * 2
    assert (first.step_copies <= TARGET_COPIES).all() and (first.step_copies > 0).all()
    assert [s["step"] for s in first.memory_steps[1]][:2] == ["apply_fov", "lung_pseudo_label"]
    assert (first.peak_MB > 0).all() and (first.preprocess_MB > 0).all()
    summary, steps = cohort.memory_summary(first)
    assert summary["case_id"] == "c1" and summary["shape_native"] == "30×128×128"
    assert summary["shape_1mm"] == "60×128×128" and summary["target_met"] == "met"
    assert len(steps) == 6 and summary["max_step_copies"] == steps.copies.max()

    again = cohort.preprocess_cohort(cases, tmp_path / "cache", params, progress=False)
    assert list(again.cache) == ["hit", "hit"]
    # the smaller volume reports the figures stored in its cache file; the largest is re-measured
    assert list(again.memory_source) == ["cache", "re-measured"]
    assert again.step_copies[0] == first.step_copies[0]
    assert np.isfinite(again.step_copies[1]) and again.step_copies[1] <= TARGET_COPIES
    stored = cohort.load_index(tmp_path / "index.json").memory_steps[0]  # JSON index (10 digits)
    assert [(d["step"], d["peak_bytes"]) for d in stored] == [(d["step"], d["peak_bytes"])
                                                              for d in first.memory_steps[0]]


def test_a_case_its_adapter_marks_not_hu_is_read_as_not_hu():
    frame = pd.DataFrame([{"case_id": "a", "hu": True}, {"case_id": "b", "hu": False}, {"case_id": "c"}])
    assert [cohort._read_kwargs(c) for c in frame.itertuples(index=False)] == [{}, {"is_hu": False}, {}]
    assert cohort._read_kwargs(pd.DataFrame([{"case_id": "d"}]).itertuples(index=False).__next__()) == {}
