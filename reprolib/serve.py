"""``repro serve``: a local web page and JSON API for the models a book build trained.

* ``GET /`` -- an HTML page: upload a chest X-ray (PNG/JPEG) or a CT (NIfTI, ``.nii.gz`` or a
  zipped DICOM series) and see the probabilities, the heat map and the model's provenance.
* ``POST /api/predict/cxr``, ``POST /api/predict/ct`` -- the same as JSON (multipart upload,
  field ``file``); ``GET /api/health`` -- which models are loaded, with their cards.
* ``GET /docs`` -- the OpenAPI documentation FastAPI generates.

Uploads are untrusted: the request size is capped (``Content-Length`` and the bytes actually
read), the type is sniffed from the content (never from the name or the declared type),
gzip and zip archives are expanded with caps on the expanded size, the entry count and the
compression ratio (decompression bombs), zip entries that would land outside the extraction
folder are refused (zip slip), images larger than a pixel budget are refused before
decoding, and every upload lives in a per-request temporary folder that is removed
afterwards. Errors are 4xx JSON with a ``detail`` message. The server binds to 127.0.0.1 by
default. It is a research tool, not a diagnostic device; the page says so.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from .errors import ReproError
from .predict import DISCLAIMER

__all__ = ["Limits", "UploadRejected", "sniff", "safe_extract_zip", "gunzip_capped", "create_app",
           "app_from_build"]


@dataclass(frozen=True)
class Limits:
    """Caps on untrusted uploads."""

    max_upload_bytes: int = 256 * 2**20  # request body
    max_expanded_bytes: int = 2 * 2**30  # gzip / zip after expansion
    max_zip_entries: int = 4000
    max_ratio: float = 200.0  # expanded / compressed, per zip entry and for gzip
    max_pixels: int = 50_000_000  # width x height of an uploaded image


class UploadRejected(Exception):
    """An upload refused before or while unpacking it; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_NIFTI_MAGICS = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGICS = (b"n+2\x00\r\n\x1a\n", b"ni2\x00\r\n\x1a\n")


def sniff(head: bytes) -> str:
    """File type from the first bytes: ``png``, ``jpeg``, ``gzip``, ``zip``, ``nifti`` or ``unknown``.

    ``nifti`` is NIfTI-1 (``sizeof_hdr`` 348, magic at byte 344) or NIfTI-2 (``sizeof_hdr``
    540, magic at byte 4), in either byte order.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 348 and head[344:348] in _NIFTI_MAGICS and (
            int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348):
        return "nifti"
    if head[4:12] in _NIFTI2_MAGICS and 540 in (int.from_bytes(head[:4], "little"),
                                                int.from_bytes(head[:4], "big")):
        return "nifti"
    return "unknown"


def gunzip_capped(src: Path, dst: Path, limits: Limits) -> Path:
    """Expand a gzip file, refusing (413) output beyond ``max_expanded_bytes`` or ``max_ratio``."""
    cap = min(limits.max_expanded_bytes, int(src.stat().st_size * limits.max_ratio) + 2**20)
    total = 0
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            while True:
                block = fin.read(2**20)
                if not block:
                    break
                total += len(block)
                if total > cap:
                    raise UploadRejected(413, f"gzip expands beyond {cap} bytes (decompression-bomb guard)")
                fout.write(block)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UploadRejected(422, f"corrupt or truncated gzip: {exc}") from exc
    return dst


def safe_extract_zip(src: Path, dst: Path, limits: Limits) -> list[Path]:
    """Extract a zip into ``dst`` with zip-slip, entry-count, size and ratio guards.

    Refuses (400) absolute names, ``..`` components, drive letters and symbolic links;
    (413) more than ``max_zip_entries`` entries, a declared or actual expanded size over
    ``max_expanded_bytes``, or an entry expanding more than ``max_ratio`` times. Returns the
    extracted regular files.
    """
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRejected(422, f"corrupt zip archive: {exc}") from exc
    out: list[Path] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_zip_entries:
            raise UploadRejected(413, f"zip has {len(infos)} entries (limit {limits.max_zip_entries})")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_expanded_bytes:
            raise UploadRejected(413, f"zip expands to {declared} bytes (limit {limits.max_expanded_bytes})")
        root = dst.resolve()
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            mode = info.external_attr >> 16
            if (name.startswith("/") or ".." in parts or (parts and ":" in parts[0])
                    or (mode & 0o170000) == 0o120000):
                raise UploadRejected(400, f"unsafe entry in zip (path traversal or link): {info.filename!r}")
            if info.is_dir():
                continue
            if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                raise UploadRejected(413, f"zip entry {info.filename!r} expands {info.file_size / info.compress_size:.0f}"
                                          f"x (decompression-bomb guard, limit {limits.max_ratio:.0f}x)")
            target = (dst / name).resolve()
            if root not in target.parents:
                raise UploadRejected(400, f"unsafe entry in zip (outside the folder): {info.filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as fin, open(target, "wb") as fout:
                    while True:
                        block = fin.read(2**20)
                        if not block:
                            break
                        written += len(block)
                        if written > info.file_size or written > limits.max_expanded_bytes:
                            raise UploadRejected(413, f"zip entry {info.filename!r} expands beyond its declared size")
                        fout.write(block)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UploadRejected(422, f"corrupt zip entry {info.filename!r}: {exc}") from exc
            out.append(target)
    return out


def _series_dir(files: list[Path], where: Path) -> Path:
    """The one folder holding the extracted files (a zipped DICOM series)."""
    files = [f for f in files if not f.name.startswith(".") and "__MACOSX" not in f.parts]
    if not files:
        raise UploadRejected(422, "the zip holds no files")
    dirs = {f.parent for f in files}
    if len(dirs) != 1:
        raise UploadRejected(422, f"the zip must hold one DICOM series in one folder, found {len(dirs)} folders")
    return dirs.pop()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ct_preview_png(ct_u8, lesion, lung) -> bytes:
    """Axial slice through the predicted lesion (or the lung's middle) with both outlines, as PNG."""
    import numpy as np

    from .predict import _png_bytes

    zs = np.nonzero(lesion.any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2]) if zs.size else int(np.nonzero(lung.any(axis=(1, 2)))[0].mean())
    rgb = np.repeat(ct_u8[z][..., None], 3, axis=2).astype(np.uint8)
    for mask, colour in ((lung[z], (0, 200, 255)), (lesion[z], (255, 40, 40))):
        m = mask.astype(bool)
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        rgb[edge] = colour
    return _png_bytes(rgb)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>covid-repro: try the models</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:1.5em auto;padding:0 1em;color:#222}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;border-radius:6px}
section{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.2em .8em;text-align:left}
.err{color:#b00020}.bar{background:#4a78c2;height:.8em;display:inline-block}
img{width:320px;image-rendering:auto;border:1px solid #aaa}pre{font-size:.75em;background:#f6f6f6;padding:.5em;overflow:auto}
</style></head><body>
<h1>Try the models of this book build</h1>
<p class="banner" id="banner">__DISCLAIMER__</p>
<section><h2>Chest X-ray (PNG or JPEG)</h2>
<form id="cxr-form"><input type="file" id="cxr-file" name="file" accept="image/png,image/jpeg">
<button type="submit" id="cxr-submit">Classify</button></form>
<div id="cxr-result"></div></section>
<section><h2>Chest CT (NIfTI, .nii.gz, or a zipped DICOM series)</h2>
<form id="ct-form"><input type="file" id="ct-file" name="file">
<button type="submit" id="ct-submit">Analyse</button></form>
<div id="ct-result"></div></section>
<section><h2>Models</h2><div id="model-table">loading...</div>
<details><summary>full model cards (JSON)</summary><pre id="models"></pre></details></section>
<script>
async function post(url, input, out, render) {
  const f = document.getElementById(input).files[0];
  const el = document.getElementById(out);
  if (!f) { el.innerHTML = '<p class="err">choose a file first</p>'; return; }
  el.textContent = 'working...';
  const fd = new FormData(); fd.append('file', f);
  const r = await fetch(url, {method: 'POST', body: fd});
  const j = await r.json();
  if (!r.ok) { el.innerHTML = '<p class="err">' + r.status + ': ' + (j.detail || 'error') + '</p>'; return; }
  el.innerHTML = render(j);
}
function bars(p) {
  return '<table id="probabilities"><tr><th>class</th><th>probability</th><th></th></tr>' +
    Object.entries(p).map(([k, v]) => '<tr><td>' + k + '</td><td>' + v.toFixed(3) +
    '</td><td><span class="bar" style="width:' + (200 * v) + 'px"></span></td></tr>').join('') + '</table>';
}
document.getElementById('cxr-form').onsubmit = (e) => { e.preventDefault();
  post('/api/predict/cxr', 'cxr-file', 'cxr-result', (j) => '<p>prediction: <b id="cxr-prediction">' +
    j.prediction + '</b></p>' + bars(j.probabilities) +
    '<p>Grad-CAM of the predicted class:</p><img id="cxr-heatmap" alt="Grad-CAM heat map" src="data:image/png;base64,' +
    j.heatmap_png_base64 + '">'); };
document.getElementById('ct-form').onsubmit = (e) => { e.preventDefault();
  post('/api/predict/ct', 'ct-file', 'ct-result', (j) => '<p>prediction: <b id="ct-prediction">' + j.prediction +
    '</b></p>' + bars(j.probabilities) + '<p>lung ' + j.lung_ml.toFixed(0) +
    ' ml, predicted lesion ' + j.lesion_ml.toFixed(1) + ' ml</p><img id="ct-preview" alt="CT slice" src="data:image/png;base64,' +
    j.slice_png_base64 + '">'); };
function row(name, m, metric) {
  if (!m) return '<tr><td>' + name + '</td><td colspan="4">not in this build</td></tr>';
  const sha = m.sha256 || m.decovnet_sha256, git = (m.git || {}).commit || '?';
  return '<tr><td>' + name + '</td><td>' + m.profile + '</td><td><code>' + sha.slice(0, 12) + '</code></td><td>' +
    metric + '</td><td><code>' + git.slice(0, 10) + '</code></td></tr>';
}
fetch('/api/health').then(r => r.json()).then(j => {
  const c = j.models.cxr, t = j.models.ct, f = (v) => (v === null || v === undefined) ? 'n/a' : v.toFixed(3);
  document.getElementById('model-table').innerHTML = '<table><tr><th>model</th><th>profile</th>' +
    '<th>checkpoint sha256</th><th>validation</th><th>git commit</th></tr>' +
    row('chest X-ray ResNet-50' + (c && c.weights === 'none' ? ' (no ImageNet weights)' : ''), c,
        c ? 'macro F1 ' + f(c.metrics.macro_f1) : '') +
    row('CT U-Net + DeCoVNet', t, t ? 'held-out ROC AUC ' + f(t.metrics.roc_auc) : '') + '</table>';
  document.getElementById('models').textContent = JSON.stringify(j.models, null, 1); });
</script></body></html>
"""


def _model_summary(card) -> dict[str, Any]:
    d = card.to_dict()
    prov = d.pop("provenance", {}) or {}
    d["git"] = prov.get("git")
    return d


def create_app(cxr: tuple[Any, Any] | None = None, ct: tuple[Any, Any, Any] | None = None, *,
               limits: Limits | None = None, tmp_root: str | Path | None = None):
    """The FastAPI application.

    Parameters
    ----------
    cxr : ``(model, CXRModelCard)`` or None (the CXR endpoint then answers 503)
    ct : ``(unet, decovnet, CTModelCard)`` or None
    limits : upload caps (:class:`Limits`)
    tmp_root : parent of the per-request temporary folders (default: the system's)
    """
    limits = limits or Limits()
    app = FastAPI(title="covid-repro models", version="1", description=DISCLAIMER)
    app.state.tmp_root = str(tmp_root) if tmp_root is not None else None

    @app.middleware("http")
    async def _cap_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_upload_bytes:
            return JSONResponse({"detail": f"upload of {int(length)} bytes exceeds the limit of "
                                           f"{limits.max_upload_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(UploadRejected)
    async def _rejected(request, exc: UploadRejected):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    async def _save(upload: UploadFile, folder: Path) -> tuple[Path, str]:
        name = Path(upload.filename or "upload").name or "upload"
        path = folder / ("upload-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in name))
        total = 0
        with open(path, "wb") as fh:
            while True:
                block = await upload.read(2**20)
                if not block:
                    break
                total += len(block)
                if total > limits.max_upload_bytes:
                    raise UploadRejected(413, f"upload exceeds the limit of {limits.max_upload_bytes} bytes")
                fh.write(block)
        if total == 0:
            raise UploadRejected(400, "empty upload (0 bytes)")
        with open(path, "rb") as fh:
            kind = sniff(fh.read(352))
        return path, kind

    @contextlib.asynccontextmanager
    async def _received(upload: UploadFile, model: Any, missing: str):
        """The upload saved in a fresh temporary folder: ``(name, folder, path, sniffed kind)``.

        503 when ``model`` is None; a package error raised inside becomes a 422, and every
        refusal (:class:`UploadRejected`) a message that starts with the upload's name (never
        the temporary path); the folder is removed whatever happens.
        """
        if model is None:
            raise UploadRejected(503, missing)
        name = Path((upload.filename or "upload").replace("\\", "/")).name or "upload"
        with tempfile.TemporaryDirectory(prefix="repro-upload-", dir=app.state.tmp_root) as tmp:
            tmp_path = Path(tmp)
            try:
                path, kind = await _save(upload, tmp_path)
                yield name, tmp_path, path, kind
            except ReproError as exc:
                raise UploadRejected(422, f"{name}: {str(exc).replace(str(tmp_path) + '/', '')}") from None
            except UploadRejected as exc:
                if exc.message.startswith(f"{name}:"):
                    raise
                raise UploadRejected(exc.status, f"{name}: {exc.message}") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return _PAGE.replace("__DISCLAIMER__", DISCLAIMER)

    @app.get("/api/health")
    def health() -> dict:
        """Status and the cards (checkpoint hashes, settings, validation metrics, provenance) of the models."""
        return {"status": "ok", "disclaimer": DISCLAIMER,
                "models": {"cxr": _model_summary(cxr[1]) if cxr else None,
                           "ct": _model_summary(ct[2]) if ct else None}}

    @app.post("/api/predict/cxr")
    async def predict_cxr_endpoint(file: UploadFile = File(...)) -> dict:
        """Class probabilities (summing to 1) and a Grad-CAM heat map (PNG, base64) of a chest X-ray."""
        from .predict import predict_cxr

        async with _received(file, cxr, "no chest X-ray model in this build: run notebook 07 first") as (
                name, tmp_path, path, kind):
            if kind not in ("png", "jpeg"):
                raise UploadRejected(415, f"{name}: not a PNG or JPEG image (content looks like {kind})")
            out = predict_cxr(cxr[0], path, cxr[1], max_pixels=limits.max_pixels)
        return {"file": name, "probabilities": out["probabilities"], "prediction": out["prediction"],
                "heatmap_png_base64": _b64(out["heatmap_png"]), "seconds": out["seconds"],
                "model": _model_summary(cxr[1]), "disclaimer": DISCLAIMER}

    @app.post("/api/predict/ct")
    async def predict_ct_endpoint(file: UploadFile = File(...)) -> dict:
        """COVID-19 probability, lung and lesion volumes and a preview slice of a chest CT."""
        from .predict import predict_ct

        async with _received(file, ct, "no CT models in this build: run notebooks 03 and 04 first") as (
                name, tmp_path, path, kind):
            if kind == "gzip":
                path = gunzip_capped(path, tmp_path / "volume.nii", limits)
                with open(path, "rb") as fh:
                    if sniff(fh.read(352)) != "nifti":
                        raise UploadRejected(415, f"{name}: the gzip does not hold a NIfTI volume")
            elif kind == "nifti":
                path = path.rename(tmp_path / "volume.nii")
            elif kind == "zip":
                files = safe_extract_zip(path, tmp_path / "series", limits)
                path = _series_dir(files, tmp_path / "series")
            else:
                raise UploadRejected(415, f"{name}: not a NIfTI volume, a .nii.gz or a zipped DICOM series "
                                          f"(content looks like {kind})")
            out = predict_ct(ct[0], ct[1], path, ct[2])
            preview = _ct_preview_png(out["ct_u8"], out["lesion_mask"], out["lung_mask"])
        return {"file": name, "p_covid": out["p_covid"], "prediction": out["prediction"],
                "probabilities": {"COVID-19": out["p_covid"], "negative": 1.0 - out["p_covid"]},
                "lung_ml": out["lung_ml"],
                "lesion_ml": out["lesion_ml"], "shape_1mm": out["shape_1mm"], "seconds": out["seconds"],
                "slice_png_base64": _b64(preview), "model": _model_summary(ct[2]), "disclaimer": DISCLAIMER}

    return app


def app_from_build(profile: str, work_dir: str | Path | None = None, results_dir: str | Path | None = None,
                   limits: Limits | None = None):
    """The app with whatever models the build of ``profile`` has (missing ones answer 503)."""
    from . import predict

    cxr = ct = None
    try:
        card = predict.cxr_card(profile, work_dir, results_dir)
        cxr = (predict.load_cxr_model(card), card)
    except ReproError as exc:
        print(f"repro serve: no chest X-ray model: {exc}")
    try:
        card_ct = predict.ct_card(profile, work_dir, results_dir)
        unet, net = predict.load_ct_models(card_ct)
        ct = (unet, net, card_ct)
    except ReproError as exc:
        print(f"repro serve: no CT models: {exc}")
    return create_app(cxr, ct, limits=limits)
