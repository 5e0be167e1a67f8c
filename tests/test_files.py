"""Atomic writes and SHA-256."""
from __future__ import annotations

import hashlib

import pytest

from reprolib import files


def test_atomic_write_text_and_bytes(tmp_path):
    p = files.atomic_write_text(tmp_path / "sub" / "f.txt", "héllo")
    assert p.read_bytes() == "héllo".encode()
    files.atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    files.atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_text(p, "new")
    assert p.read_text() == "old" and not list(tmp_path.glob("*.part"))


def test_writer_exception_leaves_nothing(tmp_path):
    def half(fh):
        fh.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        files.atomic_write(tmp_path / "g.bin", half)
    assert list(tmp_path.iterdir()) == []


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # spans several read chunks
    p = tmp_path / "d.bin"
    p.write_bytes(data)
    assert files.sha256_file(p, chunk=4096) == hashlib.sha256(data).hexdigest()
