"""Interrupted work: a fetch, a notebook run and a training run killed with SIGKILL, then rerun.

Each case starts the real code in a subprocess (its own session, so the whole process group dies,
kernel included), kills it at a point drawn from a seeded generator, and checks that nothing
partial is taken for complete and that the rerun finishes and verifies.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tinynb import write_notebook

from reprolib import bookbuild, data, modelfile, runner
from reprolib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.extended]  # make test-extended (CI runs it)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRO_")}
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    return env


def _start(code: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the process had already finished: nothing was interrupted\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before the kill point:\n{proc.stdout.read()}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the kill point was never reached")
        time.sleep(0.01)


def _progress(marker: Path) -> int:
    """The step a notebook wrote last, or -1; read once, as the writer may be mid-rewrite."""
    try:
        text = marker.read_text().strip()
    except FileNotFoundError:
        return -1
    return int(text) if text.isdigit() else -1


# ------------------------------------------------------------------------------------ fetch
class _SlowFiles(http.server.BaseHTTPRequestHandler):
    payload = b""
    delay = 0.0

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        for i in range(0, len(self.payload), 65536):
            self.wfile.write(self.payload[i:i + 65536])
            self.wfile.flush()
            time.sleep(type(self).delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    rng = np.random.default_rng(0)
    _SlowFiles.payload = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()  # 4 MiB
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowFiles)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, _SlowFiles
    srv.shutdown()


FETCH = """
import sys
from reprolib import data
e = data.FileEntry("t", sys.argv[1], sys.argv[2], int(sys.argv[3]), "", "", "", "x")
data.fetch(e, data_dir=sys.argv[4], mirror=None, timeout=30)
"""


def test_fetch_killed_mid_file_then_rerun_verifies(slow_server, tmp_path, monkeypatch):
    srv, handler = slow_server
    url = f"http://127.0.0.1:{srv.server_address[1]}/host/blob.bin"
    sha = hashlib.sha256(handler.payload).hexdigest()
    entry = data.FileEntry("t", url, sha, len(handler.payload), "", "", "", "x")
    cache = tmp_path / "cache"
    dest = cache / entry.relpath
    rng = np.random.default_rng(7)
    for round_ in range(3):
        handler.delay = 0.03
        at = int(rng.integers(128 << 10, 3 << 20))  # kill once this many bytes are on disk
        parts = lambda: list(dest.parent.glob(f".{dest.name}.*.part")) if dest.parent.is_dir() else []  # noqa: E731
        proc = _start(FETCH, _env(), url, sha, str(entry.bytes), str(cache))
        _wait_for(lambda at=at, parts=parts: any(p.stat().st_size >= at for p in parts()), proc)
        _kill(proc)
        assert not dest.exists(), "a partial download was renamed into place"
        leftover = parts()
        assert leftover and all(p.stat().st_size < entry.bytes for p in leftover)
        assert not data.is_verified(dest, sha, cache)
        if round_ == 2:  # debris of a long-dead fetch is cleaned up; a fresh part file is not touched
            for p in leftover:
                os.utime(p, (time.time() - 3600, time.time() - 3600))
        handler.delay = 0.0
        monkeypatch.delenv("REPRO_DATA_MIRROR", raising=False)
        got = data.fetch(entry, data_dir=cache, mirror=None)
        assert got == dest and hashlib.sha256(dest.read_bytes()).hexdigest() == sha
        assert data.is_verified(dest, sha, cache)
        if round_ == 2:
            assert parts() == []
        dest.unlink()  # next round starts from a cache without the file
    print(f"fetch: killed 3 times mid-file (4 MiB over HTTP), each rerun verified {sha[:12]}")


# ------------------------------------------------------------------------------ notebook run
RUN = """
import sys
from reprolib import runner
report = runner.run("synthetic", notebooks=sys.argv[1], log_output=False, force=sys.argv[2] == "force")
sys.exit(0 if report.ok else 1)
"""


@pytest.fixture
def tiny_project(tmp_path):
    """A project with two small notebooks: the second one works for a few seconds."""
    root = tmp_path / "project"
    nbs = root / "notebooks"
    nbs.mkdir(parents=True)
    write_notebook(nbs, "01_first", 'nb.glue("answer", 42)\nnb.finish()')
    write_notebook(nbs, "02_second", textwrap.dedent('''
        nb.glue("started", True)  # from here on a results file exists, still incomplete
        marker = Path(work_dir) / "progress.txt"
        for i in range(12):
            marker.write_text(str(i))
            time.sleep(0.25)
        nb.glue("total", sum(range(12)))
        nb.finish()
        '''))
    env = _env(REPRO_WORK_DIR=str(tmp_path / "work"), REPRO_RESULTS_DIR=str(tmp_path / "results"),
               REPRO_DATA_DIR=str(tmp_path / "data"))
    return root, env, tmp_path


def test_notebook_run_killed_then_rerun_completes(tiny_project, monkeypatch):
    root, env, base = tiny_project
    for k in ("REPRO_WORK_DIR", "REPRO_RESULTS_DIR", "REPRO_DATA_DIR"):
        monkeypatch.setenv(k, env[k])
    sdir = runner.state_dir("synthetic")
    marker = Path(env["REPRO_WORK_DIR"]) / "synthetic" / "work" / "progress.txt"
    results = Path(env["REPRO_RESULTS_DIR"]) / "synthetic"
    rng = np.random.default_rng(11)
    # round 1 from empty folders; round 2 a forced rebuild over a complete earlier run, whose
    # notebook 02 has already rewritten part of its results when the kill comes
    for mode, step in (("plain", int(rng.integers(1, 10))), ("force", int(rng.integers(1, 10)))):
        marker.unlink(missing_ok=True)
        proc = _start(RUN, env, str(root / "notebooks"), mode)
        _wait_for(lambda step=step: _progress(marker) >= step, proc)
        _kill(proc)
        status = json.loads((sdir / "status.json").read_text())
        assert status["state"] == "running"  # never "ok": the run did not finish
        assert "02_second" not in json.loads((sdir / "cache.json").read_text())  # not trusted on rerun
        with pytest.raises(ConfigError, match="did not succeed"):
            bookbuild.prepare_book("synthetic", root)  # no book from an interrupted run
        again = runner.run("synthetic", notebooks=root / "notebooks", log_output=False, echo=lambda s: None)
        assert again.ok and again.executed == ["02_second"] and again.skipped == ["01_first"]
        assert json.loads((sdir / "status.json").read_text())["state"] == "ok"
        assert json.loads((results / "02_second.json").read_text())["values"] == {"started": True, "total": 66}
        assert json.loads((results / "01_first.json").read_text())["values"] == {"answer": 42}
    print("notebook run: killed twice inside notebook 02 (fresh and forced); each rerun skipped 01 "
          "and executed 02 again")


# ------------------------------------------------------------------------------------ training
TRAIN = "import sys; from reprolib import cli; sys.exit(cli.main(sys.argv[1:]))"


def _train_args(cohort: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "decovnet", "--cohort", str(cohort), "--out", str(out), "--fold", "0", "--epochs", str(epochs),
            "--lr", "1e-3", "--fc-init", "pytorch", "--validate-every", "1", "--no-progress", "--device", "cpu"]


def _epoch_of(path: Path) -> int:
    try:
        return int(modelfile.load_checkpoint(path)["epoch"])
    except Exception:  # not written yet, or being replaced this very moment
        return -1


def test_training_killed_resumes_to_the_uninterrupted_weights(phantom_cohort, tmp_path):
    epochs = 4
    ref = subprocess.run([sys.executable, "-c", TRAIN, *_train_args(phantom_cohort, tmp_path / "ref", epochs)],
                         env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    out = tmp_path / "killed"
    rng = np.random.default_rng(5)
    kill_after = int(rng.integers(1, epochs - 1))  # 1 or 2: at least one epoch left to resume
    proc = _start(TRAIN, _env(), *_train_args(phantom_cohort, out, epochs))
    _wait_for(lambda: _epoch_of(out / "last.pt") >= kill_after, proc)
    _kill(proc)
    reached = _epoch_of(out / "last.pt")
    assert kill_after <= reached < epochs  # a complete, verified checkpoint of an unfinished run
    again = subprocess.run([sys.executable, "-c", TRAIN, *_train_args(phantom_cohort, out, epochs)],
                           env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    a, b = modelfile.load_checkpoint(tmp_path / "ref" / "last.pt"), modelfile.load_checkpoint(out / "last.pt")
    assert a["epoch"] == b["epoch"] == epochs
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # bitwise: resumed = uninterrupted
    ha = json.loads((tmp_path / "ref" / "history.json").read_text())["history"]
    hb = json.loads((out / "history.json").read_text())["history"]
    assert hb["resumed_from_epoch"] == reached and ha["train_loss"] == hb["train_loss"]
    print(f"training: killed after epoch {reached} of {epochs}; the resumed run ended with the uninterrupted weights")
