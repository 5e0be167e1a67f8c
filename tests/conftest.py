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


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory):
    """The sample profile fetched once from the mirror (no download) into a session cache:
    ``(cache folder, FetchReport)``. Tests read it and never write into it."""
    from reprolib import data

    m = mirror_path()
    if m is None:
        pytest.skip("data mirror not found: set REPRO_DATA_MIRROR (CI uses ../shared/mirror)")
    cache = tmp_path_factory.mktemp("sample-cache")
    return cache, data.fetch_profile("sample", data_dir=cache, mirror=m, download=False, progress=False)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point every REPRO_* directory into tmp_path."""
    dirs = {name: tmp_path / name for name in ("data", "work", "results")}
    monkeypatch.setenv("REPRO_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("REPRO_WORK_DIR", str(dirs["work"]))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(dirs["results"]))
    monkeypatch.delenv("REPRO_DATA_MIRROR", raising=False)
    return dirs


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    """A book build in miniature, made here: checkpoints, cards' results, provenance and inputs.

    U-Net (default widths) trained for a few steps on phantom pseudo-labels at 64x64; DeCoVNet
    and ResNet-50 untrained (random, seeded); results JSON as notebooks 04/06/07 write them;
    a phantom CT as NIfTI, .nii.gz and zipped DICOM, and a phantom chest X-ray PNG.
    """
    import json
    import zipfile

    import numpy as np

    from reprolib import cxr, cxr_model, cxr_phantoms, modelfile, models, phantom_files, phantoms, preprocess, train
    from reprolib.io import write_nifti
    from reprolib.provenance import seed_everything
    from reprolib.volume import CTVolume

    base = tmp_path_factory.mktemp("build")
    work, results, inputs = base / "sample" / "work", base / "results", base / "inputs"
    for d in (work, results, inputs):
        d.mkdir(parents=True)
    seed_everything(0)
    vols = []
    for s in range(3):
        ph = phantoms.ct_phantom(s, s % 2)
        res = preprocess.preprocess_ct(CTVolume(hu=np.array(ph.hu), spacing_mm=ph.spacing_mm),
                                       qc_lung_volume_ml=[1, 1e6])
        vols.append((res["ct_u8"], res["lung_mask"]))
    unet = models.UNet2D()
    h = train.fit_unet(unet, vols, train.TrainConfig(epochs=20, lr=3e-3, progress=False, max_threads=2, seed=0,
                                                      augment="none"),
                       slices_per_step=16, size=(64, 64))  # ~10 s; held-out Dice about 0.93
    unet_sha = modelfile.save_model(work / "unet" / "final.pt", unet)
    (work / "unet_checkpoint.json").write_text(json.dumps({"path": str(work / "unet" / "final.pt"),
                                                           "sha256": unet_sha, "size": [64, 64]}))
    hw = (32, 48)
    net = models.DeCoVNet(proclf_grids=models.proclf_grids_for(hw), fc_init="pytorch")
    modelfile.save_model(work / "decovnet_last.pt", net, metadata={
        "profile": "sample", "hw": list(hw), "z_step": 2, "fc_init": "pytorch", "fold": 0, "test_case_ids": []})
    res_model = cxr_model.build_resnet50(4, weights="none", freeze_until=None)
    sha = modelfile.save_model(work / "cxr_resnet50.pt", res_model)
    (base / "sample" / "provenance.json").write_text(json.dumps(
        {"provenance": {"git": {"commit": "0" * 40, "dirty": False}, "hardware": {"cpu_count": 2}}}))
    values = {
        "04_decovnet": {"our_roc_auc": 0.9, "our_average_precision": 0.9, "our_accuracy": 0.8, "our_n": 6},
        "06_cam_localization": {"cam_hit_rate": 0.5},
        "07_cxr_resnet50": {"checkpoint_sha256": sha, "image_size": 64, "macro_f1": 0.5, "n_val": 10,
                            "weights_mode": "none",
                            "val_report": {"index": list(cxr.CLASSES), "recall": [0.5] * 4, "f1": [0.5] * 4}},
    }
    for stem, v in values.items():
        (results / f"{stem}.json").write_text(json.dumps({"notebook": stem, "profile": "sample", "values": v,
                                                           "timings": {}}))
    ph = phantoms.ct_phantom(5, 1)
    nii = write_nifti(CTVolume(hu=np.array(ph.hu), spacing_mm=ph.spacing_mm), None, inputs / "ct.nii.gz")
    raw = inputs / "ct.nii"
    import gzip

    raw.write_bytes(gzip.decompress(nii.read_bytes()))
    files = phantom_files.write_dicom_series(ph, inputs / "dicom")
    with zipfile.ZipFile(inputs / "ct_dicom.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
    from PIL import Image

    img = cxr_phantoms.cxr_phantom(1, "covid19", size=96).image
    Image.fromarray(np.asarray(img)).save(inputs / "cxr.png")
    Image.fromarray(np.asarray(img)).convert("L").save(inputs / "cxr.jpg", quality=90)
    return {"base": base, "work": work, "results": results, "inputs": inputs, "unet_val_dice": h.val_dice}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After a run that included tests/test_corpus.py: the hostile-input cases per category."""
    counts: dict[str, int] = {}
    failed = 0
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", None) != "call":
                continue
            cat = dict(getattr(rep, "user_properties", ())).get("corpus_category")
            if cat is not None:
                counts[cat] = counts.get(cat, 0) + 1
                failed += key == "failed"
    if counts:
        order = ("dicom", "nifti", "image", "manifest/config", "upload")
        parts = ", ".join(f"{c} {counts.get(c, 0)}" for c in order)
        line = f"hostile-input corpus: {sum(counts.values())} cases ({parts})"
        terminalreporter.write_line(line + (f"; {failed} failed" if failed else ""))


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> Path:
    """6 small phantom volumes (4 train, 2 held out, fold 0) saved as a classifier cohort (.npz)."""
    import numpy as np

    from reprolib import cohort

    items, table = cohort.synthetic_classifier_cohort(6, seed=3, shape=(24, 64, 64), spacing_mm=(5.0, 2.8, 2.8),
                                                      finding_scale=2.5, hw=(32, 48), z_step=2, progress=False,
                                                      preprocess_params={"qc_lung_volume_ml": [1, 1e6]})
    folds = [(np.arange(4), np.arange(4, 6))]
    return cohort.save_classifier_cohort(tmp_path_factory.mktemp("cohort") / "c.npz", items, table, folds)
