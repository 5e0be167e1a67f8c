"""``repro retrain cxr``: gated fine-tuning of the chest X-ray model on newly validated images.

The CXR paper describes a job that keeps learning from new images. Done naively, such a job can
silently make the model worse. Here a candidate is fine-tuned from the *current* model on the new
images, both are evaluated on one fixed held-out set, and the candidate is promoted only if it is
not worse on macro F1 *and* on COVID-19 recall (:func:`gate`). Every attempt, promoted or not, is
appended to a lineage file (parent and candidate sha256, the new images' sha256 and labels, the
held-out set's fingerprint, both sets of metrics, the decision and its reason).

Files in the build's work directory:

* ``cxr_resnet50.pt`` -- the build's model (notebook 07), never overwritten here;
* ``models/cxr_resnet50.<sha12>.pt`` (+ ``.sha256``) -- every candidate;
* ``cxr_current.json`` -- the promoted model (path, sha256, metrics), read by
  :func:`reprolib.predict.cxr_card`;
* ``cxr_lineage.jsonl`` -- one JSON line per attempt.

A cron line for a nightly run (documented in the book's "Try the models" page)::

    17 2 * * *  cd /path/to/covid-repro && .venv/bin/repro retrain cxr --new-data /data/validated >> retrain.log 2>&1
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "labelled_folder", "evaluate_cxr", "gate", "fine_tune", "default_holdout",
           "retrain_cxr", "read_lineage"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def labelled_folder(root: str | Path) -> list:
    """Records of ``root/<class>/*.png|jpg``: one folder per class (a :data:`reprolib.cxr.CLASSES`
    name or a mirror label such as ``pneumonia_viral``). Each image is its own patient group
    (``new:<sha12>``), since folders carry no patient ids.

    Raises
    ------
    InputError naming the folder: missing, no images, or a folder that is not a class.
    """
    from . import cxr
    from .errors import ManifestError
    from .files import sha256_file

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder of class sub-folders (e.g. covid19/, healthy/)")
    recs = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            label, sublabel = cxr.label_from_mirror(sub.name, source=sub)
        except ManifestError:
            if sub.name != "not_certain":
                raise InputError(sub, f"folder name {sub.name!r} is not a class; use one of "
                                      f"{', '.join(cxr.CLASSES)}") from None
            label, sublabel = "not_certain", None
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                recs.append(cxr.CXRRecord(f, label, sublabel, f"new:{sha256_file(f)[:12]}", "new-data", "-"))
    if not recs:
        raise InputError(root, f"no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders")
    return recs


def evaluate_cxr(model, records: Sequence, size: int, device: str = "cpu") -> dict[str, Any]:
    """Macro F1 over the classes present, COVID-19 recall and accuracy on ``records``."""
    from . import cxr, evaluate

    y, probs = cxr.evaluate_records(model, records, size=size, device=device, progress=False)
    yhat = probs.argmax(1)
    classes = list(range(len(cxr.CLASSES)))
    rep = evaluate.per_class_report(y, yhat, classes)
    present = [c for c in classes if rep.loc[c, "support"] > 0]
    covid = cxr.CLASSES.index("covid19")
    return {"n": int(len(y)), "macro_f1": float(np.nan_to_num(rep.loc[present, "f1"].astype(float)).mean()),
            "recall_covid19": float(rep.loc[covid, "recall"]) if covid in present else math.nan,
            "accuracy": float((yhat == y).mean()) if len(y) else math.nan}


def gate(parent: dict[str, float], candidate: dict[str, float], tolerance: float = 0.0) -> tuple[bool, str]:
    """Promote only if the candidate is not worse on macro F1 and on COVID-19 recall.

    ``tolerance`` allows that much loss on either. A NaN COVID-19 recall (no COVID-19 image in
    the held-out set) refuses: the gate cannot check what matters most.
    """
    reasons = []
    for key in ("macro_f1", "recall_covid19"):
        p, c = parent.get(key, math.nan), candidate.get(key, math.nan)
        if not (math.isfinite(p) and math.isfinite(c)):
            return False, f"{key} not measurable on the held-out set"
        if c < p - tolerance:
            reasons.append(f"{key} {c:.3f} < {p:.3f}")
    if reasons:
        return False, "worse: " + "; ".join(reasons)
    return True, (f"not worse: macro_f1 {candidate['macro_f1']:.3f} vs {parent['macro_f1']:.3f}, "
                  f"recall_covid19 {candidate['recall_covid19']:.3f} vs {parent['recall_covid19']:.3f}")


def fine_tune(model, records: Sequence, *, size: int, epochs: int = 2, batch: int = 16,
              lrs: Sequence[float] = (1e-5, 1e-4, 1e-3), freeze_until: str | None = "layer3", seed: int = 0,
              device: str = "cpu"):
    """A fine-tuned *copy* of ``model`` (the paper's recipe: frozen lower layers, discriminative
    learning rates, COVID-only contrast augmentation), ``epochs`` passes over ``records``."""
    import torch

    from . import cxr, cxr_model

    gen = cxr.seeded(seed)
    cand = copy.deepcopy(model)
    for p in cand.parameters():
        p.requires_grad_(True)
    cxr_model.freeze_stages(cand, freeze_until)
    aug = cxr.ClassTargetedContrast("covid19", p=0.5, generator=gen)
    ds = cxr.CXRDataset(list(records), transform=cxr.build_transforms(size, train=True), augment=aug)
    loader = cxr.make_loader(ds, batch_size=batch, shuffle=True, seed=seed)
    opt = torch.optim.Adam(cxr_model.param_groups(cand, lrs))
    for _ in range(int(epochs)):
        cxr.train_epoch(cand, loader, opt, device, progress=False)
    return cand.eval()


def _fingerprint(records: Sequence) -> str:
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: str(r.path)):
        h.update(f"{Path(r.path).name}\t{r.label}\n".encode())
    return h.hexdigest()


def read_lineage(work_dir: str | Path) -> list[dict]:
    """Every retraining attempt recorded in ``work_dir/cxr_lineage.jsonl`` (oldest first)."""
    path = Path(work_dir) / "cxr_lineage.jsonl"
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise InputError(path, f"line {i} is not JSON ({exc})") from exc
    return out


def default_holdout(profile: str, work_dir: str | Path, data_dir: str | Path | None = None) -> list:
    """The held-out set when none is given: the development images that notebook 07 put in its
    validation split, read from the split file it saved (image sha256 -> split). It never holds an
    image the served model trained on, whatever ``--seed`` the build ran with."""
    from . import cxr, cxr_sources

    work = Path(work_dir)
    split = cxr.read_split(work / cxr.SPLIT_FILE)
    dev, _ = cxr_sources.profile_records(profile, data_dir, work)
    return cxr.held_out(dev, split)


def retrain_cxr(work_dir: str | Path, card, new_records: Sequence, holdout_records: Sequence, *,
                epochs: int = 2, seed: int = 0, tolerance: float = 0.0, device: str = "cpu",
                fit: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Fine-tune the current model (``card``) on ``new_records``, gate it on ``holdout_records``.

    ``fit(model, records)`` returns the candidate (default :func:`fine_tune` with ``epochs``,
    ``seed``); tests inject others. Returns the lineage entry (also appended to
    ``cxr_lineage.jsonl``); when promoted, ``cxr_current.json`` points at the candidate.
    """
    from . import modelfile, predict
    from .files import atomic_write_text, sha256_file

    work = Path(work_dir)
    if not new_records:
        raise InputError(work, "no new images to learn from")
    if not holdout_records:
        raise InputError(work, "empty held-out set: the gate needs one")
    parent = predict.load_cxr_model(card)
    parent_metrics = evaluate_cxr(parent, holdout_records, card.size, device)
    fit = fit or (lambda m, recs: fine_tune(m, recs, size=card.size, epochs=epochs, seed=seed, device=device))
    cand = fit(parent, list(new_records))
    staged = work / "models" / "cxr_resnet50.candidate.pt"
    sha = modelfile.save_model(staged, cand, {"parent_sha256": card.sha256, "classes": list(card.classes)})
    path = staged.with_name(f"cxr_resnet50.{sha[:12]}.pt")
    os.replace(staged, path)
    os.replace(f"{staged}.sha256", f"{path}.sha256")
    atomic_write_text(Path(f"{path}.sha256"), f"{sha}  {path.name}\n")
    reloaded, _ = modelfile.load_model(path, sha)  # what would be served
    cand_metrics = evaluate_cxr(reloaded, holdout_records, card.size, device)
    promoted, reason = gate(parent_metrics, cand_metrics, tolerance)
    entry = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parent_sha256": card.sha256, "candidate_sha256": sha, "candidate_path": str(path),
        "new_data": [{"file": str(r.path), "sha256": sha256_file(r.path), "label": r.label} for r in new_records],
        "holdout": {"n": len(holdout_records), "fingerprint": _fingerprint(holdout_records)},
        "metrics": {"parent": parent_metrics, "candidate": cand_metrics},
        "promoted": promoted, "reason": reason, "tolerance": tolerance, "epochs": epochs, "seed": seed,
        "profile": card.profile, "git": (card.provenance or {}).get("git"),
    }
    lineage = work / "cxr_lineage.jsonl"
    previous = lineage.read_text() if lineage.is_file() else ""
    atomic_write_text(lineage, previous + json.dumps(entry, default=str) + "\n")
    if promoted:
        atomic_write_text(work / "cxr_current.json", json.dumps({
            "path": str(path), "sha256": sha, "size": card.size, "metrics": cand_metrics,
            "parent_sha256": card.sha256, "promoted_at": entry["time"]}, indent=2) + "\n")
    return entry
