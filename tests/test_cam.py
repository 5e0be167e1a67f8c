"""Class activation maps, checked against sums written out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reprolib import cam
from reprolib.errors import VolumeError


def test_weighted_sum_in_2d_and_3d():
    rng = np.random.default_rng(0)
    for shape in ((3, 4, 5), (3, 2, 4, 5)):
        f, w = rng.normal(size=shape).astype(np.float32), rng.normal(size=3).astype(np.float32)
        ref = sum(w[c] * f[c] for c in range(3))
        np.testing.assert_allclose(cam.weighted_sum(f, w), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(VolumeError, match="do not match"):
        cam.weighted_sum(np.zeros((3, 4, 4)), np.zeros(2))


def test_grad_cam_map_is_the_rectified_gradient_weighted_sum():
    torch.manual_seed(0)
    feats = torch.randn(4, 3, 5, requires_grad=True)
    score = (feats ** 2 * torch.arange(1.0, 5.0)[:, None, None]).sum() - feats[1].sum() * 7
    (grad,) = torch.autograd.grad(score, feats)
    f, g = feats.detach().numpy(), grad.numpy()
    ref = np.maximum(sum(g[c].mean() * f[c] for c in range(4)), 0)
    out = cam.grad_cam_map(feats, grad)
    assert out.dtype == np.float32 and out.shape == (3, 5) and (out >= 0).all()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
