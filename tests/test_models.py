"""Tests for reprolib.models: sizes, shapes, initialisation, CAM weights, MAC counting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reprolib.errors import InputError
from reprolib.models import (
    Clf2DNet,
    DeCoVNet,
    UNet2D,
    channels_last,
    count_macs,
    count_parameters,
    linearised_cam_weights,
    model_summary,
    set_bn_eval,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def decov() -> DeCoVNet:
    torch.manual_seed(0)
    return DeCoVNet().eval()


# ---------------------------------------------------------------- U-Net
def test_unet_parameter_count():
    assert count_parameters(UNet2D()) == 839_506


@pytest.mark.parametrize("hw", [(64, 64), (50, 70)])  # 50x70: odd sizes exercise the padding
def test_unet_output_shape(hw):
    net = UNet2D().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *hw))
    assert out.shape == (2, 2, *hw)


def test_unet_macs_per_512_slice():
    # spec section 4 / 9: 7.75 GMAC per 512^2 slice
    assert count_macs(UNet2D(), (1, 1, 512, 512)) / 1e9 == pytest.approx(7.75, rel=0.01)


# ---------------------------------------------------------------- DeCoVNet size
def test_decovnet_parameter_counts(decov):
    assert count_parameters(decov) == 346_978
    # per-stage counts of the spec's layer table
    assert count_parameters(decov.stem) == 7_840 + 32
    assert count_parameters(decov.res1) == 5_440
    assert count_parameters(decov.res2) == 28_288
    assert [count_parameters(c) for c in decov.proclf_convs] == [221_248, 55_328, 27_680]
    assert count_parameters(decov.fc1) + count_parameters(decov.fc2) == 1_122
    # 9 active BN layers with 496 channels (992 running-statistic values)
    bns = [m for m in decov.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(bns) == 9 and sum(b.num_features for b in bns) == 496


def test_decovnet_interface(decov):
    convs = decov.proclf_convs
    assert [c.out_channels for c in convs] == [64, 32, 32]
    assert all(any(c is m for m in decov.proclf) for c in convs)
    assert (decov.fc1.in_features, decov.fc1.out_features) == (32, 32)
    assert (decov.fc2.in_features, decov.fc2.out_features) == (32, 2)


# ---------------------------------------------------------------- DeCoVNet shapes
TABLED_T100 = {  # spec section 5 layer table, input 1x2x100x224x336
    "stem.0": (1, 16, 100, 112, 168),
    "stem.3": (1, 16, 100, 56, 84),
    "res1": (1, 64, 100, 56, 84),
    "temporal_pool": (1, 64, 50, 56, 84),
    "res2.conv1": (1, 32, 50, 56, 84),
    "res2.conv2": (1, 32, 50, 28, 42),
    "res2": (1, 128, 50, 28, 42),
    "proclf.0": (1, 128, 16, 24, 36),
    "proclf.1": (1, 64, 16, 24, 36),
    "proclf.3": (1, 64, 4, 12, 18),
    "proclf.4": (1, 32, 4, 12, 18),
    "proclf.6": (1, 32, 1, 6, 9),
    "proclf.8": (1, 32, 1, 6, 9),
    "proclf.11": (1, 32),
    "fc1": (1, 32),
    "fc2": (1, 2),
}


def test_decovnet_tabled_shapes_t100(decov):
    rows = model_summary(decov, (1, 2, 100, 224, 336), depth=1)
    rows += model_summary(decov, (1, 2, 100, 224, 336), depth=2)
    got = {r["name"]: r["output_shape"] for r in rows}
    for name, shape in TABLED_T100.items():
        assert got[name] == shape, name
    top = [r["name"] for r in rows[:7]]
    assert top == ["stem", "res1", "temporal_pool", "res2", "proclf", "fc1", "fc2"]


@pytest.mark.slow
def test_decovnet_real_forward_t100(decov):
    x = torch.rand(1, 2, 100, 224, 336)
    with torch.no_grad():
        feats = decov.features(x)
        logits = decov.classify(feats)
    assert feats.shape == (1, 128, 50, 28, 42)
    assert logits.shape == (1, 2)


@pytest.mark.parametrize("t", [2, 3, 7, 40])
def test_decovnet_any_t(decov, t):
    x = torch.rand(2, 2, t, 64, 96)
    with torch.no_grad():
        feats = decov.features(x)
        out = decov(x)
    assert feats.shape == (2, 128, t // 2, 8, 12)
    assert out.shape == (2, 2)
    assert torch.allclose(out, decov.classify(feats))


def test_decovnet_rejects_t1_and_4d(decov):
    with pytest.raises(InputError, match="T=1"):
        decov(torch.rand(1, 2, 1, 64, 96))
    with pytest.raises(InputError, match="5D"):
        decov(torch.rand(1, 2, 64, 96))


def test_decovnet_initialisation():
    torch.manual_seed(1)
    net = DeCoVNet()
    for block in (net.res1, net.res2):
        assert torch.all(block.bn3.weight == 0)
        for bn in (block.bn1, block.bn2, block.shortcut_bn):
            assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    for conv in net.proclf_convs:
        assert torch.all(conv.bias == 0)
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_ch * 27)) for the first ProClf conv
    w = net.proclf_convs[0].weight
    assert w.std().item() == pytest.approx(np.sqrt(2 / (64 * 27)), rel=0.02)
    assert abs(w.mean().item()) < 1e-3
    for fc in (net.fc1, net.fc2):
        assert torch.all(fc.bias == 0)
    assert net.fc1.weight.std().item() == pytest.approx(0.01, rel=0.15)
    # bias-free stem and residual convs
    assert net.stem[0].bias is None and net.res2.conv2.bias is None


# ---------------------------------------------------------------- CAM weights
def test_linearised_cam_weights_match_independent_computation():
    torch.manual_seed(3)
    net = DeCoVNet()
    with torch.no_grad():  # non-trivial values everywhere
        for m in list(net.proclf_convs) + [net.fc1, net.fc2]:
            m.weight.normal_()
    mats = [np.einsum("oidhw->oi", c.weight.detach().double().numpy()) / 27 for c in net.proclf_convs]
    mats += [net.fc1.weight.detach().double().numpy(), net.fc2.weight.detach().double().numpy()]
    assert [m.shape for m in mats] == [(64, 128), (32, 64), (32, 32), (32, 32), (2, 32)]
    expected = np.linalg.multi_dot(mats[::-1]).T  # (128, 2)
    for target in (0, 1):
        w = linearised_cam_weights(net, target=target)
        assert w.shape == (128,) and w.dtype == torch.float32
        np.testing.assert_allclose(w.numpy(), expected[:, target], rtol=1e-4, atol=1e-6 * np.abs(expected).max())


# ---------------------------------------------------------------- 2DClfNet
def test_clf2dnet_stage_shapes_224x336():
    rows = model_summary(Clf2DNet(), (1, 2, 3, 224, 336))
    got = {r["name"]: r["output_shape"] for r in rows}
    assert got["stem"] == (3, 64, 56, 84)
    assert got["res1"] == (3, 128, 56, 84)
    assert got["pool"] == (3, 128, 28, 42)
    assert got["res2"] == (3, 128, 28, 42)
    assert got["convs"] == (3, 128, 28, 42)
    assert got["global_pool"] == (3, 128, 1, 1)
    assert got["fc"] == (1, 2)


def test_clf2dnet_output_chunking_and_slice_max():
    torch.manual_seed(0)
    net = Clf2DNet(slice_chunk=2).eval()
    x = torch.rand(2, 2, 5, 64, 96)
    with torch.no_grad():
        out = net(x)
        net.slice_chunk = 100
        out_one_chunk = net(x)
        out_perm = net(x[:, :, torch.tensor([4, 2, 0, 1, 3])])
        # slice-max pooling: the volume descriptor is the max of per-slice descriptors
        per_slice = torch.stack([net.slice_features(x[:, :, k]) for k in range(5)], dim=1)
        feats = net.features(x)
    assert out.shape == (2, 2)
    assert torch.allclose(out, out_one_chunk, atol=1e-5)
    assert torch.allclose(out, out_perm, atol=1e-5)
    assert torch.allclose(feats, per_slice.amax(dim=1), atol=1e-6)
    with torch.no_grad():  # volumes are independent: volume 0 alone gives the same logits
        assert torch.allclose(net(x[:1]), out[:1], atol=1e-5)


# ---------------------------------------------------------------- MACs
def test_count_macs_hand_computed_small_model():
    net = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(150, 3))
    # conv: 6*5*5 outputs x 9 taps x 4/2 inputs = 2700; linear: 150 x 3 = 450
    assert count_macs(net, (1, 4, 5, 5)) == 2700 + 450
    assert count_macs(net, (1, 4, 5, 5), device="cpu") == 2700 + 450
    assert count_macs(net, (2, 4, 5, 5)) == 2 * (2700 + 450)


def _decovnet_macs_by_hand(t: int, h: int = 224, w: int = 336) -> int:
    h2, w2, h4, w4, h8, w8, t2 = h // 2, w // 2, h // 4, w // 4, h // 8, w // 8, t // 2
    stem = 16 * t * h2 * w2 * 2 * 5 * 7 * 7
    res1 = 16 * t * h4 * w4 * (16 * 3 + 16 * 9) + 64 * t * h4 * w4 * (16 + 16)
    res2 = 32 * t2 * h4 * w4 * 64 * 3 + 32 * t2 * h8 * w8 * 32 * 9 + 128 * t2 * h8 * w8 * (32 + 64)
    proclf = 64 * 16 * 24 * 36 * 128 * 27 + 32 * 4 * 12 * 18 * 64 * 27 + 32 * 6 * 9 * 32 * 27
    return stem + res1 + res2 + proclf + 32 * 32 + 2 * 32


@pytest.mark.parametrize("t", [50, 100, 300])
def test_decovnet_macs(decov, t):
    macs = count_macs(decov, (1, 2, t, 224, 336))
    assert macs == _decovnet_macs_by_hand(t)
    assert macs / 1e9 == pytest.approx(0.1987 * t + 3.11, rel=0.01)  # spec section 9


def test_decovnet_stage_macs_t100(decov):
    macs = {r["name"]: r["macs"] / 1e9 for r in model_summary(decov, (1, 2, 100, 224, 336))}
    assert macs["stem"] == pytest.approx(14.75, rel=0.01)
    assert macs["res1"] == pytest.approx(2.41, rel=0.01)
    assert macs["res2"] == pytest.approx(2.71, rel=0.01)
    assert macs["proclf"] == pytest.approx(3.11, rel=0.01)


# ---------------------------------------------------------------- BN mode
def test_set_bn_eval():
    torch.manual_seed(0)
    net = DeCoVNet().eval()
    set_bn_eval(net, False)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(b.training for b in bns)
    assert not net.training and not net.proclf.training
    before = net.stem[1].running_mean.clone()
    with torch.no_grad():
        net(torch.rand(1, 2, 4, 64, 96))
    assert not torch.equal(before, net.stem[1].running_mean)  # batch statistics were used
    set_bn_eval(net, True)
    assert not any(b.training for b in bns)


# ----------------------------------------------------------------------------- fast inference
@pytest.mark.parametrize("variant", ["channels_last", "jit"])
def test_fast_inference_variants_match_eager(variant):
    """Each fp32 variant within 1e-4 of eager fp32, on depths other than the trace example's."""
    from reprolib.models import DeCoVNet, inference_runner, proclf_grids_for

    torch.manual_seed(0)
    net = DeCoVNet(proclf_grids=proclf_grids_for((64, 96)), fc_init="pytorch").eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, so that folding is exercised
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    eager = inference_runner(net, "eager")
    fast = inference_runner(net, variant, example=torch.rand(1, 2, 12, 64, 96))
    for t in (10, 23):
        x = torch.rand(2, 2, t, 64, 96)
        ref, out = eager(x), fast(x)
        assert out.shape == ref.shape == (2, 2)
        assert torch.allclose(out, ref, atol=1e-4, rtol=0), (variant, t, float((out - ref).abs().max()))
    with pytest.raises(InputError):
        fast(torch.rand(1, 2, 1, 64, 96))  # the eager input check still applies
    assert not net.training  # the model itself is untouched apart from eval()


def test_bf16_variant_runs_and_unknown_variant_is_refused():
    from reprolib.models import DeCoVNet, inference_runner, proclf_grids_for

    net = DeCoVNet(proclf_grids=proclf_grids_for((32, 48)))
    out = inference_runner(net, "bf16")(torch.rand(1, 2, 6, 32, 48))
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    with pytest.raises(ValueError, match="variant"):
        inference_runner(net, "int8")


def test_output_shape_on_meta_equals_a_real_forward():
    from reprolib.models import Clf2DNet, DeCoVNet, UNet2D, output_shape, proclf_grids_for

    for net, shape in ((DeCoVNet(proclf_grids=proclf_grids_for((32, 48))), (2, 2, 6, 32, 48)),
                       (Clf2DNet(), (1, 2, 3, 32, 48)), (UNet2D(), (3, 1, 40, 24))):
        with torch.no_grad():
            real = tuple(net.eval()(torch.rand(shape)).shape)
        assert output_shape(net, shape) == real


@pytest.mark.extended  # a TorchInductor compile: make test-extended (CI runs it)
def test_compile_variant_matches_eager():
    """torch.compile (inductor) within 1e-4 of eager fp32, BatchNorm and pooling included (a small
    3D network keeps the compile short; the benchmark checks DeCoVNet itself with --variants compile)."""
    import shutil

    from reprolib.models import inference_runner

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's CPU backend needs a C++ compiler (g++)")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 8, 3, padding=1, bias=False), torch.nn.BatchNorm3d(8),
                              torch.nn.ReLU(), torch.nn.AdaptiveMaxPool3d((2, 3, 3)), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 18, 2)).eval()
    net[1].running_mean.uniform_(-0.3, 0.3)
    net[1].running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 2, 6, 16, 24)
    ref = inference_runner(net, "eager")(x)
    out = inference_runner(net, "compile")(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=0), float((out - ref).abs().max())


def test_channels_last_keeps_values_and_parameters_and_restores_the_layout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.Flatten(1), nn.LazyLinear(2), nn.Unflatten(1, (2, 1, 1)),
                          nn.Conv2d(2, 3, 1))  # 5D and 4D weights in one model
    x = torch.randn(2, 2, 5, 6, 7)
    ref = model(x)
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with channels_last(model) as m:
        assert m is model
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert not model[0].weight.is_contiguous()
        assert model[4].weight.is_contiguous(memory_format=torch.channels_last)
        assert all(a is b for a, b in zip(params, model.parameters()))  # the optimiser still holds them
        out = model(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        out.sum().backward()
        opt.step()
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert not torch.allclose(model(x), ref)  # the step inside the block reached the parameters
    with channels_last(model, enabled=False):
        assert model[0].weight.is_contiguous()
