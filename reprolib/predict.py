"""Use the models a book build trained on a user's own files (``repro predict``, ``repro serve``).

A build's models are described by *model cards* assembled from what the notebooks left behind:
checkpoints in the work directory with their sha256, the settings they were trained with, their
validation metrics in ``results/<profile>/*.json`` and the run's provenance (git commit, packages,
hardware) in ``.repro/<profile>/provenance.json``. Loading verifies the sha256 and uses
``torch.load(weights_only=True)`` only: no arbitrary object is ever unpickled.

* :func:`cxr_card` / :func:`ct_card` -- the cards (clear :class:`~reprolib.errors.InputError`
  naming the missing file and the notebook that writes it).
* :func:`load_cxr_model` / :func:`load_ct_models` -- verified models, eval mode.
* :func:`predict_cxr` -- class probabilities and a Grad-CAM overlay for one image.
* :func:`predict_ct` -- COVID-19 probability, lung mask (U-Net) and lesion mask (CAM + R3dcc) for
  one CT (DICOM directory, NIfTI, PNG stack), written as NIfTI beside a JSON and Markdown report;
  the scan is checked up front (:func:`reprolib.scans.check_scan`) before any heavy step.
* :func:`predict_ct_batch` -- many scans (a folder or a list), one output folder each, a
  ``summary.csv``/``summary.json``; a failed scan does not stop the others, done scans are skipped.

Research software: not a medical device, not for diagnosis.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "DISCLAIMER",
    "CXRModelCard",
    "CTModelCard",
    "cxr_card",
    "ct_card",
    "load_cxr_model",
    "load_ct_models",
    "predict_cxr",
    "predict_ct",
    "predict_ct_batch",
    "SUMMARY_COLUMNS",
    "SPEEDS",
    "unet_settings",
]

#: How :func:`predict_ct` runs its networks (``repro predict ct --speed``): the lung U-Net and
#: DeCoVNet's feature extractor (the CAM head and all post-processing are the same at every speed).
SPEEDS = {
    "reference": "eager fp32, the U-Net at its own resolution (the benchmark's baseline)",
    "exact": "frozen TorchScript graphs, fp32, the U-Net at its own resolution: the reference's outputs "
             "within float rounding (logits within 1e-4)",
    "fast": "frozen graphs, the U-Net at most 256 px per side (as lungmask does), logits resized back; "
            "bf16 where the hardware has it natively: the mask differs slightly from the reference "
            "(repro bench reports the Dice and the change of p(COVID))",
}
#: The longest in-plane side the ``fast`` U-Net works at (pixels).
FAST_UNET_SIDE = 256

DISCLAIMER = ("Research tool reproducing published methods on small public data; not a medical device "
              "and not for diagnosis.")


@dataclass(frozen=True)
class CXRModelCard:
    """The chest X-ray classifier of a build (notebook 07)."""

    path: str
    sha256: str
    size: int  # input edge in pixels
    classes: tuple[str, ...]
    weights: str  # "imagenet" or "none" (random initialisation)
    metrics: dict = field(default_factory=dict)  # validation: macro F1, per-class recall/F1
    profile: str = "-"
    provenance: dict = field(default_factory=dict)
    retrained: dict = field(default_factory=dict)  # set when `repro retrain cxr` promoted a model
    work_dir: str = ""  # where ``path`` lives; never shown (to_dict makes it relative)

    def to_dict(self) -> dict:
        return _public(asdict(self))


def _public(card: dict) -> dict:
    """A card as shown to users (``/api/health``, reports): file paths relative to the build's work
    folder (``work_dir``, which is left out), never the server's absolute paths."""
    work = card.pop("work_dir", None)
    for key in [k for k in card if k == "path" or k.endswith("_path")]:
        card[key] = _relative(card[key], work)
    return card


def _relative(path: str, work: str | None) -> str:
    p = Path(path)
    if work:
        try:
            return p.relative_to(work).as_posix()
        except ValueError:
            pass
    return p.name


@dataclass(frozen=True)
class CTModelCard:
    """The CT models of a build: lung U-Net (notebook 03) and DeCoVNet (notebook 04)."""

    unet_path: str
    unet_sha256: str
    unet_size: tuple[int, int] | None  # in-plane (h, w) the U-Net works at (None: native)
    decovnet_path: str
    decovnet_sha256: str
    hw: tuple[int, int]  # DeCoVNet in-plane input
    z_step: int  # every z_step-th 1 mm slice
    fc_init: str
    metrics: dict = field(default_factory=dict)  # held-out AUC/AP/accuracy, lesion hit rate
    profile: str = "-"
    provenance: dict = field(default_factory=dict)
    work_dir: str = ""  # where the paths above live; never shown (to_dict makes them relative)

    def to_dict(self) -> dict:
        return _public(asdict(self))


def _dirs(profile: str, work_dir: str | Path | None, results_dir: str | Path | None) -> tuple[Path, Path]:
    from . import config

    return (Path(work_dir) if work_dir else config.work_dir(profile),
            Path(results_dir) if results_dir else config.results_dir(profile))


def _results(results_dir: Path, stem: str) -> dict:
    path = results_dir / f"{stem}.json"
    if not path.is_file():
        raise InputError(path, f"missing: run notebook {stem} of this profile first (repro run)")
    try:
        return json.loads(path.read_text())["values"]
    except (ValueError, KeyError) as exc:
        raise InputError(path, f"not a results file of this package ({exc})") from exc


def _provenance(work_dir: Path) -> dict:
    """Git commit, packages and hardware of the run that produced ``work_dir`` (empty if unknown)."""
    path = work_dir.parent / "provenance.json"
    try:
        prov = json.loads(path.read_text()).get("provenance", {})
    except (OSError, ValueError):
        return {}
    return {k: prov.get(k) for k in ("git", "hardware", "packages", "deterministic") if k in prov}


def cxr_card(profile: str, work_dir: str | Path | None = None, results_dir: str | Path | None = None
             ) -> CXRModelCard:
    """Card of the chest X-ray model trained by notebook 07 of ``profile``."""
    from . import cxr

    work, res = _dirs(profile, work_dir, results_dir)
    v = _results(res, "07_cxr_resnet50")
    path = work / "cxr_resnet50.pt"
    if not path.is_file():
        raise InputError(path, "missing: run notebook 07 of this profile first (repro run)")
    report = v.get("val_report") or {}
    metrics = {"macro_f1": v.get("macro_f1"), "n_val": v.get("n_val")}
    if report:
        for i, cls in enumerate(report.get("index", [])):
            if cls in cxr.CLASSES:
                metrics[f"recall_{cls}"] = report["recall"][i]
                metrics[f"f1_{cls}"] = report["f1"][i]
    card = CXRModelCard(path=str(path), sha256=str(v["checkpoint_sha256"]), size=int(v["image_size"]),
                        classes=tuple(cxr.CLASSES), weights=str(v.get("weights_mode", "none")), metrics=metrics,
                        profile=profile, provenance=_provenance(work), work_dir=str(work))
    current = work / "cxr_current.json"
    if current.is_file():  # a model promoted by `repro retrain cxr` replaces the build's
        try:
            cur = json.loads(current.read_text())
            return replace(card, path=str(cur["path"]), sha256=str(cur["sha256"]), metrics=dict(cur["metrics"]),
                           retrained={"parent_sha256": cur.get("parent_sha256"),
                                      "promoted_at": cur.get("promoted_at"), "build_sha256": card.sha256})
        except (ValueError, KeyError) as exc:
            raise InputError(current, f"unreadable promoted-model pointer ({exc})") from exc
    return card


def ct_card(profile: str, work_dir: str | Path | None = None, results_dir: str | Path | None = None
            ) -> CTModelCard:
    """Card of the lung U-Net (notebook 03) and the DeCoVNet (notebook 04, last fold) of ``profile``."""

    work, res = _dirs(profile, work_dir, results_dir)
    ptr = work / "unet_checkpoint.json"
    if not ptr.is_file():
        raise InputError(ptr, "missing: run notebook 03 of this profile first (repro run)")
    try:
        u = json.loads(ptr.read_text())
        unet_path, unet_sha = str(u["path"]), str(u["sha256"])
    except (ValueError, KeyError) as exc:
        raise InputError(ptr, f"not a U-Net checkpoint pointer ({exc})") from exc
    dpath = work / "decovnet_last.pt"
    if not dpath.is_file():
        raise InputError(dpath, "missing: run notebook 04 of this profile first (repro run)")
    from . import modelfile  # torch: the CLI imports this module and must start without it

    dsha = modelfile.read_sha256_sidecar(dpath)
    meta = modelfile.load_checkpoint(dpath, expected_sha256=dsha)["metadata"]
    v4 = _results(res, "04_decovnet")
    metrics = {k: v4.get(f"our_{k}") for k in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "average_precision",
                                                "accuracy", "n")}
    try:
        metrics["lesion_hit_rate"] = _results(res, "06_cam_localization").get("cam_hit_rate")
    except InputError:
        metrics["lesion_hit_rate"] = None
    size = u.get("size")
    return CTModelCard(unet_path=unet_path, unet_sha256=unet_sha,
                       unet_size=None if size is None else (
                           (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))),
                       decovnet_path=str(dpath), decovnet_sha256=dsha, hw=tuple(int(s) for s in meta["hw"]),
                       z_step=int(meta["z_step"]), fc_init=str(meta["fc_init"]), metrics=metrics, profile=profile,
                       provenance=_provenance(work), work_dir=str(work))


def load_cxr_model(card: CXRModelCard):
    """The verified ResNet-50 of ``card`` (eval mode); :class:`ChecksumError` on a wrong hash."""
    from . import modelfile

    return modelfile.load_model(card.path, card.sha256)[0]


def load_ct_models(card: CTModelCard):
    """``(unet, decovnet)`` of ``card``, both verified and in eval mode."""
    from . import modelfile

    unet, _ = modelfile.load_model(card.unet_path, card.unet_sha256)
    net, _ = modelfile.load_model(card.decovnet_path, card.decovnet_sha256)
    return unet, net


def _png_bytes(arr: np.ndarray) -> bytes:
    import io as _io

    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(np.asarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def predict_cxr(model, image_path: str | Path, card: CXRModelCard, out_dir: str | Path | None = None,
                max_pixels: int | None = None) -> dict[str, Any]:
    """Class probabilities and a Grad-CAM overlay of one chest X-ray.

    Returns
    -------
    dict: ``probabilities`` {class: p} (sum 1), ``prediction``, ``heatmap_png`` (bytes of
    the overlay, ``card.size`` square), ``seconds``; with ``out_dir``, also the paths of
    ``<stem>_gradcam.png`` and ``<stem>_report.json`` written there (atomically).

    Raises
    ------
    ImageError naming the file (unreadable, truncated, decompression bomb, shorter side below
    :data:`reprolib.cxr.MIN_SIDE_PX`).
    """
    import torch

    from . import cxr, cxr_cam
    from .files import atomic_write_bytes, atomic_write_text

    t0 = time.perf_counter()
    image_path = Path(image_path)
    img = cxr.load_cxr(image_path, max_pixels=max_pixels)
    cxr.check_min_size(img, image_path)
    x = cxr.build_transforms(card.size, train=False)(img)
    with torch.inference_mode():
        probs = torch.softmax(model(x[None]), dim=1)[0].double().numpy()
    probs = probs / probs.sum()
    k = int(np.argmax(probs))
    heat = cxr_cam.grad_cam(model, x, k)
    png = _png_bytes(cxr_cam.overlay(img.resize((card.size, card.size)), heat))
    out = {"file": image_path.name, "probabilities": {c: float(p) for c, p in zip(card.classes, probs)},
           "prediction": card.classes[k], "heatmap_png": png, "seconds": time.perf_counter() - t0}
    if out_dir is not None:
        out_dir = Path(out_dir)
        heat_path = atomic_write_bytes(out_dir / f"{image_path.stem}_gradcam.png", png)
        report = {k2: v for k2, v in out.items() if k2 != "heatmap_png"}
        report.update(heatmap=str(heat_path), model=card.to_dict(), disclaimer=DISCLAIMER)
        out["report"] = atomic_write_text(out_dir / f"{image_path.stem}_report.json",
                                          json.dumps(report, indent=2, default=str) + "\n")
        out["heatmap"] = heat_path
    return out


def _writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there, else :class:`InputError`."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(out_dir, f"cannot write the results here ({exc.strerror or exc}); choose another --out") from exc


def unet_settings(trained_size: tuple[int, int] | None, slice_hw: tuple[int, int], speed: str = "exact",
                  device: str = "cpu") -> dict[str, Any]:
    """How the U-Net runs at ``speed`` (:data:`SPEEDS`) on slices of ``slice_hw`` pixels.

    ``trained_size``: the in-plane (h, w) the model works at (``None``: the slices' own size).
    Returns ``speed``, ``variant`` (an :func:`reprolib.models.inference_runner` variant),
    ``size`` ((h, w) the slices are resized to, or ``None``), ``batch`` (slices per call: 8 for
    the reference, 2 for the frozen graphs, which run faster on small batches that stay in
    cache), ``bf16`` and ``bf16_why``.
    """
    from .models import bf16_native

    if speed not in SPEEDS:
        raise ValueError(f"unknown speed {speed!r}; choose one of {', '.join(SPEEDS)}")
    h, w = (int(v) for v in (trained_size or slice_hw))
    native, why = bf16_native(device)
    bf16 = speed == "fast" and native
    if speed == "fast" and max(h, w) > FAST_UNET_SIDE:
        scale = FAST_UNET_SIDE / max(h, w)
        h, w = max(16, int(round(h * scale))), max(16, int(round(w * scale)))
    size = None if (h, w) == tuple(int(v) for v in slice_hw) else (h, w)
    variant = {"reference": "eager", "exact": "jit", "fast": "bf16" if bf16 else "jit"}[speed]
    return {"speed": speed, "variant": variant, "size": None if size is None else list(size),
            "batch": 8 if speed == "reference" else 2, "bf16": bf16, "bf16_why": why}


def predict_ct(unet, decovnet, path: str | Path, card: CTModelCard, out_dir: str | Path | None = None,
               preprocess_params: dict | None = None, spacing_mm: tuple[float, float, float] | None = None,
               speed: str = "exact") -> dict[str, Any]:
    """COVID-19 probability, lung mask and lesion mask of one CT.

    Before any heavy step the scan is checked (:func:`reprolib.scans.check_scan`: empty files,
    a PNG stack without ``spacing_mm``, ...) and ``out_dir`` is proven writable. ``spacing_mm``
    ((z, y, x) in mm) is used for PNG stacks, whose files carry no spacing; other formats keep
    their own. The CT then goes through the book's chain: read (:func:`reprolib.io.read_ct`), preprocess to
    1 mm slices and the 8-bit lung window, lung mask by the U-Net, DeCoVNet input, DeCoVNet,
    linearised CAM + R3dcc lesion mask (:func:`reprolib.localize.localize`). ``speed``
    (:data:`SPEEDS`) chooses how the U-Net and DeCoVNet's feature extractor run
    (:func:`unet_settings`); the frozen graphs are built for this scan, at its slice size.

    Returns
    -------
    dict: ``p_covid``, ``prediction`` (p > 0.5), ``lung_ml``, ``lesion_ml``, ``shape_1mm``,
    ``spacing_mm``, ``spacing_source``, ``input_sha256`` (:func:`reprolib.scans.scan_sha256`),
    ``unet`` (:func:`unet_settings`), ``seconds`` per stage; ``lung_mask`` and ``lesion_mask`` ((T0, H, W)
    uint8 on the 1 mm grid) and ``ct_u8`` (the windowed CT on that grid); with ``out_dir``: ``<name>_lung.nii.gz``, ``<name>_lesion.nii.gz``,
    ``<name>_report.json`` and ``<name>_report.md`` written there atomically.

    Raises
    ------
    InputError (DicomError, NiftiError, VolumeError ...) naming the file and the problem.
    """
    import torch

    from . import cohort, crop, io, localize, models, preprocess, scans, segment
    from .files import atomic_write_text

    if speed not in SPEEDS:
        raise ValueError(f"unknown speed {speed!r}; choose one of {', '.join(SPEEDS)}")
    path = Path(path)
    checked = scans.check_scan(path, spacing_mm)
    if out_dir is not None:
        _writable(Path(out_dir))
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    input_sha256 = scans.scan_sha256(path)
    vol = io.read_ct(path, **({"spacing_mm": checked["spacing_mm"]} if checked["kind"] == "png" else {}))
    secs["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the lung mask comes from the U-Net below: no unsupervised pseudo-label needed here
    res = preprocess.preprocess_ct(vol, **{"compute_mask": False, **(preprocess_params or {})})
    ct_u8 = res["ct_u8"]
    secs["preprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dev = next(unet.parameters()).device
    how = unet_settings(card.unet_size, ct_u8.shape[1:], speed, str(dev))
    size = tuple(how["size"]) if how["size"] else None
    runner = None if how["variant"] == "eager" else models.inference_runner(
        unet, how["variant"], example=torch.zeros(1, 1, *(size or ct_u8.shape[1:]), device=dev))
    lung = segment.segment_volume(unet, ct_u8, batch=how["batch"], size=size, runner=runner)
    secs["unet"] = time.perf_counter() - t0
    if not lung.any():
        raise InputError(path, "the U-Net found no lung in this volume (is it a chest CT?)")
    t0 = time.perf_counter()
    x = cohort.classifier_input(ct_u8, lung, card.hw, card.z_step)
    if x.shape[1] < 2:
        raise InputError(path, f"only {x.shape[1]} slice(s) of lung after cropping: too few for DeCoVNet")
    _, _, bbox = crop.crop_to_mask(ct_u8, lung)
    features = None if how["variant"] == "eager" else models.inference_runner(  # DeCoVNet's features, frozen
        models.Features(decovnet), how["variant"],
        example=torch.zeros(1, 2, 16, *card.hw, device=next(decovnet.parameters()).device))
    loc = localize.localize(decovnet, torch.from_numpy(x)[None], lung_mask_full=lung, bbox=bbox,
                            z_step=card.z_step, features=features)
    secs["decovnet_and_localisation"] = time.perf_counter() - t0
    spacing = tuple(float(s) for s in res["spacing_mm"])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    lesion = loc.lesion_full.astype(np.uint8)
    out: dict[str, Any] = {
        "file": path.name, "p_covid": float(loc.p_covid), "prediction": "COVID-19" if loc.p_covid > 0.5 else "negative",
        "lung_ml": float(lung.sum()) * voxel_ml, "lesion_ml": float(lesion.sum()) * voxel_ml,
        "shape_1mm": list(ct_u8.shape), "spacing_mm": list(spacing), "spacing_source": checked["spacing_source"],
        "input_sha256": input_sha256, "unet": how, "seconds": secs,
        "lung_mask": lung, "lesion_mask": lesion, "ct_u8": ct_u8}
    if out_dir is not None:
        out_dir = Path(out_dir)
        name = path.name.split(".")[0] or "ct"
        out["lung_nifti"] = io.write_nifti(lung, spacing, out_dir / f"{name}_lung.nii.gz")
        out["lesion_nifti"] = io.write_nifti(lesion, spacing, out_dir / f"{name}_lesion.nii.gz")
        report = {k: v for k, v in out.items() if k not in ("lung_mask", "lesion_mask", "ct_u8")}
        report.update(model=card.to_dict(), disclaimer=DISCLAIMER)
        out["report"] = atomic_write_text(out_dir / f"{name}_report.json",
                                          json.dumps(report, indent=2, default=str) + "\n")
        md = [f"# CT prediction: {path.name}", "", f"> {DISCLAIMER}", "",
              "| quantity | value |", "|---|---|",
              f"| COVID-19 probability (DeCoVNet) | {out['p_covid']:.3f} |",
              f"| prediction at p > 0.5 | {out['prediction']} |",
              f"| lung volume (U-Net) | {out['lung_ml']:.0f} ml |",
              f"| predicted lesion (CAM + R3dcc) | {out['lesion_ml']:.1f} ml |",
              f"| seconds | {sum(secs.values()):.1f} |", "",
              f"Masks: `{Path(out['lung_nifti']).name}`, `{Path(out['lesion_nifti']).name}` (1 mm slices, "
              f"spacing {', '.join(f'{s:.3f}' for s in spacing)} mm).", "",
              f"Model: profile `{card.profile}`, DeCoVNet sha256 `{card.decovnet_sha256[:12]}`, U-Net sha256 "
              f"`{card.unet_sha256[:12]}`; held-out ROC AUC in its build: {card.metrics.get('roc_auc')}."]
        out["report_md"] = atomic_write_text(out_dir / f"{name}_report.md", "\n".join(md) + "\n")
    return out


SUMMARY_COLUMNS = ("id", "status", "p_covid", "prediction", "lung_ml", "lesion_ml", "seconds", "error",
                   "input_sha256", "path")


def _done_before(scan_dir: Path, input_sha256: str) -> dict | None:
    """The report of an earlier run in ``scan_dir`` for the same input (by sha256) whose masks
    are still there, else ``None``."""
    for report in scan_dir.glob("*_report.json"):
        try:
            doc = json.loads(report.read_text())
        except (OSError, ValueError):
            continue
        stem = report.name[: -len("_report.json")]
        if (doc.get("input_sha256") == input_sha256
                and all((scan_dir / f"{stem}_{m}.nii.gz").is_file() for m in ("lung", "lesion"))):
            return doc
    return None


def predict_ct_batch(unet, decovnet, paths: list[Path], card: CTModelCard, out_dir: str | Path,
                     spacing_mm: tuple[float, float, float] | None = None, progress: bool = True,
                     ids: list[str] | None = None, speed: str = "exact") -> list[dict[str, Any]]:
    """:func:`predict_ct` for each scan in ``paths``, each into ``out_dir/<id>/`` (at ``speed``).

    A scan that fails is recorded with its error and the others go on. A scan whose folder holds
    a report for the same input (sha256) and both masks is not recomputed (``status`` ``"ok"``,
    ``reused`` true). After every scan ``out_dir/summary.csv`` and ``summary.json`` are rewritten
    (atomically), one row per scan with :data:`SUMMARY_COLUMNS` (``seconds``: wall time of the
    scan in this run, 0 when reused; ``error``: the message, empty when ok).

    Returns the rows, in the order of ``paths``.
    """
    import csv
    import io as _io

    from . import scans
    from .files import atomic_write_text

    out_dir = Path(out_dir)
    _writable(out_dir)
    ids = ids or scans.scan_ids(paths)
    rows: list[dict[str, Any]] = []
    try:
        from tqdm.auto import tqdm
        bar = tqdm(list(zip(ids, paths)), desc="predict ct", unit="scan", disable=not progress)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        bar = list(zip(ids, paths))
    for scan_id, path in bar:
        t0 = time.perf_counter()
        row: dict[str, Any] = {c: "" for c in SUMMARY_COLUMNS}
        row.update(id=scan_id, path=str(path), reused=False)
        try:
            sha = scans.scan_sha256(path) if Path(path).exists() else ""
            before = _done_before(out_dir / scan_id, sha) if sha else None
            if before is not None:
                row.update(status="ok", reused=True, seconds=0.0,
                           **{k: before.get(k, "") for k in ("p_covid", "prediction", "lung_ml", "lesion_ml")})
            else:
                out = predict_ct(unet, decovnet, path, card, out_dir / scan_id, spacing_mm=spacing_mm, speed=speed)
                row.update(status="ok", seconds=round(time.perf_counter() - t0, 2),
                           **{k: out[k] for k in ("p_covid", "prediction", "lung_ml", "lesion_ml")})
            row["input_sha256"] = sha
        except InputError as exc:
            row.update(status="failed", error=str(exc), seconds=round(time.perf_counter() - t0, 2))
        except Exception as exc:  # noqa: BLE001 - one bad scan must not stop the batch; its error is kept
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}", seconds=round(time.perf_counter() - t0, 2))
        rows.append(row)
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS) + ["reused"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out_dir / "summary.csv", buf.getvalue())
        atomic_write_text(out_dir / "summary.json", json.dumps(
            {"model": card.to_dict(), "disclaimer": DISCLAIMER, "scans": rows}, indent=2, default=str) + "\n")
    return rows
