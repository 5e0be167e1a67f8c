"""Tests for reprolib.localize (spec §7 lesion localisation, §12 hit rate).

Every expected value is computed independently: hand-made arrays with known answers,
a naive per-tile loop for the 3DCC response, a hand-written Wilson formula, manual
matrix products for the CAM weights and an autograd hook for Grad-CAM.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import ndimage

from reprolib import evaluate, hits
from reprolib import localize as L
from reprolib.crop import crop_to_mask, make_decovnet_input, resize_inplane
from reprolib.errors import InputError, VolumeError
from reprolib.models import DeCoVNet

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- helpers
def _tiny_model(seed: int = 0) -> DeCoVNet:
    torch.manual_seed(seed)
    m = DeCoVNet().eval()
    with torch.no_grad():  # break the zero-gamma init so features and CAMs are not trivial
        for blk in (m.res1, m.res2):
            blk.bn3.weight.fill_(1.0)
        for lin in (m.fc1, m.fc2):
            lin.weight.normal_(0, 0.3)
    return m


def _naive_variance(m, w, s, slab=(0.1, 0.8), min_frag=3, ref=0.5, tol=0.05):
    z_n, y_n, x_n = m.shape
    out = np.zeros(m.shape, bool)
    for z in range(int(slab[0] * z_n), int(slab[1] * z_n)):
        for i in range(0, y_n - w + 1, s):
            for j in range(0, x_n - w + 1, s):
                t = (m[z, i:i + w, j:j + w] > 0).astype(float)
                n = ndimage.label(t, structure=np.ones((3, 3)))[1]
                if n >= min_frag and abs(t.std() - ref) < tol:
                    out[z, i:i + w, j:j + w] = True
    return out


def _stripes_tile(w: int = 6) -> np.ndarray:
    """w x w tile with 3 separate vertical bars (cols 0-1, 3, 5): 24/36 foreground, 3 fragments."""
    t = np.zeros((w, w), np.uint8)
    t[:, 0:2] = 1
    t[:, 3] = 1
    t[:, 5] = 1
    return t


# ----------------------------------------------------------------------------- CAM
def test_linear_cam_equals_einsum():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(128, 5, 4, 6)).astype(np.float32)
    w = rng.normal(size=128).astype(np.float32)
    ref = np.einsum("cdhw,c->dhw", f.astype(np.float64), w.astype(np.float64))
    np.testing.assert_allclose(L.linear_cam(f, w), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(L.linear_cam(torch.from_numpy(f)[None], torch.from_numpy(w)), ref,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(VolumeError):
        L.linear_cam(f, w[:10])


def test_cam_for_volume_matches_manual_linearised_head():
    m = _tiny_model()
    x = torch.rand(1, 2, 8, 32, 48)
    cam, p = L.cam_for_volume(m, x)
    # independent: product of tap-averaged ProClf kernels and FC weights, in float64 numpy
    mats = [c.weight.detach().double().numpy().mean(axis=(2, 3, 4)) for c in m.proclf_convs]
    mats += [m.fc1.weight.detach().double().numpy(), m.fc2.weight.detach().double().numpy()]
    prod = mats[0]
    for a in mats[1:]:
        prod = a @ prod
    with torch.no_grad():
        feats = m.features(x)[0].double().numpy()
        p_ref = torch.softmax(m(x), dim=1)[0, 1].item()
    ref = np.einsum("cdhw,c->dhw", feats, prod[1])
    assert cam.shape == (4, 4, 6) and cam.dtype == np.float32
    np.testing.assert_allclose(cam, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    assert p == pytest.approx(p_ref, abs=1e-6)


def test_grad_cam_matches_hook_reference():
    m = _tiny_model(3)
    x = torch.rand(1, 2, 8, 32, 48)
    cam, p = L.grad_cam_for_volume(m, x)
    store = {}

    def hook(_mod, _inp, out):
        out.register_hook(lambda g: store.__setitem__("g", g))
        store["f"] = out

    h = m.res2.register_forward_hook(hook)
    logits = m(x)
    logits[0, 1].backward()
    h.remove()
    f, g = store["f"][0].detach().double(), store["g"][0].double()
    ref = torch.relu((g.mean(dim=(1, 2, 3))[:, None, None, None] * f).sum(0)).numpy()
    assert cam.shape == (4, 4, 6)
    assert (cam >= 0).all()
    np.testing.assert_allclose(cam, ref, rtol=1e-3, atol=1e-6 + 1e-3 * np.abs(ref).max())
    assert p == pytest.approx(torch.softmax(logits.detach(), 1)[0, 1].item(), abs=1e-6)
    np.testing.assert_array_equal(L.grad_cam(m, x), cam)


# ----------------------------------------------------------------------------- post-processing
def test_resize_and_normalise():
    cam = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 5.0
    r = L.resize_cam(cam, (5, 12, 16))  # odd T: T//2 = 2 -> 5
    assert r.shape == (5, 12, 16) and r.dtype == np.float32
    assert r[0, 0, 0] == pytest.approx(cam[0, 0, 0]) and r[-1, -1, -1] == pytest.approx(cam[-1, -1, -1])
    n = L.normalise_cam(r)
    assert n.min() == 0.0 and n.max() == pytest.approx(1.0)
    # ReLU first: negative values all map to 0; positive part is scaled by its max
    np.testing.assert_allclose(n, np.maximum(r, 0) / np.maximum(r, 0).max(), atol=1e-6)
    for const in (np.zeros((3, 4, 5)), np.full((3, 4, 5), 7.0), np.full((3, 4, 5), -2.0), np.zeros((0, 4, 5))):
        out = L.normalise_cam(const)
        assert out.shape == const.shape and not np.isnan(out).any() and not out.any()
    with pytest.raises(VolumeError):
        L.normalise_cam(np.array([[[np.nan, 1.0]]]))


def test_histogram_threshold_hand_made():
    cam = np.zeros((1, 10, 10), np.float32)
    cam.flat[:3] = 1.0  # top bin [0.98, 1]: 3 % (not > 5 %)
    cam.flat[3:6] = 0.91  # bin [0.90, 0.92): running total 6 % > 5 % -> threshold 0.92
    assert L.histogram_threshold_value(cam) == pytest.approx(0.92)
    keep = L.histogram_threshold(cam)
    assert keep.sum() == 3 and keep.flat[:3].all()  # round(255*0.91)=232 <= 234.6
    # boundary: exactly 5 % in the top bin is not "more than 5 %" -> continue to the next bin
    edge = np.zeros((1, 10, 10), np.float32)
    edge.flat[:5] = 1.0
    edge.flat[5:7] = 0.91
    assert L.histogram_threshold_value(edge) == pytest.approx(0.92)
    assert L.histogram_threshold(edge).sum() == 5
    assert L.histogram_threshold(np.zeros((2, 3, 4), np.float32)).sum() == 0
    assert L.histogram_threshold(np.zeros((0, 3, 4), np.float32)).shape == (0, 3, 4)


def test_histogram_threshold_random_cam_keeps_about_five_percent():
    rng = np.random.default_rng(0)
    cam = rng.random((20, 50, 60)).astype(np.float32)
    keep = L.histogram_threshold(cam)
    frac = keep.mean()
    assert 0.05 - 1 / 50 - 0.005 <= frac <= 0.05  # top <= 5 %, within one 2 % bin
    # independent: walk the bins from the top with a Python loop
    counts = [int(((cam >= k / 50) & ((cam < (k + 1) / 50) | (k == 49))).sum()) for k in range(50)]
    total, thr = 0, None
    for k in range(49, -1, -1):
        total += counts[k]
        if total > 0.05 * cam.size:
            thr = (k + 1) / 50
            break
    assert L.histogram_threshold_value(cam) == pytest.approx(thr)
    np.testing.assert_array_equal(keep, np.round(cam * 255) > 255 * thr)


def test_intensity_gate():
    mask = np.ones((1, 2, 3), bool)
    ct = np.array([[[0, 75, 76], [255, 74, 100]]], np.uint8)
    np.testing.assert_array_equal(L.intensity_gate(mask, ct), [[[False, False, True], [True, False, True]]])
    with pytest.raises(VolumeError):
        L.intensity_gate(mask, ct[:, :1])


def test_slice_gate():
    areas = [90, 5, 20, 50, 60, 55, 30, 10, 0, 95]  # z=0 and z=9 are large but ignored (first/last 20 %)
    lung = np.zeros((10, 10, 10), np.uint8)
    for z, a in enumerate(areas):
        lung[z].flat[:a] = 1
    # z* = 4 (60); slab grows while A > 24: slices 3..6
    assert L.slice_gate_range(lung) == (3, 7)
    assert L.slice_gate_range(lung, drop_last=True) == (3, 6)
    assert L.slice_gate_range(lung, frac=0.9) == (4, 6)  # 55 > 54, 50 < 54
    out = L.slice_gate(np.ones((10, 4, 4), bool), lung)
    np.testing.assert_array_equal(out.any(axis=(1, 2)), [False] * 3 + [True] * 4 + [False] * 3)
    assert L.slice_gate_range(np.zeros((10, 5, 5))) == (0, 0)
    # boundary: A(z) equal to 0.4 max A is not "more than" -> outside the slab
    lung2 = np.zeros((10, 10, 10), np.uint8)
    for z, a in enumerate([0, 0, 0, 20, 50, 21, 0, 0, 0, 0]):
        lung2[z].flat[:a] = 1
    assert L.slice_gate_range(lung2) == (4, 6)


def test_cam_candidates_order_connectivity_and_limit():
    m = np.zeros((6, 20, 20), bool)
    m[0:2, 0:2, 0:2] = True  # 8 voxels
    m[2, 2, 2] = True  # touches the first only diagonally (26-connectivity): same component (9)
    m[4:6, 10:15, 10:15] = True  # 50 voxels
    m[0, 18, 18] = True  # 1 voxel
    cands, ids = L.cam_candidates(m, return_label_ids=True)
    assert [int(c.sum()) for c in cands] == [50, 9, 1]
    assert ids == [3, 1, 2]  # raster order of first voxels: (0,0,0), (0,18,18), (4,10,10)
    assert len(L.cam_candidates(m, max_candidates=2)) == 2
    assert L.cam_candidates(np.zeros((3, 4, 5), bool)) == []


def test_single_blob_cam_is_the_one_candidate():
    zz, yy, xx = np.mgrid[:6, :8, :10]
    raw = np.exp(-((zz - 3) ** 2 + (yy - 2) ** 2 + (xx - 6) ** 2) / 2.0).astype(np.float32) - 0.05
    cam = L.normalise_cam(L.resize_cam(raw, (12, 32, 40)))
    mask = L.histogram_threshold(cam)
    cands = L.cam_candidates(mask)
    assert len(cands) == 1
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    assert cands[0][peak]
    assert 0 < cands[0].mean() <= 0.05


# ----------------------------------------------------------------------------- merge
def test_merge_chooses_r3dcc_overlap_and_label_weighted_can_differ():
    shape = (4, 20, 30)
    a = np.zeros(shape, bool)
    a[:, 0:10, 0:10] = True  # larger, first in raster order (label 1)
    b = np.zeros(shape, bool)
    b[:, 12:16, 20:24] = True  # smaller (label 2)
    r = np.zeros(shape, bool)
    r[:, 14:20, 20:30] = True  # overlaps b only
    np.testing.assert_array_equal(L.merge_candidates([a, b], r), b)
    # constructed so the modes differ: overlap a = 10, b = 8 -> voxel picks a; x label (1, 2) -> 10 vs 16 picks b
    r2 = np.zeros(shape, bool)
    r2[0, 0, 0:10] = True
    r2[0, 12:14, 20:24] = True
    np.testing.assert_array_equal(L.candidate_overlaps([a, b], r2), [10, 8])
    np.testing.assert_array_equal(L.candidate_overlaps([a, b], r2, "label_weighted"), [10, 16])
    assert (L.merge_candidates([a, b], r2, "voxel") == a).all()
    assert (L.merge_candidates([a, b], r2, "label_weighted") == b).all()
    # no overlap: largest by default, empty as the option
    none = np.zeros(shape, bool)
    assert (L.merge_candidates([a, b], none) == a).all()
    assert not L.merge_candidates([a, b], none, no_overlap="empty").any()
    assert L.merge_candidates([], none).shape == shape
    with pytest.raises(ValueError):
        L.merge_candidates([a], r, mode="bogus")


def test_empty_cam_gives_empty_mask_and_a_miss():
    cam = L.normalise_cam(L.resize_cam(np.zeros((3, 4, 5), np.float32), (6, 16, 20)))
    mask = L.slice_gate(L.intensity_gate(L.histogram_threshold(cam), np.full(cam.shape, 200, np.uint8)),
                        np.ones(cam.shape, np.uint8))
    cands = L.cam_candidates(mask)
    lesion = L.merge_candidates(cands, np.zeros(cam.shape, bool))
    assert cands == [] and not lesion.any()
    gt = np.zeros(cam.shape, bool)
    gt[2, 3:5, 3:5] = True
    assert hits.is_hit(lesion, gt) is False
    assert hits.hit_point(lesion) is None


# ----------------------------------------------------------------------------- 3DCC
def test_variance_response_fires_on_fragmented_tiles_not_on_solid_lung():
    tile = _stripes_tile()
    assert ndimage.label(tile, structure=np.ones((3, 3)))[1] == 3 and abs(tile.std() - 0.5) < 0.05
    lung = np.zeros((10, 24, 24), np.uint8)
    lung[:, 0:6, 0:6] = tile  # fragmented tile
    lung[:, 6:12, 6:12] = 1  # solid lung: std 0
    lung[:, 12:18, 12:15] = 1  # half tile: std 0.5 but 1 fragment
    fired = L.variance_response(lung)
    z_in = [z for z in range(10) if 1 <= z < 8]  # slab 10-80 %: slices 1..7
    expect = np.zeros(lung.shape, bool)
    expect[z_in, 0:6, 0:6] = True
    np.testing.assert_array_equal(fired, expect)
    assert not L.variance_response(np.ones((10, 24, 24), np.uint8)).any()


def test_variance_response_std_band_hand_computed():
    # w = 6: std of a 0/1 tile with c foreground = sqrt(c/36 (1 - c/36)); c = 10 -> 0.4479 (out), 11 -> 0.4606 (in)
    for c, fires in ((10, False), (11, True), (25, True), (26, False)):
        t = np.zeros(36, np.uint8)
        t[[0, 2, 4]] = 1  # three isolated pixels in the first row (3 fragments)
        rest = [i for i in range(12, 36)][: c - 3]  # fill rows 2.. (connected block, 4th fragment)
        t[rest] = 1
        lung = np.broadcast_to(t.reshape(6, 6), (10, 6, 6)).copy()
        assert bool(L.variance_response(lung).any()) == fires, c
    assert (abs(math.sqrt(10 / 36 * 26 / 36) - 0.5) < 0.05, abs(math.sqrt(11 / 36 * 25 / 36) - 0.5) < 0.05) == (
        False, True)


@pytest.mark.parametrize("window,stride", [(6, None), (7, None), (6, 1), (7, 3)])
def test_variance_response_matches_naive_loop(window, stride):
    rng = np.random.default_rng(window * 10 + (stride or 0))
    m = ndimage.gaussian_filter(rng.random((10, 43, 50)), 0.8) > 0.5
    np.testing.assert_array_equal(L.variance_response(m, window, stride), _naive_variance(m, window, stride or window))


def test_window_parameter_is_honoured():
    tile = _stripes_tile()
    lung = np.tile(tile, (10, 7, 7))  # 42 x 42: periodic with period 6, fits both 6 and 7 tiles exactly
    f6 = L.variance_response(lung, window=6)
    f7 = L.variance_response(lung, window=7)
    assert f6[1:8].all()  # every 6-tile is a stripes tile
    assert not np.array_equal(f6, f7)
    np.testing.assert_array_equal(f7, _naive_variance(lung, 7, 7))
    # 7-tiling: fired regions are unions of 7-aligned blocks
    blocks = f7[1:8].reshape(7, 6, 7, 6, 7)
    assert np.all(blocks.all(axis=(2, 4)) == blocks.any(axis=(2, 4)))


def test_r3dcc_components():
    assert not L.r3dcc(np.zeros((4, 5, 6), bool)).any()
    one = np.zeros((4, 5, 6), bool)
    one[0, 1:3, 1:3] = True
    np.testing.assert_array_equal(L.r3dcc(one), one)
    many = one.copy()
    many[3, 4, 5] = True
    many[0:4, 0, 5] = True  # 4 voxels
    many[2:4, 3:5, 0:2] = True  # 8 voxels, largest
    expect = np.zeros_like(many)
    expect[2:4, 3:5, 0:2] = True
    np.testing.assert_array_equal(L.r3dcc(many), expect)


# ----------------------------------------------------------------------------- frames
def test_uncrop_inverts_crop_and_resize():
    full = np.zeros((12, 90, 120), np.uint8)
    full[2:11, 10:80, 15:105] = 1
    ct = np.full(full.shape, 100, np.uint8)
    _, lung_c, bbox = crop_to_mask(ct, full)
    assert bbox == ((2, 10), (10, 79), (15, 104))
    lesion_full = np.zeros(full.shape, bool)
    lesion_full[4:7, 20:50, 30:70] = True
    lesion_c = L.to_cam_frame(lesion_full, bbox, (32, 48))
    assert lesion_c.shape == (8, 32, 48)
    back = L.uncrop(lesion_c, bbox, full.shape)
    assert back.shape == full.shape and back.dtype == bool
    assert not back[:, :10].any() and not back[:, 79:].any() and not back[:2].any() and not back[10:].any()
    assert evaluate.dice(back, lesion_full) > 0.95
    # and back again: identical in the cropped frame (order-0, corner-aligned both ways)
    assert evaluate.dice(L.to_cam_frame(back, bbox, (32, 48)), lesion_c) > 0.98
    with pytest.raises(VolumeError):
        L.uncrop(lesion_c[:3], bbox, full.shape)


def test_to_cam_frame_and_uncrop_with_z_step():
    full = np.zeros((11, 40, 60), np.uint8)
    full[1:10, 5:35, 5:55] = 1
    marker = np.zeros(full.shape, bool)
    marker[[1, 4, 7], 10:20, 10:20] = True  # only slices kept by z_step 3 (box starts at 1)
    bbox = ((1, 10), (5, 35), (5, 55))
    c = L.to_cam_frame(marker, bbox, (15, 25), z_step=3)
    assert c.shape == (3, 15, 25) and c.all(axis=(1, 2)).sum() == 0 and c.any(axis=(1, 2)).all()
    np.testing.assert_array_equal(c, L.to_cam_frame(marker, bbox, (15, 25))[::3])
    back = L.uncrop(c, bbox, full.shape, z_step=3)
    # each kept slice stands for itself and the next two 1 mm slices
    assert [int(back[z].any()) for z in range(11)] == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    np.testing.assert_array_equal(back[1], L.uncrop(L.to_cam_frame(marker, bbox, (15, 25)), bbox, full.shape)[1])
    with pytest.raises(VolumeError):
        L.uncrop(c[:2], bbox, full.shape, z_step=3)
    with pytest.raises(ValueError):
        L.to_cam_frame(marker, bbox, (15, 25), z_step=0)


# ----------------------------------------------------------------------------- hit metric
def test_hit_point_median_vs_centroid_on_l_shape():
    m = np.zeros((1, 10, 10), bool)
    m[0, :, 0] = True  # vertical bar (10 voxels)
    m[0, 9, :] = True  # bottom bar (9 more)
    # C-order list: (0,0,0) ... (0,8,0) [9], then (0,9,0..9); n = 19, element 9 = (0,9,0)
    assert hits.hit_point(m) == (0, 9, 0)
    # centroid y = (45 + 81)/19 = 6.63 -> 7, x = 45/19 = 2.37 -> 2: outside the L
    assert hits.hit_point(m, "centroid") == (0, 7, 2)
    assert not m[0, 7, 2]
    assert hits.is_hit(m, m) is True and hits.is_hit(m, m, "centroid") is False


def test_is_hit_edge_cases():
    gt = np.zeros((3, 4, 4), bool)
    assert hits.is_hit(np.ones((3, 4, 4), bool), gt) is None  # no ground truth -> explicit None
    with pytest.raises(VolumeError):
        hits.is_hit(np.ones((3, 4, 5), bool), gt)
    with pytest.raises(ValueError):
        hits.hit_rate([True, None])
    assert hits.hit_rate([True, None, False], exclude_none=True)[3:] == (1, 2)


def test_boxes_to_volume_inclusive_and_code_convention():
    boxes = {1: [hits.VocBox("A", 2, 3, 4, 6)], 0: [(1, 1, 1, 1)]}
    inc = hits.boxes_to_volume(boxes, (3, 8, 8))
    assert inc[1].sum() == 3 * 4 and inc[1, 2:6, 1:4].all()  # rows 3..6, cols 2..4 (1-based)
    assert inc[0].sum() == 1 and inc[0, 0, 0]
    exc = hits.boxes_to_volume(boxes, (3, 8, 8), inclusive=False)
    assert exc[1].sum() == 2 * 3 and exc[1, 2:5, 1:3].all() and not exc[0].any()
    np.testing.assert_array_equal(hits.boxes_to_volume([(1, 2, 3, 4, 6), (0, 1, 1, 1, 1)], (3, 8, 8)), inc)
    with pytest.raises(InputError):
        hits.boxes_to_volume([(5, 1, 1, 2, 2)], (3, 8, 8))
    lab, n = hits.gt_components(inc)
    assert n == 2


def test_mask_to_boxes_roundtrip_covers_mask():
    m = np.zeros((3, 10, 12), bool)
    m[0, 1:4, 2:5] = True
    m[0, 6, 6:9] = True
    m[2, 3:8, 1:2] = True
    boxes = hits.mask_to_boxes(m)
    assert sorted(boxes) == [(0, 3, 2, 5, 4), (0, 7, 7, 9, 7), (2, 2, 4, 2, 8)]
    np.testing.assert_array_equal(hits.boxes_to_volume(boxes, m.shape), m)  # rectangles: exact


_VOC = """<annotation><size><width>512</width><height>512</height></size>
<object><name>A</name><bndbox><xmin>134</xmin><ymin>274</ymin><xmax>216</xmax><ymax>338</ymax></bndbox></object>
<object><name>B</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3.0</xmax><ymax>4</ymax></bndbox></object>
</annotation>"""


def test_parse_voc_boxes_written_file(tmp_path):
    f = tmp_path / "7.xml"
    f.write_text(_VOC)
    assert hits.parse_voc_boxes(f) == [hits.VocBox("A", 134, 274, 216, 338), hits.VocBox("B", 1, 2, 3, 4)]
    assert hits.read_voc_dir(tmp_path) == {7: hits.parse_voc_boxes(f)}
    assert hits.read_voc_dir(tmp_path, slice_of={"7": 3}) == {3: hits.parse_voc_boxes(f)}  # e.g. SOPInstanceUID -> z
    bad = tmp_path / "bad.xml"
    bad.write_text(_VOC[:-20])
    with pytest.raises(InputError, match="bad.xml"):
        hits.parse_voc_boxes(bad)
    nocoord = tmp_path / "nocoord.xml"
    nocoord.write_text(_VOC.replace("<xmax>216</xmax>", ""))
    with pytest.raises(InputError, match="nocoord.xml.*xmax"):
        hits.parse_voc_boxes(nocoord)
    wrongroot = tmp_path / "root.xml"
    wrongroot.write_text("<foo/>")
    with pytest.raises(InputError, match="root.xml"):
        hits.parse_voc_boxes(wrongroot)
    with pytest.raises(InputError, match="missing.xml"):
        hits.parse_voc_boxes(tmp_path / "missing.xml")
    with pytest.raises(InputError, match="bad.xml"):
        hits.read_voc_dir(tmp_path, slice_of={"bad": 0})


def test_parse_voc_boxes_lung_pet_ct_dx(mirror):
    files = sorted(mirror.glob("raw.githubusercontent.com/huyenbui117/lung_CT/*/Annotation/A0002/*.xml"))
    if not files:
        pytest.skip("Lung-PET-CT-Dx annotations not in the mirror")
    assert len(files) == 18
    for f in files:
        boxes = hits.parse_voc_boxes(f)
        text = f.read_text()
        ref = [int(re.search(f"<{t}>(\\d+)</{t}>", text).group(1)) for t in ("xmin", "ymin", "xmax", "ymax")]
        assert len(boxes) == 1 and boxes[0].name == "A" and list(boxes[0][1:]) == ref


def _mosmed(mirror, study: int) -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    files = list(mirror.glob(f"raw.githubusercontent.com/michaelwfry/*/*/masks/study_{study:04d}_mask.nii.gz"))
    if not files:
        pytest.skip(f"MosMed mask study_{study:04d} not in the mirror")
    return np.asarray(nib.load(str(files[0])).dataobj).transpose(2, 1, 0) > 0  # (z, y, x)


@pytest.mark.parametrize("study", [255, 257])
def test_hit_on_mosmed_masks(mirror, study):
    mask = _mosmed(mirror, study)
    gt = hits.boxes_to_volume(hits.mask_to_boxes(mask), mask.shape)  # §12: masks -> per-slice boxes
    assert gt[mask].all() and gt.sum() >= mask.sum()
    pt = hits.hit_point(mask)
    assert mask[pt]
    assert hits.is_hit(mask, gt) is True
    # the largest lesion, moved to an in-plane corner of the grid (outside the body) -> miss
    lesion = L.r3dcc(mask)
    zs, ys, xs = L._bbox_slices(lesion)
    sub = lesion[zs, ys, xs]
    h, w = sub.shape[1:]
    far = None
    for y0 in (0, mask.shape[1] - h):
        for x0 in (0, mask.shape[2] - w):
            cand = np.zeros_like(mask)
            cand[zs, y0:y0 + h, x0:x0 + w] = sub
            if not (cand & gt).any():
                far = cand
    assert far is not None, "no ground-truth-free corner for the shifted lesion"
    assert hits.is_hit(far, gt) is False and hits.is_hit(lesion, gt) is True
    lung = np.ones(mask.shape, bool)  # a whole-volume "lung" makes the baseline the GT fraction
    assert hits.random_baseline_hit(lung, gt) == pytest.approx(gt.mean())


def test_hit_rate_wilson_hand_computed():
    z = 1.959963984540054
    for k, n in ((63, 75), (0, 10), (10, 10), (7, 13)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        rate, lo, hi, kk, nn = hits.hit_rate([True] * k + [False] * (n - k))
        assert (kk, nn) == (k, n) and rate == pytest.approx(p)
        assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    r = hits.hit_rate([])
    assert math.isnan(r[0]) and r[3:] == (0, 0)


def test_random_baseline_hit_exact_and_monte_carlo():
    lung = np.zeros((4, 10, 10), bool)
    lung[:, 2:8, 2:8] = True  # 144 voxels
    gt = np.zeros_like(lung)
    gt[1:3, 2:5, 2:8] = True  # 36 voxels, all in the lung
    gt[0, 0, 0] = True  # outside the lung: never drawn
    assert hits.random_baseline_hit(lung, gt) == pytest.approx(36 / 144)
    mc = hits.random_baseline_hit(lung, gt, rng=np.random.default_rng(0), n_draws=20000)
    assert mc == pytest.approx(0.25, abs=0.015)
    assert hits.random_baseline_hit(lung, np.zeros_like(lung)) is None
    with pytest.raises(VolumeError):
        hits.random_baseline_hit(np.zeros_like(lung), gt)


def test_slice_level_hit_and_dice():
    pred = np.zeros((6, 4, 4), bool)
    pred[3:5, 1, 1] = True  # median voxel (index 1 of 2) on slice 4
    assert hits.slice_level_hit(pred, np.array([0, 0, 0, 0, 1, 0])) is True
    assert hits.slice_level_hit(pred, [3]) is False
    assert hits.slice_level_hit(pred, np.zeros(6)) is None
    assert hits.slice_level_hit(np.zeros_like(pred), [4]) is False


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["linear", "gradcam"])
def test_localize_end_to_end_tiny(method):
    rng = np.random.default_rng(0)
    full = np.zeros((16, 96, 96), np.uint8)
    full[2:14, 20:80, 10:90] = 1
    full[2:14, 30:66, 24:84] = np.tile(_stripes_tile(), (6, 10))  # fragmented, 6-aligned: the 3DCC fires
    ct = rng.integers(0, 256, full.shape).astype(np.uint8)
    x = torch.from_numpy(make_decovnet_input(ct, full, hw=(32, 48)))[None]
    ct_c, lung_c, bbox = crop_to_mask(ct, full)
    ct_r = resize_inplane(ct_c, (32, 48))
    lung_r = resize_inplane(lung_c, (32, 48), order=0)
    model = _tiny_model()
    res = L.localize(model, x, ct_r, lung_r, full, bbox=bbox, method=method)
    t = x.shape[2]
    assert res.cam_raw.shape == (t // 2, 4, 6)
    assert res.cam.shape == res.lesion.shape == res.r3dcc.shape == res.cam_mask.shape == (t, 32, 48)
    assert res.lesion.dtype == bool and res.lesion_full.shape == full.shape and res.r3dcc_full.shape == full.shape
    assert 0.0 <= res.p_covid <= 1.0 and 0.0 <= res.cam.min() and res.cam.max() <= 1.0
    assert len(res.candidates) <= 9 and set(res.timings) == {"cam", "postprocess", "r3dcc", "merge"}
    # the chain's R3dcc and full-grid lesion equal the step functions applied by hand
    r_full = L.r3dcc(L.variance_response(full))
    assert r_full.any()
    np.testing.assert_array_equal(res.r3dcc_full, r_full)
    np.testing.assert_array_equal(res.r3dcc, L.to_cam_frame(r_full, bbox, (32, 48)))
    assert res.chosen is not None and len(res.candidates) >= 1
    np.testing.assert_array_equal(res.lesion, res.candidates[res.chosen])
    np.testing.assert_array_equal(res.overlaps, L.candidate_overlaps(res.candidates, res.r3dcc))
    np.testing.assert_array_equal(res.lesion_full, L.uncrop(res.lesion, bbox, full.shape))
    assert res.lesion_full.any()
    assert res.params["method"] == method and res.params["cc3d_window"] == 6
    # without the full-grid mask: 3DCC on the cropped mask, no full-grid outputs
    res2 = L.localize(model, x, method=method)
    assert res2.lesion.shape == (t, 32, 48) and res2.lesion_full is None and res2.r3dcc_full is None
    with pytest.raises(ValueError):
        L.localize(model, x, ct_r, lung_r, full)  # full mask without bbox
    # every 2nd slice kept: R3dcc maps into the strided frame, the lesion back onto every slice
    x2 = x[:, :, ::2]
    res3 = L.localize(model, x2, ct_r[::2], lung_r[::2], full, bbox=bbox, z_step=2, method=method)
    np.testing.assert_array_equal(res3.r3dcc, L.to_cam_frame(r_full, bbox, (32, 48), z_step=2))
    np.testing.assert_array_equal(res3.lesion_full, L.uncrop(res3.lesion, bbox, full.shape, z_step=2))
    assert res3.params["z_step"] == 2


def test_labels_in_input_frame_hand_computed():
    # 5 scanner slices at 2 mm -> 9 slices at 1 mm (zoom: j maps to j*(5-1)/(9-1) = j/2)
    lab = np.array([0, 1, 2, 3, 4])
    # crop box 1 mm slices 2..8, every 2nd kept: j = 2, 4, 6 -> scanner 1, 2, 3
    np.testing.assert_array_equal(hits.labels_in_input_frame(lab, ((2, 8), (0, 1), (0, 1)), 2, 9), [1, 2, 3])
    # every slice: j = 2..7 -> 1, 1.5, 2, 2.5, 3, 3.5 rounded half to even: 1, 2, 2, 2, 3, 4
    np.testing.assert_array_equal(hits.labels_in_input_frame(lab, ((2, 8), (0, 1), (0, 1)), 1, 9), [1, 2, 2, 2, 3, 4])
    # the slice-level hit then reads the predicted point's slice
    pred = np.zeros((3, 4, 4), bool)
    pred[1, 1, 1] = True
    flags = hits.labels_in_input_frame(np.array([0, 0, 1, 0, 0]), ((2, 8), (0, 1), (0, 1)), 2, 9)
    assert hits.slice_level_hit(pred, flags) is True
    pred[1], pred[2, 2, 2] = False, True
    assert hits.slice_level_hit(pred, flags) is False
    with pytest.raises(VolumeError):
        hits.labels_in_input_frame(lab, ((2, 12), (0, 1), (0, 1)), 1, 9)


# ----------------------------------------------------------------------------- scoring a run
def _result(lesion, candidates):
    z = np.zeros(lesion.shape, np.float32)
    return L.LocalizationResult(cam_raw=z, cam=z, cam_mask=lesion, candidates=candidates, candidate_label_ids=[],
                                overlaps=np.zeros(len(candidates)), chosen=0 if candidates else None,
                                r3dcc=np.zeros_like(lesion), r3dcc_full=None, lesion=lesion, lesion_full=None,
                                p_covid=0.9, timings={}, params={})


def test_score_volume_voxel_and_slice_level():
    lung = np.zeros((4, 10, 10), bool)
    lung[:, 1:9, 1:9] = True  # 256 lung voxels
    gt = np.zeros_like(lung)
    gt[1:3, 2:6, 2:6] = True  # 32 voxels, all in the lung
    pred = np.zeros_like(lung)
    pred[1:3, 3:7, 3:7] = True  # overlaps gt in 2*3*3 = 18 voxels
    big = np.zeros_like(lung)
    big[3, 1:9, 1:9] = True  # largest candidate, off the lesion
    s = hits.score_volume(_result(pred, [big, pred]), lung, gt)
    assert s["hit"] is True and s["hit_largest_cam"] is False
    assert s["random_baseline"] == pytest.approx(32 / 256)
    assert s["dice"] == pytest.approx(2 * 18 / (32 + 32))
    # slice level: only slice 3 infected -> the prediction (slices 1-2) misses, the big candidate hits
    flags = np.array([0, 0, 0, 1])
    s2 = hits.score_volume(_result(pred, [big, pred]), lung, slice_flags=flags)
    assert s2["hit"] is False and s2["hit_largest_cam"] is True and s2["dice"] is None
    assert s2["random_baseline"] == pytest.approx(0.25)
    # no ground truth at all, or an empty one: nothing scored
    assert hits.score_volume(_result(pred, [pred]), lung)["hit"] is None
    assert hits.score_volume(_result(pred, [pred]), lung, np.zeros_like(gt))["hit"] is None
    # empty prediction: a miss, no crash
    empty = np.zeros_like(lung)
    assert hits.score_volume(_result(empty, []), lung, gt)["hit"] is False


def test_slice_level_hit_counts_only_points_inside_the_lung():
    lung = np.zeros((3, 12, 12), bool)
    lung[:, 3:9, 3:9] = True
    flags = np.array([0, 1, 1])
    wall = np.zeros_like(lung)
    wall[1, 0:2, 0:2] = True  # a "lesion" on the chest wall of an infected slice
    inside = np.zeros_like(lung)
    inside[2, 4:6, 4:6] = True
    assert hits.slice_level_hit(wall, flags) is True  # slice label alone would count it
    assert hits.slice_level_hit(wall, flags, lung=lung) is False
    assert hits.slice_level_hit(inside, flags, lung=lung) is True
    s = hits.score_volume(_result(wall, [wall]), lung, slice_flags=flags)
    assert s["hit"] is False and s["hit_largest_cam"] is False and s["point_in_lung"] is False
    assert hits.score_volume(_result(inside, [inside]), lung, slice_flags=flags)["point_in_lung"] is True


def test_hit_rate_table_populations_and_variants():
    import pandas as pd

    rows = []
    for cam in ("linear", "gradcam"):
        for i, (hit, pos) in enumerate([(True, True), (False, True), (True, False), (None, True)]):
            if cam == "gradcam":
                hit = None if hit is None else True
            rows.append(dict(CAM=cam, window=6, predicted_positive=pos, hit=hit, hit_centroid=False,
                             hit_largest_cam=hit, random_baseline=0.1 * (i + 1), dice=0.5))
    df = pd.DataFrame(rows)
    pp = hits.hit_rate_table(df)
    assert pp.loc[("linear", 6), "n"] == 2 and pp.loc[("linear", 6), "hits"] == 1
    assert pp.loc[("linear", 6), "random_baseline"] == pytest.approx((0.1 + 0.2) / 2)
    lo, hi = evaluate.wilson_ci(1, 2)
    assert (pp.loc[("linear", 6), "ci_lo"], pp.loc[("linear", 6), "ci_hi"]) == pytest.approx((lo, hi))
    assert pp.loc[("gradcam", 6), "hit_rate"] == 1.0 and pp.loc[("gradcam", 6), "hit_rate_centroid"] == 0.0
    al = hits.hit_rate_table(df, population="all_annotated")
    assert al.loc[("linear", 6), "n"] == 3 and al.loc[("linear", 6), "hits"] == 2
    assert al.loc[("linear", 6), "median_dice"] == 0.5
    with pytest.raises(ValueError):
        hits.hit_rate_table(df, population="everyone")
