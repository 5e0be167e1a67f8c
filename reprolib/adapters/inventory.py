"""What an adapter found: records and counts against the publisher's documented counts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Inventory:
    """What an adapter found under ``root``.

    ``counts`` are the images found per category and ``expected`` the counts of the complete
    distribution (``expected_source`` says where they come from); ``records`` are the usable
    items (:class:`reprolib.cxr.CXRRecord` for chest X-rays, rows as
    :func:`reprolib.data.ct_cases` gives them for CT series), ``skipped`` the items found but
    not used (with the reason in ``notes``)."""

    dataset: str
    root: Path
    records: list[Any]
    counts: dict[str, int]
    expected: dict[str, int]
    expected_source: str
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``"found"`` (every expected category at its documented count), ``"partial"`` or
        ``"missing"`` (nothing found)."""
        if not any(self.counts.values()):
            return "missing"
        complete = all(self.counts.get(k, 0) >= v for k, v in self.expected.items())
        return "found" if complete else "partial"

    def summary(self) -> str:
        """``"found: 5856 of 5856 items (train/NORMAL 1349 of 1349, ...)"``."""
        parts = ", ".join(f"{k} {self.counts.get(k, 0)} of {v}" for k, v in self.expected.items())
        return (f"{self.status}: {sum(self.counts.values())} of {sum(self.expected.values())} items "
                f"({parts}; counts from {self.expected_source})")
