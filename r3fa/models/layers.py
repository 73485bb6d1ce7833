"""Building blocks shared by the backbones: a conv-BN-activation unit and a 1x1-conv regression head.

Every backbone in `r3fa.models` regresses the same 62 whitened parameters; `ConvHead` is the one head they use when
they end in a convolution (MobDenseNet has no fully-connected layer at all).
"""

from __future__ import annotations

from torch import nn

from r3fa.params import PARAM_DIM


def conv_bn_act(
    cin: int,
    cout: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """`Conv2d(bias=False) -> BatchNorm2d -> act` with 'same' padding for odd kernels; `act=None` keeps it linear."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def inverted_bottleneck(cin: int, cout: int, stride: int, expand: int) -> nn.Sequential:
    """MobileNetV2's unit body: 1x1 expand (x `expand`, skipped at 1), 3x3 depthwise (ReLU6 after both), linear 1x1 project."""
    hidden = cin * expand
    layers = [] if expand == 1 else [conv_bn_act(cin, hidden, 1, act=nn.ReLU6)]
    layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn_act(hidden, cout, 1, act=None)]
    return nn.Sequential(*layers)


class ConvHead(nn.Module):
    """Global average pooling, then a 1x1 convolution to `out_dim` outputs: `(B, C, H, W) -> (B, out_dim)`.

    A 1x1 convolution on a 1x1 map is the same function as a linear layer; writing it as a convolution keeps a
    network fully convolutional (the paper's MobDenseNet requirement)."""

    def __init__(self, cin: int, out_dim: int = PARAM_DIM, dropout: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv2d(cin, out_dim, kernel_size=1, bias=True)

    def forward(self, x):
        return self.conv(self.dropout(self.pool(x))).flatten(1)


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions, unit BN, small normal linear layers, zero biases (the torchvision recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
