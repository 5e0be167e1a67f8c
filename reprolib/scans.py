"""CT scans given by a user: what each path is, whether it can be read, and which scans a folder holds.

Everything here is cheap — file listings, sizes, headers and hashes, never pixel decoding — so
that ``repro predict ct`` refuses a bad scan in seconds, before the first heavy step, and a batch
(a folder of scans or a list file) is known in full before the first scan is processed.

* :func:`scan_kind` -- ``"png"``, ``"dicom"``, ``"nifti"`` or ``"itk"`` for one path.
* :func:`check_scan` -- the up-front checks of one scan (empty files, missing spacing, ...).
* :func:`scan_sha256` -- one sha256 for a file or a whole folder (names and contents).
* :func:`is_batch_folder`, :func:`list_scans`, :func:`read_scan_list`, :func:`scan_ids`.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

from .errors import InputError
from .io import _ITK_SUFFIXES, _NIFTI_SUFFIXES, _PNG_SUFFIXES, check_spacing, png_stack_files

__all__ = ["scan_kind", "check_scan", "scan_sha256", "is_batch_folder", "list_scans", "read_scan_list",
           "scan_ids", "SPACING_FIX"]

VOLUME_SUFFIXES = _NIFTI_SUFFIXES + _ITK_SUFFIXES
SPACING_FIX = ("PNG/JPEG slices carry no voxel spacing: give it with --spacing Z,Y,X in mm "
               "(slice spacing, row spacing, column spacing; e.g. --spacing 1.0,0.7,0.7)")


def _visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def _is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def scan_kind(path: str | os.PathLike) -> str:
    """The kind of scan at ``path`` from names alone: ``png`` (folder of PNG slices), ``dicom``
    (any other folder), ``nifti`` or ``itk`` (a volume file). Raises :class:`InputError` for a
    missing path or an unknown file type."""
    path = Path(path)
    if path.is_dir():
        files = _visible_files(path)
        return "png" if any(p.suffix.lower() in _PNG_SUFFIXES for p in files) else "dicom"
    if not path.exists():
        raise InputError(path, "no such file or directory")
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(_ITK_SUFFIXES):
        return "itk"
    if name.endswith(".dcm"):
        raise InputError(path, "a single DICOM file; pass the folder that holds the whole series")
    raise InputError(path, "unknown CT format (expected a DICOM/PNG folder, .nii[.gz], .mha, .nrrd)")


def check_scan(path: str | os.PathLike, spacing_mm: Sequence[float] | None = None) -> dict:
    """Check one scan before any heavy work; return ``{"kind", "spacing_mm", "spacing_source"}``.

    * PNG stack: every slice file non-empty (:func:`reprolib.io.png_stack_files`) and a spacing
      given (``spacing_mm``, z/y/x in mm), since the files carry none.
    * DICOM folder: at least one file, none of them empty.
    * NIfTI / ITK file: not empty.
    ``spacing_source`` is ``"--spacing"`` where the given spacing is used, else ``"file"``.

    Raises
    ------
    InputError (ImageError for PNG stacks) naming the scan, the problem and its fix.
    """
    path = Path(path)
    kind = scan_kind(path)
    spacing = check_spacing(spacing_mm, path) if spacing_mm is not None else None
    if kind == "png":
        png_stack_files(path)
        if spacing is None:
            raise InputError(path, SPACING_FIX)
        return {"kind": kind, "spacing_mm": list(spacing), "spacing_source": "--spacing"}
    if kind == "dicom":
        files = _visible_files(path)
        if not files:
            raise InputError(path, "empty folder: no DICOM files")
        empty = [p.name for p in files if p.stat().st_size == 0]
        if empty:
            shown = ", ".join(sorted(empty)[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise InputError(path, f"{len(empty)} of {len(files)} files are empty (0 bytes): {shown}; "
                                   "re-download the series")
    elif path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return {"kind": kind, "spacing_mm": None, "spacing_source": "file"}


def scan_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a scan: of the file itself, or of a folder's files (sorted relative names and
    contents, sub-folders included), so that renaming, adding or changing a slice changes it."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def is_batch_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder of scans (it holds sub-folders or volume files, and no
    slice files of its own) rather than one DICOM or PNG scan."""
    path = Path(path)
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    subdirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    volumes = [p for p in files if _is_volume_file(p)]
    slices = [p for p in files if not _is_volume_file(p) and p.suffix.lower() not in (".csv", ".json", ".txt", ".md")]
    return bool(subdirs or volumes) and not slices


def list_scans(folder: str | os.PathLike) -> list[Path]:
    """The scans of a batch folder, sorted by name: each sub-folder (a DICOM series or PNG stack)
    and each NIfTI/ITK file directly inside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder of scans")
    scans = sorted((p for p in folder.iterdir() if not p.name.startswith(".")
                    and (p.is_dir() or (p.is_file() and _is_volume_file(p)))), key=lambda p: p.name)
    if not scans:
        raise InputError(folder, "no scans: expected sub-folders (DICOM series, PNG stacks) or .nii[.gz]/.mha files")
    return scans


def read_scan_list(list_file: str | os.PathLike) -> list[Path]:
    """Scan paths of a list file: one per line, relative to the list file's folder unless
    absolute; blank lines and ``#`` comments ignored. Every listed path must exist."""
    list_file = Path(list_file)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(list_file, f"cannot read the scan list: {exc}") from exc
    scans, missing = [], []
    for n, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        p = Path(entry).expanduser()
        p = p if p.is_absolute() else list_file.parent / p
        if p.exists():
            scans.append(p)
        else:
            missing.append(f"line {n}: {entry}")
    if missing:
        raise InputError(list_file, f"{len(missing)} listed path(s) do not exist: {', '.join(map(str, missing[:5]))}")
    if not scans:
        raise InputError(list_file, "the scan list names no scan")
    return scans


def scan_ids(scans: Sequence[Path]) -> list[str]:
    """One output-folder name per scan: the file name without its volume suffix, or the folder's
    name; unsafe characters replaced, repeats numbered (``a``, ``a-2``)."""
    ids, seen = [], {}
    for p in scans:
        name = p.name
        for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scan"
        seen[name] = seen.get(name, 0) + 1
        ids.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return ids
