"""Layout and packaging: dependencies in sync, notebooks and the table of contents agree."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

from reprolib import runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_data_acquisition", "02_preprocessing", "03_unet", "04_decovnet", "05_2dclfnet",
             "06_cam_localization", "07_cxr_resnet50", "08_external_validation", "09_performance",
             "10_claims_ledger"]
PARAMETERS = ("profile", "seed", "device", "data_dir", "work_dir", "results_dir")


def normalise(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(map(normalise, deps)) == sorted(normalise(p) for p in pip if not p.startswith("-e"))
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
    assert any(d.startswith("jupyter-book>=1.0.4.post1,<2") for d in deps)


def test_layout_exists():
    for name in ("book", "notebooks", "reprolib", "data_manifests", "tests", "_config.yml", "_toc.yml",
                 "environment.yml", "pyproject.toml", "Makefile", "README.md", ".ci/run"):
        assert (ROOT / name).exists(), name
    for page in ("index.md", "methods.md", "implementation_notes.md", "report.md", "references.md", "references.bib"):
        assert (ROOT / "book" / page).is_file(), page


def test_notebooks_with_parameters_cell():
    found = [p.stem for p in runner.list_notebooks(ROOT / "notebooks")]
    assert found == NOTEBOOKS
    for stem in NOTEBOOKS:
        text = (ROOT / "notebooks" / f"{stem}.py").read_text()
        assert "format_name: percent" in text or "py:percent" in text, stem
        cell = text.split('# %% tags=["parameters"]', 1)
        assert len(cell) == 2, f"{stem} has no parameters cell"
        body = cell[1].split("# %%", 1)[0]
        for name in PARAMETERS:
            assert re.search(rf"^{name} = ", body, re.M), f"{stem}: parameter {name} missing"
        assert f'Notebook("{stem}"' in text, f"{stem} must publish through reprolib.book.Notebook"
        assert "nb.finish()" in text, f"{stem} must glue its wall time"
        assert "spec §" not in text, f"{stem}: link the implementation notes, not the specification"
        assert "matplotlib.use(" not in text, f"{stem} must not force a matplotlib backend"


def test_toc_lists_every_notebook_and_page():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for stem in NOTEBOOKS:
        assert f"book/generated/{stem}" in files
    for page in ("book/methods", "book/implementation_notes", "book/report", "book/generated/provenance",
                 "book/references"):
        assert page in files
    assert toc["root"] == "book/index"


def test_book_config_rules():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"  # papermill runs them, not the book build
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"]  # top-level key in jupyter-book 1
    assert "bibtex_bibfiles" not in cfg.get("sphinx", {}).get("config", {})


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "set -euo pipefail" in ci
    assert "make test" in ci and "make test" in readme and "make book" in readme
