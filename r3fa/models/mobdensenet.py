"""MobDenseNet, the R3FA backbone: MobileNetV2 units wired with DenseNet connectivity, fully convolutional.

The paper (Fig. 2-3, Table 2) fixes the outline but not every width, so this module records the choice:

- **Stem**: conv 3x3, 32 maps, stride 2 (120 -> 60).
- **Layer1..Layer7**: one dense block each. A block of width C and n units at stride s runs, for k = 1..n,

      m_k = MobileBlock_k(h_{k-1})                      1x1 expand (x t), 3x3 depthwise (stride s if k = 1), 1x1 project to C
      h_k = Transition_k(concat(h_{k-1}, m_k))          1x1 conv, concat channels -> C

  so every MobileBlock's output is concatenated into the input of the next unit (DenseNet connectivity), and the
  1x1 transition after each MobileBlock brings the grown channel count back to the block width. Where the first
  unit strides, the carried input is 2x2 average-pooled (ceil mode, as DenseNet's transitions pool) so that the
  concatenation is spatially aligned. The projection is linear (MobileNetV2's linear bottleneck); the transition
  is conv-BN-ReLU6, the only non-linearity between units.
- **Head**: 1x1 conv to 1280 maps, global average pooling, 1x1 conv to 62 whitened parameters. There is no
  `nn.Linear` anywhere.

Widths, counts and strides (`LAYERS`): they follow MobileNetV2's stage plan (the paper builds on it) with the
last stages widened, because the dense concatenation doubles each transition's input and the paper's total
(10.9 M) is about 4.6x MobileNetV2's standard 2.3 M. Strides 1, 2, 2, 2, 1, 2, 1 take 60 -> 4x4 (120 input),
the same final resolution as MobileNetV2 at this input. Most parameters sit where the maps are smallest
(Layer6-7 and the head), which keeps the cost per image low (0.415 GMACs). The total is 10.87 M parameters
at 120x120, 0.3 % below the paper's 10.9 M (`tests/test_models.py` checks 10 %).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r3fa.models.layers import ConvHead, conv_bn_act, init_weights, inverted_bottleneck
from r3fa.params import PARAM_DIM

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# (width C, units n, stride of the first unit, expansion t), Layer1..Layer7
LAYERS: tuple[tuple[int, int, int, int], ...] = (
    (32, 1, 1, 1),
    (48, 2, 2, 6),
    (64, 3, 2, 6),
    (128, 4, 2, 6),
    (192, 3, 1, 6),
    (352, 3, 2, 6),
    (720, 1, 1, 6),
)


class DenseUnit(nn.Module):
    """One MobileBlock and its transition: `h -> Transition(concat(h, MobileBlock(h)))`."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        self.stride = stride
        self.mobile = inverted_bottleneck(cin, cout, stride, expand)  # the MobileBlock
        self.transition = conv_bn_act(cin + cout, cout, 1, act=nn.ReLU6)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        m = self.mobile(h)
        if self.stride > 1:
            h = F.avg_pool2d(h, self.stride, ceil_mode=True)
        return self.transition(torch.cat([h, m], dim=1))


def dense_block(cin: int, width: int, units: int, stride: int, expand: int) -> nn.Sequential:
    """Layer k of the network: `units` dense units of `width` channels, the first one strided."""
    return nn.Sequential(
        *(DenseUnit(cin if k == 0 else width, width, stride if k == 0 else 1, expand) for k in range(units))
    )


class MobDenseNet(nn.Module):
    """The R3FA network: `(B, 3, 120, 120)` normalised BGR -> `(B, 62)` whitened 3DMM parameters.

    Args:
        out_dim: number of regressed values (62).
        layers: `(width, units, stride, expansion)` per dense block; the default is `LAYERS`.
        head_channels: channels of the last 1x1 conv before pooling.
    """

    def __init__(
        self,
        out_dim: int = PARAM_DIM,
        layers: tuple[tuple[int, int, int, int], ...] = LAYERS,
        head_channels: int = HEAD_CHANNELS,
    ):
        super().__init__()
        self.stem = conv_bn_act(3, STEM_CHANNELS, 3, stride=2, act=nn.ReLU6)
        blocks, cin = [], STEM_CHANNELS
        for width, units, stride, expand in layers:
            blocks.append(dense_block(cin, width, units, stride, expand))
            cin = width
        self.layers = nn.Sequential(*blocks)
        self.expand = conv_bn_act(cin, head_channels, 1, act=nn.ReLU6)
        self.head = ConvHead(head_channels, out_dim)
        init_weights(self)
        nn.init.normal_(self.head.conv.weight, 0, 0.01)  # small outputs: training starts near the mean face

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.expand(self.layers(self.stem(x))))
