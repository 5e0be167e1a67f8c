"""Peak memory and time of every preprocessing step on a synthetic chest CT.

    .venv/bin/python benchmarks/bench_preprocess_memory.py [--slices 300] [--size 512] [--spacing-z 1.25]

Builds a synthetic int16 chest volume (:func:`reprolib.memtrace.synthetic_chest`:
body, two joined lungs, table, noise), runs the steps of spec §2–3 one by one
in pipeline order and prints, per step, its working shape, wall time, the
tracemalloc peak *above the inputs it receives* in MB and in copies (one copy
= the step's working volume stored as int16, see :mod:`reprolib.memtrace`),
then the peak of one whole :func:`reprolib.preprocess.preprocess_ct` call.
The target is at most 3 copies per step. Figures are printed, never asserted
(the cheap regression check is tests/test_memtrace.py). Runs single-threaded.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from reprolib import crop, lungmask
from reprolib import preprocess as pp  # noqa: E402
from reprolib.memtrace import TARGET_COPIES, MemoryTrace, copy_bytes, synthetic_chest  # noqa: E402
from reprolib.volume import CTVolume  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300, help="native slices S (default 300)")
    ap.add_argument("--size", type=int, default=512, help="in-plane matrix H = W (default 512)")
    ap.add_argument("--spacing-z", type=float, default=1.25, help="native slice spacing in mm (default 1.25)")
    ap.add_argument("--spacing-xy", type=float, default=0.7, help="pixel spacing in mm (default 0.7)")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    hu = synthetic_chest(args.slices, args.size)
    spacing = (args.spacing_z, args.spacing_xy, args.spacing_xy)
    print(f"synthetic chest {hu.shape} int16, {hu.nbytes / 1e6:.0f} MB, spacing {spacing} mm "
          f"(built in {time.perf_counter() - t:.1f} s)")
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"{os.cpu_count()} CPUs visible, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    factor = args.spacing_z / 1.0
    native = hu.shape
    one_mm = (int(round(hu.shape[0] * factor)),) + hu.shape[1:]
    with MemoryTrace() as tr:
        with tr.step("apply_fov", native):
            hu_fov = pp.apply_fov(hu)
        with tr.step("lung_pseudo_label", native):
            mask_native = lungmask.lung_pseudo_label(hu_fov)
        with tr.step("resample_z", one_mm):
            hu_1mm = pp.resample_z(hu_fov, args.spacing_z, 1.0, 3)
        del hu_fov
        with tr.step("window", one_mm):
            ct_u8 = pp.window(hu_1mm)
        del hu_1mm
        with tr.step("resample_mask_z", one_mm):
            mask = pp.resample_mask_z(mask_native, factor)
        del mask_native
        out_spacing = (pp.resampled_spacing_mm(native[0], args.spacing_z, one_mm[0]),) + spacing[1:]
        with tr.step("lung_qc", one_mm):
            qc = lungmask.lung_qc(mask, out_spacing)
        with tr.step("crop/resize", one_mm):
            x = crop.make_decovnet_input(ct_u8, mask)
        del ct_u8, mask, x
    print(f"lung QC: {qc['volume_ml']:.0f} ml, {qc['n_lungs']} component(s), ok={qc['ok']}")

    vol = CTVolume(hu=hu, spacing_mm=spacing)
    with MemoryTrace() as whole:
        t = time.perf_counter()
        res = pp.preprocess_ct(vol, qc_lung_volume_ml=(0.0, 1e9))
        whole_s = time.perf_counter() - t
    del res

    print()
    print(f"{'step':<18} {'working shape':<15} {'seconds':>8} {'peak MB':>9} {'copies':>7}")
    for s in tr.steps:
        print(f"{s.step:<18} {'×'.join(map(str, s.shape)):<15} {s.seconds:8.2f} "
              f"{s.peak_bytes / 1e6:9.1f} {s.copies:7.2f}")
    big = max(native, one_mm, key=lambda sh: sh[0])
    print(f"{'preprocess_ct':<18} {'×'.join(map(str, big)):<15} {whole_s:8.2f} "
          f"{whole.peak_bytes / 1e6:9.1f} {whole.peak_bytes / copy_bytes(big):7.2f}")
    worst = max(tr.steps, key=lambda s: s.copies)
    verdict = "met" if worst.copies <= TARGET_COPIES else "NOT met"
    print(f"\none copy = working volume as int16 ({copy_bytes(native) / 1e6:.0f} MB native, "
          f"{copy_bytes(one_mm) / 1e6:.0f} MB at 1 mm); preprocess_ct row: peak of the whole call "
          f"above its input, in copies of the larger volume")
    print(f"largest step peak: {worst.copies:.2f} copies ({worst.step}); target <= {TARGET_COPIES:g}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
