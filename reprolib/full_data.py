"""The full public datasets of the ``paper`` profile: what this build can read, and a refusal.

The ``paper`` profile promises the papers' datasets in full. The manifests in
``data_manifests/`` list, per dataset, the files of the small public *sample*; a run of the
paper profile on those would publish a "paper" book built from the sample. So before the
first notebook, :func:`missing` names every dataset of the profile that this build cannot read
in full, with how to obtain it, and :func:`refuse_if_incomplete` stops the run with that list.

A dataset counts as available in full where its manifest's file list *is* the whole dataset
(:data:`COMPLETE_IN_MANIFEST`) and every file verifies in the data cache, or where its adapter
(:mod:`reprolib.adapters`) finds the unpacked official distribution under
``$REPRO_DATA_DIR/<its folder>`` at the counts its publisher documents. Datasets without an
adapter yet (the CT collections) are reported as missing with their download steps: the
profile refuses rather than substitutes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import adapters, config, data
from .errors import ConfigError, InputError

__all__ = ["COMPLETE_IN_MANIFEST", "Missing", "missing", "refuse_if_incomplete", "needs_full_data", "inventory",
           "report"]

#: Datasets whose manifest lists every file of the dataset (the DeCoVNet release is one file).
COMPLETE_IN_MANIFEST = frozenset({"decovnet-release"})


@dataclass(frozen=True)
class Missing:
    """One dataset a profile needs in full and this build cannot read in full."""

    dataset: str
    why: str
    how: str  # the manifest's download steps and URL

    def line(self) -> str:
        return f"- {self.dataset}: {self.why}. To get it: {self.how}"


def needs_full_data(profile: str) -> bool:
    """Whether ``profile`` promises the full public datasets (``data: full: true``)."""
    return bool((config.load_profile(profile).get("data") or {}).get("full", False))


def inventory(dataset: str, data_dir: str | Path | None = None) -> "adapters.Inventory | str | None":
    """What the adapter of ``dataset`` finds under ``$REPRO_DATA_DIR/<its folder>``: an
    :class:`~reprolib.adapters.Inventory`, the adapter's layout message when the folder does not
    hold the distribution, or ``None`` when ``dataset`` has no adapter."""
    mod = adapters.adapter(dataset)
    if mod is None:
        return None
    root = Path(data_dir) if data_dir else config.data_dir()
    try:
        return mod.index(root / mod.SUBDIR)
    except InputError as exc:
        return f"not found under $REPRO_DATA_DIR/{mod.SUBDIR} ({exc.problem})"


def _check(m: "data.Manifest", profile: str, data_dir: str | Path | None) -> tuple[str, str]:
    """``(state, text)`` of one dataset: ``found`` / ``partial`` / ``missing`` and what was found
    or why not. Each dataset's archive is indexed once per call."""
    inv = inventory(m.dataset, data_dir)
    if isinstance(inv, str):
        return "missing", inv
    if inv is not None:
        if inv.status == "found":
            return "found", inv.summary() + "".join(f"; {n}" for n in inv.notes)
        return inv.status, f"{inv.summary()} under $REPRO_DATA_DIR/{adapters.adapter(m.dataset).SUBDIR}"
    if m.dataset in COMPLETE_IN_MANIFEST:
        bad = [e.relpath for e in m.files if not data.is_verified(data.local_path(e, data_dir), e.sha256)]
        if not bad:
            return "found", f"all {len(m.files)} files verified"
        return "missing", (f"{len(bad)} of {len(m.files)} files not in the data cache (first: {bad[0]}); "
                           f"`repro data fetch --profile {profile}` gets them")
    listed = "lists only the sample's files" if m.files else "lists no files"
    return "missing", f"no adapter of this build reads its full archive yet, and its manifest {listed}"


def _how(m: "data.Manifest") -> str:
    """The manifest's download steps and URL."""
    how = " ".join(str(v) for v in (m.paper.get("instructions"), m.paper.get("url") or m.upstream.get("url")) if v)
    return how or "see its manifest"


def missing(profile: str, data_dir: str | Path | None = None) -> list[Missing]:
    """The datasets of ``profile`` not available in full, in the profile's order; ``[]`` for a
    profile that does not need the full data."""
    if not needs_full_data(profile):
        return []
    out = []
    for m in data.profile_manifests(profile):
        state, text = _check(m, profile, data_dir)
        if state != "found":
            out.append(Missing(m.dataset, text, _how(m)))
    return out


def refuse_if_incomplete(profile: str, data_dir: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` listing every missing dataset (see :func:`missing`)."""
    gaps = missing(profile, data_dir)
    if gaps:
        raise ConfigError(f"profile {profile}", (
            f"the {profile} profile needs the full public datasets and {len(gaps)} of them cannot be read "
            "in full here; nothing was run (it never falls back to the sample):\n"
            + "\n".join(g.line() for g in gaps)))


def report(profile: str, data_dir: str | Path | None = None) -> list[str]:
    """One line per dataset of ``profile`` (``repro data verify --profile paper``): ``found``
    with the counts against the documented ones, ``partial`` or ``missing`` with the reason."""
    lines = []
    for m in data.profile_manifests(profile):
        state, text = _check(m, profile, data_dir)
        lines.append(f"{state:8s}{m.dataset}: {text}")
    return lines
