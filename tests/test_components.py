"""Connected-component labelling: both backends find scipy's components; the choice of the
largest does not depend on how a backend numbered them."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from reprolib import components, lungmask
from reprolib.memtrace import synthetic_chest

needs_cc3d = pytest.mark.skipif(components.backend() != "cc3d", reason="connected-components-3d not installed")


@pytest.mark.parametrize("shape,conn", [((9, 17, 13), 26), ((31, 23), 8)])
@pytest.mark.parametrize("density", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("name", ["scipy", pytest.param("cc3d", marks=needs_cc3d)])
def test_components_equal_scipy_reference(shape, conn, density, name):
    mask = np.random.default_rng(len(shape) * 100 + int(density * 10)).random(shape) < density
    ref, n_ref = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    labels, n = components.label(mask, conn, name)
    assert n == n_ref
    np.testing.assert_array_equal(_raster_numbered(labels), ref)  # same partition


def _raster_numbered(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered 1..n by first voxel in raster order (scipy's numbering)."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    keep = ids != 0
    new = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    new[ids[keep][np.argsort(first[keep])]] = np.arange(1, keep.sum() + 1)
    return new[labels]


def test_largest_breaks_ties_by_first_voxel_not_by_label():
    labels = np.array([[3, 3, 0, 1, 1, 0, 2, 2, 2]])
    sizes = np.bincount(labels.ravel())          # label 1: 2, label 2: 3, label 3: 2
    assert components.largest(labels, sizes) == [2]
    assert components.largest(labels, sizes, 2) == [2, 3]      # 3 starts before 1
    assert components.largest(labels, sizes, 3) == [2, 3, 1]
    assert components.largest(labels, sizes, 5) == [2, 3, 1]
    assert components.largest(labels, np.array([0])) == []


def test_diagonal_neighbours_join_and_separate_blobs_do_not():
    m = np.zeros((3, 5, 5), dtype=bool)
    m[0, 0, 0] = m[1, 1, 1] = True    # corner neighbours: one component (26-connected)
    m[2, 4, 4] = True                 # far away: another
    labels, n = components.label(m, 26)
    assert n == 2 and labels[0, 0, 0] == labels[1, 1, 1] == 1 and labels[2, 4, 4] == 2


def test_wrong_connectivity_and_backend_are_refused():
    with pytest.raises(ValueError, match="connectivity 6"):
        components.label(np.ones((2, 2, 2), bool), 6)
    with pytest.raises(ValueError, match="connectivity 26 .* 2D"):
        components.label(np.ones((2, 2), bool), 26)
    with pytest.raises(ValueError, match="unknown labelling backend 'skimage'"):
        components.backend("skimage")


@needs_cc3d
def test_pseudo_label_same_with_either_backend():
    hu = synthetic_chest(24, 96)
    a = lungmask.lung_pseudo_label(hu, labeller="scipy")
    b = lungmask.lung_pseudo_label(hu, labeller="cc3d")
    assert a.sum() > 1000
    np.testing.assert_array_equal(a, b)
