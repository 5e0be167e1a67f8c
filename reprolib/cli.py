"""``repro``: one console command per stage.

    repro run --profile P [--only NN] [--from NN] [--force]
    repro book [--profile P]
    repro data fetch|verify --profile P
    repro data build-manifests --index PATH

Paths come from arguments or the environment (``REPRO_DATA_DIR``,
``REPRO_DATA_MIRROR``, ``REPRO_WORK_DIR``, ``REPRO_RESULTS_DIR``).
Exit codes: 0 success, 1 a stage failed, 2 bad usage or configuration.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config
from .errors import ReproError


def _profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.PROFILES,
                   help="synthetic | sample | paper (default: %(default)s)")


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
    q = dsub.add_parser("build-manifests", help="regenerate data_manifests/ from a mirror index.tsv")
    q.add_argument("--index", type=Path, required=True, help="path of the mirror's index.tsv")
    q.add_argument("--out", type=Path, default=None)
    return parser


def _cmd_run(args) -> int:
    from . import runner

    report = runner.run(args.profile, only=args.only, start=args.start, force=args.force,
                        seed=args.seed, device=args.device, log_output=not args.quiet)
    return 0 if report.ok else 1


def _cmd_book(args) -> int:
    from . import runner

    gen = runner.prepare_book(args.profile)
    print(f"book sources for profile {args.profile} in {gen}")
    return runner.build_book(builder=args.builder)


def _cmd_data(args) -> int:
    from . import data

    if args.data_command == "fetch":
        rep = data.fetch_profile(args.profile, data_dir=args.data_dir, mirror=args.mirror,
                                 download=not args.no_download)
        print(f"{rep.n_files} files ({rep.n_bytes / 1e6:.1f} MB) verified in {rep.seconds:.1f} s: "
              + json.dumps(rep.datasets))
        return 0
    if args.data_command == "verify":
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": _cmd_run, "book": _cmd_book, "data": _cmd_data}
    try:
        return handlers[args.command](args)
    except ReproError as exc:
        print(f"repro {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (config.ConfigError,)) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
