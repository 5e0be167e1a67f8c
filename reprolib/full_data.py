"""The full public datasets of the ``paper`` profile: what this build can read, and a refusal.

The ``paper`` profile promises the papers' datasets in full. The manifests in
``data_manifests/`` list, per dataset, the files of the small public *sample*; a run of the
paper profile on those would publish a "paper" book built from the sample. So before the
first notebook, :func:`missing` names every dataset of the profile that this build cannot read
in full, with how to obtain it, and :func:`refuse_if_incomplete` stops the run with that list.

A dataset counts as available in full where its manifest's file list *is* the whole dataset
(:data:`COMPLETE_IN_MANIFEST`) and every file verifies in the data cache, or where its adapter
(:mod:`reprolib.adapters`) finds the unpacked official distribution under
``$REPRO_DATA_DIR/<its folder>`` at the counts its publisher documents. A dataset without an
adapter is reported as missing with its download steps: the profile refuses rather than
substitutes. A named schedule with ``data: complete: false`` (the paper profile's ``smoke``)
accepts archives below their documented counts, such as the miniature archives of
:mod:`reprolib.mini_archives`; its pages say so.

:func:`records` and :func:`role_files` are what the notebooks read of a full archive (through
:mod:`reprolib.inputs`), cut to the schedule's ``data: per_class`` where it sets one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import adapters, config, data
from .errors import ConfigError, InputError

__all__ = ["COMPLETE_IN_MANIFEST", "Missing", "missing", "refuse_if_incomplete", "needs_full_data", "inventory",
           "report", "records", "role_files", "datasets_used"]

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


def _accepts_partial(profile: str) -> bool:
    """Whether the profile's schedule accepts archives below their documented counts."""
    return not (config.load_profile(profile).get("data") or {}).get("complete", True)


def inventory(dataset: str, data_dir: str | Path | None = None) -> "adapters.Inventory | str | None":
    """What the adapter of ``dataset`` finds under ``$REPRO_DATA_DIR/<its folder>``: an
    :class:`~reprolib.adapters.Inventory`, the adapter's layout message when the folder does not
    hold the distribution, or ``None`` when ``dataset`` has no adapter."""
    mod = adapters.adapter(dataset)
    if mod is None:
        return None
    folder = (Path(data_dir) if data_dir else config.data_dir()) / mod.SUBDIR
    try:
        return _index(dataset, folder, _signature(folder))
    except InputError as exc:
        return f"not found under $REPRO_DATA_DIR/{mod.SUBDIR} ({exc.problem})"


def _signature(folder: Path) -> tuple:
    """Modification times of ``folder`` and of the folders in it: an archive unpacked or removed
    there changes it, so :func:`_index` indexes again."""
    if not folder.is_dir():
        return ()
    return (folder.stat().st_mtime_ns,) + tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()
                                                       if p.is_dir()))


@lru_cache(maxsize=32)
def _index(dataset: str, folder: Path, signature: tuple) -> "adapters.Inventory":
    """The adapter's index of ``folder``, once per process and archive state (``signature``):
    the state checks, the banner table and the records all read the same index."""
    return adapters.adapter(dataset).index(folder)


def _check(m: "data.Manifest", profile: str, data_dir: str | Path | None) -> tuple[str, str]:
    """``(state, text)`` of one dataset: ``found`` / ``partial`` / ``missing`` and what was found
    or why not. Each dataset's archive is indexed once per call."""
    inv = inventory(m.dataset, data_dir)
    if isinstance(inv, str):
        return "missing", inv
    if inv is not None:
        if inv.status == "found" or (inv.status == "partial" and _accepts_partial(profile)):
            return "found", inv.summary() + "".join(f"; {n}" for n in inv.notes) + (
                "" if inv.status == "found" else f" (accepted by the {config.schedule()} schedule)")
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


def _subset(items: list, per_class: int | None, label) -> list:
    """The first ``per_class`` items of each label, in the adapter's (file) order; all when ``None``."""
    if not per_class:
        return list(items)
    seen: dict[str, int] = {}
    out = []
    for it in items:
        key = label(it)
        if seen.get(key, 0) < per_class:
            seen[key] = seen.get(key, 0) + 1
            out.append(it)
    return out


def records(profile: str, dataset: str, data_dir: str | Path | None = None) -> list:
    """The records the adapter of ``dataset`` finds in its full archive (CT rows as
    :func:`reprolib.data.ct_cases` gives them, or :class:`reprolib.cxr.CXRRecord`), cut to the
    profile's ``data: per_class`` items per label where the schedule sets one; ``[]`` when the
    profile does not use ``dataset``. :class:`InputError` when the archive is not found."""
    if dataset not in config.load_profile(profile)["data"]["datasets"]:
        return []
    inv = inventory(dataset, data_dir)
    if inv is None:
        raise ConfigError(f"dataset {dataset}", "no adapter of this build reads its full archive")
    if isinstance(inv, str):
        raise InputError(Path(data_dir) if data_dir else config.data_dir(), f"{dataset}: {inv}")
    per_class = (config.load_profile(profile).get("data") or {}).get("per_class")
    # CT cases by label; images by label and folder (so that each split of a source keeps some)
    return _subset(inv.records, per_class, lambda r: r["label"] if isinstance(r, dict) else (r.label, Path(r.path).parent))


def role_files(profile: str, dataset: str, role: str, data_dir: str | Path | None = None) -> list[Path]:
    """The files of ``role`` of a dataset in a full-data profile: the adapter's
    ``role_files`` of the unpacked archive (``[]`` where it has none), or the verified manifest
    files of a dataset complete in its manifest (:data:`COMPLETE_IN_MANIFEST`)."""
    if dataset not in config.load_profile(profile)["data"]["datasets"]:
        return []
    if dataset in COMPLETE_IN_MANIFEST:
        return data.fetch_role(profile, dataset, role, data_dir)
    mod = adapters.adapter(dataset)
    finder = getattr(mod, "role_files", None)
    if finder is None:
        return []
    root = (Path(data_dir) if data_dir else config.data_dir()) / mod.SUBDIR
    return finder(root, role)


def datasets_used(profile: str, data_dir: str | Path | None = None):
    """One row per dataset of a full-data profile (pandas DataFrame indexed by dataset): what
    was found (``found``), the documented count (``documented``, and where it comes from) and how
    many items this run uses after the schedule's subset (``used``)."""
    import pandas as pd

    rows = []
    for m in data.profile_manifests(profile):
        inv = inventory(m.dataset, data_dir)
        if inv is None or isinstance(inv, str):
            n = len(m.files) if m.dataset in COMPLETE_IN_MANIFEST else 0
            rows.append({"dataset": m.dataset, "found": n, "documented": n, "used": n,
                         "counts from": "its manifest (every file listed)"})
            continue
        used = len(records(profile, m.dataset, data_dir))
        rows.append({"dataset": m.dataset, "found": sum(inv.counts.values()), "documented": sum(inv.expected.values()),
                     "used": used, "counts from": inv.expected_source})
    return pd.DataFrame(rows).set_index("dataset")


def _bytes(path: Path) -> int:
    """Size of a file, or of the files directly in a folder (a DICOM or slice series)."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def acquire(profile: str, work_dir: str | Path, data_dir: str | Path | None = None) -> "data.Acquisition":
    """Notebook 01's data step of a full-data profile: the datasets complete in their manifest
    fetched and verified (:func:`reprolib.data.fetch`), every other dataset indexed by its adapter
    (after :func:`refuse_if_incomplete`). ``table``: :func:`datasets_used`; ``records``: the
    chest X-ray records used. The table is also saved as
    ``<work_dir>/datasets_used.json``, which every page's banner names (:func:`reprolib.book.banner_markdown`)."""
    import json
    import time

    from .book import DATASETS_USED_FILE
    from .files import atomic_write_text

    refuse_if_incomplete(profile, data_dir)
    t0 = time.perf_counter()
    manifests = data.profile_manifests(profile)
    fetched = [data.fetch(e, data_dir) for m in manifests if m.dataset in COMPLETE_IN_MANIFEST for e in m.files]
    table = datasets_used(profile, data_dir)
    items, groups, cxr = [], set(), []
    for name in table.index:
        for r in records(profile, name, data_dir) if adapters.adapter(name) else []:
            path, group = (Path(r["path"]), r["group"]) if isinstance(r, dict) else (Path(r.path), r.group)
            items.append(path)
            groups.add((name, group))
            if not isinstance(r, dict):
                cxr.append(r)
    n_bytes = sum(_bytes(p) for p in items) + sum(Path(p).stat().st_size for p in fetched)
    atomic_write_text(Path(work_dir) / DATASETS_USED_FILE, json.dumps(
        {"schedule": config.schedule(), "datasets": table.reset_index().to_dict("records")}, indent=1))
    return data.Acquisition(table=table, n_files=len(items) + len(fetched), n_bytes=n_bytes, n_patients=len(groups),
                            seconds=time.perf_counter() - t0, records=cxr, manifests=manifests,
                            noun="archive item")


#: The download rate assumed for the time estimate before a fetch (bytes per second).
ASSUMED_RATE = 10e6


@dataclass(frozen=True)
class Step:
    """What ``repro data fetch`` does for one dataset of a full-data profile: ``download`` (files
    with a stable URL and a SHA-256 in the manifest), ``manual`` (a step only the user can take,
    with ``text`` saying exactly which) or ``none`` (already there)."""

    dataset: str
    state: str  # found / partial / missing
    action: str  # download / manual / none
    n_bytes: int | None
    text: str


def fetch_plan(profile: str, data_dir: str | Path | None = None) -> list[Step]:
    """One :class:`Step` per dataset of ``profile``, in its order."""
    steps = []
    for m in data.profile_manifests(profile):
        state, found = _check(m, profile, data_dir)
        if state == "found":
            steps.append(Step(m.dataset, state, "none", None, found))
        elif m.dataset in COMPLETE_IN_MANIFEST:
            todo = [e for e in m.files if not data.is_verified(data.local_path(e, data_dir), e.sha256)]
            steps.append(Step(m.dataset, state, "download", sum(e.bytes for e in todo),
                              f"{len(todo)} files from their upstream URLs (mirror first), SHA-256 verified"))
        else:
            mod = adapters.adapter(m.dataset)
            where = f" It must then read as $REPRO_DATA_DIR/{mod.SUBDIR}/{mod.LAYOUT}." if mod else ""
            login = " (needs an account)" if m.paper.get("login_required") else ""
            note = f" ({m.paper['layout_note']})" if m.paper.get("layout_note") else ""
            steps.append(Step(m.dataset, state, "manual", None, f"{_how(m)}{login}{where}{note} Now: {found}."))
    return steps


def fetch(profile: str, data_dir: str | Path | None = None, mirror: str | Path | None = None,
          download: bool = True, dry_run: bool = False, echo=print) -> list[Step]:
    """``repro data fetch`` for a full-data profile: print the plan (each dataset's state and
    action, the total size and a time estimate at :data:`ASSUMED_RATE`), then, unless
    ``dry_run``, download and verify what has a stable URL and a digest. The manual steps are
    printed, never guessed. Returns the plan."""
    plan = fetch_plan(profile, data_dir)
    total = sum(s.n_bytes or 0 for s in plan if s.action == "download")
    for s in plan:
        size = f" ({s.n_bytes / 1e6:.1f} MB)" if s.n_bytes is not None else ""
        echo(f"{s.action:8s} {s.dataset}{size}: {s.text}")
    echo(f"to download: {total / 1e6:.1f} MB, about {total / ASSUMED_RATE:.0f} s at {ASSUMED_RATE / 1e6:.0f} MB/s; "
         f"manual steps: {sum(s.action == 'manual' for s in plan)}" + (" (dry run: nothing fetched)" if dry_run else ""))
    if not dry_run:
        for m in data.profile_manifests(profile):
            if any(s.dataset == m.dataset and s.action == "download" for s in plan):
                for e in m.files:
                    data.fetch(e, data_dir=data_dir, mirror=mirror, download=download)
    return plan


def archives_digest(profile: str, data_dir: str | Path | None = None) -> str:
    """SHA-256 over what the adapters of ``profile`` find: every item's path under
    ``$REPRO_DATA_DIR``, size and modification time (the files of a series folder each), so
    that a changed archive changes the notebooks' cache keys. Hashes no image content."""
    import hashlib

    root = Path(data_dir) if data_dir else config.data_dir()
    h = hashlib.sha256()
    for name in config.load_profile(profile)["data"]["datasets"]:
        inv = inventory(name, data_dir)
        h.update(f"{name}:{'-' if inv is None else (inv if isinstance(inv, str) else len(inv.records))}".encode())
        for r in [] if inv is None or isinstance(inv, str) else inv.records:
            path = Path(r["path"] if isinstance(r, dict) else r.path)
            for f in sorted(path.iterdir()) if path.is_dir() else [path]:
                st = f.stat()
                h.update(f"{f.relative_to(root) if f.is_relative_to(root) else f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()
