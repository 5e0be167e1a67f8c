"""Hostile-input corpus (issue "H. Reliability", point 1): one test per case of ``tests/corpus.py``.

Every rejected input must raise a *specific* :mod:`reprolib.errors` class whose message names
the file and the problem, and leave nothing new in the output folder of the API it went
through; every valid-but-unusual input must load with the right values; every hostile upload
must get its HTTP status with a ``detail`` that names the upload and the problem, and leave
no temporary files. ``pytest_terminal_summary`` in ``conftest.py`` prints the case counts.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import CASES, CATEGORIES, Case, Ctx, counts  # noqa: E402

from reprolib.errors import InputError, ReproError  # noqa: E402

_GENERIC = (Exception, ValueError, OSError, ReproError, InputError)


def _problem(text: str, tmp: Path, name: str | None) -> str:
    """``text`` without the temporary folder and the file name, so that problem words are
    never matched inside a path (pytest names ``tmp_path`` after the test)."""
    text = text.replace(str(tmp), "<tmp>")
    return text.replace(name, "<file>") if name else text


def _snapshot(folder: Path | None) -> dict[str, tuple[int, int]] | None:
    """Every file under ``folder`` with its size and mtime (None when there is no folder)."""
    if folder is None or not folder.exists():
        return None if folder is None else {}
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = Path(root, n)
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _tiny_cxr_model():
    """A four-class stand-in for the ResNet-50 with a ``layer4`` for Grad-CAM (milliseconds on a CPU).

    The upload cases test what the web app does with hostile files, not the network: the
    real ResNet-50 with these images is exercised by tests/test_serve.py.
    """
    import torch
    from torch import nn

    class TinyCXRNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.layer4 = nn.Conv2d(4, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.relu(self.layer4(torch.relu(self.stem(x))))
            return self.fc(a.mean(dim=(2, 3)))

    torch.manual_seed(0)
    return TinyCXRNet().eval()


@pytest.fixture(scope="module")
def upload_client(tmp_path_factory):
    """The web app with a tiny chest X-ray model and stand-ins for the CT models.

    The CT cases are all refused while reading the upload, before any model is used; the
    stand-ins would fail loudly (HTTP 500 raised in the test) if one got further.
    """
    from fastapi.testclient import TestClient

    from reprolib import cxr, serve
    from reprolib.predict import CXRModelCard

    card = CXRModelCard(path="-", sha256="0" * 64, size=32, classes=tuple(cxr.CLASSES), weights="none")
    tmp = tmp_path_factory.mktemp("corpus_uploads")
    limits = serve.Limits(max_upload_bytes=8 * 2**20, max_expanded_bytes=32 * 2**20, max_zip_entries=10,
                          max_pixels=4_000_000)
    app = serve.create_app((_tiny_cxr_model(), card), (object(), object(), object()), limits=limits,
                           tmp_root=tmp)
    with TestClient(app) as client:
        client.tmp = tmp
        yield client


def test_corpus_size():
    """At least 40 cases, every category represented, ids unique."""
    n = counts()
    assert sum(n.values()) >= 40 and all(n[c] >= 5 for c in CATEGORIES), n
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path, monkeypatch, request, record_property):
    record_property("corpus_category", case.category)
    ctx = Ctx(tmp_path, monkeypatch, lambda: request.getfixturevalue("upload_client"))
    sc = case.build(ctx)
    before = _snapshot(sc.out_dir)

    if sc.status is not None:  # an upload
        client = ctx.client()
        r = sc.call()
        assert r.status_code == sc.status, (r.status_code, r.text)
        leftover = list(client.tmp.iterdir())
        assert not leftover, f"temporary upload files left behind: {leftover}"
        if sc.status == 200:
            assert sc.check is not None
            sc.check(r.json())
            assert r.json()["file"] == sc.name
        else:
            detail = r.json()["detail"]
            assert isinstance(detail, str), detail
            assert sc.name in detail, f"upload name {sc.name!r} not in {detail!r}"
            problem = _problem(detail, tmp_path, sc.name).lower()
            for w in sc.words:
                assert w.lower() in problem, f"{w!r} not in {detail!r}"
            assert str(client.tmp) not in detail, detail
        return

    if sc.error is None:  # valid but unusual: must be accepted with the right values
        assert sc.check is not None
        sc.check(sc.call())
    else:
        assert issubclass(sc.error, ReproError) and sc.error not in _GENERIC, sc.error
        with pytest.raises(sc.error) as info:
            sc.call()
        exc: Any = info.value
        msg = str(exc)
        assert sc.name is not None and sc.name in msg, f"file {sc.name!r} not named in {msg!r}"
        problem = _problem(msg, tmp_path, sc.name).lower()
        for w in sc.words:
            assert w.lower() in problem, f"problem word {w!r} not in {msg!r}"
        if isinstance(exc, InputError) and exc.path is not None:
            assert Path(sc.name).name in exc.path or sc.name in exc.path, (exc.path, sc.name)
    if sc.out_dir is not None:
        assert _snapshot(sc.out_dir) == before, f"output folder {sc.out_dir} changed"
