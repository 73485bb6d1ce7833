"""DenseNet-121 (Huang et al. 2017) with a 62-d head: a comparison backbone of the paper's Table 2.

Growth rate 32, blocks of 6/12/24/16 bottleneck layers (BN-ReLU-1x1 conv to 4x growth, BN-ReLU-3x3 conv to growth),
transitions halving channels and resolution, a 7x7 stride-2 stem with max pooling. At 120x120 the last block runs
at 3x3 (global pooling handles it). About 7.0 M parameters plus the head; the paper lists 27.9 M.
"""

from __future__ import annotations

import torch
from torch import nn

from r3fa.models.layers import init_weights
from r3fa.params import PARAM_DIM

BLOCKS = (6, 12, 24, 16)


def _bn_relu_conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    """DenseNet's pre-activation order: BN, ReLU, conv."""
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)]


class DenseLayer(nn.Module):
    """Bottleneck layer: appends `growth` new maps to its input."""

    def __init__(self, cin: int, growth: int, bottleneck: int):
        super().__init__()
        self.body = nn.Sequential(*_bn_relu_conv(cin, bottleneck * growth, 1), *_bn_relu_conv(bottleneck * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet121(nn.Module):
    """`(B, 3, 120, 120)` -> `(B, 62)`.

    Args:
        out_dim: number of regressed values.
        growth: maps added per dense layer.
        bottleneck: width multiplier of the 1x1 bottleneck (x growth).
    """

    def __init__(self, out_dim: int = PARAM_DIM, growth: int = 32, bottleneck: int = 4):
        super().__init__()
        c = 2 * growth
        layers: list[nn.Module] = [
            nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        for i, n in enumerate(BLOCKS):
            for _ in range(n):
                layers.append(DenseLayer(c, growth, bottleneck))
                c += growth
            if i < len(BLOCKS) - 1:
                layers += [*_bn_relu_conv(c, c // 2, 1), nn.AvgPool2d(2, stride=2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, out_dim)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))
