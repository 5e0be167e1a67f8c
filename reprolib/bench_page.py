"""What the Performance chapter (notebook 09) says about a benchmark JSON: its tables, figures' data,
headline sentences and verdicts, read from the file :mod:`reprolib.bench` wrote (or the quick
fallback run when there is none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from . import bench
from .book import format_columns as book_format_columns

#: What the landing page and the report say instead of a quick benchmark's figure.
NOT_MEASURED = "not measured in this build (run make bench, then rebuild the book)"


#: The pipeline stages of :func:`job_pipeline`, in the order they run.
PIPELINE_STAGES = ("read", "preprocess", "unet", "decovnet_and_localisation")


def load_for_page(path: str | Path, quick_out: str | Path) -> tuple[dict[str, Any], str, bool]:
    """The benchmark document the Performance chapter shows: ``(doc, source, ran_here)``.

    ``path`` is read when it exists (``source`` is ``"full"``, or ``"quick"`` for a file written by
    ``repro bench --quick``); otherwise the quick benchmark runs here, writes ``quick_out`` and
    ``source`` is ``"quick"`` with ``ran_here`` true, printing nothing (the page states what it ran)."""
    doc = bench.load(path)
    if doc is not None:
        return doc, ("quick" if doc.get("quick") else "full"), False
    doc = bench.run(bench.plan(quick=True), out=quick_out, quick=True, progress=False, echo=lambda line: None)
    return doc, "quick", True


def on_gpu(doc: dict[str, Any], job: str | None = None) -> bool:
    """Whether the network jobs of ``doc`` (or its ``job`` rows) ran on a CUDA device.

    A job's ``device`` parameter decides (``auto`` means CUDA where the hardware record names a
    GPU); jobs without one (preprocessing) and a GPU that was merely present do not count."""
    gpu = (doc.get("hardware") or {}).get("gpu")
    devices = [str(r.get("params", {}).get("device")) for r in doc["rows"]
               if (job is None or r["job"] == job) and "device" in r.get("params", {})]
    return bool(devices) and all(d.startswith("cuda") or (d == "auto" and bool(gpu)) for d in devices)


def gpu_name(doc: dict[str, Any]) -> str | None:
    """The GPU's name from the hardware record when the networks were measured on it, else ``None``."""
    return ((doc.get("hardware") or {}).get("gpu") or None) if on_gpu(doc) else None


def gpu_seconds_pipeline(doc: dict[str, Any]) -> float | None:
    """Seconds of the whole CT pipeline per volume measured on a GPU by a full benchmark, else
    ``None`` (no pipeline row, a CPU run, or a quick run: its tiny volume says nothing)."""
    r = bench.pipeline_row(doc)
    if doc.get("quick") or r is None or not on_gpu(doc, "pipeline"):
        return None
    return float(r["speeds"].get("fast", r["speeds"][r["baseline"]])["seconds"]["total"])


def device_label(doc: dict[str, Any], job: str) -> str:
    """Where ``job`` ran, for a sentence or a plot title: ``"CPU, 2 threads"`` or ``"GPU, <name>"``."""
    if on_gpu(doc, job):
        return f"GPU, {(doc.get('hardware') or {}).get('gpu') or 'unnamed'}"
    rows = bench.job_rows(doc, job)
    threads = (rows[-1].get("params", {}) if rows else {}).get("threads", (doc.get("hardware") or {}).get("threads"))
    return f"CPU, {threads} threads"


def hardware_phrase(doc: dict[str, Any]) -> str:
    """The machine in one phrase: CPU, logical cores, torch version, threads per job and GPU."""
    hw = doc.get("hardware") or {}
    return (f"{hw.get('cpu')} ({hw.get('cpu_count')} logical cores), torch {doc['packages'].get('torch')}, "
            f"{hw.get('threads')} threads per job; GPU: {hw.get('gpu') or 'none'}")


def sizes(doc: dict[str, Any]) -> dict[str, str]:
    """The input sizes every figure of ``doc`` was measured at, as short phrases (width × height):
    ``decovnet_slice`` (DeCoVNet slice, e.g. ``"224×336"``), ``unet_input`` and ``resnet_input``
    (a U-Net slice and a ResNet-50 image, ``"512×512"``), ``pre_shape`` and ``pipe_shape`` (volumes as
    width×height×slices), ``pre_spacing`` (their slice spacing) and ``pipe_slice`` (in-plane size of
    the pipeline's slices). Jobs missing from ``doc`` are left out."""
    out: dict[str, str] = {}
    dec = bench.job_rows(doc, "decovnet")
    if dec:
        out["decovnet_slice"] = "×".join(map(str, dec[-1]["input"][3:]))
    for job in ("unet", "resnet50"):
        for r in bench.job_rows(doc, job)[-1:]:
            out["unet_input" if job == "unet" else "resnet_input"] = f"{r['size']}×{r['size']}"
    for job, key in (("preprocess", "pre"), ("pipeline", "pipe")):
        for r in bench.job_rows(doc, job)[-1:]:
            out[f"{key}_shape"] = "×".join(map(str, r["shape"][::-1]))
            out[f"{key}_spacing"] = f"{r['spacing_mm'][0]:g} mm"
            out[f"{key}_slice"] = "×".join(map(str, r["shape"][1:][::-1]))
    return out


def headline_forward(doc: dict[str, Any], source: str) -> str:
    """DeCoVNet's forward pass at the largest T for other pages, with where and at what size it
    was measured; :data:`NOT_MEASURED` for a quick benchmark (its tiny input says nothing)."""
    if source == "quick" or "decovnet" not in doc.get("summary", {}):
        return NOT_MEASURED
    d = doc["summary"]["decovnet"]
    fast = (f"{d['fast_seconds']:.2f} s {d['fastest_exact_variant']}" if d["fastest_exact_variant"]
            else "no fast variant within tolerance")
    return (f"{d['eager_seconds']:.2f} s eager, {fast} ({device_label(doc, 'decovnet')}, "
            f"T = {d['T']} slices of {sizes(doc)['decovnet_slice']})")


def headline_pipeline(doc: dict[str, Any], source: str) -> str:
    """The whole CT pipeline per volume for other pages: reference and fast seconds, the number of
    slices and their size and where it ran; :data:`NOT_MEASURED` for a quick benchmark."""
    p = doc.get("summary", {}).get("pipeline")
    if source == "quick" or not p:
        return NOT_MEASURED
    fast = (f", {p['fast_seconds']:.1f} s fast (U-Net at {_wxh(p['fast_unet_size'])})"
            if "fast_seconds" in p and p["fast_unet_size"] else
            (f", {p['fast_seconds']:.1f} s fast" if "fast_seconds" in p else ""))
    return (f"{p['reference_seconds']:.1f} s reference{fast} for {p['slices_1mm']} slices of "
            f"{sizes(doc)['pipe_slice']} ({device_label(doc, 'pipeline')})")


def source_phrase(doc: dict[str, Any], source: str, path: str | Path, ran_here: bool,
                  build_commit: str | None = None) -> str:
    """Where the page's figures come from, as a Markdown phrase: the benchmark file by name (never
    its full path), when and at which commit it was written, or the quick run of this build."""
    name = Path(path).name
    if ran_here:
        return f"the quick benchmark this page ran itself, because no `{name}` was found"
    commit = (doc.get("git") or {}).get("commit") or "?"
    made = f"`{name}`, written by `repro bench{' --quick' if source == 'quick' else ''}` on {doc['created'][:10]} " \
           f"at commit `{commit[:12]}`"
    return made + ("" if commit == build_commit else f" (this book: `{(build_commit or '?')[:12]}`)")


def quick_banner(source: str, path: str | Path, ran_here: bool) -> str:
    """The warning shown above every figure of a quick benchmark (empty for a full one)."""
    if source != "quick":
        return ""
    why = (f"No benchmark JSON was found (`{Path(path).name}`, which `make bench` writes; `REPRO_BENCH_JSON` "
           "may name another file), so this page ran the *quick* benchmark itself" if ran_here else
           f"The benchmark JSON (`{Path(path).name}`) holds a *quick* run (`repro bench --quick`)")
    return (":::{admonition} Quick benchmark\n:class: warning\n" + why + ": tiny inputs, stated beside each "
            "figure, one repeat, no book rebuild. Its times describe nothing but the code path; the targets "
            "below apply to the full benchmark, and no figure of it reaches the landing page, the report or "
            "the claims ledger. Run `make bench`, then rebuild the book.\n:::")


def gpu_note(doc: dict[str, Any]) -> str:
    """Whether the figures above are GPU figures, as a Markdown sentence for the page's GPU section."""
    if on_gpu(doc):
        return "The network and pipeline figures above were measured on it."
    return ("Every figure above is a CPU figure. `repro bench --device cuda` on a machine with a GPU "
            "measures the same jobs there, and this page then names the GPU.")


def _eager_first(seconds: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(seconds.items(), key=lambda kv: kv[0] != "eager")


def decovnet_frame(doc: dict[str, Any]):
    """One row per DeCoVNet depth and variant: T, variant, median seconds, ratio to eager, GMAC,
    achieved GFLOP/s (2 FLOP per MAC), max |Δ logit| to eager fp32, peak RSS and threads."""
    import pandas as pd

    rows = [{"T": r["T"], "variant": v, "seconds": t, "× eager": t / r["seconds"]["eager"], "GMAC": r["macs"] / 1e9,
             "GFLOP/s": bench.gflops(r["macs"], t), "max |Δ logit|": r["max_abs_diff"].get(v, 0.0),
             "peak RSS (MB)": r.get("peak_rss_MB"), "threads": r.get("params", {}).get("threads")}
            for r in bench.job_rows(doc, "decovnet") for v, t in _eager_first(r["seconds"])]
    return pd.DataFrame(rows, columns=["T", "variant", "seconds", "× eager", "GMAC", "GFLOP/s", "max |Δ logit|",
                                       "peak RSS (MB)", "threads"])


#: Display precision of the DeCoVNet table (the page's sentences use the same).
DECOVNET_FORMATS = {"seconds": "{:.2f}", "× eager": "{:.2f}", "GMAC": "{:.1f}", "GFLOP/s": "{:.1f}",
                    "max |Δ logit|": "{:.1e}", "peak RSS (MB)": "{:.0f}"}


def decovnet_table(doc: dict[str, Any]):
    """:func:`decovnet_frame` for the page: indexed by (T, variant), each column at its precision."""
    return book_format_columns(decovnet_frame(doc), DECOVNET_FORMATS).set_index(["T", "variant"])


def nets_frame(doc: dict[str, Any]):
    """One row per network (U-Net, ResNet-50) and variant: input, seconds per item, items per
    second, GMAC and GFLOP/s per item, max |Δ| to eager and the batch."""
    import pandas as pd

    names = {"unet": "lung U-Net", "resnet50": "CXR ResNet-50"}
    rows = [{"network": names[r["job"]], "input": f"{r['size']}×{r['size']} {r['per']}", "variant": v,
             "seconds per item": t, "items/s": 1 / t, "GMAC": r["macs"] / 1e9, "GFLOP/s": bench.gflops(r["macs"], t),
             "max |Δ|": r["max_abs_diff"].get(v, 0.0), "batch": r["batch"]}
            for r in doc["rows"] if r["job"] in names for v, t in _eager_first(r["seconds"])]
    return pd.DataFrame(rows, columns=["network", "input", "variant", "seconds per item", "items/s", "GMAC",
                                       "GFLOP/s", "max |Δ|", "batch"])


#: Display precision of the U-Net / ResNet-50 table.
NETS_FORMATS = {"seconds per item": "{:.4f}", "items/s": "{:.1f}", "GMAC": "{:.2f}", "GFLOP/s": "{:.1f}",
                "max |Δ|": "{:.1e}"}


def nets_table(doc: dict[str, Any]):
    """:func:`nets_frame` for the page: indexed by (network, variant), each column at its precision."""
    return book_format_columns(nets_frame(doc), NETS_FORMATS).set_index(["network", "variant"])


def preprocess_verdict(doc: dict[str, Any]) -> str:
    """The preprocessing targets, met or not: ``"time met, memory not met"``."""
    p = doc["summary"]["preprocess"]
    return f"time {'met' if p['met_seconds'] else 'not met'}, memory {'met' if p['met_rss'] else 'not met'}"


def pipeline_stages(doc: dict[str, Any]):
    """Seconds of each stage of the (last) pipeline row: a DataFrame, one row per speed (the
    baseline first), the stages of :data:`PIPELINE_STAGES` as columns, in pipeline order."""
    import pandas as pd

    r = bench.pipeline_row(doc)
    if r is None:
        return pd.DataFrame(columns=list(PIPELINE_STAGES), dtype=float)
    runs = r["speeds"]
    order = _speed_order(r)
    return pd.DataFrame([[float(runs[sp]["seconds"][k]) for k in PIPELINE_STAGES] for sp in order],
                        index=pd.Index(order, name="speed"), columns=list(PIPELINE_STAGES))


def _wxh(hw: Sequence[int]) -> str:
    """An (h, w) size as the page writes it, width × height: ``"336×224"``."""
    return "×".join(map(str, list(hw)[::-1]))


def _speed_order(row: dict[str, Any]) -> list[str]:
    """The speeds of a pipeline row, its baseline first (the JSON file stores them sorted)."""
    return [row["baseline"]] + sorted(k for k in row["speeds"] if k != row["baseline"])


def pipeline_frame(doc: dict[str, Any]):
    """The predict-ct comparison, one row per speed: total seconds, ratio to the baseline, U-Net
    input, U-Net seconds and GFLOP/s, share of the measured matmul peak, bf16, |Δp(COVID)| against
    the baseline run and the :func:`resolution_ceiling` of a speed that resizes the slices."""
    import pandas as pd

    r = bench.pipeline_row(doc)
    cols = ["seconds", "× reference", "U-Net input", "U-Net (s)", "U-Net GFLOP/s", "% of peak", "bf16",
            "|Δp| vs reference", "mask Dice ceiling"]
    if r is None:
        return pd.DataFrame(columns=cols)
    base = r["speeds"][r["baseline"]]["seconds"]["total"]
    rows = []
    for sp in _speed_order(r):
        run_ = r["speeds"][sp]
        side = run_["unet"]["size"] or list(r["shape_1mm"][1:])
        rows.append([run_["seconds"]["total"], run_["seconds"]["total"] / base, _wxh(side),
                     run_["seconds"]["unet"], run_["unet_gflops"], 100 * run_["unet_gflops"] / r["peak_gflops"],
                     "yes" if run_["unet"]["bf16"] else "no", run_["abs_dp_vs_" + r["baseline"]],
                     run_.get("resolution_ceiling")])
    return pd.DataFrame(rows, index=pd.Index(_speed_order(r), name="speed"), columns=cols)


def pipeline_table(doc: dict[str, Any]):
    """:func:`pipeline_frame` for the page."""
    return book_format_columns(pipeline_frame(doc), {
        "seconds": "{:.1f}", "× reference": "{:.2f}", "U-Net (s)": "{:.1f}", "U-Net GFLOP/s": "{:.1f}",
        "% of peak": "{:.0f}", "|Δp| vs reference": "{:.1e}", "mask Dice ceiling": "{:.4f}"})


def build_ceilings(work_dir: str | Path, side: int = 256) -> list[float]:
    """:func:`resolution_ceiling` at ``side``² of the lung pseudo-label of every volume this build
    preprocessed (notebook 02's verified cache, ``work_dir/preprocessed/*.npz``) whose slices are
    larger than that; ``[]`` when there is none (phantoms are smaller)."""
    from . import cohort

    out = []
    for npz in sorted((Path(work_dir) / "preprocessed").glob("*.npz")):
        mask = cohort.load_preprocessed(npz).get("lung_mask")
        if mask is not None and mask.any() and max(mask.shape[1:]) > side:
            out.append(bench.resolution_ceiling(mask, (side, side)))
    return out


def ceiling_phrase(doc: dict[str, Any], build: Sequence[float] = ()) -> str:
    """What the fast path's resizing can cost a lung mask (Markdown): the pipeline summary's
    :func:`resolution_ceiling` of the synthetic chest and, from ``build`` (:func:`build_ceilings`),
    the range over this build's real volumes; or why there is nothing to bound."""
    p = doc.get("summary", {}).get("pipeline") or {}
    if p.get("resolution_ceiling") is None:
        return ("at this benchmark's slice size the fast path does not resize the slices, so it "
                "cannot cost a mask anything")
    side = _wxh(p["fast_unet_size"])
    real = (f"; for the lung pseudo-labels of this build's {len(build)} real CT volumes it is "
            f"{min(build):.4f} to {max(build):.4f}" if build else "; this build has no real CT volume to measure it on")
    return (f"the synthetic chest's lung pseudo-label, taken to {side} px and back the way the fast path resizes "
            f"the U-Net's input and output, keeps Dice {p['resolution_ceiling']:.4f} with itself, the most any "
            f"{side}-px mask of these lungs can agree with a full-size one{real} (how much of that a trained "
            "paper-size U-Net keeps cannot be measured here: no such network is available offline)")


def own_models_phrase(profile: str, work_dir: str | Path | None = None, results_dir: str | Path | None = None,
                      slice_hw: tuple[int, int] = (512, 512)) -> str:
    """What ``--speed fast`` changes for the U-Net this build trained (Markdown): nothing where its
    working size is within the fast cap and bf16 is not native, else the size and precision it uses."""
    from . import predict
    from .errors import InputError

    try:
        card = predict.ct_card(profile, work_dir, results_dir)
    except InputError:
        return "this build has no trained CT models to compare"
    exact = predict.unet_settings(card.unet_size, slice_hw, "exact")
    fast = predict.unet_settings(card.unet_size, slice_hw, "fast")
    side = _wxh(exact["size"] or slice_hw)
    if fast["size"] == exact["size"] and not fast["bf16"]:
        return (f"the U-Net of this build works at {side} px, within the fast path's cap of "
                f"{predict.FAST_UNET_SIDE} px, and this machine has no native bf16: for the book's own models "
                "`--speed fast` computes the same mask as `--speed exact`")
    fside = _wxh(fast["size"] or slice_hw)
    return (f"for the book's own models `--speed fast` runs the U-Net at {fside} px instead of {side}"
            f"{' in bf16' if fast['bf16'] else ''}: compare its masks with `--speed exact` before relying on them")


def rebuild_frame(doc: dict[str, Any]):
    """The book's rebuild, rows ``cold`` and ``cached``: notebook seconds, HTML seconds, total and
    notebooks executed; missing values (NaN) when the benchmark did not measure it."""
    import pandas as pd

    cols = ["notebooks (s)", "HTML (s)", "total (s)", "notebooks executed"]
    measured = [r for r in bench.job_rows(doc, "book") if "cold_seconds" in r]
    if not measured:
        return pd.DataFrame(float("nan"), index=pd.Index(["cold", "cached"], name="build"), columns=cols)
    b = measured[-1]
    return pd.DataFrame([[b["recorded"]["cold_seconds"], b["html_cold_seconds"], b["cold_seconds"],
                          b["recorded"]["notebooks"]],
                         [b["cached_run_seconds"], b["html_cached_seconds"], b["cached_seconds"],
                          b["cached_executed"]]], index=pd.Index(["cold", "cached"], name="build"), columns=cols)


def rebuild_table(doc: dict[str, Any]):
    """:func:`rebuild_frame` for the page: seconds to 0.1 s, whole notebooks."""
    return book_format_columns(rebuild_frame(doc), {"notebooks (s)": "{:.1f}", "HTML (s)": "{:.1f}",
                                               "total (s)": "{:.1f}", "notebooks executed": "{:.0f}"})


def rebuild_phrase(doc: dict[str, Any]) -> str:
    """Which book the rebuild was measured on (Markdown), or why it was not."""
    measured = [r for r in bench.job_rows(doc, "book") if "cold_seconds" in r]
    if measured:
        b = measured[-1]
        return (f"measured on the `{b['profile']}` book, {b['recorded']['notebooks']} notebooks, of which the "
                f"cached `repro run` skipped {b['cached_skipped']}")
    why = next((r["skipped"] for r in bench.job_rows(doc, "book") if "skipped" in r), "quick run or `--no-book`")
    return f"not measured by this benchmark ({why})"
