"""Building the book from a run: the executed notebooks copied into ``book/generated/`` with a
"Reproduce this page" box, parameter cells hidden, then ``jupyter-book build`` (HTML or PDF) and a
check that the built pages load nothing from the network.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from . import config
from .errors import ConfigError
from .runner import list_notebooks, load_json, state_dir

BOOK_SUBDIR = Path("book") / "generated"


SCREENSHOT = "try_the_models.png"


def _screenshot(root: Path, dest: Path) -> Path:
    """The web page screenshot the browser test saves (``results/screenshots/``), or a placeholder."""
    src = root / "results" / "screenshots" / SCREENSHOT
    if src.is_file():
        shutil.copy2(src, dest)
        return dest
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (900, 120), "white")
    ImageDraw.Draw(img).text((20, 45), "No screenshot in this build: `make test` runs the browser test that "
                                       "captures it (needs chromium).", fill="black")
    img.save(dest)
    return dest


def prepare_book(profile: str, root: Path | None = None) -> Path:
    """Copy the executed notebooks of ``profile`` into ``book/generated/`` and render provenance.

    Raises :class:`ConfigError` when the last run failed or a notebook was never executed.
    """
    from .book import banner_markdown
    from .provenance import render_markdown

    root = root or config.project_root()
    sdir = state_dir(profile)
    status = load_json(sdir / "status.json", {})
    if status.get("state") != "ok":
        raise ConfigError(sdir / "status.json",
                          f"the last `repro run --profile {profile}` did not succeed "
                          f"(state: {status.get('state', 'never run')}); no book is built from it")
    gen = root / BOOK_SUBDIR
    tmp = gen.with_name(gen.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    record = load_json(sdir / "provenance.json", None)
    if record is None:
        raise ConfigError(sdir / "provenance.json", "no run record; run `repro run` first")
    runs = {r["name"]: r for r in record.get("notebooks", [])}
    results = config.results_dir(profile)
    (tmp / "data").mkdir()
    for src in list_notebooks(root / "notebooks"):
        nb = sdir / "executed" / f"{src.stem}.ipynb"
        if not nb.is_file():
            raise ConfigError(nb, f"notebook {src.stem} has not been executed for profile {profile}")
        res = results / f"{src.stem}.json"
        if res.is_file():
            shutil.copy2(res, tmp / "data" / res.name)
        write_book_notebook(nb, tmp / nb.name, profile, runs.get(src.stem), record["provenance"],
                            res.is_file())
    (tmp / "provenance.md").write_text(render_markdown(record), encoding="utf-8")
    (tmp / "banner.md").write_text(banner_markdown(profile), encoding="utf-8")
    _screenshot(root, tmp / SCREENSHOT)
    shutil.rmtree(gen, ignore_errors=True)
    os.replace(tmp, gen)
    return gen


HIDDEN_TAGS = ("parameters", "injected-parameters")


def reproduce_box(stem: str, profile: str, run: dict[str, Any] | None, prov: dict[str, Any],
                  has_results: bool) -> str:
    """The "Reproduce this page" admonition of one chapter, from the runner's record."""
    git, hw = prov.get("git", {}), prov.get("hardware", {})
    commit = (git.get("commit") or "unknown")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    lines = [":::{admonition} Reproduce this page", ":class: tip", "",
             f"`repro run --profile {profile} --only {stem[:2]}` executes this chapter (after the chapters "
             f"before it), `repro book --profile {profile}` builds the page.", ""]
    if run:
        when = "cached from an earlier run" if run.get("status") == "cached" else "executed"
        lines.append(f"- **This build:** {run['wall_s']:.0f} s ({when}) on {hw.get('cpu', '?')}, "
                     f"{hw.get('cpu_count', '?')} logical cores, {hw.get('torch_threads', '?')} torch threads, "
                     f"GPU: {hw.get('gpu') or 'none'}; commit `{commit}`, seed {prov.get('seed')}.")
        if run.get("inputs"):
            lines.append("- **Inputs (sha256, first 12 digits):** "
                         + "; ".join(f"{k} `{v}`" for k, v in run["inputs"].items()) + ".")
    downloads = [f"{{download}}`executed notebook <{stem}.ipynb>`"]
    if has_results:
        downloads.insert(0, f"{{download}}`every published value and table (JSON) <data/{stem}.json>`")
    lines += ["- **Downloads:** " + ", ".join(downloads) + ".", ":::", ""]
    return "\n".join(lines)


def write_book_notebook(src: Path, dest: Path, profile: str, run: dict[str, Any] | None,
                        prov: dict[str, Any], has_results: bool) -> None:
    """Copy an executed notebook into the book: parameter cells removed from the page (they hold
    the build machine's paths), every other code cell's source collapsed (``hide-input``: shown on
    a click) unless the notebook removes it, and a "Reproduce this page" box appended."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(t in tags for t in HIDDEN_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
        elif cell.cell_type == "code" and not {"remove-cell", "remove-input", "hide-input"} & set(tags):
            tags.append("hide-input")  # the page reads as a text; every cell's code is one click away
    nb.cells.append(nbformat.v4.new_markdown_cell(reproduce_box(src.stem, profile, run, prov, has_results)))
    nbformat.write(nb, dest)


def build_book(root: Path | None = None, builder: str = "html") -> int:
    """``jupyter-book build --all -W -n --keep-going`` on the project root; returns the exit code."""
    import subprocess

    root = root or config.project_root()
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", "--all", "-W", "-n", "--keep-going",
           "--builder", builder, str(root)]
    code = subprocess.call(cmd, cwd=root)
    if code == 0 and builder == "html":
        remote = external_resources(root / "_build" / "html")
        if remote:
            print("the book loads resources from the network, so it cannot be read offline:")
            for page, url in remote[:20]:
                print(f"  {page}: {url}")
            return 1
    return code


REMOTE_RE = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["'](https?:)?//[^"']+["']""", re.I)


def external_resources(html_dir: Path) -> list[tuple[str, str]]:
    """``(page, tag)`` for every script, stylesheet or image a built page loads from the network."""
    found = []
    for page in sorted(Path(html_dir).rglob("*.html")):
        for m in REMOTE_RE.finditer(page.read_text(encoding="utf-8", errors="replace")):
            tag = m.group(0)
            if "<link" in tag.lower() and not re.search(r"rel=[\"'](?:stylesheet|preload|icon)", tag, re.I):
                continue  # plain hyperlinks in <link rel=...> metadata load nothing
            found.append((str(page.relative_to(html_dir)), tag[:160]))
    return found
