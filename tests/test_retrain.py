"""reprolib.retrain: gated fine-tuning with lineage (`repro retrain cxr`)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from reprolib import predict, retrain
from reprolib.errors import InputError


def _folder(root, seed: int, n: int = 8):
    """healthy = dark images, covid19 = bright ones: a cue a few steps of fine-tuning can learn."""
    rng = np.random.default_rng(seed)
    for cls, level in (("healthy", 40), ("covid19", 210)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(level + rng.normal(0, 12, (64, 64)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{seed}_{i}.png")
    return root


def test_gate_rules():
    p = {"macro_f1": 0.8, "recall_covid19": 0.9}
    assert retrain.gate(p, {"macro_f1": 0.8, "recall_covid19": 0.9})[0] is True  # equal is not worse
    ok, why = retrain.gate(p, {"macro_f1": 0.85, "recall_covid19": 0.8})
    assert not ok and "recall_covid19 0.800 < 0.900" in why
    assert retrain.gate(p, {"macro_f1": 0.79, "recall_covid19": 0.95})[0] is False
    assert retrain.gate(p, {"macro_f1": 0.79, "recall_covid19": 0.95}, tolerance=0.02)[0] is True
    assert retrain.gate(p, {"macro_f1": 0.9, "recall_covid19": math.nan})[0] is False


def test_labelled_folder(tmp_path):
    recs = retrain.labelled_folder(_folder(tmp_path / "d", 0, n=2))
    assert sorted({r.label for r in recs}) == ["covid19", "healthy"] and len(recs) == 4
    assert len({r.group for r in recs}) == 4
    (tmp_path / "d" / "cats").mkdir()
    with pytest.raises(InputError, match="cats"):
        retrain.labelled_folder(tmp_path / "d")
    (tmp_path / "empty" / "healthy").mkdir(parents=True)
    with pytest.raises(InputError, match="no images"):
        retrain.labelled_folder(tmp_path / "empty")


def test_improved_candidate_promoted_degraded_refused_lineage_kept(tiny_build, tmp_path):
    b = tiny_build
    work = tmp_path / "sample" / "work"
    shutil.copytree(b["work"], work)
    (tmp_path / "sample" / "provenance.json").write_text((b["base"] / "sample" / "provenance.json").read_text())
    holdout = retrain.labelled_folder(_folder(tmp_path / "holdout", 1))
    new = retrain.labelled_folder(_folder(tmp_path / "new", 2))

    def learn(model, recs):
        return retrain.fine_tune(model, recs, size=64, epochs=8, lrs=(1e-4, 1e-3, 1e-2), seed=0)

    card = predict.cxr_card("sample", work, b["results"])
    first = retrain.retrain_cxr(work, card, new, holdout, fit=learn)
    assert first["promoted"], first["reason"]
    assert first["metrics"]["candidate"]["macro_f1"] > first["metrics"]["parent"]["macro_f1"]
    assert first["metrics"]["candidate"]["recall_covid19"] == 1.0
    card2 = predict.cxr_card("sample", work, b["results"])  # now the promoted model
    assert card2.sha256 == first["candidate_sha256"] and card2.retrained["parent_sha256"] == card.sha256

    def swap_classes(model, recs):  # a "fine-tune" that confuses healthy and COVID-19
        import copy

        m = copy.deepcopy(model)
        with torch.no_grad():
            w, bias = m.fc.weight.clone(), m.fc.bias.clone()
            m.fc.weight[[0, 2]], m.fc.bias[[0, 2]] = w[[2, 0]], bias[[2, 0]]
        return m

    second = retrain.retrain_cxr(work, card2, new, holdout, fit=swap_classes)
    assert not second["promoted"] and "recall_covid19" in second["reason"]
    assert predict.cxr_card("sample", work, b["results"]).sha256 == first["candidate_sha256"]  # unchanged
    lineage = retrain.read_lineage(work)
    assert [e["promoted"] for e in lineage] == [True, False]
    assert lineage[1]["parent_sha256"] == first["candidate_sha256"]
    assert lineage[0]["holdout"]["fingerprint"] == lineage[1]["holdout"]["fingerprint"]
    assert {d["label"] for d in lineage[0]["new_data"]} == {"healthy", "covid19"}
    assert all(len(d["sha256"]) == 64 for d in lineage[0]["new_data"])
    # every candidate is kept with its checksum, promoted or not
    for e in lineage:
        from pathlib import Path

        p = Path(e["candidate_path"])
        assert p.is_file() and Path(f"{p}.sha256").read_text().split()[0] == e["candidate_sha256"]
    assert json.loads((work / "cxr_current.json").read_text())["sha256"] == first["candidate_sha256"]


def test_default_holdout_never_holds_a_training_image_whatever_the_seed(tmp_path):
    """Notebook 07 saves its split; ``repro retrain`` holds out exactly its validation images. The
    old default (re-splitting with the profile's seed) leaks training images after ``--seed N``."""
    import json as _json

    from reprolib import cxr, cxr_sources, phantom_dataset
    from reprolib.files import sha256_file

    work = tmp_path / "work"
    recs = phantom_dataset.make_synthetic_dataset(work / "synthetic_data", ct_count=0, cxr_per_class=8, cxr_size=32)
    (work / "synthetic_records.json").write_text(_json.dumps(recs))
    dev0, _ = cxr_sources.profile_records("synthetic", None, work)
    leaked_somewhere = False
    for seed in (0, 3, 7):
        dev = cxr.patient_split(dev0, test_frac=0.0, val_frac=0.25, seed=seed)  # as `repro run --seed N`
        cxr.save_split(work / cxr.SPLIT_FILE, dev, seed)
        trained = {sha256_file(r.path) for r in dev if r.split == "train"}
        val = {sha256_file(r.path) for r in dev if r.split == "val"}
        holdout = retrain.default_holdout("synthetic", work)
        got = {sha256_file(r.path) for r in holdout}
        assert got == val and not got & trained and {r.split for r in holdout} == {"val"}
        old = cxr.patient_split(dev0, test_frac=0.0, val_frac=0.25, seed=0)  # the profile's seed
        leaked_somewhere |= bool({sha256_file(r.path) for r in old if r.split == "val"} & trained)
    assert leaked_somewhere  # the defect this guards against is real


def test_default_holdout_without_a_split_file_says_what_to_run(tmp_path):
    from reprolib.errors import ManifestError

    with pytest.raises(ManifestError, match="cxr_split.json.*run notebook 07"):
        retrain.default_holdout("synthetic", tmp_path)
