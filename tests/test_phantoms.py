"""Tests of reprolib.phantoms: synthetic CT and CXR phantoms, writers, data set."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from reprolib.cxr_phantoms import CXR_LABELS, cxr_phantom, write_png
from reprolib.errors import ConfigError, DicomError, ImageError, NiftiError
from reprolib.phantom_dataset import directory_sha256, make_synthetic_dataset
from reprolib.phantom_files import write_dicom_series, write_nifti, write_nifti_mask
from reprolib.phantoms import ct_phantom

SMALL = (16, 64, 64)
FULL26 = np.ones((3, 3, 3), dtype=bool)


@pytest.fixture(scope="module")
def phantoms():
    """Default-size phantoms, built once: {(seed, finding): CTPhantom}."""
    out = {}
    for seed in range(4):
        out[(seed, "covid")] = ct_phantom(seed, 1)
        out[(seed, "clear")] = ct_phantom(seed, 0, finding="clear")
        out[(seed, "non_covid")] = ct_phantom(seed, 0, finding="non_covid")
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _threshold_lungs(hu: np.ndarray, thr: float = -320) -> np.ndarray:
    """Air < thr, drop 26-components touching the in-plane border, keep the largest."""
    lab, _ = ndimage.label(hu < thr, structure=FULL26)
    edge = np.unique(np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(),
                                     lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    sizes[edge] = 0
    assert sizes.max() > 0, "no enclosed air component"
    return lab == sizes.argmax()


def _probe_lungs(hu: np.ndarray, thr: float = -320) -> np.ndarray:
    """The DeCoVNet-style unsupervised segmentation (spec section 3), written for this test."""
    d, h, w = hu.shape
    body = hu > thr
    lab_air, _ = ndimage.label(~body, structure=FULL26)
    for r, c in [(0, 0), (h - 1, 0), (h - 1, w - 1), (h - 1, w // 2), (h - 10, w // 2), (h - 55, w // 2)]:
        if lab_air[0, r, c]:
            body |= lab_air == lab_air[0, r, c]
    for k in range(d):
        lab2, n = ndimage.label(body[k], structure=np.ones((3, 3), bool))
        if n > 1:
            sizes = np.bincount(lab2.ravel())
            sizes[0] = 0
            body[k] = lab2 == sizes.argmax()
    lab, _ = ndimage.label(~body, structure=FULL26)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


# ----------------------------------------------------------------- CT content


def test_labels_findings_and_dtypes(phantoms):
    ph = phantoms[(0, "covid")]
    assert (ph.label, ph.finding, ph.case_id) == (1, "covid", "syn-ct-0000")
    assert ph.hu.dtype == np.int16 and ph.hu.shape == (48, 128, 128)
    assert ph.lung_mask.dtype == np.uint8 and ph.lesion_mask.dtype == np.uint8
    assert set(np.unique(ph.lung_mask)) == {0, 1} and set(np.unique(ph.lesion_mask)) <= {0, 1}
    assert ph.spacing_mm == (2.5, 1.4, 1.4)
    assert not ph.hu.flags.writeable
    assert phantoms[(1, "non_covid")].finding_detail in ("nodule", "unilateral_consolidation", "emphysema")
    auto = {ct_phantom(s, 0, shape=SMALL).finding for s in range(12)}
    assert auto == {"clear", "non_covid"}
    assert ct_phantom(7, 1, shape=SMALL).case_id == "syn-ct-0007"


@pytest.mark.parametrize("kwargs, word", [
    (dict(label=1, finding="clear"), "contradicts"),
    (dict(label=0, finding="covid"), "contradicts"),
    (dict(label=2), "label"),
    (dict(label=0, finding="flu"), "unknown CT finding"),
    (dict(label=0, shape=(4, 64, 64)), "too small"),
    (dict(label=0, spacing_mm=(2.5, 0, 1.4)), "spacing"),
])
def test_bad_ct_arguments(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        ct_phantom(0, **kwargs)


def test_lesions_inside_lungs_nonempty_iff_covid(phantoms):
    for (seed, finding), ph in phantoms.items():
        les, lung = ph.lesion_mask.astype(bool), ph.lung_mask.astype(bool)
        assert not (les & ~lung).any(), (seed, finding)
        assert les.any() == (finding == "covid"), (seed, finding)


def test_covid_lesions_bilateral_peripheral_posterior(phantoms):
    post_frac, depth_ratio = [], []
    for seed in range(4):
        ph = phantoms[(seed, "covid")]
        les, lung = ph.lesion_mask.astype(bool), ph.lung_mask.astype(bool)
        w = les.shape[2]
        assert les[:, :, : w // 2].sum() > 20 and les[:, :, w // 2:].sum() > 20  # both halves of x
        depth = ndimage.distance_transform_edt(lung, sampling=ph.spacing_mm)  # mm to the lung border
        depth_ratio.append(depth[les].mean() / depth[lung].mean())
        rows = np.nonzero(lung)[1]
        post_frac.append(np.mean(np.nonzero(les)[1] > np.median(rows)))
    assert np.mean(depth_ratio) < 0.9  # lesions lie closer to the pleura than lung tissue on average
    assert np.mean(post_frac) > 0.65  # posterior-predominant


def test_lesion_hu(phantoms):
    dense_found = False
    for seed in range(4):
        ph = phantoms[(seed, "covid")]
        v = ph.hu[ph.lesion_mask.astype(bool)]
        ggo = np.mean((v >= -760) & (v <= -250))
        septa = np.mean((v > -250) & (v < -30))
        assert ggo > 0.45  # mostly ground glass ...
        assert 0.2 < septa < 0.5  # ... crossed by thickened septa (crazy paving, SEPTA_FRACTION 0.4)
        dense_found |= np.sum((v >= -120) & (v <= 100)) > 30
    assert dense_found  # some consolidation among the seeds


def test_septa_fragment_the_pseudo_label_lung_mask_inside_lesions(phantoms):
    """The 3DCC premise: COVID-19 lesions fragment the unsupervised lung mask, clear lungs do not."""
    from reprolib import localize, lungmask

    for seed in range(2):
        masks = {}
        for finding in ("covid", "clear"):
            ph = phantoms[(seed, finding)]
            masks[finding] = lungmask.lung_pseudo_label(np.asarray(ph.hu))
        fired = localize.variance_response(masks["covid"], window=6)
        lesion = phantoms[(seed, "covid")].lesion_mask.astype(bool)
        assert fired.sum() > 0 and lesion[fired > 0].mean() > 0.6
        assert localize.variance_response(masks["clear"], window=6).sum() == 0


def test_hu_ranges(phantoms):
    ph = phantoms[(0, "clear")]
    hu, lung = ph.hu, ph.lung_mask.astype(bool)
    assert -880 <= np.median(hu[lung]) <= -820
    d, h, w = hu.shape
    yy, xx = np.mgrid[:h, :w]
    outside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 >= (0.494 * w) ** 2
    assert (hu[:, outside] == -2048).all()
    assert hu[:, ~outside].min() >= -1024
    assert hu[0, 0, 0] == -2048 and hu[-1, -1, -1] == -2048
    assert abs(np.median(hu[:, 3, w // 2 - 2: w // 2 + 2]) + 1000) < 20  # air above the patient
    soft = hu[(hu > -300) & (hu < 300)]
    counts, edges = np.histogram(soft, bins=np.arange(-300, 301, 10))
    assert 20 <= edges[counts.argmax()] + 5 <= 60  # soft-tissue peak ≈ 40 HU
    fat_counts = counts[(edges[:-1] >= -200) & (edges[:-1] < -30)]
    fat_edges = edges[:-1][(edges[:-1] >= -200) & (edges[:-1] < -30)]
    assert -130 <= fat_edges[fat_counts.argmax()] + 5 <= -70  # subcutaneous fat ≈ -100 HU
    bone = hu[hu > 350]
    assert bone.size > 1000 and 400 <= np.median(bone) <= 1000 and bone.max() <= 1100


def test_lungs_one_component_two_symmetric_lobes(phantoms):
    for seed in range(4):
        ph = phantoms[(seed, "clear")]
        lung = ph.lung_mask.astype(bool)
        assert ndimage.label(lung, structure=FULL26)[1] == 1
        w = lung.shape[2]
        cols = np.arange(w)[None, None, :]
        lab, n = ndimage.label(lung & (np.abs(cols - (w - 1) / 2) > 6), structure=FULL26)
        sizes = np.sort(np.bincount(lab.ravel())[1:])[::-1]
        assert sizes[1] > 0.3 * lung.sum()  # two big lobes once the midline airway is cut
        right, left = lung[:, :, : w // 2].sum(), lung[:, :, w // 2:].sum()
        assert 0.7 < left / right < 1.3


def test_threshold_segmentation_matches_lung_mask(phantoms):
    for (seed, finding), ph in phantoms.items():
        d1 = _dice(_threshold_lungs(ph.hu), ph.lung_mask)
        d2 = _dice(_probe_lungs(ph.hu), ph.lung_mask)
        assert d1 >= 0.95 and d2 >= 0.95, (seed, finding, d1, d2)


def test_determinism_and_paired_anatomy():
    a, b = ct_phantom(3, 1, shape=SMALL), ct_phantom(3, 1, shape=SMALL)
    for f in ("hu", "lung_mask", "lesion_mask"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.hu, ct_phantom(4, 1, shape=SMALL).hu)
    neg = ct_phantom(3, 0, shape=SMALL, finding="clear")
    les = a.lesion_mask.astype(bool)
    assert np.array_equal(a.hu[~les], neg.hu[~les]) and not np.array_equal(a.hu[les], neg.hu[les])
    assert np.array_equal(a.lung_mask, neg.lung_mask)


def test_build_time():
    ct_phantom(0, 1)  # warm-up
    best = min(_timed(lambda: ct_phantom(11, 1)) for _ in range(3))
    assert best < 0.5, f"48×128×128 phantom took {best:.2f} s"


def _timed(fn) -> float:
    """CPU seconds of ``fn()`` (process time: robust to other jobs sharing the cores)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def test_other_shape_and_spacing():
    ph = ct_phantom(5, 1, shape=(24, 96, 80), spacing_mm=(3.0, 0.9, 1.1))
    assert ph.hu.shape == (24, 96, 80) and ph.spacing_mm == (3.0, 0.9, 1.1)
    assert ndimage.label(ph.lung_mask, structure=FULL26)[1] == 1
    assert 0.7 < ph.lung_mask[:, :, 40:].sum() / ph.lung_mask[:, :, :40].sum() < 1.3  # both lungs kept
    assert _dice(_threshold_lungs(ph.hu), ph.lung_mask) >= 0.95


# -------------------------------------------------------------------- writers


def test_nifti_roundtrip(tmp_path):
    nib = pytest.importorskip("nibabel")
    ph = ct_phantom(2, 1, shape=SMALL)
    p = write_nifti(ph, tmp_path / "ct.nii.gz")
    img = nib.load(p)
    assert img.get_data_dtype() == np.int16
    data = np.asarray(img.dataobj)
    assert data.dtype == np.int16 and np.array_equal(data.transpose(2, 1, 0), ph.hu)
    assert np.allclose(img.header.get_zooms(), (1.4, 1.4, 2.5))
    # one step along array axis 2 (= slices) moves +sz in superior (RAS z)
    assert np.allclose(img.affine[:3, 2], [0, 0, 2.5]) and np.allclose(np.abs(np.diag(img.affine)[:3]), (1.4, 1.4, 2.5))
    for name, mask in (("lung.nii.gz", ph.lung_mask), ("lesion.nii", ph.lesion_mask)):
        q = write_nifti_mask(mask, ph.spacing_mm, tmp_path / name)
        m = nib.load(q)
        assert m.get_data_dtype() == np.uint8
        assert np.array_equal(np.asarray(m.dataobj).transpose(2, 1, 0), mask)
    again = write_nifti(ph, tmp_path / "ct2.nii.gz")
    assert p.read_bytes() == again.read_bytes()  # reproducible gzip (mtime 0)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left


def test_nifti_errors(tmp_path):
    ph = ct_phantom(2, 0, shape=SMALL)
    with pytest.raises(NiftiError, match=r"ct\.img.*\.nii"):
        write_nifti(ph, tmp_path / "ct.img")
    with pytest.raises(NiftiError, match="0 or 1"):
        write_nifti_mask(np.full(SMALL, 2, np.uint8), ph.spacing_mm, tmp_path / "m.nii")


def _read_series(paths):
    pydicom = pytest.importorskip("pydicom")
    return [pydicom.dcmread(p) for p in paths]


def test_dicom_roundtrip_shuffled(tmp_path):
    ph = ct_phantom(4, 1, shape=SMALL)
    paths = write_dicom_series(ph, tmp_path / "s", shuffle=True, seed=3)
    files = sorted((tmp_path / "s").glob("*.dcm"))
    assert len(files) == SMALL[0] == len(paths)
    dss = _read_series(files)
    inst = [int(ds.InstanceNumber) for ds in dss]
    assert inst != sorted(inst)  # file names do not follow slice order
    dss.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in dss])
    assert np.allclose(np.diff(z), 2.5)
    assert np.allclose([float(ds.SliceLocation) for ds in dss], z)
    hu = np.stack([float(ds.RescaleSlope) * ds.pixel_array.astype(np.float64) + float(ds.RescaleIntercept)
                   for ds in dss])
    assert np.array_equal(hu, ph.hu.astype(np.float64))
    ds0 = dss[0]
    assert ds0.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds0.Modality == "CT"
    assert ds0.file_meta.MediaStorageSOPInstanceUID == ds0.SOPInstanceUID
    assert [float(v) for v in ds0.PixelSpacing] == [1.4, 1.4] and float(ds0.SliceThickness) == 2.5
    assert list(map(float, ds0.ImageOrientationPatient)) == [1, 0, 0, 0, 1, 0]
    assert (ds0.BitsAllocated, ds0.PixelRepresentation, ds0.Rows, ds0.Columns) == (16, 1, 64, 64)
    assert len({ds.StudyInstanceUID for ds in dss}) == 1 and len({ds.SeriesInstanceUID for ds in dss}) == 1
    assert len({ds.SOPInstanceUID for ds in dss}) == SMALL[0]
    assert [int(ds.InstanceNumber) for ds in _read_series(paths)] == list(range(1, SMALL[0] + 1))


def test_dicom_unsigned_rescale_and_determinism(tmp_path):
    ph = ct_phantom(4, 0, shape=SMALL)
    a = write_dicom_series(ph, tmp_path / "a", slope=0.5, intercept=-2048.0)
    b = write_dicom_series(ph, tmp_path / "b", slope=0.5, intercept=-2048.0)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    dss = _read_series(a)
    assert dss[0].PixelRepresentation == 0 and dss[0].pixel_array.dtype == np.uint16
    hu = np.stack([0.5 * ds.pixel_array.astype(np.float64) - 2048.0 for ds in dss])
    assert np.array_equal(hu, ph.hu)
    with pytest.raises(DicomError, match="16 bits"):
        write_dicom_series(ph, tmp_path / "c", slope=0.01, intercept=0.0)
    with pytest.raises(DicomError, match="other DICOM files"):
        write_dicom_series(ct_phantom(4, 0, shape=(14, 64, 64)), tmp_path / "a")


# ------------------------------------------------------------------------ CXR


def test_cxr_shapes_labels_and_determinism():
    for label in CXR_LABELS:
        ph = cxr_phantom(5, label, size=96)
        assert ph.image.shape == (96, 96) and ph.image.dtype == np.uint8 and ph.label == label
        assert ph.image.std() > 5
        assert ph.age_group == {"healthy": "child", "pneumonia": "child", "covid19": "adult"}.get(label, "unknown")
        assert np.array_equal(ph.image, cxr_phantom(5, label, size=96).image)
    assert {cxr_phantom(s, "pneumonia").sublabel for s in range(10)} == {"bacterial", "viral"}
    assert {cxr_phantom(s, "not_certain").sublabel for s in range(12)} == {"ct_slice", "lateral", "other"}
    assert not cxr_phantom(1, "not_certain").lung_mask.any() and cxr_phantom(1, "healthy").lung_mask.any()
    a, b = cxr_phantom(1, "covid19", patient=9), cxr_phantom(2, "covid19", patient=9)
    assert a.patient_id == b.patient_id == "syn-cxr-p00009" and not np.array_equal(a.image, b.image)
    assert abs(int(a.lung_mask.sum()) - int(b.lung_mask.sum())) < 0.05 * a.lung_mask.sum()  # same anatomy
    with pytest.raises(ConfigError, match="unknown CXR label"):
        cxr_phantom(0, "flu")
    with pytest.raises(ConfigError, match="sublabel"):
        cxr_phantom(0, "healthy", sublabel="viral")


def _lower_minus_upper(ph) -> float:
    img, m = ph.image.astype(float), ph.lung_mask.astype(bool)
    rows = np.nonzero(m.any(1))[0]
    mid = (rows[0] + rows[-1]) / 2
    r = np.arange(img.shape[0])[:, None]
    return img[m & (r > mid)].mean() - img[m & (r <= mid)].mean()


def test_cxr_covid_lower_zones_brighter_and_children_smaller():
    cov = [cxr_phantom(s, "covid19") for s in range(12)]
    hea = [cxr_phantom(s, "healthy") for s in range(12)]
    dc, dh = [_lower_minus_upper(p) for p in cov], [_lower_minus_upper(p) for p in hea]
    assert np.mean(dc) - np.mean(dh) > 10 and np.median(dc) > np.max(dh)
    # confound: children have a smaller lung field and a rounder thorax
    area = lambda ps: np.mean([p.lung_mask.sum() for p in ps])  # noqa: E731

    def aspect(p):
        rr, cc = np.nonzero(p.lung_mask)
        return (rr.max() - rr.min()) / (cc.max() - cc.min())

    assert area(hea) < area(cov) and np.mean([aspect(p) for p in hea]) < np.mean([aspect(p) for p in cov])


def test_cxr_learnable_not_trivial():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    classes = [("healthy", None), ("pneumonia", "bacterial"), ("pneumonia", "viral"), ("covid19", None),
               ("not_certain", None)]
    x, y = [], []
    for ci, (lab, sub) in enumerate(classes):
        for s in range(30):
            x.append(cxr_phantom(500 + s, lab, size=64, sublabel=sub).image[::2, ::2].ravel() / 255.0)
            y.append(ci)
    x, y = np.array(x), np.array(y)
    test = np.arange(len(y)) % 3 == 0
    acc = LogisticRegression(max_iter=2000, C=0.1).fit(x[~test], y[~test]).score(x[test], y[test])
    assert acc > 0.45  # chance is 0.2


def test_write_png(tmp_path):
    from PIL import Image

    img = cxr_phantom(3, "covid19", size=64).image
    p = write_png(img, tmp_path / "a" / "x.png")
    assert np.array_equal(np.asarray(Image.open(p)), img)
    with pytest.raises(ImageError, match=r"y\.png.*uint8"):
        write_png(img.astype(np.float32), tmp_path / "y.png")


# -------------------------------------------------------------------- dataset


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_make_synthetic_dataset(tmp_path):
    kw = dict(ct_count=4, ct_shape=SMALL, cxr_per_class=4, cxr_size=64, seed=1, dicom_every=2)
    recs = make_synthetic_dataset(tmp_path / "a", **kw)
    keys = {"dataset", "role", "label", "group", "split", "path", "sha256", "bytes"}
    assert all(set(r) == keys for r in recs)
    ct = [r for r in recs if r["dataset"] == "synthetic-ct"]
    cxr = [r for r in recs if r["dataset"] == "synthetic-cxr"]
    roles = [r["role"] for r in ct]
    assert roles.count("ct_nifti") == roles.count("lung_mask") == roles.count("lesion_mask") == 4
    assert roles.count("ct_dicom_dir") == 2
    assert sorted(r["label"] for r in ct if r["role"] == "ct_nifti") == ["covid19"] * 2 + ["normal"] * 2
    assert {r["label"] for r in cxr} == {"healthy", "pneumonia_bacterial", "pneumonia_viral", "covid19", "not_certain"}
    assert len(cxr) == 16 and all(r["role"] == "cxr_image" for r in cxr)
    for r in recs:
        p = tmp_path / "a" / r["path"]
        assert "\\" not in r["path"] and not Path(r["path"]).is_absolute()
        if r["role"] == "ct_dicom_dir":
            files = sorted(p.glob("*.dcm"))
            text = "".join(f"{_sha(f)}  {f.name}\n" for f in files)
            assert r["sha256"] == hashlib.sha256(text.encode()).hexdigest() == directory_sha256(p)[0]
            assert r["bytes"] == sum(f.stat().st_size for f in files) and len(files) == SMALL[0]
        else:
            assert r["sha256"] == _sha(p) and r["bytes"] == p.stat().st_size
    # patient-level split: one split per group, both splits present per dataset, ~2/3 train
    for ds in (ct, cxr):
        by_group: dict[str, set] = {}
        for r in ds:
            by_group.setdefault(r["group"], set()).add(r["split"])
        assert all(len(s) == 1 for s in by_group.values())
        splits = [next(iter(s)) for s in by_group.values()]
        assert {"train", "test"} <= set(splits) and 0.5 <= splits.count("train") / len(splits) <= 0.8
    assert len({r["group"] for r in cxr if r["label"] == "covid19"}) == 2  # two images per COVID patient
    # same seed -> identical files; rerun into the same folder also identical
    again = make_synthetic_dataset(tmp_path / "b", **kw)
    assert again == recs
    assert make_synthetic_dataset(tmp_path / "a", **kw) == recs
    assert not list((tmp_path / "a").rglob(".*tmp*"))
