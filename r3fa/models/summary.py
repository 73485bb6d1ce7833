"""Size and cost of a model: parameter count and multiply-accumulates (MACs) of one forward pass.

MACs are counted with forward hooks on every `Conv2d` (output elements x input channels per group x kernel area)
and `Linear` (input x output features): the convention of most published MAC tables (3DDFA-V2's included).
Batch norm, activations, pooling and additions are not counted.
"""

from __future__ import annotations

import torch
from torch import nn

from r3fa.crop import CROP_SIZE


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, size: int = CROP_SIZE) -> int:
    """MACs of one `(1, 3, size, size)` forward pass (conv and linear layers only)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            output = model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    del output
    return total


def summarise(model: nn.Module, size: int = CROP_SIZE) -> dict[str, int]:
    """`{"params", "macs", "output_dim"}` of `model` at a `size x size` input."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        output_dim = int(model(torch.zeros(1, 3, size, size, device=device)).shape[-1])
    return {"params": count_params(model), "macs": count_macs(model, size), "output_dim": output_dim}
