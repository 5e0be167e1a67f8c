"""``repro``: one console command per stage.

    repro run --profile P [--schedule NAME] [--only NN] [--from NN] [--force]
    repro book [--profile P]
    repro publish [--profile P] [--build] [--remote origin] [--branch gh-pages] [--no-push]
    repro data fetch|verify --profile P [--dry-run]
    repro data mini-archives DIR        (the paper profile's datasets in miniature, for --schedule smoke)
    repro data build-manifests --index PATH
    repro predict ct PATH|FOLDER [--list FILE] [--spacing Z,Y,X] [--speed S] | repro predict cxr IMAGE  [--profile P] [--out DIR]
    repro serve [--profile P] [--host 127.0.0.1] [--port 8000]
    repro retrain cxr --new-data DIR [--holdout DIR] [--profile P]
    repro train decovnet|clf2d --cohort NPZ --out DIR [--fold K]   (also under torchrun)
    repro bench [--quick] [--only NAME]

Paths come from arguments or the environment (``REPRO_DATA_DIR``,
``REPRO_DATA_MIRROR``, ``REPRO_WORK_DIR``, ``REPRO_RESULTS_DIR``).
Exit codes: 0 success, 1 a stage failed, 2 bad usage or configuration.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import config
from .errors import InputError, ReproError
from .predict import SPEEDS


def _profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.PROFILES,
                   help="synthetic | sample | paper (default: %(default)s)")
    p.add_argument("--schedule", default=None, metavar="NAME",
                   help="a named schedule of the profile, e.g. the paper profile's smoke (sets REPRO_SCHEDULE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute the notebooks in order with papermill (cached)")
    _profile_arg(p)
    p.add_argument("--only", action="append", metavar="NN", help="run only notebook NN (repeatable)")
    p.add_argument("--from", dest="start", metavar="NN", help="run notebook NN and all after it")
    p.add_argument("--force", action="store_true", help="ignore the execution cache")
    p.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    p.add_argument("--device", default=None, help="override the profile's device (cpu, cuda)")
    p.add_argument("--quiet", action="store_true", help="do not stream cell output to the log")

    p = sub.add_parser("book", help="build the HTML book from the last successful run")
    _profile_arg(p)
    p.add_argument("--builder", default="html")

    p = sub.add_parser("publish", help="commit the built book to a gh-pages branch and push it (ghp-import)")
    _profile_arg(p)
    p.add_argument("--build", action="store_true", help="run the notebooks and build the book first")
    p.add_argument("--remote", default="origin")
    p.add_argument("--branch", default="gh-pages")
    p.add_argument("--no-push", action="store_true", help="commit the branch locally only")

    p = sub.add_parser("data", help="fetch, verify or rebuild data manifests")
    dsub = p.add_subparsers(dest="data_command", required=True)
    for name, help_ in (("fetch", "download/copy and verify every file of a profile"),
                        ("verify", "re-hash every cached file of a profile")):
        q = dsub.add_parser(name, help=help_)
        _profile_arg(q)
        q.add_argument("--data-dir", type=Path, default=None, help="cache (default $REPRO_DATA_DIR)")
        if name == "fetch":
            q.add_argument("--mirror", type=Path, default=None, help="mirror (default $REPRO_DATA_MIRROR)")
            q.add_argument("--no-download", action="store_true", help="use only cache and mirror")
            q.add_argument("--dry-run", action="store_true", help="list what would be fetched and the manual steps")
    q = dsub.add_parser("mini-archives", help="write miniature archives of the paper profile's datasets "
                                              "in their real layouts (phantoms) for --schedule smoke")
    q.add_argument("dir", type=Path, help="the data folder to write into (then REPRO_DATA_DIR=DIR)")
    q.add_argument("--per-class", type=int, default=3)
    q = dsub.add_parser("build-manifests", help="regenerate data_manifests/ from a mirror index.tsv")
    q.add_argument("--index", type=Path, required=True, help="path of the mirror's index.tsv")
    q.add_argument("--out", type=Path, default=None)

    p = sub.add_parser("predict", help="run the book's models on your own files")
    p.add_argument("kind", choices=("ct", "cxr"), help="ct: DICOM folder, NIfTI or PNG stack; cxr: PNG/JPEG image")
    p.add_argument("path", type=Path, nargs="?",
                   help="one scan or image; for ct also a folder of scans (each sub-folder or NIfTI file a scan)")
    _profile_arg(p)
    p.add_argument("--out", type=Path, default=Path("repro-predictions"),
                   help="folder for masks, heat map and report (default: %(default)s); "
                        "for several scans one sub-folder each and summary.csv/.json")
    p.add_argument("--list", type=Path, default=None, dest="scan_list",
                   help="ct: a text file naming one scan per line (relative to the file's folder)")
    p.add_argument("--spacing", type=_spacing_arg, default=None, metavar="Z,Y,X",
                   help="ct: voxel spacing in mm for PNG stacks, whose files carry none (e.g. 1.0,0.7,0.7)")
    p.add_argument("--speed", choices=tuple(SPEEDS), default="exact",
                   help="ct: how the lung U-Net runs: reference (eager fp32), exact (frozen graph, same "
                        "mask; default), fast (at most 256 px, bf16 where native: a slightly different mask, "
                        "several times faster; its Dice is in the Performance chapter)")

    p = sub.add_parser("serve", help="web page and JSON API for the book's models (FastAPI + uvicorn)")
    _profile_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("retrain", help="fine-tune on newly validated images; promote only if not worse")
    p.add_argument("kind", choices=("cxr",))
    p.add_argument("--new-data", type=Path, required=True, help="folder of class sub-folders (covid19/, ...)")
    p.add_argument("--holdout", type=Path, default=None,
                   help="fixed held-out folder of class sub-folders (default: the build's validation split)")
    _profile_arg(p)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed loss of macro F1 / COVID recall")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("train", help="train DeCoVNet or 2DClfNet on a saved classifier cohort "
                                     "(single process, or data-parallel under torchrun)")
    p.add_argument("kind", choices=("decovnet", "clf2d"))
    p.add_argument("--cohort", type=Path, required=True,
                   help="classifier cohort .npz written by notebook 04 (<work>/classifier_cohort.npz)")
    p.add_argument("--out", type=Path, required=True, help="folder for last.pt, best.pt and history.json")
    p.add_argument("--fold", default="all", help="train on fold K's training cases and validate on its "
                                                 "held-out ones, or 'all' (every case, no validation)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: official 1e-5)")
    p.add_argument("--batch", type=int, default=1, help="volumes per optimiser step over all ranks")
    p.add_argument("--micro-batch", type=int, default=1, help="volumes per forward pass (default 1)")
    p.add_argument("--augment", default="official", choices=("official", "seed", "none"))
    p.add_argument("--fc-init", default="official", choices=("official", "pytorch"))
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (under torchrun: this rank's GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-every", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("bench", help="benchmarks: inference, preprocessing, pipeline, book rebuild (JSON)")
    from .bench import add_arguments

    add_arguments(p)
    return parser


def _cmd_bench(args) -> int:
    from . import bench

    return bench.run_from_args(args)


def _cmd_train(args) -> int:
    from . import cohort, distributed, models, provenance, train, volume_data
    from .errors import ConfigError

    ctx = distributed.init_distributed(args.device)
    items, _, folds = cohort.load_classifier_cohort(args.cohort)
    if args.fold == "all":
        tr, te = list(range(len(items))), []
    else:
        k = int(args.fold) if str(args.fold).isdigit() else -1
        if not 0 <= k < len(folds):
            raise ConfigError(args.cohort, f"fold {args.fold!r} not in this cohort (folds 0..{len(folds) - 1} or 'all')")
        tr, te = (list(map(int, f)) for f in folds[k])
    hw = tuple(int(v) for v in items[0][0].shape[-2:])
    provenance.seed_everything(args.seed, deterministic=False)
    if args.kind == "decovnet":
        net = models.DeCoVNet(proclf_grids=models.proclf_grids_for(hw), fc_init=args.fc_init)
    else:
        net = models.Clf2DNet(fc_init=args.fc_init)
    cfg = train.TrainConfig(epochs=args.epochs, lr=args.lr, batch=args.batch, micro_batch=args.micro_batch,
                            augment=args.augment, seed=args.seed, device=args.device,
                            validate_every=args.validate_every, checkpoint_dir=args.out,
                            progress=not args.no_progress and ctx.is_main)
    val = volume_data.VolumeDataset([items[i] for i in te]) if te else None
    hist = train.fit(net, volume_data.VolumeDataset([items[i] for i in tr]), val, cfg)
    if ctx.is_main:
        from .files import atomic_write_text

        doc = {"kind": args.kind, "cohort": str(args.cohort), "fold": args.fold, "world_size": ctx.world,
               "config": cfg.to_dict(), "history": hist.to_dict()}
        atomic_write_text(args.out / "history.json", json.dumps(doc, indent=1, default=str) + "\n")
        print(json.dumps({"world_size": ctx.world, "epochs": hist.epoch[-1:] or [0],
                          "train_loss": hist.train_loss[-1:], "val_auc": hist.val_auc[-1:],
                          "last": hist.last_path, "best": hist.best_path}, default=str))
    return 0


def _spacing_arg(text: str) -> tuple[float, float, float]:
    from .io import check_spacing

    parts = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    try:
        return check_spacing([float(t) for t in parts])
    except (ValueError, InputError) as exc:
        raise argparse.ArgumentTypeError(f"--spacing {text!r}: give three numbers Z,Y,X in mm, e.g. 1.0,0.7,0.7 "
                                         f"({getattr(exc, 'problem', exc)})") from None


def _cmd_predict_ct_batch(args, scans_: list[Path]) -> int:
    from . import predict, scans

    for p in scans_:  # every scan checked before the first heavy step; problems go into the summary
        try:
            scans.check_scan(p, args.spacing)
        except InputError as exc:
            print(f"repro predict ct: will fail: {exc}", file=sys.stderr)
    card = predict.ct_card(args.profile)
    unet, net = predict.load_ct_models(card)
    rows = predict.predict_ct_batch(unet, net, scans_, card, args.out, spacing_mm=args.spacing, speed=args.speed)
    failed = [r for r in rows if r["status"] != "ok"]
    for r in rows:
        what = (f"p(COVID) {r['p_covid']:.3f}, lung {r['lung_ml']:.0f} ml" + (" (done before)" if r["reused"] else "")
                if r["status"] == "ok" else r["error"])
        print(f"{r['status']:6s} {r['id']}: {what}")
    print(f"{len(rows) - len(failed)} ok, {len(failed)} failed; summary: {args.out / 'summary.csv'}")
    print(predict.DISCLAIMER, file=sys.stderr)
    return 1 if failed else 0


def _cmd_predict(args) -> int:
    from . import predict, scans

    if args.kind == "ct" and args.scan_list is not None:
        if args.path is not None:
            raise InputError(args.path, "give either a path or --list, not both")
        return _cmd_predict_ct_batch(args, scans.read_scan_list(args.scan_list))
    if args.path is None:
        raise InputError(None, f"repro predict {args.kind}: no input given" + (" (a path or --list FILE)" if args.kind == "ct" else ""))
    if args.kind == "ct" and scans.is_batch_folder(args.path):
        return _cmd_predict_ct_batch(args, scans.list_scans(args.path))
    if args.kind == "cxr":
        card = predict.cxr_card(args.profile)
        out = predict.predict_cxr(predict.load_cxr_model(card), args.path, card, args.out)
        summary = {k: out[k] for k in ("file", "prediction", "probabilities", "seconds")}
        summary.update(heatmap=str(out["heatmap"]), report=str(out["report"]))
    else:
        card = predict.ct_card(args.profile)
        unet, net = predict.load_ct_models(card)
        out = predict.predict_ct(unet, net, args.path, card, args.out, spacing_mm=args.spacing, speed=args.speed)
        summary = {k: out[k] for k in ("file", "p_covid", "prediction", "lung_ml", "lesion_ml", "seconds")}
        summary.update({k: str(out[k]) for k in ("lung_nifti", "lesion_nifti", "report", "report_md")})
    print(json.dumps(summary, indent=2))
    print(predict.DISCLAIMER, file=sys.stderr)
    return 0


def _cmd_serve(args) -> int:
    import uvicorn

    from . import serve

    app = serve.app_from_build(args.profile)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"repro serve: warning: listening on {args.host}; uploads are medical images and this is a "
              "research tool without authentication", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def _cmd_retrain(args) -> int:
    from . import predict, retrain

    card = predict.cxr_card(args.profile)
    new = retrain.labelled_folder(args.new_data)
    if args.holdout is not None:
        holdout = retrain.labelled_folder(args.holdout)
    else:  # the build's own validation images, from the split notebook 07 saved
        holdout = retrain.default_holdout(args.profile, config.work_dir(args.profile))
    entry = retrain.retrain_cxr(config.work_dir(args.profile), card, new, holdout, epochs=args.epochs,
                                seed=args.seed, tolerance=args.tolerance)
    print(json.dumps({k: entry[k] for k in ("promoted", "reason", "parent_sha256", "candidate_sha256", "metrics")},
                     indent=2))
    return 0


def _cmd_run(args) -> int:
    from . import runner

    report = runner.run(args.profile, only=args.only, start=args.start, force=args.force,
                        seed=args.seed, device=args.device, log_output=not args.quiet)
    return 0 if report.ok else 1


def _cmd_book(args) -> int:
    from . import bookbuild

    gen = bookbuild.prepare_book(args.profile)
    print(f"book sources for profile {args.profile} in {gen}")
    return bookbuild.build_book(builder=args.builder)


def _cmd_publish(args) -> int:
    from . import bookbuild, publish, runner

    if args.build:
        if not runner.run(args.profile).ok:
            return 1
        bookbuild.prepare_book(args.profile)
        if bookbuild.build_book() != 0:
            return 1
    commit = publish.publish(remote=args.remote, branch=args.branch, push=not args.no_push)
    where = "committed" if args.no_push else f"pushed to {args.remote}"
    print(f"book {where}: branch {args.branch} at {commit[:12]}")
    return 0


def _cmd_data(args) -> int:
    from . import data

    if args.data_command == "mini-archives":
        from . import mini_archives

        written = mini_archives.write(args.dir, per_class=args.per_class)
        print(f"miniature archives in {args.dir}: " + ", ".join(f"{k} {v}" for k, v in written.items()))
        return 0
    if args.data_command == "fetch" and _full_data(args.profile):
        from . import full_data

        full_data.fetch(args.profile, args.data_dir, args.mirror, download=not args.no_download, dry_run=args.dry_run)
        return 0
    if args.data_command == "fetch" and args.dry_run:
        rows = [(m.dataset, len(m.files), sum(f.bytes for f in m.files)) for m in data.profile_manifests(args.profile)]
        for name, n, size in rows:
            print(f"download {name}: {n} files ({size / 1e6:.1f} MB), SHA-256 verified")
        print(f"to download at most {sum(r[2] for r in rows) / 1e6:.1f} MB (dry run: nothing fetched)")
        return 0
    if args.data_command == "fetch":
        rep = data.fetch_profile(args.profile, data_dir=args.data_dir, mirror=args.mirror,
                                 download=not args.no_download)
        print(f"{rep.n_files} files ({rep.n_bytes / 1e6:.1f} MB) verified in {rep.seconds:.1f} s: "
              + json.dumps(rep.datasets))
        return 0
    if args.data_command == "verify":
        from . import full_data

        if _full_data(args.profile):  # the full distributions, not the sample's file lists
            lines = full_data.report(args.profile, args.data_dir)
            print("\n".join(lines))
            return 0 if all(line.startswith("found") for line in lines) else 1
        out = data.verify_profile(args.profile, data_dir=args.data_dir)
        print(f"ok {len(out['ok'])}, missing {len(out['missing'])}, bad {len(out['bad'])}")
        for kind in ("bad", "missing"):
            for url in out[kind][:20]:
                print(f"  {kind}: {url}")
        return 0 if not out["bad"] and not out["missing"] else 1
    if args.data_command == "build-manifests":
        from . import datasets

        written = data.build_manifests_from_index(args.index, datasets.DATASETS, args.out)
        written += data.write_paper_only_manifests(datasets.PAPER_ONLY, args.out)
        for w in written:
            print(w)
        return 0
    raise AssertionError(args.data_command)


def _full_data(profile: str) -> bool:
    """Whether ``profile`` reads the full public archives (its ``data: full``)."""
    from . import full_data

    return full_data.needs_full_data(profile)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "schedule", None):
        config.set_schedule(args.schedule)
    handlers = {"run": _cmd_run, "book": _cmd_book, "publish": _cmd_publish, "data": _cmd_data, "predict": _cmd_predict,
                "serve": _cmd_serve, "retrain": _cmd_retrain, "train": _cmd_train,
                "bench": _cmd_bench}
    try:
        return handlers[args.command](args)
    except ReproError as exc:
        print(f"repro {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (config.ConfigError,)) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
