"""MobileNetV2 (Sandler et al. 2018), width 1.0, with a 62-d head: a comparison backbone of the paper's Table 2.

The standard network (inverted residuals, linear bottlenecks, 1280-channel last conv); the classifier is replaced
by dropout and a linear layer to the 62 whitened parameters. The paper reports 9.487 M parameters for its
MobileNetV2; the standard one is about 2.3 M (its row is kept in the benchmark table as published).
"""

from __future__ import annotations

import torch
from torch import nn

from r3fa.models.layers import conv_bn_act, init_weights, inverted_bottleneck
from r3fa.params import PARAM_DIM

# (expansion t, channels c, repeats n, first stride s): the paper's Table 2 of MobileNetV2
SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, linear 1x1 project; identity shortcut when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        self.body = inverted_bottleneck(cin, cout, stride, expand)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """`(B, 3, 120, 120)` -> `(B, 62)`.

    Args:
        out_dim: number of regressed values.
        dropout: dropout before the linear head.
    """

    def __init__(self, out_dim: int = PARAM_DIM, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_act(3, 32, 3, stride=2, act=nn.ReLU6)]
        cin = 32
        for t, c, n, s in SETTINGS:
            for k in range(n):
                layers.append(InvertedResidual(cin, c, s if k == 0 else 1, t))
                cin = c
        layers.append(conv_bn_act(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, out_dim))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))
