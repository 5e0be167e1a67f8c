"""Tests of reprolib.train: augmentation, datasets, fit/resume, checkpoints, inference."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reprolib import evaluate, modelfile, provenance
from reprolib.augment import (
    Compose,
    IntensityAugment,
    OfficialAugment,
    SeedAugment,
    affine_theta,
    make_augment,
    warp_volume,
)
from reprolib.errors import ChecksumError, ConfigError, InputError, VolumeError
from reprolib.modelfile import load_checkpoint, save_checkpoint
from reprolib.models import DeCoVNet, UNet2D
from reprolib.segment import segment_volume
from reprolib.train import History, TrainConfig, fit, fit_unet, predict_volumes
from reprolib.volume_data import VolumeDataset, class_weights, oversample_indices

SHAPE = (2, 8, 32, 48)


def seed_everything(seed: int) -> None:
    provenance.seed_everything(seed, deterministic=False)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_decovnet(seed: int = 0) -> DeCoVNet:
    seed_everything(seed)
    return DeCoVNet(width=4, proclf_grids=((2, 3, 3), (1, 2, 2), (1, 1, 1), (1, 1, 1)),
                    proclf_channels=(8, 8, 8))


def make_volume(rng: np.random.Generator, label: int, shape=SHAPE) -> np.ndarray:
    """CT noise in [0, 1] with an elliptical lung mask; label 1 adds a bright blob."""
    _, t, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    lung = (((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 < 1).astype(np.float32)
    ct = rng.uniform(0.0, 0.3, size=(t, h, w)).astype(np.float32)
    if label:
        ct[:, h // 3: h // 2, w // 3: w // 2] += 0.6
    return np.stack([np.clip(ct, 0, 1), np.broadcast_to(lung, (t, h, w))]).astype(np.float32)


def make_items(n: int, seed: int = 0, n_pos: int | None = None):
    rng = np.random.default_rng(seed)
    n_pos = n // 2 if n_pos is None else n_pos
    return [(make_volume(rng, int(i < n_pos)), int(i < n_pos), f"case{i}") for i in range(n)]


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, lr=1e-3, progress=False, max_threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ augmentation


def test_official_translation_is_an_integer_shift():
    x = torch.rand(SHAPE)
    aug = OfficialAugment()
    p = aug.neutral() | {"translate": (3, -2)}
    out = aug.apply(x, p)
    # output(y, x) = input(y + 2, x - 3); zeros where the source lies outside
    assert torch.allclose(out[:, :, :-2, 3:], x[:, :, 2:, :-3], atol=1e-5)
    assert float(out[:, :, :, :3].abs().max()) < 1e-5 and float(out[:, :, -2:, :].abs().max()) < 1e-5


def test_rotation_90_and_flip_match_torch():
    x = torch.rand((2, 3, 16, 16))
    x[1] = (x[1] > 0.5).float()
    rot = warp_volume(x, affine_theta((16, 16), angle_deg=90.0))
    assert torch.allclose(rot, torch.rot90(x, k=1, dims=(-2, -1)), atol=1e-5)  # counter-clockwise
    sa = SeedAugment()
    flipped = sa.apply(x, sa.neutral() | {"hflip": True})
    assert torch.allclose(flipped, torch.flip(x, dims=(-1,)), atol=1e-5)


@pytest.mark.parametrize("aug", [OfficialAugment(), SeedAugment()])
def test_augment_identity_shape_binary_and_same_transform_per_slice(aug):
    x = torch.from_numpy(make_volume(np.random.default_rng(1), 1))
    assert torch.allclose(aug.apply(x, aug.neutral()), x, atol=1e-5)
    same = x.clone()
    same[:, 1:] = same[:, :1]  # every slice identical
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):
        out = aug(same, gen)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert set(torch.unique(out[1]).tolist()) <= {0.0, 1.0}
        assert float(out[0].min()) >= 0.0 and float(out[0].max()) <= 1.0
        assert torch.equal(out[:, 1:], out[:, :1].expand_as(out[:, 1:]))
    # same generator seed -> same draw
    a = aug(x, torch.Generator().manual_seed(9))
    b = aug(x, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_official_parameter_ranges():
    aug = OfficialAugment()
    gen = torch.Generator().manual_seed(0)
    draws = [aug.sample(gen, hw=(224, 336)) for _ in range(2000)]
    ang = {d["angle"] for d in draws}
    assert ang == set(range(-10, 11))
    assert {d["shear"] for d in draws} == set(range(-10, 11))
    tx = [d["translate"][0] for d in draws]
    ty = [d["translate"][1] for d in draws]
    assert all(isinstance(v, int) for v in tx + ty)
    assert max(map(abs, tx)) <= round(0.1 * 336) and max(map(abs, ty)) <= round(0.1 * 224)
    assert max(tx) >= 30 and min(ty) <= -20  # spans the range
    assert {d["scale"] for d in draws} == {0.8, 0.9, 1.0, 1.1, 1.2}
    assert {d["brightness"] for d in draws} == {0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5}
    assert {d["contrast"] for d in draws} == {0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3}
    assert all("hflip" not in d for d in draws)  # official: no flip


def test_seed_parameter_ranges_and_flip_rate():
    aug = SeedAugment()
    gen = torch.Generator().manual_seed(0)
    draws = [aug.sample(gen) for _ in range(2000)]
    cs = np.array([d["crop_scale"] for d in draws])
    an = np.array([d["angle"] for d in draws])
    co = np.array([d["contrast"] for d in draws])
    assert cs.min() >= 0.7 and cs.max() <= 1.0 and cs.min() < 0.72 and cs.max() > 0.98
    assert an.min() >= -25 and an.max() <= 25 and an.min() < -24 and an.max() > 24
    assert co.min() >= 0.5 and co.max() <= 1.5
    flips = np.mean([d["hflip"] for d in draws])
    assert 0.45 < flips < 0.55


@pytest.mark.slow  # importing torchvision takes a few seconds
def test_intensity_matches_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand((2, 4, 10, 12))
    aug = IntensityAugment()
    out = aug.apply(x, {"brightness": 1.3, "contrast": 0.7})
    slices = x[0][:, None]  # (T, 1, H, W): torchvision applies each to one image
    ref = tvf.adjust_contrast(tvf.adjust_brightness(slices, 1.3), 0.7)[:, 0]
    assert torch.allclose(out[0], ref, atol=1e-6)
    assert torch.equal(out[1], x[1])  # mask untouched


def test_compose_and_make_augment():
    assert make_augment("none") is None
    assert isinstance(make_augment("seed"), SeedAugment)
    with pytest.raises(ConfigError):
        make_augment("mixup")
    c = Compose(IntensityAugment(), SeedAugment())
    x = torch.rand(SHAPE)
    assert torch.allclose(c.apply(x, c.neutral()), x, atol=1e-5)


# ---------------------------------------------------------------------- datasets


def test_oversample_makes_classes_equal():
    labels = [0] * 7 + [1] * 3
    idx = oversample_indices(labels, np.random.default_rng(0))
    counts = np.bincount(np.asarray(labels)[idx])
    assert counts.tolist() == [7, 7]
    assert sorted(set(idx)) == list(range(10)) and len(idx) == 14
    # a minority needing more than one extra copy
    idx = oversample_indices([0] * 9 + [1] * 2, np.random.default_rng(1))
    assert np.bincount(np.asarray([0] * 9 + [1] * 2)[idx]).tolist() == [9, 9]
    assert torch.allclose(class_weights([0, 0, 0, 1]), torch.tensor([4 / 6, 4 / 2]))


def test_volume_dataset_from_npz_and_errors(tmp_path):
    vol = make_volume(np.random.default_rng(0), 1)
    p = tmp_path / "a.npz"
    np.savez(p, x=vol)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=vol[0])
    ds = VolumeDataset([(p, 1, "a"), (bad, 0, "b"), (tmp_path / "missing.npz", 0, "c")])
    x, y, cid = ds[0]
    assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(vol)) and (y, cid) == (1, "a")
    with pytest.raises(VolumeError, match="bad.npz"):
        ds[1]
    with pytest.raises(InputError, match="missing.npz"):
        ds[2]
    assert ds.labels == [1, 0, 0]


# ------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip_and_tamper(tmp_path):
    model = tiny_decovnet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand((1,) + SHAPE)).sum().backward()
    opt.step()
    path = tmp_path / "ck" / "m.pt"
    digest = save_checkpoint(path, model, opt, epoch=4, metadata={"note": "x", "auc": 0.5})
    side = (tmp_path / "ck" / "m.pt.sha256").read_text().split()
    assert side == [digest, "m.pt"]
    other = tiny_decovnet(seed=1)
    opt2 = torch.optim.Adam(other.parameters(), lr=1e-3)
    ck = load_checkpoint(path, model=other, optimizer=opt2)
    assert state_equal(other.state_dict(), model.state_dict())
    assert ck["epoch"] == 4 and ck["metadata"]["note"] == "x" and ck["metadata"]["epoch"] == 4
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    load_checkpoint(path, expected_sha256=digest)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="m.pt"):
        load_checkpoint(path)
    with pytest.raises(ChecksumError):
        load_checkpoint(path, expected_sha256=digest)


class _Evil:
    pass


def test_load_refuses_arbitrary_pickles(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "covid-repro-checkpoint/1", "obj": _Evil()}, p)
    with pytest.raises(InputError, match="evil.pt"):
        load_checkpoint(p, verify=False)
    with pytest.raises(InputError, match="sidecar"):
        load_checkpoint(p)


# ------------------------------------------------------------------------- fit


def test_one_step_changes_weights_and_runs_are_bitwise_identical():
    items = make_items(4)
    results = []
    for _ in range(2):
        model = tiny_decovnet()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        hist = fit(model, VolumeDataset(items), None, cfg(epochs=1))
        results.append(model.state_dict())
        assert len(hist.train_loss) == 1 and math.isfinite(hist.train_loss[0])
    assert not torch.equal(init["stem.0.weight"], results[0]["stem.0.weight"])
    assert not torch.equal(init["fc2.weight"], results[0]["fc2.weight"])
    assert state_equal(results[0], results[1])


class _Crash(VolumeDataset):
    """Raises after ``limit`` loads, to simulate an interrupted run."""

    def __init__(self, items, limit):
        super().__init__(items)
        self.limit, self.calls = limit, 0

    def load(self, i, generator=None, augment=True):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt("simulated interruption")
        return super().load(i, generator, augment)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    train, val = make_items(4, seed=0, n_pos=1), make_items(2, seed=1)
    c = dict(epochs=3, validate_every=1, augment="official")
    ref = tiny_decovnet()
    h_ref = fit(ref, VolumeDataset(train), VolumeDataset(val), cfg(checkpoint_dir=tmp_path / "a", **c))

    model = tiny_decovnet()
    with pytest.raises(KeyboardInterrupt):  # oversampled: 6 steps per epoch; dies in epoch 2
        fit(model, _Crash(train, limit=8), VolumeDataset(val), cfg(checkpoint_dir=tmp_path / "b", **c))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    model = tiny_decovnet(seed=7)  # different init: everything must come from last.pt
    h = fit(model, VolumeDataset(train), VolumeDataset(val), cfg(checkpoint_dir=tmp_path / "b", **c))
    assert state_equal(model.state_dict(), ref.state_dict())
    assert h.resumed_from_epoch == 1 and h.epoch == [1, 2, 3]
    assert h.train_loss == h_ref.train_loss and h.val_auc == h_ref.val_auc
    assert h.best_epoch == h_ref.best_epoch
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    i = h_ref.epoch.index(h_ref.best_epoch)
    assert best["epoch"] == h_ref.best_epoch
    assert max(v for v in h_ref.val_auc) == h_ref.val_auc[i]
    # a finished run resumes to a no-op; a changed configuration is refused
    fit(model, VolumeDataset(train), VolumeDataset(val), cfg(checkpoint_dir=tmp_path / "b", **c))
    assert state_equal(model.state_dict(), ref.state_dict())
    with pytest.raises(ConfigError, match="last.pt"):
        fit(model, VolumeDataset(train), None, cfg(checkpoint_dir=tmp_path / "b", **(c | {"lr": 1e-4})))


def test_history_roundtrip_and_auc_helpers():
    h = History()
    h.append(1, 0.5, 1.0)
    h.append(2, 0.4, 1.0, val_loss=0.3, val_auc=0.75)
    back = History.from_dict(h.to_dict())
    assert back.epoch == [1, 2] and math.isnan(back.val_auc[0]) and back.val_auc[1] == 0.75
    assert math.isnan(evaluate.roc_auc([1, 1, 1], [0.2, 0.4, 0.9], single_class=float("nan")))
    assert evaluate.roc_auc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], single_class=float("nan")) == 0.75  # 3 of 4 pairs ordered


def test_model_selection_rule():
    from reprolib.train import _better

    nan = float("nan")
    assert _better((0.8, 0.5), None)
    assert _better((0.9, 0.7), (0.8, 0.1))  # higher AUC wins
    assert _better((0.8, 0.4), (0.8, 0.5)) and not _better((0.8, 0.6), (0.8, 0.5))  # tie: lower loss
    assert _better((0.5, 0.9), (nan, 0.1))  # an undefined AUC loses to any number
    assert _better((nan, 0.2), (nan, 0.3)) and not _better((nan, 0.4), (nan, 0.3))


# ------------------------------------------------------------------- inference


def test_predict_volumes_probabilities_and_bn_modes():
    model = tiny_decovnet()
    with torch.no_grad():  # non-trivial running statistics and BN weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = VolumeDataset(make_items(3))
    y, p, ids, secs = predict_volumes(model, ds)
    assert y.tolist() == [1, 0, 0] and ids == ["case0", "case1", "case2"] and len(secs) == 3
    assert np.all((p >= 0) & (p <= 1))
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(torch.stack([ds[i][0] for i in range(3)])), 1)[:, 1].numpy()
    np.testing.assert_allclose(p, ref, atol=1e-5)
    _, p_batch, _, _ = predict_volumes(model, ds, bn_eval=False)
    assert np.all((p_batch >= 0) & (p_batch <= 1))
    assert np.max(np.abs(p_batch - p)) > 1e-4
    assert state_equal(model.state_dict(), before)  # running stats restored


def test_segment_volume_matches_manual_argmax():
    seed_everything(0)
    unet = UNet2D(widths=(4, 4, 4, 4, 4))
    ct = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32), dtype=np.uint8)
    mask = segment_volume(unet, ct, batch=2)
    assert mask.shape == ct.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    unet.eval()
    with torch.no_grad():
        ref = unet(torch.from_numpy(ct).float()[:, None] / 255).argmax(1).numpy()
    assert np.array_equal(mask, ref)
    small = segment_volume(unet, ct, size=(16, 16))
    assert small.shape == ct.shape


@pytest.mark.slow
def test_fit_unet_learns_threshold_toy(tmp_path):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    vols = []
    for _ in range(4):  # smooth random fields; "lung" = CT > 0.5
        f = ndimage.gaussian_filter(rng.random((20, 32, 32)), (0, 2, 2))
        ct = (255 * (f - f.min()) / (f.max() - f.min())).astype(np.uint8)
        vols.append((ct, (ct > 127).astype(np.uint8)))
    seed_everything(0)
    unet = UNet2D(widths=(4, 8, 8, 8, 8))
    # augment="none": brightness/contrast would move the CT > 0.5 boundary the toy labels follow
    h = fit_unet(unet, vols[:3], cfg(epochs=12, lr=1e-2, validate_every=3, checkpoint_dir=tmp_path,
                                     augment="none"),
                 slices_per_step=8, val_volumes=vols[3:])
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    miou = [v for v in h.val_miou if not math.isnan(v)]
    assert len(miou) == 4 and miou[-1] > miou[0] + 0.3
    assert miou[-1] > 0.65 and h.val_dice[-1] > 0.65  # eval-mode BN lags after 36 steps
    best = h.epoch[int(np.nanargmax(h.val_miou))]
    assert h.best_epoch == best and load_checkpoint(tmp_path / "best.pt")["epoch"] == best
    # the mask predicted by segment_volume agrees with the toy rule
    pred = segment_volume(unet, vols[3][0])
    assert np.mean(pred == vols[3][1]) > 0.8
    # the downsampled working size trains too
    h2 = fit_unet(UNet2D(widths=(4, 4, 4, 4, 4)), vols[:1], cfg(epochs=1, lr=1e-2), slices_per_step=4,
                  downsample=2)
    assert math.isfinite(h2.train_loss[0])


@pytest.mark.parametrize("die_at", ["two-digest sidecar", "file moved", "final sidecar"])
def test_checkpoint_replacement_interrupted_at_any_step_stays_loadable(tmp_path, monkeypatch, die_at):
    """A kill between the writes of save_checkpoint leaves a file that its sidecar names."""
    net_a, net_b = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        net_b.weight.add_(1.0)
    path = tmp_path / "last.pt"
    modelfile.save_checkpoint(path, net_a, epoch=1)
    real_write, real_replace = modelfile.atomic_write, modelfile.os.replace
    calls = {"write": 0}

    def write(p, fn):  # calls in save: 1 temp file, 2 two-digest sidecar, 3 final sidecar
        calls["write"] += 1
        if (die_at, calls["write"]) in (("two-digest sidecar", 2), ("final sidecar", 3)):
            raise KeyboardInterrupt("killed")
        return real_write(p, fn)

    def replace(src, dst):
        if die_at == "file moved" and Path(dst) == path:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(modelfile, "atomic_write", write)
    monkeypatch.setattr(modelfile.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        modelfile.save_checkpoint(path, net_b, epoch=2)
    monkeypatch.undo()
    ck = modelfile.load_checkpoint(path)  # verified against the sidecar
    expect = 2 if die_at == "final sidecar" else 1
    assert ck["epoch"] == expect
    assert torch.equal(ck["model"]["weight"], (net_b if expect == 2 else net_a).weight.detach())
    modelfile.save_checkpoint(path, net_b, epoch=3)  # the next save cleans up: one digest again
    assert len(modelfile.sidecar_digests(path)) == 1 and modelfile.load_checkpoint(path)["epoch"] == 3
