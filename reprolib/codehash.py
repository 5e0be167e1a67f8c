"""Which ``reprolib`` code a notebook can run, and its hash for the execution cache.

The execution cache (:mod:`reprolib.runner`) keys a notebook on the package modules it imports,
directly or through other modules, not on the whole package: editing ``serve.py`` re-executes no
notebook, editing ``models.py`` re-executes the notebooks that import it.

Imports are read from the source with :mod:`ast`, every ``import`` statement wherever it stands
(a function's lazy import runs when the function does), absolute or relative. Importing
``reprolib.a.b`` also runs ``reprolib/__init__.py`` and ``reprolib/a/__init__.py``, so those are
part of it. A data file of the package (``profiles/*.yml``, ``claims.yml``, ``figures/pipeline.yml``)
belongs to a module whose source names it, or its top folder, in quotes.
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

PACKAGE = "reprolib"
ROOT = Path(__file__).resolve().parent


def _read(path: Path) -> bytes:
    """A file's bytes (one place, so that a test can stand in for an edited file)."""
    return path.read_bytes()


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module ``name`` (``reprolib.x.y`` -> ``root/x/y.py`` or ``root/x/y/__init__.py``),
    or ``None`` when ``name`` is not a module of the package (e.g. a function imported by name)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    path = base.with_suffix(".py")
    return path if parts[1:] and path.is_file() else None


def module_name(path: Path, root: Path = ROOT) -> str:
    """``root/x/y.py`` -> ``reprolib.x.y``; ``root/x/__init__.py`` -> ``reprolib.x``."""
    rel = path.relative_to(root).with_suffix("").parts
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join((PACKAGE, *rel))


def imported_names(text: str | bytes, module: str | None = None, is_package: bool = False) -> set[str]:
    """Names of ``reprolib`` modules (or of objects in them) that the import statements of
    ``text`` name. ``module`` is the importing module's name, needed for relative imports
    (a notebook has none). ``from reprolib import x`` gives ``reprolib`` and ``reprolib.x``:
    ``x`` may be a submodule."""
    return set(_imported_names(bytes(text, "utf-8") if isinstance(text, str) else text, module, is_package))


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement of ``body`` and of the blocks nested in it (functions, classes, if, try,
    with, loops, match), without descending into expressions: imports are statements."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(node, field, None) or [])
        for handler in getattr(node, "handlers", None) or []:
            yield from _statements(handler.body)
        for case in getattr(node, "cases", None) or []:
            yield from _statements(case.body)


@lru_cache(maxsize=4096)
def _imported_names(text: bytes, module: str | None, is_package: bool) -> frozenset[str]:
    out: set[str] = set()
    for node in _statements(ast.parse(text).body):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                package = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = package[:len(package) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return frozenset(n for n in out if n == PACKAGE or n.startswith(PACKAGE + "."))


def _with_parents(name: str, root: Path) -> list[Path]:
    """The module's file and the ``__init__.py`` of every package above it."""
    parts = name.split(".")
    files = [module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def closure(names: Iterable[str], root: Path = ROOT) -> list[Path]:
    """Every module file that importing ``names`` can run, sorted."""
    seen: set[Path] = set()
    todo = [f for n in names for f in _with_parents(n, root)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        name = module_name(path, root)
        for imported in imported_names(_read(path), name, path.name == "__init__.py"):
            todo.extend(f for f in _with_parents(imported, root) if f not in seen)
    return sorted(seen)


def data_files(modules: Iterable[Path], root: Path = ROOT) -> list[Path]:
    """The package's non-Python files that ``modules`` name (the file's name, or its top folder, quoted)."""
    texts = [_read(m).decode("utf-8", "replace") for m in modules]
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        names = {path.relative_to(root).parts[0], path.name}
        if any(f'"{n}"' in t or f"'{n}'" in t for n in names for t in texts):
            found.append(path)
    return found


def files_hash(paths: Iterable[Path], root: Path = ROOT) -> str:
    """sha256 over the files' package-relative paths and contents."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + _read(p) + b"\0")
    return h.hexdigest()


def modules_hash(names: Iterable[str], root: Path = ROOT) -> str:
    """Hash of the code (and data files) that importing ``names`` can run."""
    mods = closure(names, root)
    return files_hash(mods + data_files(mods, root), root)


def notebook_modules(source: Path, root: Path = ROOT) -> list[Path]:
    """The package files a notebook source (jupytext ``py:percent``) can run."""
    mods = closure(imported_names(_read(source)), root)
    return mods + data_files(mods, root)


def notebook_hash(source: Path, root: Path = ROOT) -> str:
    """The code part of a notebook's cache key: :func:`files_hash` of :func:`notebook_modules`."""
    return files_hash(notebook_modules(source, root), root)


def package_hash(root: Path = ROOT) -> str:
    """sha256 over every ``.py`` and ``.yml`` file of the package (path + content)."""
    return files_hash([p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".yml")
                       and "__pycache__" not in p.parts], root)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules its import statements name (lazy ones too; the packages
    above an imported module, which Python runs implicitly, are left out)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = module_name(path, root)
        named = (module_file(n, root) for n in imported_names(_read(path), name, path.name == "__init__.py"))
        graph[name] = {module_name(f, root) for f in named if f is not None and f != path}
    return graph


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of modules that import each other, directly or in a ring (strongly connected
    components of :func:`import_graph` with more than one module), each sorted."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)
