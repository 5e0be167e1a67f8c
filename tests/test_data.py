"""Manifests (schema) and the verified fetch: mirror, HTTP download, checksum, missing file."""
from __future__ import annotations

import copy
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest

from reprolib import data
from reprolib.errors import ChecksumError, DataUnavailableError, ManifestError

PAYLOAD = b"covid-repro test payload\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


SIZE = len(PAYLOAD)


def manifest_doc(url="https://example.org/files/a%20b.txt", sha=SHA, size=SIZE):
    return {"dataset": "toy", "title": "Toy", "citation": "Nobody (2026)", "licence": "CC0-1.0",
            "upstream": {"url": "https://example.org"},
            "files": [{"url": url, "sha256": sha, "bytes": size, "label": "healthy",
                       "group": "p1", "split": "train", "role": "cxr_image"}]}


def entry(url="https://example.org/files/a%20b.txt", sha=SHA):
    return data.parse_manifest(manifest_doc(url, sha)).files[0]


# ----------------------------------------------------------------------------- schema
def test_parse_manifest_valid():
    m = data.parse_manifest(manifest_doc(), "toy.yml")
    assert m.dataset == "toy" and len(m.files) == 1
    assert m.files[0].relpath == "example.org/files/a b.txt"


@pytest.mark.parametrize("field", ["url", "sha256", "bytes", "label", "group", "split", "role"])
def test_missing_file_field_names_file_and_field(field):
    doc = manifest_doc()
    del doc["files"][0][field]
    with pytest.raises(ManifestError) as err:
        data.parse_manifest(doc, "bad.yml")
    assert "bad.yml" in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("field", ["dataset", "title", "citation", "licence", "upstream", "files"])
def test_missing_dataset_field(field):
    doc = manifest_doc()
    del doc[field]
    with pytest.raises(ManifestError, match=field):
        data.parse_manifest(doc, "bad.yml")


@pytest.mark.parametrize("sha", ["abc", "z" * 64, SHA[:-1], 123])
def test_bad_hash_format(sha):
    with pytest.raises(ManifestError, match="sha256"):
        data.parse_manifest(manifest_doc(sha=sha), "bad.yml")


def test_bad_bytes_and_url_and_duplicates():
    with pytest.raises(ManifestError, match="bytes"):
        data.parse_manifest(manifest_doc(size=-1), "bad.yml")
    with pytest.raises(ManifestError, match="http"):
        data.parse_manifest(manifest_doc(url="ftp://x/y"), "bad.yml")
    with pytest.raises(ManifestError, match="escapes"):
        data.parse_manifest(manifest_doc(url="https://x.org/a/../../etc/passwd"), "bad.yml")
    doc = manifest_doc()
    doc["files"].append(copy.deepcopy(doc["files"][0]))
    with pytest.raises(ManifestError, match="duplicate"):
        data.parse_manifest(doc, "bad.yml")


def test_load_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        data.load_manifest(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ManifestError, match="invalid YAML"):
        data.load_manifest(bad)


def test_committed_manifests_are_valid_and_cover_profiles():
    allm = data.load_manifests()
    for profile in ("sample", "paper"):
        assert data.profile_manifests(profile)  # every named dataset has a manifest
    assert all(m.citation and m.licence and m.upstream for m in allm.values())
    # paper-profile datasets say how to obtain them
    for m in data.profile_manifests("paper"):
        assert m.paper.get("url") and m.paper.get("instructions"), m.dataset


def test_sample_manifests_equal_mirror_index(mirror):
    index = data.read_mirror_index(mirror / "index.tsv")
    listed = {(f.url, f.sha256, f.bytes) for m in data.profile_manifests("sample") for f in m.files}
    expected = {(r.url, r.sha256, int(r.bytes)) for r in index.itertuples()}
    assert listed == expected
    # the relpath rule maps every URL onto the mirror's path column
    assert {data.url_to_relpath(u) for u, _, _ in listed} == set(index.path)


# ----------------------------------------------------------------------------- fetch
def make_mirror(root: Path, e: data.FileEntry, payload: bytes = PAYLOAD) -> Path:
    p = root / e.relpath
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(payload)
    return root


def test_fetch_from_mirror_then_cache(tmp_path):
    e = entry()
    mirror = make_mirror(tmp_path / "mirror", e)
    got = data.fetch(e, data_dir=tmp_path / "cache", mirror=mirror, download=False)
    assert got == tmp_path / "cache" / "example.org/files/a b.txt"
    assert got.read_bytes() == PAYLOAD
    # second call: served from the verified cache even without the mirror
    (mirror / e.relpath).unlink()
    assert data.fetch(e, data_dir=tmp_path / "cache", mirror=None, download=False) == got


def test_corrupt_cache_is_replaced(tmp_path):
    e = entry()
    mirror = make_mirror(tmp_path / "mirror", e)
    got = data.fetch(e, data_dir=tmp_path / "cache", mirror=mirror, download=False)
    got.write_bytes(b"tampered")  # size and mtime change: the stamp no longer matches
    again = data.fetch(e, data_dir=tmp_path / "cache", mirror=mirror, download=False)
    assert again.read_bytes() == PAYLOAD


def test_mirror_checksum_mismatch(tmp_path):
    e = entry()
    mirror = make_mirror(tmp_path / "mirror", e, payload=PAYLOAD + b"x")
    with pytest.raises(ChecksumError) as err:
        data.fetch(e, data_dir=tmp_path / "cache", mirror=mirror, download=False)
    msg = str(err.value)
    assert "a b.txt" in msg and SHA in msg and hashlib.sha256(PAYLOAD + b"x").hexdigest() in msg
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []  # no partial or bad copy survives


def test_missing_file_without_mirror_says_how_to_fix(tmp_path):
    e = entry(url="http://127.0.0.1:9/nothing.bin")  # discard port: connection refused
    with pytest.raises(DataUnavailableError) as err:
        data.fetch(e, data_dir=tmp_path / "cache", mirror=None, retries=0, timeout=2)
    assert "REPRO_DATA_MIRROR" in str(err.value) and "nothing.bin" in str(err.value)
    with pytest.raises(DataUnavailableError, match="has no"):
        data.fetch(e, data_dir=tmp_path / "cache", mirror=tmp_path, download=False)


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_over_http(tmp_path, http_server):
    root, base = http_server
    (root / "ok.bin").write_bytes(PAYLOAD)
    e = entry(url=f"{base}/ok.bin")
    got = data.fetch(e, data_dir=tmp_path / "cache", mirror=None, progress=True)
    assert got.read_bytes() == PAYLOAD
    assert data.is_verified(got, SHA, tmp_path / "cache")
    # stamps live outside the data tree, so a DICOM folder holds only DICOM files
    assert sorted(p.name for p in got.parent.iterdir()) == ["ok.bin"]
    assert (tmp_path / "cache" / data.STAMPS / (data.url_to_relpath(e.url) + ".json")).is_file()


def test_download_with_wrong_content_is_rejected(tmp_path, http_server):
    root, base = http_server
    (root / "bad.bin").write_bytes(b"not the payload")
    e = entry(url=f"{base}/bad.bin")
    with pytest.raises(ChecksumError, match="bad.bin"):
        data.fetch(e, data_dir=tmp_path / "cache", mirror=None)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_download_404_is_unavailable(tmp_path, http_server):
    _, base = http_server
    with pytest.raises(DataUnavailableError, match="404"):
        data.fetch(entry(url=f"{base}/missing.bin"), data_dir=tmp_path / "cache", mirror=None, retries=0)


@pytest.mark.slow
def test_fetch_and_verify_sample_profile_from_mirror(sample_cache):
    cache, rep = sample_cache  # fetched from the mirror once per session (conftest)
    assert rep.n_files == len(rep.paths) > 2000
    out = data.verify_profile("sample", data_dir=cache)
    assert not out["bad"] and not out["missing"] and len(out["ok"]) == rep.n_files
