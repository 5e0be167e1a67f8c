"""Tests for reprolib.preprocess (spec §2, §3, "Crop and resize")."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from reprolib.crop import crop_to_mask, make_decovnet_input, resize_inplane
from reprolib.errors import VolumeError
from reprolib.lungmask import default_probes, lung_pseudo_label, lung_qc
from reprolib.preprocess import (
    apply_fov,
    fov_mask,
    preprocess_ct,
    resample_mask_z,
    resample_z,
    resampled_spacing_mm,
    window,
)
from reprolib.preprocess_cache import cached_preprocess, write_npz
from reprolib.volume import CTVolume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ------------------------------------------------------------------------- FOV


def test_fov_mask_radius_512():
    m = fov_mask((512, 512))
    # centre (255, 255), radius 253: distance 252 inside, exactly 253 outside (>=)
    assert m[255, 255 + 252] and not m[255, 255 + 253]
    assert m[255 - 252, 255] and not m[255 - 253, 255]
    assert not m[0, 0] and not m[511, 511]
    # independent count of lattice points strictly inside the circle
    r = np.arange(-253, 254)
    expected = sum(int(np.sum(dy * dy + r * r < 253 * 253)) for dy in r)
    assert m.sum() == expected


def test_fov_mask_scales_with_matrix():
    m = fov_mask((256, 256), radius_px=None)  # 253 * 256 / 512 = 126.5, centre 127.5
    assert m.sum() == pytest.approx(np.pi * 126.5**2, rel=0.01)
    assert fov_mask((256, 256), radius_px=None).sum() < fov_mask((256, 256), radius_px=253).sum()


def test_apply_fov_offsets_outside_only():
    hu = np.full((2, 512, 512), 40, np.int16)
    hu[:, 0, 0] = -32000
    out = apply_fov(hu)
    inside = fov_mask((512, 512))
    assert np.all(out[:, inside] == 40) and np.all(out[:, ~inside & (np.arange(512) > 0)[None, :]] == -1960)
    assert out[0, 0, 0] == -32768  # saturates instead of wrapping
    assert hu[0, 0, 1] == 40  # input untouched


# ------------------------------------------------------------------ resampling


@pytest.mark.parametrize("engine", ["fast", "baseline"])
@pytest.mark.parametrize("spacing", [2.0, 1.25, 0.7, 5.0])
def test_resample_z_matches_scipy_zoom(spacing, engine):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1100, 1500, (13, 9, 11)).astype(np.int16)
    ref = ndimage.zoom(hu, (spacing, 1, 1), order=3, mode="nearest")
    out = resample_z(hu, spacing, block_bytes=4096, engine=engine)  # tiny blocks: exercise chunking
    assert out.dtype == np.int16 and out.shape == ref.shape
    assert np.abs(out.astype(int) - ref).max() <= 1
    assert np.mean(out == ref) > 0.99
    other = resample_z(hu, spacing, engine="baseline" if engine == "fast" else "fast")
    np.testing.assert_array_equal(out, other)  # either engine, any block size: the same sums


def test_preprocess_engines_give_the_same_arrays():
    from reprolib.memtrace import synthetic_chest

    vol = CTVolume(hu=synthetic_chest(20, 96), spacing_mm=(1.6, 0.8, 0.8))
    fast = preprocess_ct(vol, qc_lung_volume_ml=(0.0, 1e9), engine="fast")
    base = preprocess_ct(vol, qc_lung_volume_ml=(0.0, 1e9), engine="baseline")
    assert fast["lung_mask"].sum() > 1000
    for key in ("ct_u8", "lung_mask"):
        np.testing.assert_array_equal(fast[key], base[key])
    assert fast["qc"] == base["qc"]
    with pytest.raises(ValueError, match="unknown preprocessing engine 'turbo'"):
        preprocess_ct(vol, engine="turbo")


def test_resample_z_extent_and_spacing():
    s, dz = 37, 2.5
    hu = np.repeat((np.arange(s, dtype=np.int16) * 10)[:, None, None], 3, axis=1).repeat(4, axis=2)
    out = resample_z(hu, dz)
    t0 = out.shape[0]
    assert t0 == round(s * dz) == 92
    assert abs(t0 * 1.0 - s * dz) <= 1.0  # physical extent preserved within one voxel
    sp = resampled_spacing_mm(s, dz, t0)
    assert sp == pytest.approx((s - 1) * dz / (t0 - 1))
    assert (t0 - 1) * sp == pytest.approx((s - 1) * dz)  # first/last slice centres kept
    # a linear ramp (10 HU per input slice) is reproduced by the cubic spline (interior)
    t = np.arange(t0)
    expected = 10 * t * (s - 1) / (t0 - 1)
    assert np.abs(out[5:-5, 1, 2] - expected[5:-5]).max() <= 1


def test_resample_z_memory_bounded():
    hu = np.random.default_rng(0).integers(-1000, 1000, (40, 128, 128)).astype(np.int16)
    tracemalloc.start()
    out = resample_z(hu, 2.0, block_bytes=1 << 20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # output (2 input copies) + a few MiB of work space; scipy's 3D zoom needs a float64 copy (+8 MiB)
    assert peak < out.nbytes + 6 * 2**20, peak


def test_resample_mask_z_order0():
    m = np.zeros((10, 6, 6), np.uint8)
    m[3:7, 2:4, 2:4] = 1
    out = resample_mask_z(m, 2.0)
    assert out.shape == (20, 6, 6) and set(np.unique(out)) <= {0, 1}
    np.testing.assert_array_equal(out, ndimage.zoom(m, (2.0, 1, 1), order=0, mode="nearest"))
    assert out.sum() == pytest.approx(2 * m.sum(), rel=0.25)
    assert set(np.unique(resample_mask_z(m, 2.0, order=3))) <= {0, 1}


# ---------------------------------------------------------------------- window


def test_window_hand_values():
    hu = np.array([-2000, -1201, -1200, -1193, -1192, -300, 0, 1, 599, 600, 601, 3000], np.int16)
    # trunc(255 * (HU + 1200) / 1800): -1193 -> 0.99 -> 0; -1192 -> 1.13 -> 1; -300 -> 127.5 -> 127;
    # 0 -> 170; 1 -> 170.14 -> 170; 599 -> 254.86 -> 254
    expected = [0, 0, 0, 0, 1, 127, 170, 170, 254, 255, 255, 255]
    assert window(hu).tolist() == expected
    assert window(hu).dtype == np.uint8
    assert window(hu.astype(np.float32)).tolist() == expected
    full = np.arange(-32768, 32768).astype(np.int16)
    ref = np.floor(255 * np.clip((full.astype(np.float64) + 1200) / 1800, 0, 1)).astype(np.uint8)
    np.testing.assert_array_equal(window(full), ref)


# ------------------------------------------------------------- pseudo-labels


def lung_phantom(bridge: bool = True):
    """(S, 128, 128) int16 HU: -1000 air, 40 HU body, two -850 HU lung boxes joined by a
    trachea-like airway, vessels inside the lungs, and a 100 HU table with air pockets."""
    s, h, w = 40, 128, 128
    hu = np.full((s, h, w), -1000, np.int16)
    hu[:, 20:100, 14:114] = 40                      # body
    lungs = np.zeros(hu.shape, bool)
    lungs[4:36, 35:85, 24:58] = True                 # right lung (image left)
    lungs[4:36, 35:85, 72:104] = True                # left lung (a little smaller)
    if bridge:
        lungs[28:33, 55:62, 58:72] = True            # carina / main bronchi
        lungs[28:40, 25:35, 61:67] = True            # trachea up to the last slice
    hu[lungs] = -850
    hu[10:30, 50:53, 40:43] = 60                     # vessels: body islands inside the lungs
    hu[10:30, 60:62, 85:88] = 60
    hu[:, 106:120, 10:118] = 100                     # table
    hu[:, 116:119, 20:108] = -1000                   # air channel in the table, under probe (H-10, W/2)
    hu[:, 109:112, 30:50] = -1000                    # closed air pocket in the table (no probe)
    truth = lungs.copy()
    truth[10:30, 50:53, 40:43] = True                # vessels belong to the lung region
    truth[10:30, 60:62, 85:88] = True
    return hu, truth


def test_default_probes():
    assert default_probes(512, 512) == ((0, 0), (511, 0), (511, 511), (511, 256), (502, 256), (457, 256))


def test_pseudo_label_recovers_lungs():
    hu, truth = lung_phantom()
    mask = lung_pseudo_label(hu)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert dice(mask, truth) >= 0.95
    assert not mask[:, 100:].any()  # nothing from the table or below
    # without probes the outside air is the largest "air" component and wins
    assert dice(lung_pseudo_label(hu, probes=()), truth) < 0.5


@pytest.mark.slow
@pytest.mark.mirror
def test_pseudo_label_real_p002(mirror):
    from reprolib.dicom import read_dicom_series

    hits = sorted((mirror / "raw.githubusercontent.com" / "ShahinSHH" / "COVID-CT-MD").glob(
        "*/Sample data/COVID-19 subjects/P002"))
    if not hits:
        pytest.skip("COVID-CT-MD sample P002 not in the data mirror")
    vol = read_dicom_series(hits[0])
    mask = lung_pseudo_label(apply_fov(vol.hu))
    q = lung_qc(mask, vol.spacing_mm)
    assert q["ok"], q
    assert 2500 < q["volume_ml"] < 6000  # measured 3,955 ml; adult lungs at inspiration
    assert 0.35 < q["side_fractions"][0] < 0.65
    # every mask voxel is below the threshold or enclosed (vessels filled per slice)
    assert np.mean(vol.hu[mask > 0] <= -320) > 0.9


def test_pseudo_label_two_largest_option():
    hu, truth = lung_phantom(bridge=False)
    one = lung_pseudo_label(hu)                       # official rule: one lung lost
    assert 0.5 < dice(one, truth) < 0.75
    sp = (1.0, 0.7, 0.7)
    # each phantom lung holds about 53,000 voxels = 26 ml at this spacing
    two = lung_pseudo_label(hu, keep="two_largest", spacing_mm=sp, min_lung_ml=10)
    assert dice(two, truth) >= 0.95
    # with the default min_lung_ml (100 ml) the small second lung is dropped
    assert dice(lung_pseudo_label(hu, keep="two_largest", spacing_mm=sp), one) == 1.0
    # a second component below min_lung_ml is not kept
    vox_ml = np.prod(sp) / 1000
    lung_ml = truth[..., :64].sum() * vox_ml
    big = lung_pseudo_label(hu, keep="two_largest", spacing_mm=sp, min_lung_ml=lung_ml * 1.5)
    assert dice(big, one) == 1.0
    with pytest.raises(ValueError):
        lung_pseudo_label(hu, keep="two_largest")


def test_lung_qc_flags():
    hu, truth = lung_phantom()
    sp = (2.5, 0.7, 0.7)
    ml = truth.sum() * np.prod(sp) / 1000
    ok = lung_qc(truth, sp, volume_ml=(0.5 * ml, 2 * ml), min_component_ml=1.0)
    assert ok["ok"] and ok["reasons"] == [] and ok["volume_ml"] == pytest.approx(ml)
    assert ok["n_lungs"] == 1 and 0.4 < ok["side_fractions"][0] < 0.6
    one = truth.copy()
    one[..., 64:] = False
    q = lung_qc(one, sp, volume_ml=(0.3 * ml, 2 * ml))
    assert not q["ok"] and any("one lung missing" in r for r in q["reasons"])
    e = lung_qc(np.zeros_like(truth), sp)
    assert not e["ok"] and e["reasons"] == ["empty mask"] and e["volume_ml"] == 0
    small = lung_qc(truth, sp, volume_ml=(2 * ml, 3 * ml))
    assert not small["ok"] and "implausible lung volume" in small["reasons"][0]
    leak = truth.copy()
    leak[5, 0:40, 60] = True
    assert "touches the in-plane image border" in " ".join(lung_qc(leak, sp, volume_ml=(0, 1e9))["reasons"])


def test_lung_qc_with_slice_weights_equals_qc_of_the_repeated_mask():
    """QC computed on a native mask with slice weights = QC of its order-0 z upsampling."""
    from reprolib.lungmask import pseudo_label_with_counts
    from reprolib.preprocess import nearest_slice_index

    rng = np.random.default_rng(2)
    hu, _ = lung_phantom()
    mask, counts = pseudo_label_with_counts(hu, -320, None, "largest", 100.0, None, "auto")  # lung_pseudo_label defaults
    np.testing.assert_array_equal(mask, lung_pseudo_label(hu))
    assert counts.shape == (hu.shape[0], 1) and counts.sum() == mask.sum()
    blobs = (rng.random((13, 40, 44)) > 0.8).astype(np.uint8)  # many components, some 1 voxel
    for m, known in ((mask, counts), (blobs, None)):
        for t0 in (m.shape[0], m.shape[0] + 1, 2 * m.shape[0] + 3):
            idx = nearest_slice_index(m.shape[0], t0)
            w = np.bincount(idx, minlength=m.shape[0])
            sp = (1.0, 0.7, 0.7)
            ref = lung_qc(m[idx], sp, volume_ml=(0, 1e9), min_component_ml=0.0012)
            got = lung_qc(m, sp, volume_ml=(0, 1e9), min_component_ml=0.0012, slice_weights=w)
            assert got == ref
            if known is not None:
                fast = lung_qc(m, sp, volume_ml=(0, 1e9), min_component_ml=0.0012, slice_weights=w,
                               component_voxels=known.T @ w)
                assert fast == ref
    with pytest.raises(ValueError, match="slice_weights"):
        lung_qc(mask, (1, 1, 1), slice_weights=np.zeros(mask.shape[0], int))


# ------------------------------------------------------------- crop & resize


def test_crop_to_mask_bbox():
    ct = np.arange(10 * 20 * 30, dtype=np.int64).reshape(10, 20, 30).astype(np.uint8)
    m = np.zeros(ct.shape, np.uint8)
    m[2:6, 4:15, 7:21] = 1  # planes 2..5, 4..14, 7..20
    c, mc, bbox = crop_to_mask(ct, m)
    assert bbox == ((2, 5), (4, 14), (7, 20))  # [min, max): last plane dropped
    assert c.shape == mc.shape == (3, 10, 13)
    np.testing.assert_array_equal(c, ct[2:5, 4:14, 7:20])
    _, _, bbox_i = crop_to_mask(ct, m, inclusive=True)
    assert bbox_i == ((2, 6), (4, 15), (7, 21))
    _, _, bbox_z = crop_to_mask(ct, m, inclusive=True, z_clip=(0.3, 1.0))  # slices int(3)..: 3..5
    assert bbox_z[0] == (3, 6)
    with pytest.raises(VolumeError, match="empty"):
        crop_to_mask(ct, np.zeros_like(m))


def test_resize_and_decovnet_input():
    rng = np.random.default_rng(0)
    ct = rng.integers(0, 256, (12, 90, 120)).astype(np.uint8)
    m = np.zeros(ct.shape, np.uint8)
    m[1:11, 10:80, 15:110] = 1
    m[5, 40:50, 50:60] = 0
    r = resize_inplane(ct[:3])
    assert r.shape == (3, 224, 336) and r.dtype == np.uint8
    ref = np.clip(np.rint(ndimage.zoom(ct[:3].astype(float), (1, 224 / 90, 336 / 120), order=3)), 0, 255)
    assert np.abs(r.astype(int) - ref).max() <= 1  # slice-wise == the spec's 3D zoom with z factor 1
    rm = resize_inplane(m, order=0)
    assert rm.shape == (12, 224, 336) and set(np.unique(rm)) == {0, 1}

    x = make_decovnet_input(ct, m)
    c, mc, bbox = crop_to_mask(ct, m)
    t = bbox[0][1] - bbox[0][0]
    assert x.shape == (2, t, 224, 336) == (2, 9, 224, 336) and x.dtype == np.float32
    assert 0.0 <= x[0].min() and x[0].max() <= 1.0
    assert set(np.unique(x[1])) == {0.0, 1.0}
    np.testing.assert_allclose(x[0], resize_inplane(c) / np.float32(255), atol=1e-7)
    np.testing.assert_array_equal(x[1], resize_inplane(mc, order=0))
    # the CT is not multiplied by the mask
    assert np.any(x[0][x[1] == 0] > 0)


# ----------------------------------------------------------- pipeline & cache


def _phantom_volume() -> CTVolume:
    hu, _ = lung_phantom()
    return CTVolume(hu=hu, spacing_mm=(2.5, 0.7, 0.7), source="phantom")


def test_preprocess_ct_pipeline():
    vol = _phantom_volume()
    r = preprocess_ct(vol, qc_lung_volume_ml=(10, 1000))
    t0 = round(40 * 2.5)
    assert r["ct_u8"].shape == r["lung_mask"].shape == (t0, 128, 128)
    assert r["ct_u8"].dtype == np.uint8 and r["lung_mask"].dtype == np.uint8
    assert r["spacing_mm"][0] == pytest.approx(39 * 2.5 / (t0 - 1))
    # same as composing the stages by hand
    manual = window(resample_z(apply_fov(vol.hu), float(vol.spacing_mm[0]), 1.0, 3))
    np.testing.assert_array_equal(r["ct_u8"], manual)
    _, truth = lung_phantom()
    truth_1mm = resample_mask_z(truth.astype(np.uint8), 2.5)
    assert dice(r["lung_mask"], truth_1mm) >= 0.95
    assert r["qc"]["ok"], r["qc"]
    assert vol.hu.min() == -1000  # input not modified by the FOV step


def test_preprocess_ct_without_hu():
    u8 = np.random.default_rng(0).integers(0, 256, (5, 16, 16)).astype(np.uint8)
    nan = float("nan")
    r = preprocess_ct(CTVolume(hu=u8, spacing_mm=(nan, nan, nan), is_hu=False))
    np.testing.assert_array_equal(r["ct_u8"], u8)
    assert r["lung_mask"] is None and r["qc"] is None
    assert any(f.startswith("no_hu") for f in r["flags"]) and any("spacing_unknown" in f for f in r["flags"])


def test_cached_preprocess_hit_and_corruption(tmp_path):
    vol = _phantom_volume()
    params = {"qc_lung_volume_ml": (10, 1000)}
    r1, key = cached_preprocess(vol, tmp_path, params)
    assert r1["cache_status"] == "miss" and (tmp_path / f"{key}.npz").is_file()
    r2, key2 = cached_preprocess(vol, tmp_path, params)
    assert key2 == key and r2["cache_status"] == "hit"
    for name in ("ct_u8", "lung_mask"):
        np.testing.assert_array_equal(r1[name], r2[name])
        assert r1[name].dtype == r2[name].dtype
    assert r1["spacing_mm"] == r2["spacing_mm"] and r1["qc"] == r2["qc"] and r1["flags"] == r2["flags"]
    # different parameters or input -> different key
    assert cached_preprocess(vol, tmp_path, {"z_spacing_mm": 2.0})[1] != key
    other = CTVolume(hu=vol.hu.copy(), spacing_mm=(2.0, 0.7, 0.7))
    assert cached_preprocess(other, tmp_path, params)[1] != key
    # corrupt the cached file: flip bytes in the middle -> recomputed, not trusted
    p = tmp_path / f"{key}.npz"
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(64)
    p.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt"):
        r3, _ = cached_preprocess(vol, tmp_path, params)
    assert r3["cache_status"] == "recomputed"
    np.testing.assert_array_equal(r3["ct_u8"], r1["ct_u8"])
    assert cached_preprocess(vol, tmp_path, params)[0]["cache_status"] == "hit"
    # truncated file -> recomputed as well
    p.write_bytes(p.read_bytes()[:100])
    with pytest.warns(UserWarning):
        assert cached_preprocess(vol, tmp_path, params)[0]["cache_status"] == "recomputed"
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]  # no temp files left


def test_write_npz_round_trips_and_compresses_by_level(tmp_path):
    import zipfile

    rng = np.random.default_rng(0)
    arrays = {"ct_u8": (rng.integers(0, 4, (20, 32, 32)) * 60).astype(np.uint8),
              "lung_mask": np.zeros((20, 32, 32), np.uint8), "__meta__": np.array('{"k": 1}')}
    sizes = {}
    for level in (0, 1, 9):
        path = tmp_path / f"l{level}.npz"
        with open(path, "wb") as fh:
            write_npz(fh, arrays, compresslevel=level)
        with np.load(path) as z:
            assert sorted(z.files) == sorted(arrays)
            for k, v in arrays.items():
                assert z[k].dtype == v.dtype and np.array_equal(z[k], v)
        with zipfile.ZipFile(path) as zf:
            types = {i.compress_type for i in zf.infolist()}
        assert types == {zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED}
        sizes[level] = path.stat().st_size
    assert sizes[0] > sizes[1] >= sizes[9]
