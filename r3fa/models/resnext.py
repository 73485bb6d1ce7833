"""ResNeXt-50 32x4d (Xie et al. 2017) with a 62-d head: a comparison backbone of the paper's Table 2.

Bottleneck blocks 3/4/6/3 with grouped 3x3 convolutions (32 groups of width 4 at the first stage, doubling per
stage), stride in the 3x3 conv, projection shortcuts where shapes change, a 7x7 stride-2 stem with max pooling.
About 23 M parameters plus the head; the paper lists 90.585 M.
"""

from __future__ import annotations

import torch
from torch import nn

from r3fa.models.layers import conv_bn_act, init_weights
from r3fa.params import PARAM_DIM

STAGES = (3, 4, 6, 3)
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (strided), 1x1 expand; added to the (projected) input, then ReLU."""

    def __init__(self, cin: int, planes: int, stride: int, groups: int, base_width: int):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        cout = planes * EXPANSION
        self.body = nn.Sequential(
            conv_bn_act(cin, width, 1),
            conv_bn_act(width, width, 3, stride, groups=groups),
            conv_bn_act(width, cout, 1, act=None),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn_act(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNeXt50(nn.Module):
    """`(B, 3, 120, 120)` -> `(B, 62)`.

    Args:
        out_dim: number of regressed values.
        groups: cardinality (32).
        base_width: width per group at the first stage (4).
    """

    def __init__(self, out_dim: int = PARAM_DIM, groups: int = 32, base_width: int = 4):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_act(3, 64, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1)]
        cin = 64
        for i, n in enumerate(STAGES):
            planes = 64 * 2**i
            for k in range(n):
                layers.append(Bottleneck(cin, planes, 2 if (k == 0 and i > 0) else 1, groups, base_width))
                cin = planes * EXPANSION
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, out_dim)
        init_weights(self)
        for m in self.modules():  # zero the last BN of each residual branch: blocks start as identities
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.body[-1][1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))
