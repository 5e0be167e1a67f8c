"""Data registry: manifests, verified fetch, cache.

Like scikit-image's data registry: every file the book reads is listed in a
manifest (``data_manifests/<dataset>.yml``) with its upstream URL, size and
SHA-256. :func:`fetch` returns a verified local copy:

1. the cache (``$REPRO_DATA_DIR``), trusted only if its verification stamp
   matches the file's size and mtime (otherwise it is re-hashed);
2. else the local mirror (``$REPRO_DATA_MIRROR``), laid out as the URL
   without its scheme (``raw.githubusercontent.com/<owner>/<repo>/...``);
3. else a download from the upstream URL, with retries and a progress bar.

Copies and downloads are written to a temporary file in the cache directory,
hashed while written, and moved into place with :func:`os.replace` only when
the hash matches: a partial or corrupt file is never taken for a complete one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

import yaml

from . import config
from .errors import ChecksumError, DataUnavailableError, ManifestError
from .files import CHUNK, atomic_write_text, sha256_file  # noqa: F401  (sha256_file re-exported)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DATASET_FIELDS = ("dataset", "title", "citation", "licence", "upstream", "files")
FILE_FIELDS = ("url", "sha256", "bytes", "label", "group", "split", "role")


# --------------------------------------------------------------------------- manifests
@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset, as listed in its manifest."""

    dataset: str
    url: str
    sha256: str
    bytes: int
    label: str
    group: str
    split: str
    role: str

    @property
    def relpath(self) -> str:
        """Path of the file in a mirror or cache: the URL without scheme, unquoted."""
        return url_to_relpath(self.url)


@dataclass(frozen=True)
class Manifest:
    """A dataset: citation, licence, upstream and the files a profile uses."""

    dataset: str
    title: str
    citation: str
    licence: str
    upstream: dict
    files: tuple[FileEntry, ...]
    notes: tuple[str, ...] = ()
    paper: dict = field(default_factory=dict)
    source: str = ""

    def by_role(self, role: str) -> list[FileEntry]:
        return [f for f in self.files if f.role == role]


def url_to_relpath(url: str) -> str:
    """``https://host/a%20b/c`` -> ``host/a b/c`` (the mirror and cache layout)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ManifestError(None, f"not an http(s) URL: {url!r}")
    rel = parts.netloc + unquote(parts.path)
    if ".." in Path(rel).parts:
        raise ManifestError(None, f"URL path escapes the cache: {url!r}")
    return rel


def manifests_dir() -> Path:
    return config.project_root() / "data_manifests"


def _require(mapping: dict, key: str, where: str, path: Path, kind: type | tuple = object):
    if key not in mapping:
        raise ManifestError(path, f"{where}: missing required field {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise ManifestError(path, f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def parse_manifest(data: Any, path: Path | str = "<memory>") -> Manifest:
    """Validate a manifest mapping and build a :class:`Manifest`.

    Raises :class:`ManifestError` naming ``path`` and the faulty field.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise ManifestError(path, "a manifest must be a mapping")
    name = _require(data, "dataset", "dataset", path, str)
    for key in DATASET_FIELDS:
        _require(data, key, f"dataset {name}", path)
    files_raw = _require(data, "files", f"dataset {name}", path, list)
    files = []
    seen: set[str] = set()
    for i, raw in enumerate(files_raw):
        where = f"files[{i}]"
        if not isinstance(raw, dict):
            raise ManifestError(path, f"{where}: must be a mapping")
        for key in FILE_FIELDS:
            _require(raw, key, where, path)
        sha = str(raw["sha256"]).lower()
        if not SHA256_RE.match(sha):
            raise ManifestError(path, f"{where}: sha256 {raw['sha256']!r} is not 64 hex digits")
        size = raw["bytes"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(path, f"{where}: bytes must be a non-negative integer, got {size!r}")
        try:
            url_to_relpath(raw["url"])
        except ManifestError as exc:
            raise ManifestError(path, f"{where}: {exc.problem}") from None
        if raw["url"] in seen:
            raise ManifestError(path, f"{where}: duplicate url {raw['url']}")
        seen.add(raw["url"])
        files.append(FileEntry(dataset=name, url=raw["url"], sha256=sha, bytes=size,
                               label=str(raw["label"]), group=str(raw["group"]),
                               split=str(raw["split"]), role=str(raw["role"])))
    upstream = _require(data, "upstream", f"dataset {name}", path, dict)
    return Manifest(dataset=name, title=str(data["title"]), citation=str(data["citation"]),
                    licence=str(data["licence"]), upstream=upstream, files=tuple(files),
                    notes=tuple(data.get("notes") or ()), paper=dict(data.get("paper") or {}),
                    source=str(path))


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate one manifest file.

    Raises :class:`ManifestError` naming ``path``: not found, unreadable (a directory, no
    permission), not UTF-8 text, invalid YAML, or any schema error of :func:`parse_manifest`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(path, "manifest file not found") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(path, f"not UTF-8 text (byte {exc.start}): a manifest is a YAML file") from None
    except OSError as exc:
        raise ManifestError(path, f"cannot read the manifest: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ManifestError(path, f"invalid YAML: {exc}") from None
    return parse_manifest(data, path)


def load_manifests(directory: str | Path | None = None) -> dict[str, Manifest]:
    """All manifests in ``directory`` (default ``data_manifests/``), by dataset name."""
    directory = Path(directory) if directory else manifests_dir()
    out: dict[str, Manifest] = {}
    for p in sorted(directory.glob("*.yml")):
        m = load_manifest(p)
        if m.dataset != p.stem:
            raise ManifestError(p, f"dataset {m.dataset!r} does not match the file name {p.stem!r}")
        out[m.dataset] = m
    return out


def profile_manifests(profile: str, directory: str | Path | None = None) -> list[Manifest]:
    """The manifests a profile uses, in the order the profile lists them."""
    wanted = config.load_profile(profile)["data"]["datasets"]
    allm = load_manifests(directory)
    missing = [d for d in wanted if d not in allm]
    if missing:
        raise ManifestError(directory or manifests_dir(),
                            f"profile {profile!r} names datasets without a manifest: {missing}")
    return [allm[d] for d in wanted]


def manifest_hashes(profile: str, directory: str | Path | None = None) -> dict[str, str]:
    """SHA-256 of each manifest file a profile uses (recorded in provenance)."""
    return {m.dataset: sha256_file(Path(m.source)) for m in profile_manifests(profile, directory)}


# --------------------------------------------------------------------------- hashing
STAMPS = ".verified"  # verification stamps live in <cache>/.verified/<relpath>.json, outside the data tree


def _stamp_path(path: Path, stamp_root: Path | None) -> Path | None:
    if stamp_root is None:
        return None
    try:
        rel = Path(path).resolve().relative_to(stamp_root.resolve())
    except ValueError:
        return None
    return stamp_root / STAMPS / (rel.as_posix() + ".json")


def _write_stamp(path: Path, sha: str, stamp_root: Path | None) -> None:
    sp = _stamp_path(path, stamp_root)
    if sp is not None:
        st = path.stat()
        atomic_write_text(sp, json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def is_verified(path: Path, sha: str, stamp_root: Path | None = None) -> bool:
    """True if ``path`` exists and has sha256 ``sha``.

    With ``stamp_root`` (the cache directory), a stamp recording the file's size and mtime
    after its last verification saves re-hashing; any change to the file invalidates it.
    """
    path = Path(path)
    if not path.is_file():
        return False
    st = path.stat()
    sp = _stamp_path(path, stamp_root)
    if sp is not None:
        try:
            stamp = json.loads(sp.read_text())
            if stamp == {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
                return True
        except (OSError, ValueError):
            pass
    if sha256_file(path) == sha:
        _write_stamp(path, sha, stamp_root)
        return True
    return False


# --------------------------------------------------------------------------- fetching
def _copy_verified(chunks: Iterable[bytes], dest: Path, entry: FileEntry, origin: str,
                   progress: Callable[[int], Any] | None = None, stamp_root: Path | None = None) -> Path:
    """Stream ``chunks`` into ``dest`` atomically, checking size and sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                h.update(chunk)
                if progress:
                    progress(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
        actual = h.hexdigest()
        if actual != entry.sha256:
            raise ChecksumError(origin, entry.sha256, actual)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _write_stamp(dest, entry.sha256, stamp_root)
    return dest


#: A ``.part`` file untouched for this long belongs to a fetch that was killed.
STALE_PART_SECONDS = 600.0


def _remove_stale_parts(dest: Path, older_than_s: float = STALE_PART_SECONDS) -> list[Path]:
    """Delete the temporary ``.<name>.*.part`` files of ``dest`` left by killed fetches.

    A running fetch rewrites its part file continuously, so a part file not modified for
    ``older_than_s`` seconds is debris; a part file is never renamed into place unverified
    (:func:`_copy_verified`), so deleting one cannot lose a verified file."""
    removed = []
    if not dest.parent.is_dir():
        return removed
    now = time.time()
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            if now - part.stat().st_mtime >= older_than_s:
                part.unlink()
                removed.append(part)
        except FileNotFoundError:  # a concurrent fetch finished or removed it
            pass
    return removed


def _read_file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(CHUNK), b"")


def _download_chunks(url: str, timeout: float, retries: int) -> Iterator[bytes]:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    with session.get(url, stream=True, timeout=timeout) as resp:
        resp.raise_for_status()
        yield from resp.iter_content(CHUNK)


def fetch_role(profile: str, dataset: str, role: str, data_dir: str | Path | None = None) -> list[Path]:
    """Fetch (verified) every file of ``dataset`` with ``role`` in ``profile``'s manifests; ``[]``
    when the profile does not use that dataset (e.g. the synthetic profile, which fetches nothing)."""
    found = [m for m in profile_manifests(profile) if m.dataset == dataset]
    return [fetch(e, data_dir=data_dir) for m in found for e in m.by_role(role)]


def fetch(entry: FileEntry, data_dir: str | Path | None = None, mirror: str | Path | None = None,
          download: bool = True, timeout: float = 60.0, retries: int = 3,
          progress: bool = False) -> Path:
    """Return a verified local path for ``entry`` (see module docstring for the order).

    Raises
    ------
    ChecksumError
        The mirror copy or the download has another sha256 (the bad copy is deleted).
    DataUnavailableError
        Neither the cache nor the mirror has the file and it cannot be downloaded.
    """
    cache = Path(data_dir) if data_dir else config.data_dir()
    mirror = Path(mirror) if mirror else config.mirror_dir()
    dest = cache / entry.relpath
    if is_verified(dest, entry.sha256, cache):
        return dest
    if dest.exists():  # present but wrong: never trust it
        dest.unlink()
    _remove_stale_parts(dest)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=entry.bytes, unit="B", unit_scale=True, desc=Path(entry.relpath).name,
                   leave=False)
    try:
        if mirror is not None:
            src = mirror / entry.relpath
            if src.is_file():
                return _copy_verified(_read_file_chunks(src), dest, entry, str(src),
                                      bar.update if bar else None, cache)
        if not download:
            raise DataUnavailableError(_unavailable_message(entry, mirror, "downloads are disabled"))
        try:
            chunks = _download_chunks(entry.url, timeout, retries)
            return _copy_verified(chunks, dest, entry, entry.url, bar.update if bar else None, cache)
        except ChecksumError:
            raise
        except Exception as exc:  # network errors of any flavour
            raise DataUnavailableError(_unavailable_message(entry, mirror, f"download failed: {exc}")) from exc
    finally:
        if bar:
            bar.close()


def _unavailable_message(entry: FileEntry, mirror: Path | None, why: str) -> str:
    where = f"mirror {mirror} has no {entry.relpath}" if mirror else "REPRO_DATA_MIRROR is not set"
    return (f"cannot get {entry.url} ({entry.dataset}): {why}; {where}. "
            "On a machine without internet, point REPRO_DATA_MIRROR at a local mirror laid out as "
            "<host>/<path> of each URL (e.g. REPRO_DATA_MIRROR=../shared/mirror).")


@dataclass
class FetchReport:
    """What :func:`fetch_profile` did: local paths and counts."""

    paths: dict[str, Path]
    n_files: int
    n_bytes: int
    seconds: float
    datasets: dict[str, int]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["paths"] = {k: str(v) for k, v in self.paths.items()}
        return d


def fetch_profile(profile: str, data_dir: str | Path | None = None, mirror: str | Path | None = None,
                  download: bool = True, progress: bool = True,
                  manifests: str | Path | None = None) -> FetchReport:
    """Fetch and verify every file a profile lists; returns url -> local path."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    entries = [f for m in profile_manifests(profile, manifests) for f in m.files]
    paths: dict[str, Path] = {}
    for e in tqdm(entries, desc=f"fetch {profile}", unit="file", disable=not progress):
        paths[e.url] = fetch(e, data_dir=data_dir, mirror=mirror, download=download)
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.dataset] = counts.get(e.dataset, 0) + 1
    return FetchReport(paths=paths, n_files=len(entries), n_bytes=sum(e.bytes for e in entries),
                       seconds=time.perf_counter() - t0, datasets=counts)


def verify_profile(profile: str, data_dir: str | Path | None = None,
                   manifests: str | Path | None = None) -> dict[str, list[str]]:
    """Re-hash every cached file of a profile. Returns ``{"ok": [...], "missing": [...], "bad": [...]}``."""
    cache = Path(data_dir) if data_dir else config.data_dir()
    out: dict[str, list[str]] = {"ok": [], "missing": [], "bad": []}
    for m in profile_manifests(profile, manifests):
        for e in m.files:
            p = cache / e.relpath
            if not p.is_file():
                out["missing"].append(e.url)
            elif sha256_file(p) == e.sha256:
                out["ok"].append(e.url)
            else:
                out["bad"].append(e.url)
    return out


def local_path(entry: FileEntry, data_dir: str | Path | None = None) -> Path:
    """Where ``entry`` lives in the cache (whether or not it is there yet)."""
    return (Path(data_dir) if data_dir else config.data_dir()) / entry.relpath


def entries_frame(manifests: Iterable[Manifest]):
    """All file entries of ``manifests`` as a pandas DataFrame (one row per file)."""
    import pandas as pd

    rows = [asdict(f) | {"relpath": f.relpath} for m in manifests for f in m.files]
    return pd.DataFrame(rows, columns=["dataset", *FILE_FIELDS, "relpath"])


# --------------------------------------------------------------------------- manifest building
#: Files of the mirror that list its contents: ``index.tsv`` and, beside it, the later additions
#: (same columns; ``index.tsv`` itself stays unchanged when files are added).
MIRROR_INDEX_FILES = ("index.tsv", "additions.tsv")


def read_mirror_index(index_tsv: str | Path):
    """The mirror's ``index.tsv`` and, when present beside it, its ``additions.tsv``, as one
    DataFrame (columns as in the mirror's README). A URL listed twice raises :class:`ManifestError`."""
    import pandas as pd

    index_tsv = Path(index_tsv)
    parts = [pd.read_csv(index_tsv, sep="\t", dtype=str, keep_default_na=False)]
    extra = index_tsv.with_name(MIRROR_INDEX_FILES[1])
    if index_tsv.name == MIRROR_INDEX_FILES[0] and extra.is_file():
        more = pd.read_csv(extra, sep="\t", dtype=str, keep_default_na=False)
        if list(more.columns) != list(parts[0].columns):
            raise ManifestError(extra, f"columns {list(more.columns)} differ from {index_tsv.name}'s")
        parts.append(more)
    df = pd.concat(parts, ignore_index=True)
    twice = df.url[df.url.duplicated()]
    if len(twice):
        raise ManifestError(extra, f"{len(twice)} URL(s) listed twice, e.g. {twice.iloc[0]}")
    return df


def build_manifests_from_index(index_tsv: str | Path, info: dict[str, dict],
                               out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<dataset>.yml`` for every dataset of a mirror index.

    ``info`` gives each dataset's title, citation, licence, upstream, notes and
    ``paper`` section; the ``files`` list comes from the index.
    """
    df = read_mirror_index(index_tsv)
    out_dir = Path(out_dir) if out_dir else manifests_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, sub in df.groupby("dataset", sort=True):
        if name not in info:
            raise ManifestError(index_tsv, f"no dataset description for {name!r}")
        meta = dict(info[name])
        files = [
            {"url": r.url, "sha256": r.sha256, "bytes": int(r.bytes), "label": r.label,
             "group": r.group, "split": r.split, "role": r.role, "licence": r.licence}
            for r in sub.sort_values("url").itertuples()
        ]
        doc = {"dataset": name, **meta, "files": files}
        parse_manifest(doc, out_dir / f"{name}.yml")  # validate before writing
        text = "# Generated by `repro data build-manifests` from the mirror index; edit the\n" \
               "# dataset description in reprolib/datasets.py, not this file.\n" + \
               yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
        atomic_write_text(out_dir / f"{name}.yml", text)
        written.append(out_dir / f"{name}.yml")
    return written


def write_paper_only_manifests(info: dict[str, dict], out_dir: str | Path | None = None) -> list[Path]:
    """Write manifests without a per-file list for datasets used only by the ``paper`` profile."""
    out_dir = Path(out_dir) if out_dir else manifests_dir()
    written = []
    for name, meta in info.items():
        doc = {"dataset": name, **meta, "files": []}
        parse_manifest(doc, out_dir / f"{name}.yml")
        text = "# Paper profile only: no per-file list; see the `paper` section for download steps.\n" + \
               yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
        atomic_write_text(out_dir / f"{name}.yml", text)
        written.append(out_dir / f"{name}.yml")
    return written


def summary_table(manifests: Iterable[Manifest], data_dir: str | Path | None = None):
    """One row per dataset: files, MB, classes, patients, licence, and how many cached files verify."""
    import pandas as pd

    rows = []
    cache = Path(data_dir) if data_dir else config.data_dir()
    for m in manifests:
        labelled = [f for f in m.files if f.label != "-"]
        verified = sum(is_verified(local_path(f, data_dir), f.sha256, cache) for f in m.files)
        classes = sorted({f.label for f in labelled})
        rows.append({
            "dataset": m.dataset,
            "files": len(m.files),
            "MB": round(sum(f.bytes for f in m.files) / 1e6, 1),
            "classes": ", ".join(f"{c} ({sum(f.label == c for f in labelled)})" for c in classes) or "-",
            "patients": len({f.group for f in labelled if f.group != "-"}),
            "licence": m.licence,
            "verified": f"{verified}/{len(m.files)}",
        })
    return pd.DataFrame(rows).set_index("dataset")


# --------------------------------------------------------------------------- cohorts
CT_ROLES = ("ct_dicom", "ct_png")


def synthetic_records(work_dir: str | Path) -> list[dict]:
    """Records written by notebook 01 for the synthetic profile (``synthetic_records.json``)."""
    path = Path(work_dir) / "synthetic_records.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataUnavailableError(f"{path}: not found; run notebook 01 for the synthetic profile first") from None


def ct_cases(profile: str, data_dir: str | Path | None = None, work_dir: str | Path | None = None):
    """One row per CT volume of a profile (pandas DataFrame).

    Columns: ``case_id``, ``dataset``, ``label`` (source label), ``target`` (1 = COVID-19),
    ``group`` (patient), ``split``, ``path`` (DICOM/PNG directory or NIfTI file), ``kind``
    (``dicom``, ``png``, ``nifti``), and for phantoms ``lung_mask`` / ``lesion_mask`` paths.
    """
    import pandas as pd

    rows = []
    if profile == "synthetic":
        work = Path(work_dir) if work_dir else config.work_dir(profile)
        recs = synthetic_records(work)
        base = work / "synthetic_data"
        masks = {(r["group"], r["role"]): base / r["path"] for r in recs if r["role"] in ("lung_mask", "lesion_mask")}
        for r in recs:
            if r["role"] != "ct_nifti":
                continue
            rows.append({"case_id": r["group"], "dataset": r["dataset"], "label": r["label"],
                         "target": int(r["label"] == "covid19"), "group": r["group"], "split": r["split"],
                         "path": str(base / r["path"]), "kind": "nifti",
                         "lung_mask": str(masks.get((r["group"], "lung_mask"), "")),
                         "lesion_mask": str(masks.get((r["group"], "lesion_mask"), ""))})
        dicom = {r["group"]: base / r["path"] for r in recs if r["role"] == "ct_dicom_dir"}
        for row in rows:
            row["dicom_dir"] = str(dicom.get(row["group"], ""))
    else:
        for m in profile_manifests(profile):
            groups: dict[str, list[FileEntry]] = {}
            for f in m.files:
                if f.role in CT_ROLES:
                    groups.setdefault(f.group, []).append(f)
            for group, files in sorted(groups.items()):
                dirs = {local_path(f, data_dir).parent for f in files}
                if len(dirs) != 1:
                    raise ManifestError(m.source, f"series {group} spans several folders: {sorted(dirs)}")
                label = files[0].label
                rows.append({"case_id": f"{m.dataset}:{group}", "dataset": m.dataset, "label": label,
                             "target": int(label == "covid19"), "group": group, "split": files[0].split,
                             "path": str(dirs.pop()), "kind": "png" if files[0].role == "ct_png" else "dicom",
                             "n_files": len(files)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- acquisition (notebook 01)
@dataclass
class Acquisition:
    """What :func:`acquire` fetched (or generated) and verified for one profile.

    ``table``: one row per dataset (real profiles, :func:`summary_table`, indexed by dataset) or
    per (dataset, role, label) with its ``files`` count (synthetic profile, numbered rows);
    ``n_files`` and ``n_bytes`` over all files; ``n_patients`` distinct patients or subjects;
    ``seconds``: wall time of the fetch (None for phantoms); ``records`` and ``root``: the
    phantoms' records (:func:`reprolib.phantom_dataset.make_synthetic_dataset`) and their folder;
    ``manifests``: the profile's manifests (empty for phantoms); ``noun``: what ``n_files``
    counts (a full archive's items are indexed and counted, not hashed)."""

    table: Any
    n_files: int
    n_bytes: int
    n_patients: int
    seconds: float | None = None
    records: list[dict] = field(default_factory=list)
    root: Path | None = None
    manifests: list[Manifest] = field(default_factory=list)
    noun: str = "verified file"  # what ``n_files`` counts


def acquire(profile: str, work_dir: str | Path, data_dir: str | Path | None = None, seed: int = 0) -> Acquisition:
    """Notebook 01's data step: every file of ``profile``, verified.

    Real profiles: :func:`fetch_profile` (mirror or download, SHA-256 checked) and
    :func:`summary_table`. Synthetic profile: the phantoms of the profile's ``data.phantoms``
    settings are written to ``<work_dir>/synthetic_data``, every file (or DICOM folder) is
    re-hashed against its record exactly as a download would be, and the records are saved as
    ``<work_dir>/synthetic_records.json`` for the later notebooks (:func:`synthetic_records`).
    A digest that differs raises :class:`reprolib.errors.ChecksumError`."""
    import pandas as pd

    if profile == "synthetic":
        from . import phantom_dataset

        ph = config.load_profile(profile)["data"]["phantoms"]
        out = Path(work_dir) / "synthetic_data"
        records = phantom_dataset.make_synthetic_dataset(
            out, ct_count=ph["ct_count"], ct_shape=tuple(ph["ct_shape"]),
            ct_spacing_mm=tuple(ph["ct_spacing_mm"]), cxr_per_class=ph["cxr_per_class"],
            cxr_size=ph["cxr_size"], seed=seed)
        for r in records:
            p = out / r["path"]
            digest = phantom_dataset.directory_sha256(p)[0] if p.is_dir() else sha256_file(p)
            if digest != r["sha256"]:
                raise ChecksumError(p, r["sha256"], digest)
        atomic_write_text(Path(work_dir) / "synthetic_records.json", json.dumps(records, indent=1))
        table = (pd.DataFrame(records).groupby(["dataset", "role", "label"]).size()
                 .rename("files").reset_index())
        return Acquisition(table=table, n_files=len(records), n_bytes=sum(r["bytes"] for r in records),
                           n_patients=len({r["group"] for r in records}), records=records, root=out)
    manifests = profile_manifests(profile)
    report = fetch_profile(profile, data_dir=data_dir)
    table = summary_table(manifests, data_dir)
    return Acquisition(table=table, n_files=report.n_files, n_bytes=report.n_bytes,
                       n_patients=int(table["patients"].sum()), seconds=report.seconds, manifests=manifests)
