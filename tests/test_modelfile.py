"""Model files: every network kind is rebuilt from its file alone, verified before loading."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from reprolib import modelfile, models
from reprolib.errors import ChecksumError, ConfigError, InputError


def _kinds():
    return {
        "UNet2D": lambda: models.UNet2D(widths=(8, 16, 16, 32, 32)),
        "DeCoVNet": lambda: models.DeCoVNet(proclf_grids=models.proclf_grids_for((32, 48)), fc_init="pytorch"),
        "Clf2DNet": lambda: models.Clf2DNet(width=32, slice_chunk=8),
        "ResNet50": lambda: models.resnet50(3),
    }


def test_the_registry_names_every_kind_the_project_saves():
    assert sorted(modelfile.KINDS) == sorted(_kinds())


@pytest.mark.parametrize("kind", sorted(_kinds()))
def test_each_kind_loads_from_its_file_without_constructor_arguments(kind, tmp_path):
    torch.manual_seed(0)
    net = _kinds()[kind]()
    with torch.no_grad():  # weights no fresh network would have
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"{kind}.pt"
    sha = modelfile.save_model(path, net, {"note": kind})
    assert (tmp_path / f"{kind}.pt.sha256").read_text().split()[0] == sha
    loaded, meta = modelfile.load_model(path)
    assert type(loaded) is type(net) and not loaded.training and meta["note"] == kind
    assert loaded.init_kwargs == net.init_kwargs
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    shape = {"UNet2D": (1, 1, 32, 32), "DeCoVNet": (1, 2, 4, 32, 48), "Clf2DNet": (1, 2, 3, 32, 48),
             "ResNet50": (1, 3, 64, 64)}[kind]
    x = torch.randn(*shape)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_a_wrong_digest_or_an_unknown_network_is_refused(tmp_path):
    net = models.UNet2D(widths=(8, 16, 16, 32, 32))
    path = tmp_path / "u.pt"
    modelfile.save_model(path, net)
    with pytest.raises(ChecksumError, match="u.pt"):
        modelfile.load_model(path, expected_sha256="0" * 64)
    with pytest.raises(ConfigError, match="not a model kind"):
        modelfile.save_model(tmp_path / "lin.pt", nn.Linear(2, 2))
    modelfile.save_checkpoint(tmp_path / "lin.pt", nn.Linear(2, 2))  # an engine checkpoint of anything
    with pytest.raises(InputError, match="does not say which network"):
        modelfile.load_model(tmp_path / "lin.pt")


def test_weights_held_channels_last_are_saved_contiguous(tmp_path):
    net = models.UNet2D(widths=(8, 16, 16, 32, 32))
    modelfile.save_model(tmp_path / "a.pt", net)
    with models.channels_last(net):
        modelfile.save_model(tmp_path / "b.pt", net)
    ck = modelfile.load_checkpoint(tmp_path / "b.pt")
    assert all(t.is_contiguous() for t in ck["model"].values())
    ref = modelfile.load_checkpoint(tmp_path / "a.pt")["model"]
    assert all(torch.equal(ref[k], v) for k, v in ck["model"].items())
