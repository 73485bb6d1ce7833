"""Training losses of the 3DDFA family and R3FA: WPDC, VDC, Wing, and the paper's total 0.5 WPDC + 1.0 Wing.

All losses share one interface, the one the training engine calls:

    loss(pred_whitened: (B, 62) network outputs, target_params: (B, 62) de-whitened ground truth) -> scalar

and are `nn.Module`s whose morphable-model bases and whitening statistics are (non-persistent) buffers, so
`.to(device)` / `.double()` move them with the module. Formulas follow ../shared/DESIGN.md §3:

- **WPDC** (3DDFA's weighted parameter distance): per-parameter weights from the de-whitened parameter error,
  computed without gradient, on a point set of the 68 landmarks plus `resample` (132) grid vertices drawn anew
  for every batch from the `torch.Generator` given (so training is reproducible and resumable);
  loss = mean(w * (p_hat - p)^2) on whitened parameters, w_11 = 0 (tz is unobservable from a crop).
- **VDC**: mean squared vertex difference in the crop frame, the predicted tz replaced by the ground truth's.
- **Wing** (Feng et al. 2018, w = 10, eps = 2): on every coordinate of the reconstructed vertices in 120-crop
  pixels (the parameters' frame, mapped through the crop convention); the predicted tz is replaced by the ground
  truth's here as well, so the z rows measure shape and rotation, not the unobservable depth offset.

VDC and Wing use the 68 landmarks and, when a grid model is given, its 4096 points; each point set is averaged on
its own and the sets are then averaged, so the dense grid does not drown the 68 landmarks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from r3fa.crop import CropConvention
from r3fa.morphable import MorphableModel, load_model, posed_vertices_from
from r3fa.params import POSE_DIM, SHAPE_DIM, Whitening

WPDC_MAGIC = 0.00057339936  # 3DDFA's scale of the shape/expression weights
WPDC_EPS = 1e-6
TZ = 11  # index of tz in the 62-d vector
RESAMPLE = 132
WING_W, WING_EPS = 10.0, 2.0


class _Bases(nn.Module):
    """One morphable model's mean `(3N,)` and stacked shape+expression basis `(3N, 50)` as buffers."""

    def __init__(self, model: MorphableModel):
        super().__init__()
        if not model.has_bases:
            raise ValueError(f"morphable model {model.name!r} has no 40 shape + 10 expression bases")
        self.register_buffer("mean", torch.as_tensor(model.mean, dtype=torch.float32), persistent=False)
        basis = np.concatenate([model.shape_basis, model.exp_basis], axis=1)
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32), persistent=False)

    def vertices(self, params: torch.Tensor) -> torch.Tensor:
        """Posed vertices `(B, 3, N)` in the parameters' (model) frame."""
        return posed_vertices_from(self.mean, self.basis[:, :SHAPE_DIM], self.basis[:, SHAPE_DIM:], params)


class _Whitening(nn.Module):
    """`Whitening` statistics as buffers."""

    def __init__(self, whitening: Whitening):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(whitening.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.as_tensor(whitening.std, dtype=torch.float32), persistent=False)

    def whiten(self, params: torch.Tensor) -> torch.Tensor:
        return (params - self.mean) / self.std

    def unwhiten(self, normalised: torch.Tensor) -> torch.Tensor:
        return normalised * self.std + self.mean


def _with_true_tz(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`pred` with its tz replaced by the target's (differentiable in every other entry)."""
    return torch.cat([pred[:, :TZ], target[:, TZ : TZ + 1], pred[:, TZ + 1 :]], dim=1)


def wing(x: torch.Tensor, w: float = WING_W, eps: float = WING_EPS) -> torch.Tensor:
    """Element-wise Wing loss: `w ln(1 + |x|/eps)` where `|x| < w`, else `|x| - C`, `C = w - w ln(1 + w/eps)`."""
    c = w - w * math.log(1.0 + w / eps)
    ax = x.abs()
    return torch.where(ax < w, w * torch.log1p(ax / eps), ax - c)


class WPDCLoss(nn.Module):
    """Weighted parameter distance cost (3DDFA), on whitened parameters.

    Args:
        whitening: statistics the network's outputs are whitened with.
        bfm68: the 68-landmark model (default `load_model("bfm68")`).
        grid: the model vertices are resampled from (default `load_model("grid4096")`); None with `resample=0`
            for landmarks only.
        generator: source of the per-batch vertex draw (CPU generator); None uses torch's global RNG.
        resample: grid vertices drawn per batch (132 as in 3DDFA).
    """

    def __init__(
        self,
        whitening: Whitening,
        bfm68: MorphableModel | None = None,
        grid: MorphableModel | None = None,
        generator: torch.Generator | None = None,
        resample: int = RESAMPLE,
    ):
        super().__init__()
        self.stats = _Whitening(whitening)
        self.landmarks = _Bases(bfm68 if bfm68 is not None else load_model("bfm68"))
        if resample > 0 and grid is None:
            grid = load_model("grid4096")
        self.grid = _Bases(grid) if resample > 0 else None
        self.generator = generator
        self.resample = resample

    def _point_bases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean `(3N,)` and basis `(3N, 50)` of the landmarks plus this batch's resampled grid vertices."""
        if self.grid is None:
            return self.landmarks.mean, self.landmarks.basis
        n_grid = self.grid.mean.shape[0] // 3
        ids = torch.randperm(n_grid, generator=self.generator)[: self.resample].to(self.grid.mean.device)
        rows = (3 * ids[:, None] + torch.arange(3, device=ids.device)).reshape(-1)
        return (
            torch.cat([self.landmarks.mean, self.grid.mean[rows]]),
            torch.cat([self.landmarks.basis, self.grid.basis[rows]]),
        )

    @torch.no_grad()
    def weights(self, pred_params: torch.Tensor, target_params: torch.Tensor) -> torch.Tensor:
        """`(B, 62)` WPDC weights of de-whitened predictions and targets (DESIGN §3), each row's max 1, w_11 = 0."""
        mean, basis = self._point_bases()
        n = mean.shape[0] // 3
        shape = (mean + target_params[:, POSE_DIM:] @ basis.T).reshape(-1, n, 3)  # ground-truth shape, (B, N, 3)
        c = shape.norm(dim=1)  # (B, 3): ||X[:, k]||
        dp = (pred_params - target_params).abs()
        w = torch.zeros_like(dp)
        for k in range(3):  # columns k of sR (entries k, 4+k, 8+k) scale coordinate k
            w[:, k : 11 : 4] = dp[:, k : 11 : 4] * c[:, k : k + 1]
        w[:, [3, 7]] = dp[:, [3, 7]] * math.sqrt(n)
        w[:, POSE_DIM:] = WPDC_MAGIC * dp[:, POSE_DIM:] * basis.norm(dim=0)
        w = w + WPDC_EPS
        w[:, TZ] = 0.0
        return w / w.max(dim=1, keepdim=True).values

    def forward(self, pred_whitened: torch.Tensor, target_params: torch.Tensor) -> torch.Tensor:
        w = self.weights(self.stats.unwhiten(pred_whitened.detach()), target_params)
        return (w * (pred_whitened - self.stats.whiten(target_params)) ** 2).mean()


class _VertexLoss(nn.Module):
    """Shared part of VDC and Wing: crop-frame vertices of prediction (true tz) and target on each point set."""

    def __init__(
        self,
        whitening: Whitening,
        convention: CropConvention,
        bfm68: MorphableModel | None = None,
        grid: MorphableModel | None = None,
    ):
        super().__init__()
        self.stats = _Whitening(whitening)
        self.convention = CropConvention(convention)
        sets = [bfm68 if bfm68 is not None else load_model("bfm68")] + ([grid] if grid is not None else [])
        self.point_sets = nn.ModuleList(_Bases(m) for m in sets)

    def per_coordinate(self, diff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pred_whitened: torch.Tensor, target_params: torch.Tensor) -> torch.Tensor:
        pred = _with_true_tz(self.stats.unwhiten(pred_whitened), target_params)
        total = pred_whitened.new_zeros(())
        for bases in self.point_sets:
            diff = self.convention.model_to_crop(bases.vertices(pred)) - self.convention.model_to_crop(
                bases.vertices(target_params)
            )
            total = total + self.per_coordinate(diff).mean()
        return total / len(self.point_sets)


class VDCLoss(_VertexLoss):
    """Vertex distance cost: mean squared crop-frame vertex difference (pixels^2), predicted tz := true tz.

    Args: as `WingLoss`, without the Wing shape parameters."""

    def per_coordinate(self, diff: torch.Tensor) -> torch.Tensor:
        return diff**2


class WingLoss(_VertexLoss):
    """Wing loss on crop-frame vertex coordinates (120-crop pixels), predicted tz := true tz.

    Args:
        whitening: statistics the network's outputs are whitened with.
        convention: crop convention of the parameters (maps the model frame to crop pixels).
        bfm68: the 68-landmark model (default `load_model("bfm68")`).
        grid: a dense model (e.g. `load_model("grid4096")`) whose vertices are a second point set; None for none.
        w, eps: Wing's width and curvature (10 and 2 pixels).
    """

    def __init__(
        self,
        whitening: Whitening,
        convention: CropConvention,
        bfm68: MorphableModel | None = None,
        grid: MorphableModel | None = None,
        w: float = WING_W,
        eps: float = WING_EPS,
    ):
        super().__init__(whitening, convention, bfm68, grid)
        self.w, self.eps = w, eps

    def per_coordinate(self, diff: torch.Tensor) -> torch.Tensor:
        return wing(diff, self.w, self.eps)


class R3FALoss(nn.Module):
    """The paper's objective: `wpdc_weight * WPDC + wing_weight * Wing` (0.5 and 1.0).

    Args:
        whitening: statistics the network's outputs are whitened with.
        convention: crop convention of the training labels.
        generator: source of WPDC's per-batch vertex draw.
        wpdc_weight, wing_weight: the two coefficients.
        bfm68: the 68-landmark model (default `load_model("bfm68")`).
        grid: the 4096-point model for WPDC's resampling and Wing's dense set (default `load_model("grid4096")`).
    """

    def __init__(
        self,
        whitening: Whitening,
        convention: CropConvention,
        generator: torch.Generator | None = None,
        wpdc_weight: float = 0.5,
        wing_weight: float = 1.0,
        bfm68: MorphableModel | None = None,
        grid: MorphableModel | None = None,
    ):
        super().__init__()
        bfm68 = bfm68 if bfm68 is not None else load_model("bfm68")
        grid = grid if grid is not None else load_model("grid4096")
        self.wpdc = WPDCLoss(whitening, bfm68, grid, generator)
        self.wing = WingLoss(whitening, convention, bfm68, grid)
        self.wpdc_weight, self.wing_weight = wpdc_weight, wing_weight

    def forward(self, pred_whitened: torch.Tensor, target_params: torch.Tensor) -> torch.Tensor:
        return self.wpdc_weight * self.wpdc(pred_whitened, target_params) + self.wing_weight * self.wing(
            pred_whitened, target_params
        )
