"""Peak memory of the preprocessing steps, measured with :mod:`tracemalloc`.

Unit: one *copy*
----------------
One copy is the volume a step works on, stored as **int16 (2 bytes per
voxel) at that step's working size**: S×H×W for the steps at native slice
spacing (:func:`~reprolib.preprocess.apply_fov`,
:func:`~reprolib.lungmask.lung_pseudo_label`), T0×H×W for the steps on the
1 mm grid (:func:`~reprolib.preprocess.resample_z`,
:func:`~reprolib.preprocess.window`,
:func:`~reprolib.preprocess.resample_mask_z`,
:func:`~reprolib.lungmask.lung_qc`, crop/resize). For a 300×512×512 volume
one copy is 157 MB (157,286,400 bytes). The requirement "no step holds more
than ~3 copies of a 512×512×300 volume" is checked as: the step's peak, in
copies of its working volume, is at most 3 (:data:`TARGET_COPIES`).

What a step's peak is
---------------------
The highest traced allocation while the step runs **above what was allocated
when it started** (its inputs and everything else alive then): the step's
output and its temporaries count, its inputs do not.

tracemalloc sees every allocation made through Python's allocators, which
includes NumPy array data; buffers that C or Fortran code allocates with plain
``malloc`` (a few image lines inside ``scipy.ndimage``) are not seen. The
figures are therefore exact for the NumPy arrays and a slight lower bound for
the process. Tracing slows pure-Python code down, not the NumPy kernels.

:class:`MemoryTrace` measures nested steps without losing the overall peak
(it keeps a running maximum across :func:`tracemalloc.reset_peak` calls), so
a caller can record both the per-step peaks of
:func:`~reprolib.preprocess.preprocess_ct` and the peak of the whole call.
"""
from __future__ import annotations

import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["TARGET_COPIES", "COPY_BYTES_PER_VOXEL", "copy_bytes", "StepRecord", "MemoryTrace",
           "synthetic_chest"]

#: The requirement: no step holds more than this many copies of its working volume.
TARGET_COPIES = 3.0
#: A copy is stored as int16.
COPY_BYTES_PER_VOXEL = 2

_ACTIVE: list["MemoryTrace"] = []  # traces entered and not yet exited (nesting)


def copy_bytes(shape: Sequence[int]) -> int:
    """Bytes of one copy: the volume of ``shape`` stored as int16."""
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) * COPY_BYTES_PER_VOXEL


@dataclass
class StepRecord:
    """One measured step: name, working shape, wall time, peak bytes above its start."""

    step: str
    shape: tuple[int, ...]
    seconds: float
    peak_bytes: int

    @property
    def copies(self) -> float:
        """The peak in copies of the working volume (int16)."""
        return self.peak_bytes / max(copy_bytes(self.shape), 1)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = "×".join(map(str, self.shape))
        d["peak_MB"] = self.peak_bytes / 1e6
        d["copies"] = self.copies
        return d


def _observe() -> None:
    """Fold the current tracemalloc peak into every active trace's running maximum."""
    if not _ACTIVE or not tracemalloc.is_tracing():
        return
    _, peak = tracemalloc.get_traced_memory()
    for t in _ACTIVE:
        t._max = max(t._max, peak)


class MemoryTrace:
    """Context manager recording the peak traced memory of a block and of named steps.

    >>> with MemoryTrace() as tr:                        # doctest: +SKIP
    ...     with tr.step("window", ct.shape):
    ...         u8 = window(ct)
    >>> tr.steps[0].copies, tr.peak_bytes                # doctest: +SKIP

    Starts tracemalloc if it is not running (and stops it on exit in that
    case). ``peak_bytes`` is the peak of the whole block above what was
    allocated when it was entered. Traces nest: an inner trace's steps keep
    the outer trace's peak intact.
    """

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self._base = 0
        self._max = 0
        self._owner = False

    def __enter__(self) -> "MemoryTrace":
        self._owner = not tracemalloc.is_tracing()
        if self._owner:
            tracemalloc.start()
        _observe()
        cur, _ = tracemalloc.get_traced_memory()
        self._base = self._max = cur
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _observe()
        self._final = self._max - self._base
        _ACTIVE.remove(self)
        if self._owner:
            tracemalloc.stop()

    @property
    def peak_bytes(self) -> int:
        """Peak traced bytes of the block above its start (so far, or at exit)."""
        if self in _ACTIVE:
            _observe()
            return self._max - self._base
        return getattr(self, "_final", 0)

    @contextmanager
    def step(self, name: str, shape: Sequence[int]) -> Iterator[None]:
        """Measure the block as step ``name`` whose working volume has ``shape``."""
        if self not in _ACTIVE:
            raise RuntimeError("MemoryTrace.step used outside its 'with' block")
        _observe()
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            _observe()
            self.steps.append(StepRecord(name, tuple(int(s) for s in shape), seconds,
                                         max(int(peak - start), 0)))

    def records(self) -> list[dict[str, Any]]:
        """The steps as JSON-able dicts (``step``, ``shape``, ``seconds``, ``peak_bytes``,
        ``peak_MB``, ``copies``)."""
        return [s.as_dict() for s in self.steps]

    def max_copies(self) -> float:
        """Largest per-step peak in copies (0 when no step was recorded)."""
        return max((s.copies for s in self.steps), default=0.0)


def synthetic_chest(slices: int = 300, size: int = 512, *, seed: int = 0,
                    noise_hu: float = 15.0) -> np.ndarray:
    """A plausible chest CT in int16 HU, (slices, size, size), built slice by slice.

    Air (-1000 HU) outside; an elliptic body (~0 HU) on a table separated by
    an air gap; two ellipsoid lungs (-850 HU) joined by a trachea and a
    bronchial bar (-1000/-900 HU) so that they form one air component;
    small vessels (+40 HU) inside the lungs; Gaussian noise. Only for
    benchmarks and memory tests: it is not a phantom with known labels
    (see :mod:`reprolib.phantoms` for those).
    """
    rng = np.random.default_rng(seed)
    k = size / 512.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    body = ((yy - 250 * k) / (150 * k)) ** 2 + ((xx - 256 * k) / (200 * k)) ** 2 <= 1
    table = (yy >= 420 * k) & (yy < 436 * k) & (xx >= 60 * k) & (xx < 452 * k)
    trachea = ((yy - 225 * k) / (12 * k)) ** 2 + ((xx - 256 * k) / (12 * k)) ** 2 <= 1
    bar = (np.abs(yy - 230 * k) <= 6 * k) & (np.abs(xx - 256 * k) <= 90 * k)
    vessels = ((np.sin(yy / (9 * k)) * np.sin(xx / (11 * k))) > 0.93)
    out = np.empty((slices, size, size), dtype=np.int16)
    zc, zr = 0.5 * (slices - 1), max(0.42 * slices, 1.0)
    for z in range(slices):
        s = 1.0 - ((z - zc) / zr) ** 2
        sl = np.full((size, size), -1000.0, dtype=np.float32)
        sl[body | table] = 0.0
        if s > 0:
            r = np.sqrt(s)
            for cx in (176 * k, 336 * k):
                lung = ((yy - 230 * k) / (95 * k * r)) ** 2 + ((xx - cx) / (62 * k * r)) ** 2 <= 1
                sl[lung] = -850.0
                sl[lung & vessels] = 40.0
        if z >= int(0.7 * slices):
            sl[trachea] = -1000.0
        if int(0.66 * slices) <= z < int(0.7 * slices) + 1:
            sl[bar] = -900.0
        sl += rng.normal(0.0, noise_hu, (size, size)).astype(np.float32)
        np.rint(sl, out=sl)
        out[z] = sl
    return out
