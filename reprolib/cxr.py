"""Chest X-ray (CXR) classifier: data, transforms, ResNet-50, Grad-CAM, de-duplication, confounds.

Re-implements the four-class classifier of Gueguim Kana et al. (2020), see
``spec/cxr.md``: classes ``healthy``, ``pneumonia`` (bacterial / viral kept as a
sub-label), ``covid19`` and ``not_certain`` (inputs that are not a frontal
chest radiograph; this project uses CT slices).

Sections
--------
1. Labels, records, patient-level split, image loading (:class:`CXRDataset`).
2. Transforms: resize to 350 px + ImageNet normalisation, COVID-only contrast
   augmentation (:class:`ClassTargetedContrast`), oversampling
   (:func:`balance_by_augmentation`).
3. Model: :func:`build_resnet50`, :func:`param_groups` (discriminative learning
   rates), ImageNet weight resolver (:func:`resolve_imagenet_weights`,
   :func:`weights_mode`). No function here touches the network.
4. Training / inference helpers (:func:`train_epoch`, :func:`predict`).
5. Perceptual-hash de-duplication (:func:`phash`, :func:`find_duplicates`,
   :func:`deduplicate`).
6. Confound audit (:func:`image_geometry_features`, :func:`confound_audit`).
7. Grad-CAM (:func:`grad_cam`, :func:`overlay`).

Per-class metrics and confidence intervals live in ``reprolib.evaluate``.
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from . import provenance
from .cxr_model import build_resnet50, param_groups
from .errors import (
    ConfigError,
    ImageError,
    ManifestError,
)
from .files import sha256_file
from .models import channels_last

# --------------------------------------------------------------------------------------
# 1. Labels, records, splits, loading
# --------------------------------------------------------------------------------------

CLASSES: tuple[str, ...] = ("healthy", "pneumonia", "covid19", "not_certain")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: mirror / manifest label -> (class, sub-label)
MIRROR_LABELS: dict[str, tuple[str, str | None]] = {
    "healthy": ("healthy", None),
    "normal": ("healthy", None),
    "pneumonia": ("pneumonia", None),
    "pneumonia_bacterial": ("pneumonia", "bacterial"),
    "pneumonia_viral": ("pneumonia", "viral"),
    "pneumonia_other": ("pneumonia", "other"),  # adult pneumonia of other causes (Cohen collection)
    "covid19": ("covid19", None),
    "not_certain": ("not_certain", None),
}

#: Datasets of the offline mirror used by the CXR classifier.
CXR_DATASETS: tuple[str, ...] = ("kermany-224", "hannover-mhh", "ieee8023-covid-chestxray")
#: Datasets whose images serve as the ``not_certain`` class (CT slices, not a CXR).
NOT_CERTAIN_DATASETS: tuple[str, ...] = ("cc-ccii",)


def label_from_mirror(label: str, *, source: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """Map a mirror label to ``(class, sub-label)``.

    ``pneumonia_bacterial`` -> ``("pneumonia", "bacterial")``, ``pneumonia_viral`` ->
    ``("pneumonia", "viral")``; ``healthy``/``covid19`` keep their name with sub-label
    ``None``. ``source`` (a file or dataset name) only serves the error message.

    Raises
    ------
    ManifestError
        For a label that is not a chest X-ray class (e.g. ``cap`` or ``-``).
    """
    key = str(label).strip().lower()
    try:
        return MIRROR_LABELS[key]
    except KeyError:
        raise ManifestError(
            source, f"unknown chest X-ray label {label!r}; expected one of {', '.join(MIRROR_LABELS)}"
        ) from None


@dataclass(frozen=True)
class CXRRecord:
    """One image with its labels.

    Attributes
    ----------
    path: image file.
    label: one of :data:`CLASSES`.
    sublabel: ``"bacterial"`` / ``"viral"`` for pneumonia, ``"ct_slice"`` for CT
        slices used as ``not_certain``, else ``None``.
    group: patient id as used by the source (unique within ``source`` only).
    source: dataset name (e.g. ``kermany-224``).
    split: ``train`` / ``val`` / ``test``, or ``-`` before :func:`patient_split`;
        ``external`` (another hospital) or ``same_source`` (held out from a training source).
    copy: 0 for the original; 1, 2, ... for oversampled copies
        (:func:`balance_by_augmentation`).
    age_group: ``child`` / ``adult`` where the source says, else ``-``.
    """

    path: Path
    label: str
    sublabel: str | None = None
    group: str = "-"
    source: str = "-"
    split: str = "-"
    copy: int = 0
    age_group: str = "-"

    def __post_init__(self) -> None:
        if self.label not in CLASS_INDEX:
            raise ConfigError(self.path, f"label {self.label!r} is not one of {', '.join(CLASSES)}")
        object.__setattr__(self, "path", Path(self.path))

    @property
    def patient(self) -> tuple[str, str]:
        """Globally unique patient key ``(source, group)``."""
        return (self.source, self.group)

    @property
    def target(self) -> int:
        """Class index into :data:`CLASSES`."""
        return CLASS_INDEX[self.label]


def records_from_index(
    index: str | os.PathLike | Iterable[Mapping[str, Any]],
    root: str | os.PathLike,
    *,
    datasets: Sequence[str] = CXR_DATASETS,
    not_certain: Sequence[str] = NOT_CERTAIN_DATASETS,
) -> list[CXRRecord]:
    """Build records from the mirror's ``index.tsv`` (or its rows as mappings).

    Rows of ``datasets`` with role ``cxr_image`` are mapped with :func:`label_from_mirror`;
    image rows (``ct_png``/``cxr_image``) of ``not_certain`` datasets become class
    ``not_certain`` with sub-label ``ct_slice``. Paths are ``root / row["path"]``. The
    source's own ``split`` column is ignored: use :func:`patient_split`.
    """
    if isinstance(index, (str, os.PathLike)):
        with open(index, newline="", encoding="utf-8") as fh:
            rows: Iterable[Mapping[str, Any]] = list(csv.DictReader(fh, delimiter="\t"))
    elif hasattr(index, "to_dict"):  # a pandas DataFrame
        rows = index.to_dict("records")  # type: ignore[union-attr]
    else:
        rows = index
    root = Path(root)
    out: list[CXRRecord] = []
    for row in rows:
        ds, role = str(row["dataset"]), str(row["role"])
        if ds in datasets and role == "cxr_image":
            label, sub = label_from_mirror(row["label"], source=row["path"])
        elif ds in not_certain and role in ("ct_png", "cxr_image"):
            label, sub = "not_certain", "ct_slice"
        else:
            continue
        out.append(CXRRecord(root / str(row["path"]), label, sub, str(row["group"]), ds))
    return out


def patient_split(
    records: Sequence[CXRRecord],
    test_frac: float = 0.0,
    val_frac: float = 0.25,
    seed: int = 0,
) -> list[CXRRecord]:
    """Assign ``split`` (train/val/test) patient-disjointly, stratified by class.

    Each patient ``(source, group)`` is put in the stratum of its most frequent class
    (ties: earlier class in :data:`CLASSES`). Within a stratum patients are sorted,
    permuted with ``numpy.random.default_rng(seed)``, and laid end to end by image count;
    a patient whose image-count midpoint falls in the first ``test_frac`` of the stratum's
    images goes to ``test``, the next ``val_frac`` to ``val``, the rest to ``train``. The
    result depends only on the set of records and ``seed`` (not on input order).

    The defaults (25 % validation, no test split) match the paper's 7,254 / 2,418 split.

    Returns
    -------
    list[CXRRecord]
        The records in input order with ``split`` set.
    """
    if not (0.0 <= test_frac and 0.0 <= val_frac and test_frac + val_frac <= 1.0):
        raise ConfigError(None, f"need 0 <= test_frac, val_frac and test_frac + val_frac <= 1, got {test_frac}, {val_frac}")
    per_patient: dict[tuple[str, str], list[int]] = {}
    for rec in records:
        counts = per_patient.setdefault(rec.patient, [0] * len(CLASSES))
        counts[rec.target] += 1
    strata: dict[int, list[tuple[str, str]]] = {}
    for key in sorted(per_patient):
        strata.setdefault(int(np.argmax(per_patient[key])), []).append(key)
    rng = np.random.default_rng(seed)
    assignment: dict[tuple[str, str], str] = {}
    for cls in sorted(strata):
        keys = strata[cls]
        order = rng.permutation(len(keys))
        sizes = np.array([sum(per_patient[keys[i]]) for i in order], dtype=float)
        mid = np.cumsum(sizes) - sizes / 2.0
        total = sizes.sum()
        for i, m in zip(order, mid):
            split = "test" if m < test_frac * total else "val" if m < (test_frac + val_frac) * total else "train"
            assignment[keys[i]] = split
    return [replace(rec, split=assignment[rec.patient]) for rec in records]


def _to_8bit_gray(im: Image.Image, path: Path | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit grayscale ``L``; 16-bit data are scaled, not clipped.

    Palette images go through their palette; an alpha channel is dropped (the stored grey
    levels are kept, not composited); floating-point images are min-max scaled and must be
    finite (:class:`ImageError` naming ``path`` otherwise).
    """
    if im.mode == "L":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        scale = 255.0 / 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8))
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise ImageError(path, f"{bad} NaN/inf pixel values in a floating-point image")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8))
    if im.mode in ("P", "PA") or "A" in im.mode:
        im = im.convert("RGBA").convert("RGB")
    return im.convert("L")


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"),
)


def _image_signature(path: Path) -> str | None:
    """The image format ``path`` starts like (``"PNG"``, ``"JPEG"``, ...), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((kind for sig, kind in _SIGNATURES if head.startswith(sig)), None)


#: The shortest side, in pixels, of an image the trained model is asked about (``repro predict cxr``,
#: the web API): smaller files are icons or thumbnails, not radiographs, and upscaling them to the
#: model's input invents the image.
MIN_SIDE_PX = 64


def check_min_size(img: Image.Image, path: str | os.PathLike, min_side: int = MIN_SIDE_PX) -> None:
    """Raise :class:`ImageError` naming ``path`` when ``img``'s shorter side is below ``min_side`` px."""
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageError(path, f"{w}×{h} px is too small for a chest X-ray: the shorter side must be at least "
                               f"{min_side} px (a thumbnail or an icon?)")


def load_cxr(path: str | os.PathLike, *, max_pixels: int | None = None, channels: int = 3) -> Image.Image:
    """Read an image as grayscale and replicate it to ``channels`` (3 -> ``RGB``, 1 -> ``L``).

    Parameters
    ----------
    max_pixels:
        Decompression-bomb guard in pixels (width x height), checked from the header
        before decoding; default Pillow's ``Image.MAX_IMAGE_PIXELS`` (89,478,485).

    Any format Pillow reads is accepted, whatever the suffix; see :func:`_to_8bit_gray` for
    16-bit, palette, alpha and floating-point images.

    Raises
    ------
    ImageError
        Missing, empty, unreadable, corrupt, truncated or oversized file, NaN pixels
        (message names the file).
    """
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if path.exists() and not path.is_file():
        raise ImageError(path, "not a file (a directory or a device?)")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if limit is not None and w * h > limit:
                    raise ImageError(path, f"{w}x{h} = {w * h} pixels exceeds the limit of {limit} "
                                           "(decompression-bomb guard)")
                im.load()
                gray = _to_8bit_gray(im, path)
                gray.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"image too large (decompression-bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        kind = _image_signature(path)
        if kind is not None:
            raise ImageError(path, f"corrupt {kind} file: it starts like one but cannot be read") from exc
        raise ImageError(path, "not a readable image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"corrupt or truncated image: {exc}") from exc
    if channels == 1:
        return gray
    if channels == 3:
        return gray.convert("RGB")
    raise ConfigError(None, f"channels must be 1 or 3, got {channels}")


class CXRDataset(torch.utils.data.Dataset):
    """Torch dataset of :class:`CXRRecord` -> ``(image, class index)``.

    Images are read with :func:`load_cxr` (grayscale replicated to 3 channels, PIL
    ``RGB``). ``augment(image, label)`` (e.g. :class:`ClassTargetedContrast`) is applied
    first, with the class *name*; then ``transform(image)`` (e.g. :func:`build_transforms`).
    Without a transform the PIL image is returned.
    """

    def __init__(
        self,
        records: Sequence[CXRRecord],
        transform: Callable[[Any], Any] | None = None,
        augment: Callable[[Any, str], Any] | None = None,
        *,
        max_pixels: int | None = None,
    ):
        self.records = list(records)
        self.transform = transform
        self.augment = augment
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        rec = self.records[i]
        img: Any = load_cxr(rec.path, max_pixels=self.max_pixels)
        if self.augment is not None:
            img = self.augment(img, rec.label)
        if self.transform is not None:
            img = self.transform(img)
        return img, rec.target

    @property
    def targets(self) -> np.ndarray:
        """Class indices, int64 ``(N,)``."""
        return np.array([r.target for r in self.records], dtype=np.int64)


# --------------------------------------------------------------------------------------
# 2. Transforms and class balance
# --------------------------------------------------------------------------------------

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def build_transforms(
    size: int = 350,
    train: bool = False,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Any], torch.Tensor]:
    """PIL/uint8 image -> float32 tensor ``(3, size, size)``, ImageNet-normalised.

    ``ToImage`` -> ``Resize((size, size))`` (bilinear, antialiased) -> ``ToDtype(float32,
    scale=True)`` (values / 255) -> ``Normalize(mean, std)``.

    The resize is to a *square* ``size x size``, ignoring the aspect ratio: the paper
    says only "resized to 350 px", and the mirrored Kermany copy is already squashed to
    224 x 224 by its host, so squashing every source keeps them comparable (no padding
    borders whose width would differ by source and act as a class cue). ``train`` is
    accepted for symmetry but changes nothing: the paper uses no geometric augmentation
    (no rotation/flip/shift/zoom); its only augmentation, the COVID-only contrast change,
    needs the label and is :class:`ClassTargetedContrast`.
    """
    from torchvision.transforms import v2

    del train  # same pipeline for training and evaluation (see docstring)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((size, size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


class ClassTargetedContrast:
    """Random contrast change applied only to images of ``target_class``.

    With probability ``p`` a factor is drawn uniformly from ``factor`` and the image is
    blended with its mean grey level (``torchvision.transforms.v2.functional.adjust_contrast``:
    ``out = f * img + (1 - f) * mean``, clipped). Images of other classes are returned
    unchanged (the same object) and draw no random numbers.

    Parameters
    ----------
    generator:
        ``torch.Generator`` for reproducible draws; default the global torch RNG (which a
        ``DataLoader`` seeds per worker). With ``num_workers > 0`` leave it ``None``: each
        worker would get a copy of the same generator and repeat the same draws.
    """

    def __init__(
        self,
        target_class: str = "covid19",
        factor: tuple[float, float] = (0.5, 1.9),
        p: float = 0.5,
        generator: torch.Generator | None = None,
    ):
        if target_class not in CLASS_INDEX:
            raise ConfigError(None, f"target_class {target_class!r} is not one of {', '.join(CLASSES)}")
        if not (0.0 <= p <= 1.0) or not (0.0 <= factor[0] <= factor[1]):
            raise ConfigError(None, f"need 0 <= p <= 1 and 0 <= factor[0] <= factor[1], got p={p}, factor={factor}")
        self.target_class = target_class
        self.factor = (float(factor[0]), float(factor[1]))
        self.p = float(p)
        self.generator = generator

    def _is_target(self, label: str | int) -> bool:
        if isinstance(label, (int, np.integer)) or torch.is_tensor(label):
            return int(label) == CLASS_INDEX[self.target_class]
        return label == self.target_class

    def sample(self, label: str | int) -> float | None:
        """Draw the decision for one image: a contrast factor, or ``None`` (untouched)."""
        if not self._is_target(label):
            return None
        u = torch.rand(2, generator=self.generator)
        if float(u[0]) >= self.p:
            return None
        lo, hi = self.factor
        return lo + (hi - lo) * float(u[1])

    def __call__(self, image: Any, label: str | int) -> Any:
        f = self.sample(label)
        if f is None:
            return image
        from torchvision.transforms.v2 import functional as F

        return F.adjust_contrast(image, f)

    def __repr__(self) -> str:
        return f"ClassTargetedContrast(target_class={self.target_class!r}, factor={self.factor}, p={self.p})"


def balance_by_augmentation(
    records: Sequence[CXRRecord],
    target: str = "covid19",
    max_copies: int = 13,
    *,
    split: str | None = None,
    seed: int = 0,
) -> list[CXRRecord]:
    """Oversample ``target`` towards the size of the largest other class.

    The target class is repeated to ``min(max_copies * n_target, n_largest_other)``
    images: every image appears ``k`` or ``k + 1`` times (``copy`` = 0 for the original,
    1, 2, ... for repeats; which images get the extra repeat is drawn with ``seed``).
    Combined with :class:`ClassTargetedContrast` in the dataset, each appearance is
    contrast-augmented with probability 0.5, as in the paper (161 COVID images x 13 =
    2,093). ``max_copies`` counts appearances including the original.

    Parameters
    ----------
    split:
        Balance only records with this ``split`` (e.g. ``"train"``); others are passed
        through unchanged. ``None``: all records.

    Returns
    -------
    list[CXRRecord]
        Input records in order, followed by the added copies.
    """
    if max_copies < 1:
        raise ConfigError(None, f"max_copies must be >= 1, got {max_copies}")
    pool = [r for r in records if split is None or r.split == split]
    tgt = sorted((r for r in pool if r.label == target and r.copy == 0), key=lambda r: (str(r.path), r.patient))
    others: dict[str, int] = {}
    for r in pool:
        if r.label != target:
            others[r.label] = others.get(r.label, 0) + 1
    if not tgt or not others:
        return list(records)
    goal = min(max_copies * len(tgt), max(max(others.values()), len(tgt)))
    base, extra = divmod(goal, len(tgt))
    lucky = set(np.random.default_rng(seed).permutation(len(tgt))[:extra].tolist())
    added = [
        replace(rec, copy=c)
        for i, rec in enumerate(tgt)
        for c in range(1, base + (1 if i in lucky else 0))
    ]
    return list(records) + added


# --------------------------------------------------------------------------------------
# 3. Model and weights
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# 4. Training and inference
# --------------------------------------------------------------------------------------


def seeded(seed: int = 0) -> torch.Generator:
    """Seed the global generators (:func:`reprolib.provenance.seed_everything`, without the
    deterministic-kernel switch) and return a ``torch.Generator`` seeded alike, for loaders."""
    provenance.seed_everything(seed, deterministic=False)
    return torch.Generator().manual_seed(seed)


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int = 16,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """``DataLoader`` whose shuffling order depends only on ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       num_workers=num_workers)


def _frozen_bn_to_eval(model: nn.Module) -> None:
    """Keep BatchNorm layers whose affine parameters are frozen in eval mode (fixed running stats)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    device: str | torch.device = "cpu",
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> float:
    """One pass over ``loader``; returns the mean (per-image) cross-entropy loss.

    BatchNorm layers of frozen stages stay in eval mode so that "frozen" also fixes
    their running statistics.
    """
    from tqdm.auto import tqdm

    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.to(device).train()
    _frozen_bn_to_eval(model)
    total, n = 0.0, 0
    for x, y in tqdm(loader, desc="train", disable=not progress, leave=False):
        x, y = x.to(device), torch.as_tensor(y).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        n += len(y)
    return total / max(n, 1)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
    *,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate ``model``: true labels int64 ``(N,)`` and softmax probabilities float32 ``(N, C)``."""
    from tqdm.auto import tqdm

    model.to(device).eval()
    ys, ps = [], []
    with channels_last(model):
        for x, y in tqdm(loader, desc="predict", disable=not progress, leave=False):
            ps.append(torch.softmax(model(x.to(device)), dim=1).float().cpu().numpy())
            ys.append(torch.as_tensor(y).cpu().numpy())
    if not ys:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(ys).astype(np.int64), np.concatenate(ps).astype(np.float32)


# --------------------------------------------------------------------------- profiles

def ct_slice_records(index: Any, out_dir: str | os.PathLike, per_volume: int = 8,
                     z_range: tuple[float, float] = (0.2, 0.8)) -> list[CXRRecord]:
    """``not_certain`` images rendered from preprocessed CT volumes (inputs that are not a CXR).

    For every row of ``index`` (notebook 02's CT index, :func:`reprolib.cohort.load_index`)
    ``per_volume`` axial slices, evenly spaced over the fraction ``z_range`` of the volume,
    are taken from its windowed 8-bit CT (``ct_u8``, [-1200, 600] HU) and written as PNG
    to ``out_dir/<dataset>/<group>/<z>.png`` (atomically; an existing file with the same
    bytes is kept). One record per slice: label ``not_certain``, sub-label ``ct_slice``,
    the volume's patient group and dataset.
    """
    import io as _io

    from . import cohort
    from .files import atomic_write_bytes

    out_dir = Path(out_dir)
    recs: list[CXRRecord] = []
    for row in index.itertuples(index=False):
        ct = cohort.load_preprocessed(row.npz)["ct_u8"]
        t = ct.shape[0]
        zs = np.unique(np.linspace(z_range[0] * (t - 1), z_range[1] * (t - 1), int(per_volume)).round().astype(int))
        folder = out_dir / str(row.dataset) / str(row.group).replace("/", "_")
        for z in zs:
            buf = _io.BytesIO()
            Image.fromarray(np.ascontiguousarray(ct[z])).save(buf, format="PNG")
            path = folder / f"{int(z):04d}.png"
            if not (path.is_file() and path.read_bytes() == buf.getvalue()):
                atomic_write_bytes(path, buf.getvalue())
            recs.append(CXRRecord(path, "not_certain", "ct_slice", str(row.group), str(row.dataset), "-"))
    return recs


def keeps_row(row: Mapping[str, Any]) -> bool:
    """Whether :func:`records_from_index` makes a record of this index row (to pair rows and records)."""
    ds, role = row["dataset"], row["role"]
    return (ds in CXR_DATASETS and role == "cxr_image") or (ds in NOT_CERTAIN_DATASETS and role in ("ct_png", "cxr_image"))


def records_frame(records: Sequence[CXRRecord]):
    """Records as a DataFrame (one row per image)."""

    return pd.DataFrame([{"path": str(r.path), "label": r.label, "sublabel": r.sublabel, "group": r.group,
                          "source": r.source, "split": r.split, "copy": r.copy, "age_group": r.age_group}
                         for r in records])


#: The development split of the chest X-ray model (notebook 07), read by ``repro retrain cxr``.
SPLIT_FILE = "cxr_split.json"


def save_split(path: str | os.PathLike, records: Sequence[CXRRecord], seed: int) -> Path:
    """Write the split of ``records`` as ``{"seed": ..., "images": {sha256: split}}`` (atomically),
    so that a later job knows which images the model trained on whatever seed it runs with."""
    import json

    from .files import atomic_write_text

    images = {sha256_file(r.path): r.split for r in records if r.copy == 0}
    return atomic_write_text(path, json.dumps({"seed": int(seed), "images": images}, indent=0, sort_keys=True))


def read_split(path: str | os.PathLike) -> dict[str, str]:
    """``{image sha256: split}`` of :func:`save_split`; :class:`ManifestError` naming the file when
    it is missing or not such a file."""
    import json

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        images = doc["images"]
    except FileNotFoundError:
        raise ManifestError(path, "missing: run notebook 07 of this profile first (repro run)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(path, f"not a chest X-ray split file ({exc})") from None
    if not isinstance(images, dict):
        raise ManifestError(path, "field 'images' must map image sha256 to a split")
    return {str(k): str(v) for k, v in images.items()}


def held_out(records: Sequence[CXRRecord], split: Mapping[str, str]) -> list[CXRRecord]:
    """The records whose image (by sha256) was in the validation split of ``split``: never trained on."""
    return [replace(r, split="val") for r in records if split.get(sha256_file(r.path)) == "val"]


def subsample_per_class(records: Sequence[CXRRecord], per_class: int | None, seed: int = 0,
                        keep_sources: Sequence[str] = ()) -> list[CXRRecord]:
    """At most ``per_class`` records of each class, drawn with ``seed`` (order kept); ``None`` keeps all.

    Records of ``keep_sources`` are kept first (e.g. the few adult non-COVID images, which a random
    draw among thousands of paediatric ones would mostly drop); the rest of a class is drawn at random."""
    if per_class is None:
        return list(records)
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for cls in CLASSES:
        idx = [i for i, r in enumerate(records) if r.label == cls]
        if len(idx) > per_class:
            first = [i for i in idx if records[i].source in keep_sources][:per_class]
            rest = [i for i in idx if i not in set(first)]
            drawn = rng.choice(rest, size=per_class - len(first), replace=False).tolist() if per_class > len(first) else []
            idx = sorted(first + drawn)
        keep.update(idx)
    return [r for i, r in enumerate(records) if i in keep]


#: The seed paper's COVID-19-only contrast augmentation: factor range and probability.
CONTRAST_RANGE = (0.5, 1.9)
CONTRAST_P = 0.5


def fit_cxr(train_records: Sequence[CXRRecord], *, size: int = 350, epochs: int = 15, batch: int = 16,
            weights: str = "none", freeze_until: str | None = "layer3",
            lrs: Sequence[float] = (1e-4, 1e-3, 1e-2), seed: int = 0, device: str = "cpu",
            progress: bool = True, contrast_p: float = CONTRAST_P, contrast: tuple[float, float] = CONTRAST_RANGE,
            ) -> tuple[nn.Module, list[float]]:
    """Train the paper's classifier: ResNet-50, 4-way head, frozen lower layers, discriminative
    learning rates (Adam, one group per stage chunk), COVID-only contrast augmentation.

    Returns the model (eval mode) and the mean training loss per epoch.
    """
    gen = seeded(seed)
    model = build_resnet50(len(CLASSES), weights=weights, freeze_until=freeze_until)
    aug = ClassTargetedContrast("covid19", factor=contrast, p=contrast_p, generator=gen)
    ds = CXRDataset(train_records, transform=build_transforms(size, train=True), augment=aug)
    loader = make_loader(ds, batch_size=batch, shuffle=True, seed=seed)
    opt = torch.optim.Adam(param_groups(model, lrs))
    with channels_last(model.to(device)):  # 10-25 % faster on CPU; the model comes back contiguous
        losses = [train_epoch(model, loader, opt, device, progress=progress) for _ in range(epochs)]
    return model.eval(), losses


def evaluate_records(model: nn.Module, records: Sequence[CXRRecord], *, size: int = 350, batch: int = 32,
                     device: str = "cpu", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(y, probs)`` of ``model`` on ``records`` with the evaluation transforms."""
    ds = CXRDataset(records, transform=build_transforms(size, train=False))
    return predict(model, make_loader(ds, batch_size=batch), device, progress=progress)
