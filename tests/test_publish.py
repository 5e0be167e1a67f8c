"""``repro publish``: the built book lands on a gh-pages branch of a (local, bare) remote."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reprolib import publish
from reprolib.errors import ConfigError


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A project checkout with one commit, an ``origin`` that is a bare repository, and a built book."""
    remote = tmp_path / "remote.git"
    git("init", "--bare", "-q", str(remote), cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    for k, v in (("user.email", "ci@example.org"), ("user.name", "CI")):
        git("config", k, v, cwd=work)
    (work / "README.md").write_text("project\n")
    git("add", "README.md", cwd=work)
    git("commit", "-q", "-m", "start", cwd=work)
    git("remote", "add", "origin", str(remote), cwd=work)
    html = work / "_build" / "html"
    (html / "_static").mkdir(parents=True)
    (html / "index.html").write_text("<html><head><link rel='stylesheet' href='_static/a.css'></head></html>")
    (html / "_static" / "a.css").write_text("body{}")
    return work, remote


def test_publish_pushes_the_built_html_to_gh_pages(checkout):
    work, remote = checkout
    commit = publish.publish(root=work)
    assert git("rev-parse", "gh-pages", cwd=remote) == commit
    files = set(git("ls-tree", "-r", "--name-only", "gh-pages", cwd=remote).splitlines())
    assert files == {".nojekyll", "index.html", "_static/a.css"}
    assert "Book built from" in git("log", "-1", "--format=%s", "gh-pages", cwd=remote)
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=work) == "main"  # the checkout stays where it was


def test_publish_refuses_a_missing_or_networked_book(checkout, tmp_path):
    work, remote = checkout
    with pytest.raises(ConfigError, match="no built book"):
        publish.publish(html_dir=tmp_path / "nothing", root=work)
    (work / "_build" / "html" / "index.html").write_text("<script src='https://cdn.example.org/x.js'></script>")
    with pytest.raises(ConfigError, match="network"):
        publish.publish(root=work)
    assert subprocess.run(["git", "rev-parse", "--verify", "gh-pages"], cwd=remote, capture_output=True).returncode != 0


def test_no_push_commits_locally(checkout):
    work, remote = checkout
    commit = publish.publish(root=work, push=False)
    assert git("rev-parse", "gh-pages", cwd=work) == commit
    assert subprocess.run(["git", "rev-parse", "--verify", "gh-pages"], cwd=remote, capture_output=True).returncode != 0
