"""Exception hierarchy shared by every stage.

Every error that comes from bad input names the offending file (``path``) and
says what is wrong with it, so that a reviewer can act on the message alone.
"""
from __future__ import annotations

from os import PathLike


class ReproError(Exception):
    """Base class of all covid-repro errors."""


class InputError(ReproError, ValueError):
    """A file or value given to the pipeline is unusable.

    Parameters
    ----------
    path:
        The file (or directory) at fault; ``None`` for in-memory values.
    problem:
        What is wrong, in words a user can act on.
    """

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ManifestError(InputError):
    """A data manifest is malformed (missing field, bad hash format, ...)."""


class ConfigError(InputError):
    """A profile or configuration value is invalid (unknown profile, bad type, ...)."""


class DataUnavailableError(ReproError, FileNotFoundError):
    """A data file is neither in the cache, nor in the mirror, nor downloadable."""


class ChecksumError(InputError):
    """A file's SHA-256 does not match its manifest entry."""

    def __init__(self, path, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(path, f"sha256 mismatch: expected {expected}, got {actual}")


class DicomError(InputError):
    """A DICOM file or series is unreadable or inconsistent."""


class NiftiError(InputError):
    """A NIfTI file is unreadable or has an unusable header or content."""


class ImageError(InputError):
    """A 2D image (PNG/JPEG) is unreadable, truncated, or too large."""


class VolumeError(InputError):
    """A CT volume is inconsistent (2D, NaN, non-uniform spacing, missing slices)."""


class ResourceLimitError(InputError):
    """An input is too large to process within the stated memory bound."""


class NotebookExecutionError(ReproError):
    """A notebook cell raised during ``repro run``."""

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, traceback: str):
        self.notebook = notebook
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"notebook {notebook} failed in {where}: {ename}: {evalue}")
