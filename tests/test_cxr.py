"""Tests of reprolib.cxr: labels, splits, loading, transforms, model, weights, de-dup, confounds, Grad-CAM."""
from __future__ import annotations

import copy
import hashlib
import io
import os
import socket
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, stats

from reprolib import confound, cxr, cxr_cam, cxr_model, dedup
from reprolib.errors import (
    ChecksumError,
    ConfigError,
    DataUnavailableError,
    ImageError,
    InputError,
    ManifestError,
)

torch.set_num_threads(1)

WEIGHTS_NAME = "resnet50-0676ba61.pth"
WEIGHTS_REL = Path("download.pytorch.org", "models", WEIGHTS_NAME)


# ----------------------------------------------------------------------------- fixtures


def texture(seed: int, n: int = 128, sigma: float = 3.0) -> np.ndarray:
    """Smoothed random texture, uint8 (n, n)."""
    a = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(n, n)), sigma)
    return ((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)


def write_png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return cxr_model.build_resnet50(n_classes=4, weights="none", freeze_until="layer3")


def make_records(spec: dict[str, list[int]], source: str = "ds") -> list[cxr.CXRRecord]:
    """spec: class -> list of images per patient."""
    out = []
    for label, per_patient in spec.items():
        for p, n in enumerate(per_patient):
            for k in range(n):
                out.append(cxr.CXRRecord(Path(f"{label}_{p}_{k}.png"), label, None, f"{label}-p{p}", source))
    return out


# ----------------------------------------------------------------------------- labels, records


def test_label_from_mirror_maps_to_four_classes_and_keeps_sublabel():
    assert cxr.CLASSES == ("healthy", "pneumonia", "covid19", "not_certain")
    assert cxr.label_from_mirror("healthy") == ("healthy", None)
    assert cxr.label_from_mirror("pneumonia_bacterial") == ("pneumonia", "bacterial")
    assert cxr.label_from_mirror("pneumonia_viral") == ("pneumonia", "viral")
    assert cxr.label_from_mirror("covid19") == ("covid19", None)
    with pytest.raises(ManifestError, match="cap"):
        cxr.label_from_mirror("cap", source="index.tsv")


def test_record_rejects_unknown_class_and_exposes_target():
    rec = cxr.CXRRecord(Path("a.png"), "covid19", None, "p1", "hannover-mhh")
    assert rec.target == 2 and rec.patient == ("hannover-mhh", "p1") and rec.split == "-"
    with pytest.raises(ConfigError, match="a.png"):
        cxr.CXRRecord(Path("a.png"), "covid", None)


def test_records_from_index_reads_tsv(tmp_path):
    cols = ["dataset", "role", "label", "group", "split", "path"]
    rows = [
        ["kermany-224", "cxr_image", "pneumonia_viral", "person1", "train", "k/person1_virus_1.jpeg"],
        ["kermany-224", "cxr_image", "healthy", "IM-0001", "test", "k/IM-0001.jpeg"],
        ["hannover-mhh", "cxr_image", "covid19", "7", "-", "h/7.png"],
        ["hannover-mhh", "licence", "-", "-", "-", "h/LICENSE"],
        ["cc-ccii", "ct_png", "common_pneumonia", "0/3132", "-", "c/0000.png"],
        ["covid-ct-md", "ct_dicom", "covid19", "P001", "-", "d/x.dcm"],
    ]
    tsv = tmp_path / "index.tsv"
    tsv.write_text("\n".join("\t".join(r) for r in [cols, *rows]) + "\n", encoding="utf-8")
    recs = cxr.records_from_index(tsv, tmp_path)
    assert [(r.label, r.sublabel, r.group, r.source) for r in recs] == [
        ("pneumonia", "viral", "person1", "kermany-224"),
        ("healthy", None, "IM-0001", "kermany-224"),
        ("covid19", None, "7", "hannover-mhh"),
        ("not_certain", "ct_slice", "0/3132", "cc-ccii"),
    ]
    assert recs[0].path == tmp_path / "k/person1_virus_1.jpeg"
    assert all(r.split == "-" for r in recs)


# ----------------------------------------------------------------------------- splits


def _spec_for_split():
    rng = np.random.default_rng(3)
    return {c: rng.integers(1, 5, size=n).tolist() for c, n in
            [("healthy", 40), ("pneumonia", 50), ("covid19", 20), ("not_certain", 12)]}


def test_patient_split_is_disjoint_stratified_and_deterministic():
    recs = make_records(_spec_for_split())
    out = cxr.patient_split(recs, test_frac=0.2, val_frac=0.2, seed=1)
    assert [r.path for r in out] == [r.path for r in recs]  # input order kept
    # patient-disjoint
    by_patient: dict = {}
    for r in out:
        by_patient.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())
    # stratified: every class in every split, image fractions near the request
    for c in cxr.CLASSES:
        n = sum(r.label == c for r in out)
        counts = Counter(r.split for r in out if r.label == c)
        assert set(counts) == {"train", "val", "test"}
        for split, frac in (("test", 0.2), ("val", 0.2)):
            assert abs(counts[split] / n - frac) <= 0.1, (c, split, counts)
    # deterministic and independent of input order
    again = cxr.patient_split(list(reversed(recs)), test_frac=0.2, val_frac=0.2, seed=1)
    assert {r.path: r.split for r in again} == {r.path: r.split for r in out}
    other = cxr.patient_split(recs, test_frac=0.2, val_frac=0.2, seed=2)
    assert [r.split for r in other] != [r.split for r in out]


def test_patient_split_defaults_and_bad_fractions():
    recs = make_records({"healthy": [1] * 40, "covid19": [1] * 40})
    out = cxr.patient_split(recs)  # 25 % validation, no test, as in the paper
    counts = Counter(r.split for r in out)
    assert counts == {"train": 60, "val": 20}
    with pytest.raises(ConfigError):
        cxr.patient_split(recs, test_frac=0.7, val_frac=0.5)


# ----------------------------------------------------------------------------- image loading


def test_load_cxr_grayscale_to_three_channels(tmp_path):
    arr = texture(0, 40)
    rgb = np.stack([arr, arr // 2, 255 - arr], axis=2)
    p = write_png(tmp_path / "rgb.png", rgb)
    img = cxr.load_cxr(p)
    assert img.mode == "RGB" and img.size == (40, 40)
    a = np.asarray(img)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    # ITU-R 601-2 luma, computed independently
    rgb = rgb.astype(np.int64)
    expected = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000
    assert np.abs(a[..., 0].astype(float) - expected).max() <= 1.0


def test_load_cxr_scales_16_bit(tmp_path):
    arr16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    p = tmp_path / "sixteen.png"
    Image.fromarray(arr16).save(p)
    got = np.asarray(cxr.load_cxr(p, channels=1)).astype(int)
    with Image.open(p) as im:
        raw = np.asarray(im).astype(float)  # mode I or I;16 depending on Pillow
    assert np.abs(got - np.round(raw * 255 / 65535)).max() <= 1


def test_truncated_png_raises_image_error_naming_file(tmp_path):
    p = write_png(tmp_path / "full.png", texture(1, 64))
    data = p.read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated.png") as info:
        cxr.load_cxr(bad)
    assert info.value.path == str(bad)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="junk.png"):
        cxr.load_cxr(junk)
    with pytest.raises(ImageError, match="missing.png"):
        cxr.load_cxr(tmp_path / "missing.png")


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    p = write_png(tmp_path / "big.png", texture(2, 64))
    with pytest.raises(ImageError, match="big.png.*decompression-bomb"):
        cxr.load_cxr(p, max_pixels=64 * 64 - 1)
    assert cxr.load_cxr(p, max_pixels=64 * 64).size == (64, 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own limit is the default
    with pytest.raises(ImageError, match="big.png"):
        cxr.load_cxr(p)


def test_dataset_returns_tensor_and_class_index(tmp_path):
    paths = [write_png(tmp_path / f"{i}.png", texture(i, 50)) for i in range(2)]
    recs = [cxr.CXRRecord(paths[0], "covid19", None, "a", "s"), cxr.CXRRecord(paths[1], "healthy", None, "b", "s")]
    seen = []
    ds = cxr.CXRDataset(recs, cxr.build_transforms(64), augment=lambda im, lab: seen.append(lab) or im)
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == 2
    assert ds[1][1] == 0 and seen == ["covid19", "healthy"]
    assert ds.targets.tolist() == [2, 0]


# ----------------------------------------------------------------------------- transforms


def test_transforms_shape_dtype_and_normalisation():
    v = 100
    tf = cxr.build_transforms(size=350, train=True)
    x = tf(Image.new("RGB", (224, 180), (v, v, v)))
    assert tuple(x.shape) == (3, 350, 350) and x.dtype == torch.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (v / 255.0 - mean) / std
    got = x.numpy().reshape(3, -1)
    assert np.allclose(got, expected[:, None], atol=1e-5)
    # evaluation pipeline is identical (no geometric augmentation in the paper)
    t2 = cxr.build_transforms(size=350, train=False)(Image.fromarray(texture(4, 90)).convert("RGB"))
    t1 = tf(Image.fromarray(texture(4, 90)).convert("RGB"))
    assert torch.equal(t1, t2)


def test_contrast_touches_only_target_class():
    img = Image.fromarray(texture(5, 32)).convert("RGB")
    g = torch.Generator().manual_seed(0)
    aug = cxr.ClassTargetedContrast("covid19", factor=(0.5, 1.9), p=0.5, generator=g)
    state = g.get_state()
    for _ in range(100):
        for label in ("healthy", "pneumonia", "not_certain", 0, 1, 3):
            assert aug(img, label) is img
            assert aug.sample(label) is None
    assert torch.equal(g.get_state(), state)  # no random numbers consumed for other classes


def test_contrast_frequency_and_factor_range_for_covid():
    n = 400
    aug = cxr.ClassTargetedContrast(generator=torch.Generator().manual_seed(123))
    draws = [aug.sample("covid19") for _ in range(n)]
    factors = np.array([f for f in draws if f is not None])
    lo, hi = stats.binom.interval(1 - 1e-6, n, 0.5)
    assert lo <= len(factors) <= hi
    assert factors.min() >= 0.5 and factors.max() <= 1.9
    assert stats.kstest((factors - 0.5) / 1.4, "uniform").pvalue > 1e-4
    # with the class index too, and reproducible from the seed
    a = cxr.ClassTargetedContrast(generator=torch.Generator().manual_seed(7))
    b = cxr.ClassTargetedContrast(generator=torch.Generator().manual_seed(7))
    assert [a.sample(2) for _ in range(50)] == [b.sample("covid19") for _ in range(50)]


def test_contrast_change_matches_blend_formula():
    arr = texture(6, 32)
    img = Image.fromarray(arr).convert("RGB")
    aug = cxr.ClassTargetedContrast(p=1.0, generator=torch.Generator().manual_seed(1))
    f = cxr.ClassTargetedContrast(p=1.0, generator=torch.Generator().manual_seed(1)).sample("covid19")
    out = np.asarray(aug(img, "covid19"))[..., 0].astype(float)
    expected = np.clip(f * arr + (1 - f) * arr.mean(), 0, 255)
    assert np.abs(out - expected).max() <= 1.5


def test_balance_by_augmentation_counts():
    # paper: 161 COVID vs ~2,500 per other class -> capped at 13 x 161 = 2,093
    recs = make_records({"covid19": [1] * 161, "healthy": [1] * 2487, "pneumonia": [1] * 2507})
    out = cxr.balance_by_augmentation(recs, "covid19", max_copies=13)
    assert sum(r.label == "covid19" for r in out) == 2093
    assert out[: len(recs)] == recs
    assert Counter(r.label for r in out[len(recs):]) == {"covid19": 2093 - 161}
    # parity below the cap: 10 COVID vs 25 healthy -> 25, each image 2 or 3 times
    small = make_records({"covid19": [1] * 10, "healthy": [1] * 25})
    out = cxr.balance_by_augmentation(small, max_copies=13, seed=3)
    per_image = Counter(r.path for r in out if r.label == "covid19")
    assert sum(per_image.values()) == 25 and set(per_image.values()) == {2, 3}
    copies = sorted(r.copy for r in out if r.path == next(iter(per_image)))
    assert copies[0] == 0 and copies == list(range(len(copies)))
    # only the requested split is balanced
    split = [r if r.label == "healthy" else replace(r, split="val") for r in
             [replace(r, split="train") for r in small]]
    assert cxr.balance_by_augmentation(split, split="train") == split


# ----------------------------------------------------------------------------- model


def test_param_groups_learning_rates_and_membership(model):
    groups = cxr_model.param_groups(model, lrs=(1e-4, 1e-3, 1e-2))
    assert [(g["name"], g["lr"]) for g in groups] == [("layer3", 1e-4), ("layer4", 1e-3), ("fc", 1e-2)]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[0] == {id(p) for p in model.layer3.parameters()}
    assert ids[1] == {id(p) for p in model.layer4.parameters()}
    assert ids[2] == {id(p) for p in model.fc.parameters()}
    opt = torch.optim.SGD(groups, lr=0.5)
    assert [pg["lr"] for pg in opt.param_groups] == [1e-4, 1e-3, 1e-2]
    assert model.fc.out_features == 4


def test_frozen_layers_get_no_gradient(model):
    model.zero_grad(set_to_none=True)
    model.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2])).backward()
    frozen = [model.conv1, model.bn1, model.layer1, model.layer2]
    for m in frozen:
        for p in m.parameters():
            assert not p.requires_grad and p.grad is None
    for m in (model.layer3, model.layer4, model.fc):
        assert all(p.requires_grad and p.grad is not None for p in m.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.fc.parameters())
    model.zero_grad(set_to_none=True)


def test_freeze_all_body_and_bad_stage(model):
    m = copy.deepcopy(model)
    cxr_model.freeze_stages(m, "fc")
    assert [g["name"] for g in cxr_model.param_groups(m)] == ["fc"]
    cxr_model.freeze_stages(m, None)
    assert [g["name"] for g in cxr_model.param_groups(m)] == ["stem+layer1+layer2", "layer3+layer4", "fc"]
    with pytest.raises(ConfigError):
        cxr_model.freeze_stages(m, "layer9")


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, n=4, size=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.arange(n) % 4

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.slow
def test_train_epoch_and_predict_are_deterministic(model):
    results = []
    for _ in range(2):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(cxr_model.param_groups(m), momentum=0.9)
        loader = cxr.make_loader(_Tensors(), batch_size=2, shuffle=True, seed=5)
        torch.manual_seed(0)
        loss = cxr.train_epoch(m, loader, opt, "cpu", progress=False)
        results.append((loss, m))
    (l1, m1), (l2, m2) = results
    assert np.isfinite(l1) and l1 == l2
    for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(p1, p2)
    # frozen weights and their BatchNorm statistics did not move; trainable ones did
    before = model.state_dict()
    after = m1.state_dict()
    for k in ("conv1.weight", "bn1.running_mean", "layer2.0.bn1.running_var", "layer1.0.conv1.weight"):
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["layer3.0.bn1.running_mean"], after["layer3.0.bn1.running_mean"])
    y, probs = cxr.predict(m1, cxr.make_loader(_Tensors(), batch_size=3), progress=False)
    assert y.tolist() == [0, 1, 2, 3] and probs.shape == (4, 4) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- weights


def _tiny_checkpoint(path: Path, seed: int = 0) -> tuple[str, dict]:
    """A partial ResNet-50 state_dict (stem only) with the real key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=g),
             "bn1.weight": torch.rand(64, generator=g), "bn1.bias": torch.randn(64, generator=g)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), state


def test_weights_url_and_filename_come_from_torchvision():
    from torchvision.models import ResNet50_Weights

    assert cxr_model.imagenet_weights_url() == ResNet50_Weights.IMAGENET1K_V1.url
    assert cxr_model.imagenet_weights_url().endswith("/models/" + WEIGHTS_NAME)
    assert cxr_model.IMAGENET_SHA256.startswith("0676ba61")


def test_resolver_accepts_correct_hash_and_rejects_wrong(tmp_path):
    ckpt = tmp_path / "cache" / WEIGHTS_NAME
    sha, _ = _tiny_checkpoint(ckpt)
    got = cxr_model.resolve_imagenet_weights(cache_dirs=[tmp_path / "cache"], mirror=tmp_path / "nomirror",
                                       expected_sha256=sha)
    assert got == ckpt
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        cxr_model.resolve_imagenet_weights(cache_dirs=[tmp_path / "cache"], mirror=tmp_path / "nomirror",
                                     expected_sha256=wrong)
    msg = str(info.value)
    assert WEIGHTS_NAME in msg and wrong in msg and sha in msg
    # the real ImageNet hash rejects the tiny file too
    with pytest.raises(ChecksumError, match=cxr_model.IMAGENET_SHA256):
        cxr_model.resolve_imagenet_weights(cache_dirs=[tmp_path / "cache"], mirror=tmp_path / "nomirror")


def test_resolver_finds_mirror_layout_and_default_dirs(tmp_path, monkeypatch):
    sha, _ = _tiny_checkpoint(tmp_path / "mirror" / WEIGHTS_REL)
    got = cxr_model.resolve_imagenet_weights(cache_dirs=[], mirror=tmp_path / "mirror", expected_sha256=sha)
    assert got == tmp_path / "mirror" / WEIGHTS_REL
    # defaults: torch hub cache ($TORCH_HOME/hub/checkpoints), $REPRO_DATA_DIR, $REPRO_DATA_MIRROR
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(tmp_path / "mirror2"))
    paths = cxr_model.weight_search_paths()
    assert paths[0] == tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_NAME
    assert tmp_path / "data" / WEIGHTS_NAME in paths
    assert paths[-1] == tmp_path / "mirror2" / WEIGHTS_REL
    sha2, _ = _tiny_checkpoint(tmp_path / "data" / WEIGHTS_NAME, seed=1)
    assert cxr_model.resolve_imagenet_weights(expected_sha256=sha2) == tmp_path / "data" / WEIGHTS_NAME


def test_missing_weights_raise_data_unavailable_with_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("REPRO_DATA_MIRROR", raising=False)
    kw = dict(cache_dirs=[tmp_path / "cache"], mirror=tmp_path / "mirror")
    with pytest.raises(DataUnavailableError) as info:
        cxr_model.resolve_imagenet_weights(**kw)
    msg = str(info.value)
    assert str(tmp_path / "cache" / WEIGHTS_NAME) in msg and str(tmp_path / "mirror" / WEIGHTS_REL) in msg
    assert "REPRO_DATA_MIRROR" in msg and str(WEIGHTS_REL) in msg and cxr_model.IMAGENET_SHA256 in msg
    mode, reason = cxr_model.weights_mode("imagenet", **kw)
    assert mode == "none" and "random initialisation" in reason
    assert str(tmp_path) not in reason and cxr_model.IMAGENET_SHA256 in reason  # the book shows it: no machine paths
    assert cxr_model.weights_mode("none")[0] == "none"
    with pytest.raises(ConfigError):
        cxr_model.weights_mode("imagenet21k")
    sha, _ = _tiny_checkpoint(tmp_path / "cache" / WEIGHTS_NAME)
    mode, reason = cxr_model.weights_mode("imagenet", expected_sha256=sha, **kw)
    assert mode == "imagenet" and WEIGHTS_NAME in reason


def test_build_resnet50_loads_checkpoint_into_model(tmp_path):
    ckpt = tmp_path / WEIGHTS_NAME
    sha, state = _tiny_checkpoint(ckpt)
    m = cxr_model.build_resnet50(weights="imagenet", weights_path=ckpt, expected_sha256=sha, strict=False)
    assert torch.equal(m.conv1.weight, state["conv1.weight"])
    assert torch.equal(m.bn1.bias, state["bn1.bias"])
    assert m.fc.out_features == 4 and not m.conv1.weight.requires_grad
    # strict loading of a partial checkpoint, a wrong hash and a wrong shape all fail clearly
    with pytest.raises(InputError, match=WEIGHTS_NAME):
        cxr_model.load_state_dict_file(m, ckpt, expected_sha256=sha, strict=True)
    with pytest.raises(ChecksumError):
        cxr_model.load_state_dict_file(m, ckpt, expected_sha256="f" * 64)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, bad)
    with pytest.raises(InputError, match="bad.pth.*do not fit"):
        cxr_model.load_state_dict_file(m, bad, strict=False)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(InputError, match="junk.pth"):
        cxr_model.load_state_dict_file(m, junk)


# ----------------------------------------------------------------------------- de-duplication


def test_phash_finds_resized_jpeg_copy_and_ignores_other(tmp_path):
    orig = write_png(tmp_path / "orig.png", texture(10, 256, sigma=2.0))
    other = write_png(tmp_path / "other.png", texture(11, 256, sigma=2.0))
    buf = io.BytesIO()
    Image.open(orig).resize((150, 170), Image.BILINEAR).convert("RGB").save(buf, "JPEG", quality=60)
    copy_path = tmp_path / "copy.jpg"
    copy_path.write_bytes(buf.getvalue())

    h = {p.name: dedup.phash(p) for p in (orig, other, copy_path)}
    assert h["orig.png"].hash.size == 256
    assert h["orig.png"] - h["copy.jpg"] <= 12 < h["orig.png"] - h["other.png"]

    pairs = dedup.find_duplicates([copy_path, other], [orig], max_distance=12)
    assert [(c, r) for c, r, _ in pairs] == [(copy_path, orig)]
    assert pairs[0][2] == h["orig.png"] - h["copy.jpg"]
    kept, removed = dedup.deduplicate([copy_path, other], [orig])
    assert kept == [other] and removed == [copy_path]


def test_hamming_matrix_matches_brute_force():
    import imagehash

    rng = np.random.default_rng(0)
    bits_a = rng.integers(0, 2, size=(37, 16, 16)).astype(bool)
    bits_b = bits_a[rng.integers(0, 37, size=23)].copy()
    flip = rng.random(bits_b.shape) < 0.03  # near copies
    bits_b ^= flip
    ha = [imagehash.ImageHash(b) for b in bits_a]
    hb = [imagehash.ImageHash(b) for b in bits_b]
    brute = np.array([[x - y for y in hb] for x in ha])
    packed_a = np.stack([np.packbits(b.ravel()) for b in bits_a])
    packed_b = np.stack([np.packbits(b.ravel()) for b in bits_b])
    blocks = list(dedup.hamming_matrix(packed_a, packed_b, max_bytes=1000))  # forces many blocks
    assert len(blocks) > 1
    assert np.array_equal(np.concatenate([d for _, d in blocks]), brute)
    pairs = dedup.find_duplicates(ha, hb, max_distance=12)
    expected = sorted((i, j, brute[i, j]) for i, j in zip(*np.nonzero(brute <= 12)))
    got = sorted((ha.index(c), hb.index(r), d) for c, r, d in pairs)
    assert len(got) == len(expected) > 0
    assert [d for *_, d in got] == [int(d) for *_, d in expected]


@pytest.mark.parametrize("flips", [0, 5, 12, 13, 40])
def test_dedup_threshold_is_inclusive(flips):
    import imagehash

    bits = np.random.default_rng(flips).integers(0, 2, size=(16, 16)).astype(bool)
    near = bits.copy().ravel()
    near[np.random.default_rng(99).permutation(256)[:flips]] ^= True
    ref, cand = imagehash.ImageHash(bits), imagehash.ImageHash(near.reshape(16, 16))
    assert ref - cand == flips
    kept, removed = dedup.deduplicate([cand], [ref], max_distance=12)
    assert (removed == [cand]) == (flips <= 12) and (kept == [cand]) == (flips > 12)
    pairs = dedup.find_duplicates([cand], [ref], max_distance=12)
    assert pairs == ([(cand, ref, flips)] if flips <= 12 else [])


# ----------------------------------------------------------------------------- confound audit


def _confound_fixture(tmp_path, n=10):
    recs = []
    for i in range(n):
        a = write_png(tmp_path / f"kid{i}.png", texture(100 + i, 48))  # small square, like Kermany-224
        recs.append(cxr.CXRRecord(a, "healthy", None, f"kid{i}", "kermany"))
        b = tmp_path / f"adult{i}.jpg"
        Image.fromarray(texture(200 + i, 64)[:, :48] // 2 + 100).save(b, "JPEG")  # 48 x 64, brighter
        recs.append(cxr.CXRRecord(b, "covid19", None, f"adult{i}", "hannover"))
    return recs


def test_image_geometry_features(tmp_path):
    recs = _confound_fixture(tmp_path, n=2)
    df = confound.image_geometry_features([r.path for r in recs])
    assert list(df["width"]) == [48, 48] * 2 and list(df["height"]) == [48, 64] * 2
    assert np.allclose(df["aspect"], df["width"] / df["height"])
    assert list(df["file_bytes"]) == [os.path.getsize(r.path) for r in recs]
    arr = np.asarray(Image.open(recs[0].path), dtype=float)
    assert df["mean_intensity"][0] == pytest.approx(arr.mean(), abs=1e-3)
    assert list(df["format"]) == ["PNG", "JPEG"] * 2


def test_confound_audit_detects_geometry_cue(tmp_path):
    recs = _confound_fixture(tmp_path)
    ct = write_png(tmp_path / "ct.png", texture(300, 40))  # one patient only: cannot be grouped-CV'd
    res = confound.confound_audit(recs + [cxr.CXRRecord(ct, "not_certain", "ct_slice", "scan1", "cc-ccii")], seed=0)
    assert res["classes"] == ["healthy", "covid19"] and res["excluded_classes"] == ["not_certain"]
    assert res["n_patients"] == 20 and res["n_images"] == 20
    assert res["accuracy"] == 1.0 and res["majority_accuracy"] == 0.5
    assert res["per_class_auc"] == {"healthy": 1.0, "covid19": 1.0}
    assert np.array(res["confusion"]).sum() == 20
    # the same images with labels shuffled across patients give no such separation
    rng = np.random.default_rng(0)
    labels = rng.permutation(["healthy", "covid19"] * 10)
    shuffled = [replace(r, label=str(lab)) for r, lab in zip(recs, labels)]
    table = confound.image_geometry_features([r.path for r in recs])
    assert confound.confound_audit(shuffled, seed=0, table=table)["balanced_accuracy"] < 0.9


# ----------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_shape_range_and_cam_identity(model):
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(1))
    model.train()
    cam = cxr_cam.grad_cam(model, x, "covid19")
    assert cam.shape == (64, 64) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0 and (cam.max() == 1.0 or cam.max() == 0.0)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    # independent check: for global-average-pooled ResNet, dy_c/dA_k = W[c, k] / (h w)
    model.eval()
    with torch.no_grad():
        f = x[None]
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            f = getattr(model, name)(f)
        h, w = f.shape[-2:]
        alpha = model.fc.weight[cxr.CLASS_INDEX["covid19"]] / (h * w)
        ref = torch.relu((alpha[None, :, None, None] * f).sum(1, keepdim=True))
        ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        ref = (ref / ref.max()).numpy()
    model.train()
    assert np.allclose(cam, ref, atol=1e-4)


def test_overlay_shape_and_blend():
    img = texture(3, 40)
    cam = np.linspace(0, 1, 20 * 20, dtype=np.float32).reshape(20, 20)
    out = cxr_cam.overlay(img, cam, alpha=0.5)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert np.array_equal(cxr_cam.overlay(Image.fromarray(img), cam, alpha=0.0), np.repeat(img[..., None], 3, 2))
    assert not np.array_equal(out[..., 0], out[..., 2])  # coloured


# ----------------------------------------------------------------------------- data mirror


def _mirror() -> Path:
    env = os.environ.get("REPRO_DATA_MIRROR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "mirror"


@pytest.mark.mirror
def test_mirror_records_and_images():
    root = _mirror()
    if not (root / "index.tsv").is_file():
        pytest.skip(f"data mirror not found at {root} (set REPRO_DATA_MIRROR)")
    recs = cxr.records_from_index(root / "index.tsv", root)
    counts = Counter((r.label, r.sublabel) for r in recs)
    assert counts[("healthy", None)] == 450
    assert counts[("pneumonia", "bacterial")] == 450 and counts[("pneumonia", "viral")] == 450
    assert counts[("covid19", None)] == 52 + 23 and counts[("not_certain", "ct_slice")] == 42
    first = {}
    for r in recs:
        first.setdefault(r.source, r)
    tf = cxr.build_transforms(350)
    for r in first.values():
        x, y = cxr.CXRDataset([r], tf)[0]
        assert x.shape == (3, 350, 350) and y == r.target
    split = cxr.patient_split(recs, seed=0)
    pats: dict = {}
    for r in split:
        pats.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in pats.values())


def test_ct_slice_records_render_not_certain_images(tmp_path):
    import pandas as pd

    from reprolib import cohort
    from reprolib.io import write_nifti
    from reprolib.memtrace import synthetic_chest
    from reprolib.volume import CTVolume

    rows = []
    for i in range(2):
        path = tmp_path / f"ct{i}.nii.gz"
        write_nifti(CTVolume(hu=synthetic_chest(20, 64, seed=i), spacing_mm=(2.0, 3.0, 3.0)), None, path)
        rows.append({"case_id": f"ds:p{i}", "label": "normal", "target": 0, "path": str(path), "kind": "nifti",
                     "dataset": "ds", "group": f"p/{i}"})
    index = cohort.preprocess_cohort(pd.DataFrame(rows), tmp_path / "cache", {"qc_lung_volume_ml": [1, 1e6]},
                                     tmp_path / "index.json", progress=False)
    index = cohort.load_index(tmp_path / "index.json")
    recs = cxr.ct_slice_records(index, tmp_path / "slices", per_volume=4)
    assert len(recs) == 8 and {r.label for r in recs} == {"not_certain"} and {r.sublabel for r in recs} == {"ct_slice"}
    assert {r.patient for r in recs} == {("ds", "p/0"), ("ds", "p/1")}
    ct = cohort.load_preprocessed(index.npz[0])["ct_u8"]  # 40 slices at 1 mm; 20-80 % -> 8, 16, 23, 31
    z = [int(r.path.stem) for r in recs[:4]]
    assert z == [8, 16, 23, 31]
    img = np.asarray(Image.open(recs[1].path))
    np.testing.assert_array_equal(img, ct[16])
    mtime = recs[0].path.stat().st_mtime_ns
    again = cxr.ct_slice_records(index, tmp_path / "slices", per_volume=4)  # same bytes: files kept
    assert [r.path for r in again] == [r.path for r in recs] and recs[0].path.stat().st_mtime_ns == mtime
