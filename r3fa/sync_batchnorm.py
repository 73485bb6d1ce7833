"""BatchNorm over the global batch under DDP, on any device (CPU/gloo included).

With plain `nn.BatchNorm2d` each DDP process normalises by the statistics of its own `batch_size / world_size`
samples (16 per GPU for the paper's 128 on 8 GPUs). `convert_sync_batchnorm` swaps every `BatchNorm2d` for a
`GlobalBatchNorm2d`, which in training mode sums each channel's count, sum and sum of squares over all
processes (one all-reduce per layer and step, differentiable) and normalises by the global mean and variance,
as one process with the whole batch would; in eval mode it is `BatchNorm2d`, running statistics included.

Why not `torch.nn.SyncBatchNorm`: it refuses CPU tensors ("expected input tensor to be on GPU"), so a CPU
DDP run could not use it and the tests could not check it. This one is the same computation in plain torch
ops, used on every device, and it keeps `BatchNorm2d`'s parameter and buffer names, so a checkpoint of a
converted model loads into the unconverted one (inference never needs a process group).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum over processes of the incoming gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """`BatchNorm2d` whose training-mode statistics are those of the batch summed over all DDP processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([count, x.sum(dims), (x * x).sum(dims)]))
        n, total, squares = stats[0], stats[1 : 1 + channels], stats[1 + channels :]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n.detach())
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """As `BatchNorm2d` does: exponential (or cumulative, momentum None) average, unbiased variance."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * n / (n - 1).clamp_min(1.0)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_sync_batchnorm(module: nn.Module) -> int:
    """Replace every `nn.BatchNorm2d` inside `module` (not `module` itself) by a `GlobalBatchNorm2d` sharing
    its parameters and buffers, in place; returns how many layers were converted."""
    converted = 0
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)  # fmt: skip
            sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(module, name, sync)
            converted += 1
        else:
            converted += convert_sync_batchnorm(child)
    return converted


def count_sync_batchnorm(module: nn.Module) -> int:
    """How many `GlobalBatchNorm2d` layers `module` holds."""
    return sum(isinstance(m, GlobalBatchNorm2d) for m in module.modules())
