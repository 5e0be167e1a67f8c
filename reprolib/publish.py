"""Publishing the built book: ``repro publish`` / ``make publish``.

The HTML of ``_build/html`` goes to a ``gh-pages`` branch with ghp-import (a commit whose tree is
exactly the built site, plus ``.nojekyll`` so that GitHub Pages serves the ``_static`` folders), then
is pushed to the remote unless ``push=False``. The build is refused first when it is missing or was
made from a failed run, and when a page loads resources from the network.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from . import config
from .errors import ConfigError


def ghp_import_command() -> list[str]:
    """The ghp-import executable of this environment."""
    exe = Path(sys.executable).with_name("ghp-import")
    return [str(exe)] if exe.exists() else [shutil.which("ghp-import") or "ghp-import"]


def publish(html_dir: str | Path | None = None, *, remote: str = "origin", branch: str = "gh-pages",
            push: bool = True, message: str | None = None, root: str | Path | None = None) -> str:
    """Commit the built book to ``branch`` (and push it to ``remote``); returns the new commit id.

    ``html_dir`` defaults to ``<root>/_build/html``; ``root`` (the git checkout) to the project root.
    Raises :class:`ConfigError` naming the folder when there is no built book, and the git error
    when committing or pushing fails.
    """
    from .bookbuild import external_resources

    root = Path(root or config.project_root())
    html = Path(html_dir or root / "_build" / "html")
    if not (html / "index.html").is_file():
        raise ConfigError(html, "no built book here: run `make book` (or `repro book`) first")
    remote_refs = external_resources(html)
    if remote_refs:
        raise ConfigError(html, f"{len(remote_refs)} page(s) load resources from the network, e.g. "
                                f"{remote_refs[0][0]}: {remote_refs[0][1][:80]}")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    message = message or f"Book built from {head.stdout.strip() or 'an unknown commit'}"
    cmd = ghp_import_command() + ["--no-jekyll", "--branch", branch, "--remote", remote, "--message", message]
    if push:
        cmd.append("--push")
    done = subprocess.run(cmd + [str(html)], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(root, f"ghp-import failed: {(done.stderr or done.stdout).strip()[:500]}")
    rev = subprocess.run(["git", "rev-parse", branch], cwd=root, capture_output=True, text=True, check=True)
    return rev.stdout.strip()
