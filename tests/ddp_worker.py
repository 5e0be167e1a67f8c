"""A few DeCoVNet steps on a saved phantom cohort, alone or under ``torchrun`` (gloo, CPU).

    python tests/ddp_worker.py --cohort C.npz --out DIR [--batch 2 --micro-batch 1 --epochs 2]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py ...

Every rank writes its final weights and buffers (``rank<r>.pt``) and its history
(``history_rank<r>.json``); rank 0 also keeps the engine's checkpoints in ``DIR/ckpt``.
Used by tests/test_train_distributed.py; not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reprolib import cohort, distributed, models, provenance, train, volume_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(1)
    ctx = distributed.init_distributed("cpu")
    items, _, folds = cohort.load_classifier_cohort(args.cohort)
    tr, te = folds[0]
    hw = tuple(items[0][0].shape[-2:])
    provenance.seed_everything(0, deterministic=False)
    net = models.DeCoVNet(proclf_grids=models.proclf_grids_for(hw), fc_init="pytorch")
    cfg = train.TrainConfig(epochs=args.epochs, lr=1e-3, batch=args.batch, micro_batch=args.micro_batch,
                            augment="official", seed=0, device="cpu", validate_every=1, progress=False,
                            checkpoint_dir=args.out / "ckpt",
                            channels_last=False)  # the layout DDP trains in, also for the 1-process run compared with it
    hist = train.fit(net, volume_data.VolumeDataset([items[int(i)] for i in tr]),
                     volume_data.VolumeDataset([items[int(i)] for i in te]), cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, args.out / f"rank{ctx.rank}.pt")
    (args.out / f"history_rank{ctx.rank}.json").write_text(json.dumps({"world": ctx.world, **hist.to_dict()}))


if __name__ == "__main__":
    main()
