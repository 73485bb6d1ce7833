"""Losses against values worked out by hand from DESIGN §3 on a two-vertex model, float64 gradchecks, and the
seeded resampling that makes WPDC reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from r3fa.crop import CropConvention
from r3fa.losses import R3FALoss, VDCLoss, WingLoss, WPDCLoss, wing
from r3fa.morphable import MorphableModel, load_model
from r3fa.params import Whitening, load_whitening

IDENTITY = Whitening("identity", np.zeros(62, np.float32), np.ones(62, np.float32))


def tiny_model() -> MorphableModel:
    """Two vertices (1,2,3) and (4,5,6); shape basis 0 moves vertex 0 by +1 in x; everything else zero."""
    shape = np.zeros((6, 40), np.float32)
    shape[0, 0] = 1.0
    return MorphableModel(
        name="tiny", units="test", mean=np.array([1, 2, 3, 4, 5, 6], np.float32), shape_basis=shape,
        exp_basis=np.zeros((6, 10), np.float32), landmark_indices=np.arange(2),
    )


def params(**entries: float) -> torch.Tensor:
    """Identity pose, zero translation and coefficients, with some entries set: `params(p3=2.0)`."""
    p = torch.zeros(1, 62, dtype=torch.float64)
    p[0, [0, 5, 10]] = 1.0
    for key, value in entries.items():
        p[0, int(key[1:])] += value
    return p


def test_wing_element_values():
    c = 10 - 10 * math.log(1 + 10 / 2)
    assert c == pytest.approx(-7.9176, abs=1e-4)
    x = torch.tensor([0.0, 3.0, -3.0, 12.0])
    expected = torch.tensor([0.0, 10 * math.log(2.5), 10 * math.log(2.5), 12 - c])
    torch.testing.assert_close(wing(x), expected)


def test_wing_and_vdc_by_hand():
    # prediction: tx + 3, ty - 12, tz + 5. V1 crop frame: x' = x, y' = 121 - y, z' = z, so every vertex is off by
    # (3, +12, 0): tz is replaced by the truth's, so z is not off at all.
    target, pred = params(), params(p3=3.0, p7=-12.0, p11=5.0)
    model = tiny_model()
    wing_loss = WingLoss(IDENTITY, CropConvention.V1, bfm68=model).double()
    vdc = VDCLoss(IDENTITY, CropConvention.V1, bfm68=model).double()
    c = 10 - 10 * math.log(6)
    assert float(wing_loss(pred, target)) == pytest.approx((10 * math.log(2.5) + (12 - c) + 0) / 3)
    assert float(vdc(pred, target)) == pytest.approx((9 + 144 + 0) / 3)
    # with a second point set (the same two vertices again), the two set means are averaged: same value
    both = WingLoss(IDENTITY, CropConvention.V1, bfm68=model, grid=model).double()
    assert float(both(pred, target)) == pytest.approx(float(wing_loss(pred, target)))


def test_wpdc_by_hand():
    # ground truth: a_shp[0] = 1, so X = (2,2,3), (4,5,6): column norms sqrt(20), sqrt(29), sqrt(45); N = 2
    target = params(p12=1.0)
    pred = params(p0=0.5, p1=0.25, p3=2.0, p11=7.0, p12=2.0)  # |dp|: 0.5, 0.25, 2, (tz 7), 1
    eps = 1e-6
    w = np.full(62, eps)
    w[0] = 0.5 * math.sqrt(20) + eps
    w[1] = 0.25 * math.sqrt(29) + eps
    w[3] = 2 * math.sqrt(2) + eps
    w[12] = 0.00057339936 * 1.0 * 1.0 + eps  # column 0 of the basis has norm 1
    w[11] = 0.0
    w /= w.max()
    sq = np.zeros(62)
    sq[[0, 1, 3, 11, 12]] = [0.25, 0.0625, 4.0, 49.0, 1.0]
    loss = WPDCLoss(IDENTITY, bfm68=tiny_model(), resample=0).double()
    assert float(loss(pred, target)) == pytest.approx((w * sq).mean(), rel=1e-9)
    torch.testing.assert_close(loss.weights(pred, target)[0], torch.tensor(w))


def test_wpdc_whitens_the_target():
    stats = Whitening("s", np.full(62, 0.5, np.float32), np.full(62, 2.0, np.float32))
    target = params(p12=1.0)
    pred_params = params(p3=2.0, p12=1.0)  # only tx is off (by 2, so by 1 in whitened units)
    loss = WPDCLoss(stats, bfm68=tiny_model(), resample=0).double()
    # the only weighted error is tx's, whose weight is the max (1): mean over 62 of 1 * 1^2
    assert float(loss(stats.whiten(pred_params), target)) == pytest.approx(1 / 62, rel=1e-6)


@pytest.fixture(scope="module")
def real_setup():
    return load_whitening("v2"), load_model("bfm68"), load_model("grid4096")


def _batch(whitening: Whitening, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.tensor(whitening.mean, dtype=torch.float64), torch.tensor(whitening.std, dtype=torch.float64)
    target = mean + 0.3 * std * torch.randn(n, 62, generator=g, dtype=torch.float64)
    pred = (target - mean) / std + 0.2 * torch.randn(n, 62, generator=g, dtype=torch.float64)
    return pred, target


def test_gradcheck_float64(real_setup):
    whitening, bfm68, grid = real_setup
    pred, target = _batch(whitening, n=1)
    pred.requires_grad_(True)
    dense = grid.subset(np.arange(0, 4096, 64))  # 64 grid points keep the check fast
    wing_loss = WingLoss(whitening, CropConvention.V1, bfm68, dense).double()
    vdc = VDCLoss(whitening, CropConvention.V1, bfm68, dense).double()
    assert torch.autograd.gradcheck(lambda p: wing_loss(p, target), (pred,))
    assert torch.autograd.gradcheck(lambda p: vdc(p, target), (pred,))


def test_wpdc_gradient_treats_the_weights_as_constants(real_setup):
    # WPDC's weights carry no gradient (DESIGN §3), so finite differences (which see the weights move) do not
    # apply; its gradient must be d/dp mean(w (p - p*)^2) = 2 w (p - p*) / numel with w fixed.
    whitening, bfm68, grid = real_setup
    pred, target = _batch(whitening)
    pred.requires_grad_(True)
    loss = WPDCLoss(whitening, bfm68, grid, torch.Generator().manual_seed(5)).double()
    loss(pred, target).backward()
    weights = WPDCLoss(whitening, bfm68, grid, torch.Generator().manual_seed(5)).double().weights(
        whitening.unwhiten(pred.detach()), target
    )
    expected = 2 * weights * (pred.detach() - whitening.whiten(target)) / pred.numel()
    torch.testing.assert_close(pred.grad, expected)


def test_wpdc_resampling_is_reproducible_and_varies_per_batch(real_setup):
    whitening, bfm68, grid = real_setup
    pred, target = _batch(whitening)
    a = WPDCLoss(whitening, bfm68, grid, torch.Generator().manual_seed(7))
    b = WPDCLoss(whitening, bfm68, grid, torch.Generator().manual_seed(7))
    first = [float(a(pred.float(), target.float())) for _ in range(3)]
    assert first == [float(b(pred.float(), target.float())) for _ in range(3)]
    assert len(set(first)) == 3  # a new draw of 132 vertices each batch


def test_r3fa_loss_is_half_wpdc_plus_wing(real_setup):
    whitening, bfm68, grid = real_setup
    pred, target = _batch(whitening)
    total = R3FALoss(whitening, CropConvention.V2, torch.Generator().manual_seed(1), bfm68=bfm68, grid=grid)
    wpdc = WPDCLoss(whitening, bfm68, grid, torch.Generator().manual_seed(1))
    wing_loss = WingLoss(whitening, CropConvention.V2, bfm68, grid)
    p, t = pred.float(), target.float()
    assert float(total(p, t)) == pytest.approx(0.5 * float(wpdc(p, t)) + float(wing_loss(p, t)), rel=1e-6)
    # perfect predictions cost nothing
    assert float(total(whitening.whiten(t), t)) == pytest.approx(0.0, abs=1e-4)
