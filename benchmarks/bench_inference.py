"""Inference benchmarks: DeCoVNet per volume (eager vs fast variants), U-Net per slice, ResNet-50 images/s.

    python benchmarks/bench_inference.py [--threads 2] [--depths 100 200 300] [--repeats 3]

Each configuration runs in a fresh process (so its peak RSS is its own); times are medians of
``--repeats`` runs after one warm-up, with the thread count stated. Every figure is printed
beside its multiply-accumulate count and the achieved GFLOP/s (2 FLOP per MAC). Fast variants are
checked against the eager fp32 output of the same weights and input (max |difference| printed).
Writes ``benchmarks/out/inference.json``. Untrained weights: time does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "inference.json"


def _median_time(fn, repeats: int) -> tuple[float, object]:
    """Median time of ``fn()`` (after one warm-up call, which also gives the output)."""
    from reprolib.provenance import median_time

    out = fn()
    return median_time(fn, repeats=repeats, warmup=0)[0], out


def _job(kind: str, params: dict, threads: int, repeats: int, queue) -> None:
    import torch

    from reprolib import models

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    res: dict = {"kind": kind, **params, "threads": threads, "repeats": repeats}
    if kind == "decovnet":
        net = models.DeCoVNet().eval()
        x = torch.rand(1, 2, params["T"], 224, 336)
        macs = models.count_macs(net, tuple(x.shape))
        eager = models.inference_runner(net, "eager")
        t, ref = _median_time(lambda: eager(x), repeats)
        res.update(macs=macs, seconds={"eager": t})
        res["max_abs_diff"] = {}
        for variant in params["variants"]:
            run = models.inference_runner(net, variant, example=x[:, :, :16])
            tv, out = _median_time(lambda: run(x), repeats)
            res["seconds"][variant] = tv
            res["max_abs_diff"][variant] = float((out.float() - ref).abs().max())
    elif kind == "unet":
        net = models.UNet2D().eval()
        x = torch.rand(params["batch"], 1, 512, 512)
        macs = models.count_macs(net, tuple(x.shape)) // params["batch"]
        run = models.inference_runner(net, "eager")
        t, _ = _median_time(lambda: run(x), repeats)
        res.update(macs=macs, seconds={"eager": t / params["batch"]})  # per slice
    elif kind == "resnet50":
        from reprolib import cxr

        net = cxr.build_resnet50(4, weights="none", freeze_until=None).eval()
        x = torch.rand(params["batch"], 3, params["size"], params["size"])
        macs = models.count_macs(net, tuple(x.shape)) // params["batch"]
        run = models.inference_runner(net, "eager")
        t, _ = _median_time(lambda: run(x), repeats)
        res.update(macs=macs, seconds={"eager": t / params["batch"]})  # per image
    res["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(res)


def run_job(kind: str, params: dict, threads: int, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_job, args=(kind, params, threads, repeats, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depths", type=int, nargs="+", default=[100, 200, 300])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["jit", "channels_last"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import torch

    rows = []
    for T in args.depths:
        rows.append(run_job("decovnet", {"T": T, "variants": args.variants}, args.threads, args.repeats))
    rows.append(run_job("unet", {"batch": 8}, args.threads, args.repeats))
    rows.append(run_job("resnet50", {"batch": 16, "size": 224}, args.threads, args.repeats))

    print(f"{'model':<10} {'input':<14} {'variant':<14} {'seconds':>9} {'ratio':>6} {'GMAC':>8} {'GFLOP/s':>8} "
          f"{'max|diff|':>10} {'peak MB':>8}")
    for r in rows:
        inp = f"T={r['T']}" if r["kind"] == "decovnet" else ("512² slice" if r["kind"] == "unet" else f"{r['size']}² image")
        base = r["seconds"]["eager"]
        for variant, t in r["seconds"].items():
            r.setdefault("gflops", {})[variant] = 2 * r["macs"] / t / 1e9
            diff = r.get("max_abs_diff", {}).get(variant, 0.0 if variant == "eager" else float("nan"))
            print(f"{r['kind']:<10} {inp:<14} {variant:<14} {t:>9.3f} {t / base:>6.2f} {r['macs'] / 1e9:>8.1f} "
                  f"{r['gflops'][variant]:>8.1f} {diff:>10.2e} {r['peak_rss_MB']:>8.0f}")
    dec = [r for r in rows if r["kind"] == "decovnet"]
    target = max(dec, key=lambda r: r["T"])
    ratio = target["seconds"].get("jit", float("nan")) / target["seconds"]["eager"]
    summary = {"decovnet_T": target["T"], "jit_over_eager": ratio, "target": 0.5, "met": bool(ratio <= 0.5),
               "max_abs_diff_jit": target.get("max_abs_diff", {}).get("jit")}
    print(f"DeCoVNet T={target['T']}, {args.threads} threads: jit / eager = {ratio:.2f} (target <= 0.50: "
          f"{'met' if summary['met'] else 'NOT met'}), max |diff| {summary['max_abs_diff_jit']:.1e}")
    doc = {"rows": rows, "summary": summary,
           "hardware": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                        "torch": torch.__version__, "python": sys.version.split()[0],
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "paper_seconds_per_ct_gpu": 1.93}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.part")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
