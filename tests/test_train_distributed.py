"""Data-parallel training: 2-process ``torchrun`` (gloo, CPU) against one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reprolib import distributed, modelfile, train, volume_data

pytestmark = pytest.mark.extended  # two processes per test: make test-extended (CI runs it)

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(cmd: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(phantom_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    args = ["--cohort", str(phantom_cohort), "--batch", "2", "--micro-batch", "1", "--epochs", "2"]
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(WORKER), "--out", str(base / "ddp"), *args], base / "ddp")
    _run([sys.executable, str(WORKER), "--out", str(base / "single"), *args], base / "single")
    load = lambda d, r: (torch.load(base / d / f"rank{r}.pt", weights_only=True),  # noqa: E731
                         json.loads((base / d / f"history_rank{r}.json").read_text()))
    return {"ddp": [load("ddp", 0), load("ddp", 1)], "single": load("single", 0), "base": base}


def test_both_ranks_hold_identical_weights(runs):
    (w0, h0), (w1, h1) = runs["ddp"]
    assert h0["world"] == h1["world"] == 2
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"rank 0 and rank 1 differ in {k}"
    assert h0["train_loss"] == h1["train_loss"]


def test_loss_and_weights_match_single_process_with_same_global_batch(runs):
    (w_ddp, h_ddp), _ = runs["ddp"]
    w_one, h_one = runs["single"]
    assert h_one["world"] == 1 and len(h_ddp["train_loss"]) == len(h_one["train_loss"]) == 2
    # per-epoch mean training loss: same volumes, same augmentation draws, same global batches
    np.testing.assert_allclose(h_ddp["train_loss"], h_one["train_loss"], rtol=1e-4, atol=1e-6)
    # eval-mode validation uses the merged BatchNorm statistics: equal to the single process's
    np.testing.assert_allclose(h_ddp["val_loss"], h_one["val_loss"], rtol=1e-4, atol=1e-6)
    worst = max(float((w_ddp[k].double() - w_one[k].double()).abs().max()) for k in w_one)
    print(f"DDP (2 ranks) vs 1 process, global batch 2: train loss {h_ddp['train_loss']} vs {h_one['train_loss']}, "
          f"max |weight difference| {worst:.2e}")
    for k in w_one:
        if w_one[k].is_floating_point():
            np.testing.assert_allclose(w_ddp[k].numpy(), w_one[k].numpy(), rtol=1e-3, atol=1e-5, err_msg=k)
        else:
            assert torch.equal(w_ddp[k], w_one[k]), k
    # the engine's checkpoints come from rank 0 only and hold those weights
    ck = modelfile.load_checkpoint(runs["base"] / "ddp" / "ckpt" / "last.pt")
    assert ck["epoch"] == 2
    for k, v in ck["model"].items():
        assert torch.equal(v, w_ddp[k])


def test_batch_must_split_evenly_over_ranks(monkeypatch):
    from reprolib import models
    from reprolib.errors import ConfigError

    monkeypatch.setattr(train, "dist_context", lambda: distributed.DistContext(world=3, rank=0))
    monkeypatch.setattr(train, "wrap_ddp", lambda model, dev, ctx: model)
    x = torch.zeros(2, 4, 32, 48)
    data = volume_data.VolumeDataset([(x, 0, "a"), (x, 1, "b")])
    cfg = train.TrainConfig(epochs=1, batch=2, augment="none", progress=False)
    with pytest.raises(ConfigError, match="batch=2 .* multiple of the 3 data-parallel ranks"):
        train.fit(models.DeCoVNet(proclf_grids=models.proclf_grids_for((32, 48))), data, None, cfg)
