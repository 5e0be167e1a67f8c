"""The code part of a notebook's cache key: the package modules it imports, transitively."""
from __future__ import annotations

import modulefinder
from pathlib import Path

import pytest

from reprolib import codehash

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def pkg(tmp_path):
    """A miniature ``reprolib``: a/b chains, a subpackage, a lazy import, relative imports, data."""
    root = tmp_path / "reprolib"
    (root / "sub").mkdir(parents=True)
    (root / "profiles").mkdir()
    files = {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .sub import c  # lazy\n    return c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..d import thing\nX = 'profiles'\n",
        "d.py": "thing = 1\n",
        "serve.py": "import reprolib.a\n",
        "lonely.py": "import os\n",
        "profiles/x.yml": "k: 1\n",
        "claims.yml": "- row\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def rel(paths, root):
    return sorted(p.relative_to(root).as_posix() for p in paths)


def test_closure_follows_relative_lazy_and_package_imports(pkg):
    assert rel(codehash.closure(["reprolib.a"], pkg), pkg) == [
        "__init__.py", "a.py", "b.py", "d.py", "sub/__init__.py", "sub/c.py"]
    assert rel(codehash.closure(["reprolib.lonely"], pkg), pkg) == ["__init__.py", "lonely.py"]
    mods = codehash.closure(["reprolib.a"], pkg)
    assert rel(codehash.data_files(mods, pkg), pkg) == ["profiles/x.yml"]  # named by sub/c.py, claims.yml not


def test_notebook_hash_changes_only_with_the_code_it_imports(pkg, tmp_path):
    nb = tmp_path / "01_x.py"
    nb.write_text("# %%\nfrom reprolib import a\n")
    before = codehash.notebook_hash(nb, pkg)
    (pkg / "serve.py").write_text("import reprolib.a\n# edited\n")
    (pkg / "claims.yml").write_text("- edited\n")
    assert codehash.notebook_hash(nb, pkg) == before
    (pkg / "d.py").write_text("thing = 2\n")  # reached through a lazy and a relative import
    after = codehash.notebook_hash(nb, pkg)
    assert after != before
    (pkg / "profiles" / "x.yml").write_text("k: 2\n")
    assert codehash.notebook_hash(nb, pkg) != after


def test_names_of_imported_objects_are_not_modules(pkg):
    names = codehash.imported_names("from reprolib.d import thing\nimport numpy\n")
    assert names == {"reprolib.d", "reprolib.d.thing"}
    assert codehash.module_file("reprolib.d.thing", pkg) is None
    assert codehash.module_file("reprolib", pkg) == pkg / "__init__.py"


@pytest.mark.parametrize("source", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_every_module_python_would_load_is_in_the_notebook_key(source):
    """An independent reading: the standard library's modulefinder scans the compiled code (also
    the bodies of functions) of the notebook and of everything it imports."""
    finder = modulefinder.ModuleFinder(path=[str(codehash.ROOT.parent)], excludes=[
        "numpy", "scipy", "torch", "torchvision", "pandas", "matplotlib", "seaborn", "sklearn", "PIL",
        "nibabel", "pydicom", "yaml", "tqdm", "papermill", "IPython", "myst_nb", "jupytext", "cc3d",
        "skimage", "requests", "urllib3", "nbformat", "nbclient", "jupyter_book", "sphinx", "docutils"])
    finder.run_script(str(source))
    loaded = {Path(m.__file__).resolve() for name, m in finder.modules.items()
              if name.split(".")[0] == "reprolib" and m.__file__}
    ours = set(codehash.notebook_modules(source))
    assert loaded and loaded <= ours, sorted(p.name for p in loaded - ours)
    assert codehash.ROOT / "serve.py" not in ours


def test_import_cycles_are_found(pkg):
    assert codehash.import_cycles(pkg) == []
    (pkg / "d.py").write_text("def g():\n    from . import a  # lazy, still a ring a -> b -> sub.c -> d -> a\n")
    assert codehash.import_cycles(pkg) == [["reprolib.a", "reprolib.b", "reprolib.d", "reprolib.sub.c"]]


def test_the_package_has_no_import_cycle():
    assert codehash.import_cycles() == []


def test_every_module_holds_one_concept_of_at_most_800_lines():
    sizes = {p.relative_to(codehash.ROOT).as_posix(): len(p.read_text().splitlines())
             for p in codehash.ROOT.rglob("*.py") if "__pycache__" not in p.parts}
    assert len(sizes) > 40 and not {k: v for k, v in sizes.items() if v > 800}
