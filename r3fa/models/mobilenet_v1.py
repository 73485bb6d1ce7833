"""3DDFA-V2's MobileNet-V1 (widen 0.5 = `mb05`, 1.0 = `mb1`), written so that its released weights load as they are.

The peer baseline: attribute names follow the released checkpoints exactly (`conv1`, `bn1`, `dw2_1` ... `dw6` with
`conv_dw`/`bn_dw`/`conv_sep`/`bn_sep`, `fc_param`, and the auxiliary 136-d landmark head `fc_lm` that the release
carries but inference never uses), so `load_state_dict(strict=True)` works once the `module.` prefix of
DataParallel is stripped (`load_3ddfa_v2_state_dict`). Layer plan from cleardusk/3DDFA_V2 `models/mobilenet_v1.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from r3fa.models.layers import init_weights
from r3fa.params import PARAM_DIM

# (input width, output width, stride) of dw2_1 ... dw6, at widen factor 1
_PLAN: tuple[tuple[str, int, int, int], ...] = (
    ("dw2_1", 32, 64, 1),
    ("dw2_2", 64, 128, 2),
    ("dw3_1", 128, 128, 1),
    ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1),
    ("dw4_2", 256, 512, 2),
    *((f"dw5_{k}", 512, 512, 1) for k in range(1, 6)),
    ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
)
LANDMARK_DIM = 136


class DepthWiseBlock(nn.Module):
    """3x3 depthwise conv-BN-ReLU, then 1x1 conv-BN-ReLU (the checkpoint's key names)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn_sep(self.conv_sep(self.relu(self.bn_dw(self.conv_dw(x))))))


class MobileNetV1(nn.Module):
    """`(B, 3, 120, 120)` normalised BGR -> `(B, 62)` whitened parameters (3DDFA-V2 whitening, `CropConvention.V2`).

    Args:
        widen_factor: channel multiplier (0.5 for mb05, 1.0 for mb1).
        out_dim: number of regressed parameters.
    """

    def __init__(self, widen_factor: float = 1.0, out_dim: int = PARAM_DIM):
        super().__init__()
        self.widen_factor = widen_factor
        stem = int(32 * widen_factor)
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        for name, cin, cout, stride in _PLAN:
            self.add_module(name, DepthWiseBlock(int(cin * widen_factor), int(cout * widen_factor), stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        feat = int(1024 * widen_factor)
        self.fc_param = nn.Linear(feat, out_dim)
        self.fc_lm = nn.Linear(feat, LANDMARK_DIM)  # auxiliary head of the release; unused by forward
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in _PLAN:
            x = getattr(self, name)(x)
        return self.fc_param(self.avgpool(x).flatten(1))


def widen_factor_of(state_dict: dict[str, torch.Tensor]) -> float:
    """The widen factor of a MobileNet-V1 state dict, read off `conv1.weight` (32 x widen output channels)."""
    return state_dict["conv1.weight"].shape[0] / 32


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's `module.` key prefix where present."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_3ddfa_v2_state_dict(payload: dict) -> dict[str, torch.Tensor]:
    """The model state dict inside a 3DDFA-V2 `.pth` (`{"state_dict": ...}` or a bare state dict), unprefixed."""
    state = payload.get("state_dict", payload)
    return strip_module_prefix({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
