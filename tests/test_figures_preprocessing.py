"""The library side of chapters 01–03: figures (reprolib.figures.preprocessing), page tables
(formatted glue), notebook 01's acquisition (data.acquire) and notebook 02/03's cohort helpers."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reprolib import cohort, data
from reprolib.figures import preprocessing as figs
from reprolib.io import write_nifti
from reprolib.volume import CTVolume


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def _box_mask(shape, z0, z1, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[z0:z1, y0:y1, x0:x1] = 1
    return m


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


# --------------------------------------------------------------------------- chapter 01
def _write_png(path, value: int, size=(20, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def test_synthetic_examples_picks_per_class_then_ct_slices(tmp_path):
    import nibabel as nib

    records = []
    for label, v in (("pneumonia", 10), ("covid19", 200), ("pneumonia", 11), ("covid19", 201), ("covid19", 202)):
        rel = f"cxr/{label}/{v}.png"
        _write_png(tmp_path / rel, v)
        records.append({"role": "cxr_image", "label": label, "path": rel})
    vol = np.full((6, 5, 4), -3000, dtype=np.int16)  # nibabel order (x, y, z); below the window
    vol[:, :, 2] = 1000  # the middle axial slice (z = 4 // 2), above the window
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ct.nii.gz")
    records.append({"role": "ct_nifti", "label": "normal", "path": "ct.nii.gz"})
    records.append({"role": "lung_mask", "label": "normal", "path": "ct.nii.gz"})

    images, titles = figs.synthetic_examples(records, tmp_path, per_class=2, n_ct=4)
    assert titles == ["covid19", "covid19", "pneumonia", "pneumonia", "CT normal"]
    assert [int(im[0, 0]) for im in images[:4]] == [200, 201, 10, 11]
    assert images[4].shape == (5, 6)  # rotated 90°
    assert np.all(images[4] == figs.WINDOW_HU[1])  # clipped to the window


def test_manifest_examples_reads_first_files_by_url(tmp_path):
    entries = []
    for i, (label, role) in enumerate([("covid19", "cxr_image"), ("covid19", "cxr_image"), ("covid19", "cxr_image"),
                                       ("normal", "ct_png"), ("normal", "ct_dicom")]):
        e = data.FileEntry(dataset="ds", url=f"https://host.org/d/{label}{i}.png", sha256="0" * 64, bytes=1,
                           label=label, group=f"p{i}", split="train", role=role)
        _write_png(data.local_path(e, tmp_path), 50 + i)
        entries.append(e)
    manifest = data.Manifest(dataset="ds", title="t", citation="c", licence="CC0", upstream={},
                             files=tuple(entries))
    images, titles = figs.manifest_examples([manifest], tmp_path, per_class=2)
    assert titles == ["ds\ncovid19", "ds\ncovid19", "ds\nnormal"]  # ct_dicom files are not images
    assert [int(im[0, 0]) for im in images] == [50, 51, 53]


def test_acquire_synthetic_generates_verifies_and_counts(tmp_path, monkeypatch):
    from reprolib import config, phantom_dataset

    tiny = {"data": {"phantoms": {"ct_count": 2, "ct_shape": [12, 48, 48], "ct_spacing_mm": [2.5, 1.4, 1.4],
                                  "cxr_per_class": 2, "cxr_size": 32}}}
    monkeypatch.setattr(config, "load_profile", lambda profile: tiny)
    acq = data.acquire("synthetic", tmp_path, seed=0)
    records = json.loads((tmp_path / "synthetic_records.json").read_text())
    assert records == acq.records and acq.root == tmp_path / "synthetic_data"
    assert acq.n_files == len(records) and acq.n_bytes == sum(r["bytes"] for r in records)
    assert acq.n_patients == len({r["group"] for r in records}) and acq.seconds is None
    assert int(acq.table["files"].sum()) == acq.n_files
    assert len(acq.table) == len({(r["dataset"], r["role"], r["label"]) for r in records})
    assert list(acq.table.columns) == ["dataset", "role", "label", "files"]

    real = phantom_dataset.make_synthetic_dataset

    def corrupt(*args, **kwargs):  # a record whose digest does not match its file
        recs = real(*args, **kwargs)
        recs[0] = dict(recs[0], sha256="f" * 64)
        return recs

    monkeypatch.setattr(phantom_dataset, "make_synthetic_dataset", corrupt)
    from reprolib.errors import ChecksumError

    with pytest.raises(ChecksumError):
        data.acquire("synthetic", tmp_path / "again", seed=0)


# --------------------------------------------------------------------------- chapter 02
def _cohort_table() -> pd.DataFrame:
    return pd.DataFrame({
        "case_id": ["a", "b", "c"], "label": ["normal", "covid19", "covid19"], "kind": ["nifti"] * 3,
        "shape": ["4×8×8"] * 3, "spacing_mm": ["1 × 1 × 1"] * 3, "min": [-1024.123, -1000.0, -990.0],
        "median": [-500.456, -400.0, -300.0], "max": [300.789, 200.0, 100.0], "T0": [4, 4, 4],
        "lung_ml": [1.234, 2.345, 3.456], "qc_ok": [True, False, True], "seconds": [0.123, 0.456, 0.789],
        "peak_MB": [10.26, 20.0, 30.0], "copies": [1.234, 1.5, 1.6], "step_copies": [2.345, 2.0, 2.1],
        "flags": ["-", "one lung missing", "-"], "is_hu": [True, True, False], "target": [0, 1, 1]})


def test_volume_and_qc_tables():
    t = _cohort_table()
    show = cohort.volume_table(t)
    assert show.index.tolist() == ["a", "b", "c"] and list(show.columns) == cohort.VOLUME_COLUMNS[1:]
    assert show.loc["a", "min"] == -1024.12 and show.loc["a", "copies"] == 1.23
    assert show.loc["a", "peak_MB"] == 10.3  # one decimal, as the prose shows the largest peak
    failed = cohort.qc_failed_table(t)
    assert failed.index.tolist() == ["b"] and failed.loc["b", "lung_ml"] == 2.345
    assert list(failed.columns) == ["label", "lung_ml", "flags"]


def test_example_case_prefers_covid_hu_volume():
    t = _cohort_table()
    assert figs.example_case(t).case_id == "b"  # c is COVID-19 but has no HU
    assert figs.example_case(t.assign(target=0)).case_id == "a"
    assert figs.example_case(t.assign(is_hu=False)).case_id == "a"


def test_preprocessing_steps_and_histogram():
    hu = np.full((10, 16, 16), -1000, dtype=np.int16)
    ct = np.zeros((20, 16, 16), dtype=np.uint8)
    mask = _box_mask(ct.shape, 5, 15, 4, 12, 4, 12)
    fig = figs.preprocessing_steps(hu, ct, mask, title="case")
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title() == "raw HU, slice 5" and "T0 = 20" in fig.axes[2].get_title()
    assert fig.axes[3].collections  # the mask's contour
    assert not figs.preprocessing_steps(hu, ct, None).axes[3].collections

    fig = figs.hu_histogram(hu)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [-1200, -320, 600]


def test_phantom_lungs_and_pseudo_label_dice(tmp_path, monkeypatch):
    truth = _box_mask((4, 8, 8), 1, 3, 2, 6, 2, 6)
    write_nifti(CTVolume(hu=truth.astype(np.int16), spacing_mm=(2.0, 1.0, 1.0)), None, tmp_path / "lung.nii.gz")
    one_mm = cohort.phantom_lungs_1mm(tmp_path / "lung.nii.gz", 8)
    assert one_mm.shape == (8, 8, 8) and set(np.unique(one_mm)) == {0, 1}
    assert np.array_equal(one_mm, np.repeat(truth, 2, axis=0))  # nearest neighbour, factor 2

    pseudo = {"good": one_mm, "half": one_mm * (np.arange(8) < 4)[:, None, None]}
    monkeypatch.setattr(cohort, "load_preprocessed",
                        lambda npz: {"ct_u8": np.zeros((8, 8, 8), np.uint8), "lung_mask": pseudo[str(npz)]})
    table = pd.DataFrame({"npz": ["good", "half"], "lung_mask": [str(tmp_path / "lung.nii.gz")] * 2})
    d = cohort.pseudo_label_dice(table)
    assert d == pytest.approx([1.0, _dice(pseudo["half"], one_mm)])


# --------------------------------------------------------------------------- chapter 03
def _index() -> pd.DataFrame:
    return pd.DataFrame({
        "case_id": [f"c{i}" for i in range(6)], "group": ["p0", "p0", "p1", "p2", "p3", "p4"],
        "split": ["train", "train", "test", "train", "test", "train"], "label": ["normal", "covid19"] * 3,
        "is_hu": [True, True, True, True, True, False], "qc_ok": [True, True, True, True, False, True],
        "T0": [10, 11, 12, 13, 14, 15], "lung_ml": [1.26, 2.0, 3.0, 4.0, 5.0, 6.0]})


def test_unet_holdout_by_split_and_by_patients():
    train, held = cohort.unet_holdout(_index(), "split", seed=0)
    assert held.case_id.tolist() == ["c2"]  # c4 failed QC, c5 has no HU
    assert train.case_id.tolist() == ["c0", "c1", "c3"]
    for holdout in (1, 0.5):
        train, held = cohort.unet_holdout(_index(), holdout, seed=3)
        assert not set(train.group) & set(held.group)
        assert sorted(train.case_id.tolist() + held.case_id.tolist()) == ["c0", "c1", "c2", "c3"]
        assert held.group.nunique() == (1 if holdout == 1 else 2)
    table = cohort.unet_split_table(*cohort.unet_holdout(_index(), "split", seed=0))
    assert table.index.tolist() == ["c0", "c1", "c3", "c2"]
    assert table.role.tolist() == ["train", "train", "train", "held out"]
    assert table.loc["c0", "lung_ml"] == 1.3 and list(table.columns) == ["label", "role", "T0", "lung_ml"]


def test_score_unet_against_pseudo_labels_and_exact_lungs(tmp_path, monkeypatch):
    from reprolib import segment

    shape = (8, 8, 8)
    truth = _box_mask((4, 8, 8), 1, 3, 2, 6, 2, 6)
    write_nifti(CTVolume(hu=truth.astype(np.int16), spacing_mm=(2.0, 1.0, 1.0)), None, tmp_path / "lung.nii.gz")
    exact = np.repeat(truth, 2, axis=0)
    pseudo = _box_mask(shape, 2, 6, 2, 6, 2, 6)
    pred = _box_mask(shape, 2, 6, 2, 6, 2, 4)
    monkeypatch.setattr(cohort, "load_preprocessed",
                        lambda npz: {"ct_u8": np.zeros(shape, np.uint8), "lung_mask": pseudo})
    monkeypatch.setattr(segment, "segment_volume", lambda unet, ct, batch=8, size=None: pred.copy())
    held = pd.DataFrame({"case_id": ["x", "y"], "npz": ["x.npz", "y.npz"],
                         "lung_mask": [str(tmp_path / "lung.nii.gz")] * 2})
    scores, shown = cohort.score_unet(object(), held, exact_lungs=True)
    assert scores.index.tolist() == ["x", "y"] and scores.slices.tolist() == [8, 8]
    assert scores.Dice.tolist() == pytest.approx([_dice(pred, pseudo)] * 2)  # 2·32 / (32 + 64)
    assert scores.IoU.tolist() == pytest.approx([0.5, 0.5])
    assert scores["Dice vs exact lungs"].tolist() == pytest.approx([_dice(pred, exact)] * 2)
    assert (scores.seconds_per_slice == scores.seconds / 8).all()
    assert [s[0] for s in shown] == ["x", "y"] and shown[0][3] is not pred
    assert "Dice vs exact lungs" not in cohort.score_unet(object(), held)[0]


def test_training_curves_and_overlays():
    from reprolib.train import History

    h = History()
    for e in range(1, 4):
        h.append(e, train_loss=1.0 / e, seconds=1.0,
                 **({"val_loss": 0.5, "val_miou": 0.8, "val_dice": 0.9} if e % 2 else {}))
    fig = figs.unet_training_curves(h)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2 and len(fig.axes[1].lines) == 2
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([1.0, 0.5, 1 / 3])
    assert len(figs.unet_training_curves(h.to_dict()).axes) == 2

    ct = np.zeros((10, 8, 8), dtype=np.uint8)
    m = _box_mask(ct.shape, 0, 10, 2, 6, 2, 6)
    fig = figs.segmentation_overlays([("a", ct, m, m), ("b", ct, m, m)])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a, slice 3", "a, slice 5", "a, slice 7"]
    assert len(figs.segmentation_overlays([]).axes) == 3
