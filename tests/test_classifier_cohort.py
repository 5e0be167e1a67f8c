"""Classifier cohorts: inputs, patient folds, save/load, the phantom cohort, cross-fitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from reprolib import cohort, crossfit, evaluate, models, phantoms, train
from reprolib.errors import ConfigError, InputError


def _box(shape=(20, 40, 60)):
    ct = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[4:16, 10:30, 12:48] = 1
    return ct, mask


def test_classifier_input_crops_resizes_and_steps():
    ct, mask = _box()
    x = cohort.classifier_input(ct, mask, (16, 24), z_step=1)
    assert x.shape == (2, 11, 16, 24) and x.dtype == np.float32  # [min, max) box: 15 - 4 slices
    assert set(np.unique(x[1])) <= {0.0, 1.0} and 0.0 <= x[0].min() and x[0].max() <= 1.0
    x3 = cohort.classifier_input(ct, mask, (16, 24), z_step=3)
    assert x3.shape == (2, 4, 16, 24)
    np.testing.assert_array_equal(x3, x[:, ::3])
    with pytest.raises(ValueError, match="z_step"):
        cohort.classifier_input(ct, mask, (16, 24), z_step=0)


@pytest.mark.parametrize("k", [None, 3])
def test_patient_folds_never_split_a_patient(k):
    groups = np.array(["a", "a", "b", "c", "c", "d", "e", "f"])
    labels = np.array([1, 1, 0, 1, 1, 0, 0, 1])
    folds = cohort.patient_folds(groups, labels, k, seed=0)
    assert len(folds) == (6 if k is None else 3)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(8))  # every index tested exactly once
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
        assert sorted(np.r_[tr, te].tolist()) == list(range(8))
    with pytest.raises(ValueError, match="2 patients"):
        cohort.patient_folds(["a", "a"], [0, 1])


def test_cohort_save_load_roundtrip(tmp_path):
    ct, mask = _box()
    items = [(cohort.classifier_input(ct, mask, (8, 12)), lab, f"c{lab}") for lab in (0, 1)]
    import pandas as pd
    table = pd.DataFrame({"case_id": ["c0", "c1"], "label": [0, 1],
                          "lesion": [np.zeros((11, 8, 12), np.uint8), np.ones((11, 8, 12), np.uint8)]})
    folds = [(np.array([0]), np.array([1])), (np.array([1]), np.array([0]))]
    path = cohort.save_classifier_cohort(tmp_path / "c.npz", items, table, folds)
    items2, table2, folds2 = cohort.load_classifier_cohort(path)
    for (x, y, c), (x2, y2, c2) in zip(items, items2):
        assert (y, c) == (y2, c2) and x2.dtype == np.float32
        np.testing.assert_allclose(x2, x, atol=1e-3)  # float16 storage of k/255 and {0, 1}
    assert list(table2.case_id) == ["c0", "c1"] and table2.lesion[1].sum() == 11 * 8 * 12
    assert [(a.tolist(), b.tolist()) for a, b in folds2] == [([0], [1]), ([1], [0])]
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError, match="bad.npz"):
        cohort.load_classifier_cohort(tmp_path / "bad.npz")


def test_synthetic_classifier_cohort_shapes_labels_and_lesions():
    items, table = cohort.synthetic_classifier_cohort(
        2, 0, shape=(16, 64, 64), spacing_mm=(4.0, 2.8, 2.8), hw=(16, 24), z_step=2,
        preprocess_params={"qc_lung_volume_ml": [1, 1e6]}, progress=False)
    assert [lab for _, lab, _ in items] == [0, 1] and list(table.finding) == ["clear", "covid"]
    for (x, _, _), les in zip(items, table.lesion):
        assert x.shape[0] == 2 and x.shape[2:] == (16, 24) and les.shape == x.shape[1:]
    assert table.lesion[0].sum() == 0 and table.lesion[1].sum() > 0 and table.lesion_ml[1] > 0
    # the stored 1 mm lung mask and crop box reproduce the input's mask channel exactly
    from reprolib import localize

    for (x, _, _), row in zip(items, table.itertuples()):
        full = cohort.unpack_mask(row.lung_full, row.lung_full_shape)
        assert full.shape[0] == round(row.n_slices_in * row.z_factor) and set(np.unique(full)) <= {0, 1}
        np.testing.assert_array_equal(localize.to_cam_frame(full, row.bbox, (16, 24), z_step=2), x[1] > 0.5)


def test_cohort_roundtrip_keeps_full_grid_fields(tmp_path):
    items, table = cohort.synthetic_classifier_cohort(
        2, 0, shape=(16, 64, 64), spacing_mm=(4.0, 2.8, 2.8), hw=(16, 24), z_step=2,
        preprocess_params={"qc_lung_volume_ml": [1, 1e6]}, progress=False)
    path = cohort.save_classifier_cohort(tmp_path / "c.npz", items, table, [(np.array([0]), np.array([1]))])
    _, t2, _ = cohort.load_classifier_cohort(path)
    for a, b in zip(table.itertuples(), t2.itertuples()):
        np.testing.assert_array_equal(cohort.unpack_mask(a.lung_full, a.lung_full_shape),
                                      cohort.unpack_mask(b.lung_full, b.lung_full_shape))
        assert list(map(list, a.bbox)) == b.bbox and a.z_factor == b.z_factor and a.n_slices_in == b.n_slices_in


def test_finding_scale_grows_findings_and_one_is_the_default():
    base = phantoms.ct_phantom(3, 1, (16, 64, 64), (4.0, 2.8, 2.8))
    same = phantoms.ct_phantom(3, 1, (16, 64, 64), (4.0, 2.8, 2.8), finding_scale=1.0)
    big = phantoms.ct_phantom(3, 1, (16, 64, 64), (4.0, 2.8, 2.8), finding_scale=2.0)
    np.testing.assert_array_equal(base.hu, same.hu)
    assert big.lesion_mask.sum() > 2 * base.lesion_mask.sum()
    with pytest.raises(ConfigError, match="finding_scale"):
        phantoms.ct_phantom(3, 1, (16, 64, 64), (4.0, 2.8, 2.8), finding_scale=0)


def test_proclf_grids_for_scales_and_keeps_parameters():
    assert models.proclf_grids_for((224, 336)) == models.OFFICIAL_PROCLF_GRIDS
    g = models.proclf_grids_for((48, 72))
    assert g[0] == (16, 5, 8) and g[-1] == (1, 1, 1)  # 24·48/224 = 5.1, 36·72/336 = 7.7
    net = models.DeCoVNet(proclf_grids=g, fc_init="pytorch")
    assert models.count_parameters(net) == 346_978
    assert net(torch.rand(1, 2, 6, 48, 72)).shape == (1, 2)
    official = models.DeCoVNet()
    assert float(official.fc2.weight.detach().std()) < 0.02 < float(net.fc2.weight.detach().std())
    with pytest.raises(ValueError, match="fc_init"):
        models.DeCoVNet(fc_init="xavier")


def test_binary_report_matches_sklearn_and_handles_one_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 60), 0, 1)
    r = evaluate.binary_report(y, p, n_boot=200, seed=0)
    assert r["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert r["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert r["roc_auc_ci_lo"] <= r["roc_auc"] <= r["roc_auc_ci_hi"]
    assert r == evaluate.binary_report(y, p, n_boot=200, seed=0)
    one = evaluate.binary_report([1, 1, 1], [0.2, 0.7, 0.9], n_boot=50)
    assert np.isnan(one["roc_auc"]) and one["sensitivity"] == pytest.approx(2 / 3)


class _Mean(nn.Module):
    """Tiny volume classifier: logits from the mean of each channel."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_cross_fit_predicts_each_held_out_volume_once():
    g = torch.Generator().manual_seed(0)
    items = [(torch.rand(2, 3, 4, 4, generator=g).numpy() + 0.5 * lab, lab, f"c{i}")
             for i, lab in enumerate([0, 1] * 4)]
    folds = cohort.patient_folds([c for _, _, c in items], [lab for _, lab, _ in items], 2, seed=0)
    cfg = train.TrainConfig(epochs=2, lr=1e-2, augment="none", progress=False, validate_every=1)
    pred, hists, nets = crossfit.cross_fit(_Mean, items, folds, cfg)
    assert sorted(pred.case_id) == sorted(c for _, _, c in items) and len(hists) == len(nets) == 2
    assert pred.p_covid.between(0, 1).all() and set(pred.fold) == {0, 1}
    again, _, _ = crossfit.cross_fit(_Mean, items, folds, cfg)
    np.testing.assert_array_equal(pred.p_covid, again.p_covid)  # deterministic on CPU
    with pytest.raises(ConfigError, match="both sides"):
        crossfit.cross_fit(_Mean, items, [(np.array([0, 1]), np.array([1, 2]))], cfg)


def test_paired_auc_difference_is_consistent():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    good = y + rng.normal(0, 0.5, 80)
    bad = y + rng.normal(0, 2.0, 80)
    d = evaluate.paired_auc_difference(y, good, bad, n_boot=300, seed=0)
    assert d["difference"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, bad))
    assert d["ci_lo"] <= d["difference"] <= d["ci_hi"] and d["ci_lo"] > 0
    same = evaluate.paired_auc_difference(y, good, good, n_boot=50)
    assert same["difference"] == same["ci_lo"] == same["ci_hi"] == 0.0


def test_synthetic_cohort_in_two_processes_equals_one():
    kw = dict(shape=(16, 64, 64), spacing_mm=(4.0, 2.8, 2.8), hw=(16, 24), z_step=2,
              preprocess_params={"qc_lung_volume_ml": [1, 1e6]}, progress=False)
    one, t1 = cohort.synthetic_classifier_cohort(4, 1, workers=1, **kw)
    two, t2 = cohort.synthetic_classifier_cohort(4, 1, workers=2, **kw)
    assert [c for _, _, c in one] == [c for _, _, c in two] == list(t2.case_id)
    for (a, _, _), (b, _, _) in zip(one, two):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(t1.lesion, t2.lesion):
        np.testing.assert_array_equal(a, b)
