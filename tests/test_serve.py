"""reprolib.serve: the JSON API with hostile uploads, and the web page in a real browser."""
from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from reprolib import predict, serve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tiny_build):
    b = tiny_build
    cxr_card = predict.cxr_card("sample", b["work"], b["results"])
    ct_card = predict.ct_card("sample", b["work"], b["results"])
    unet, net = predict.load_ct_models(ct_card)
    return (predict.load_cxr_model(cxr_card), cxr_card), (unet, net, ct_card)


@pytest.fixture
def client(models, tmp_path):
    from fastapi.testclient import TestClient

    tmp = tmp_path / "uploads"
    tmp.mkdir()
    limits = serve.Limits(max_upload_bytes=8 * 2**20, max_expanded_bytes=64 * 2**20, max_pixels=4_000_000)
    app = serve.create_app(*models, limits=limits, tmp_root=tmp)
    with TestClient(app) as c:
        c.tmp = tmp
        yield c
    assert not any(tmp.iterdir()), f"uploads left behind: {list(tmp.iterdir())}"


def _post(client, url, name, data):
    r = client.post(url, files={"file": (name, data, "application/octet-stream")})
    assert not any(client.tmp.iterdir()), "temporary upload folder not removed"
    return r


def test_health_and_openapi(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["models"]["cxr"]["size"] == 64 and h["models"]["ct"]["z_step"] == 2
    assert h["models"]["cxr"]["git"]["commit"] == "0" * 40
    assert h["models"]["cxr"]["path"] == "cxr_resnet50.pt" and h["models"]["ct"]["unet_path"] == "unet/final.pt"
    assert "/tmp/" not in json.dumps(h) and "pytest" not in json.dumps(h)  # no server path leaks
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict/cxr", "/api/predict/ct", "/api/health"} <= set(paths)
    page = client.get("/").text
    assert "not a medical device" in page and 'id="cxr-file"' in page


@pytest.mark.parametrize("name", ["cxr.png", "cxr.jpg"])
def test_cxr_png_and_jpeg(client, tiny_build, name):
    r = _post(client, "/api/predict/cxr", name, (tiny_build["inputs"] / name).read_bytes())
    assert r.status_code == 200, r.text
    j = r.json()
    assert sum(j["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    import base64

    assert base64.b64decode(j["heatmap_png_base64"]).startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct_dicom.zip"])
def test_ct_nifti_gzip_and_zipped_dicom(client, tiny_build, name):
    r = _post(client, "/api/predict/ct", name, (tiny_build["inputs"] / name).read_bytes())
    assert r.status_code == 200, r.text
    j = r.json()
    assert 0 <= j["p_covid"] <= 1 and j["lung_ml"] > 50 and j["model"]["hw"] == [32, 48]
    assert sum(j["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)
    assert j["probabilities"]["COVID-19"] == j["p_covid"]


def _zip(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for n, d in entries.items():
            zf.writestr(n, d)
    return buf.getvalue()


def _hostile(tiny_build) -> list[tuple[str, str, bytes, int, str]]:
    png = (tiny_build["inputs"] / "cxr.png").read_bytes()
    nii = (tiny_build["inputs"] / "ct.nii").read_bytes()
    from PIL import Image

    big = io.BytesIO()
    Image.new("L", (3000, 3000)).save(big, format="PNG")  # 9 Mpx > 4 Mpx budget, tiny file
    return [
        ("/api/predict/cxr", "x.png", b"", 400, "empty"),
        ("/api/predict/cxr", "x.png", b"GIF89a" + b"\0" * 100, 415, "not a PNG or JPEG"),
        ("/api/predict/cxr", "x.nii", nii, 415, "not a PNG or JPEG"),
        ("/api/predict/cxr", "trunc.png", png[: len(png) // 2], 422, "trunc.png"),
        ("/api/predict/cxr", "bomb.png", big.getvalue(), 422, "decompression-bomb"),
        ("/api/predict/cxr", "huge.png", png + b"\0" * (9 * 2**20), 413, "exceeds the limit"),
        ("/api/predict/ct", "x.png", png, 415, "not a NIfTI"),
        ("/api/predict/ct", "trunc.nii.gz", gzip.compress(nii)[:2000], 422, "gzip"),
        ("/api/predict/ct", "bomb.nii.gz", gzip.compress(b"\0" * (80 * 2**20)), 413, "decompression-bomb"),
        ("/api/predict/ct", "notnifti.gz", gzip.compress(b"hello" * 100), 415, "does not hold a NIfTI"),
        ("/api/predict/ct", "slip.zip", _zip({"../../evil.dcm": b"x"}), 400, "path traversal"),
        ("/api/predict/ct", "abs.zip", _zip({"/etc/evil.dcm": b"x"}), 400, "path traversal"),
        ("/api/predict/ct", "bomb.zip", _zip({"a.dcm": b"\0" * (70 * 2**20)}), 413, "zip"),
        ("/api/predict/ct", "ratio.zip", _zip({"a.dcm": b"\0" * (2 * 2**20)}), 413, "decompression-bomb"),
        ("/api/predict/ct", "two.zip", _zip({"a/1.dcm": b"x", "b/2.dcm": b"y"}, zipfile.ZIP_STORED), 422,
         "one DICOM series"),
        ("/api/predict/ct", "junk.zip", _zip({"s/1.dcm": b"not dicom", "s/2.dcm": b"nope"}, zipfile.ZIP_STORED), 422,
         "junk.zip"),
        ("/api/predict/ct", "bad.zip", b"PK\x03\x04" + b"\0" * 50, 422, "corrupt zip"),
    ]


def test_hostile_uploads_get_4xx_with_a_message_and_leave_nothing(client, tiny_build):
    cases = _hostile(tiny_build)
    for url, name, data, status, words in cases:
        r = _post(client, url, name, data)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert words.lower() in r.json()["detail"].lower(), (name, r.json()["detail"])
    print(f"{len(cases)} hostile uploads refused with a message")


def test_zip_slip_helper_never_writes_outside(tmp_path):
    src = tmp_path / "s.zip"
    src.write_bytes(_zip({"ok/a.dcm": b"1", "ok/../../outside.dcm": b"2"}))
    with pytest.raises(serve.UploadRejected) as err:
        serve.safe_extract_zip(src, tmp_path / "out", serve.Limits())
    assert err.value.status == 400 and not (tmp_path / "outside.dcm").exists()


def test_sniff():
    assert serve.sniff(b"\x89PNG\r\n\x1a\n....") == "png" and serve.sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert serve.sniff(b"\x1f\x8b\x08") == "gzip" and serve.sniff(b"PK\x03\x04") == "zip"
    hdr = bytearray(352)
    hdr[:4] = (348).to_bytes(4, "little")
    hdr[344:348] = b"n+1\x00"
    assert serve.sniff(bytes(hdr)) == "nifti" and serve.sniff(b"hello") == "unknown"


def test_no_models_answers_503(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(serve.create_app(None, None, tmp_root=tmp_path)) as c:
        r = c.post("/api/predict/cxr", files={"file": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")})
        assert r.status_code == 503 and "notebook 07" in r.json()["detail"]


# ----------------------------------------------------------------------------- browser
def _chromium() -> str | None:
    for cand in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if cand and Path(cand).is_file():
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(_chromium() is None, reason="Debian chromium not installed (.ci/run installs it: "
                                                "apt-get install chromium)")
def test_browser_uploads_an_image_and_sees_probabilities(models, tiny_build, tmp_path):
    import uvicorn
    from playwright.sync_api import sync_playwright

    port = _free_port()
    app = serve.create_app(*models, tmp_root=tmp_path)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/")
            assert "not a medical device" in page.inner_text("#banner")
            page.set_input_files("#cxr-file", str(tiny_build["inputs"] / "cxr.png"))
            page.click("#cxr-submit")
            page.wait_for_selector("#cxr-heatmap", timeout=60_000)
            rows = page.locator("#probabilities tr").count()
            assert rows == 5  # header + 4 classes
            assert page.locator("#cxr-heatmap").evaluate("img => img.naturalWidth") == 64
            page.wait_for_function("document.getElementById('model-table').textContent.includes('macro F1')")
            assert "held-out ROC AUC 0.900" in page.inner_text("#model-table")
            shot = ROOT / "results" / "screenshots" / "try_the_models.png"  # book: copied by `repro book`
            shot.parent.mkdir(parents=True, exist_ok=True)
            tmp_shot = tmp_path / "shot.png"
            page.screenshot(path=str(tmp_shot), full_page=True)
            shutil.copyfile(tmp_shot, shot)  # the image the book's "Try the models" page shows
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert shot.stat().st_size > 10_000
    assert not any(p for p in tmp_path.iterdir() if p.name.startswith("repro-upload-"))
