"""The DDP plumbing of training: where this process sits in the job, its device, and sums over all processes.

Kept in one small module (as torchvision's reference `utils.py` keeps `reduce_across_processes`) so that the
engine (`r3fa.training`) reads as a training loop, not as process-group bookkeeping. A single process is a job
of world size 1: every function here works unchanged without torchrun, and the collectives are no-ops then.

Under torchrun each process reads its `RANK`, `WORLD_SIZE` and `LOCAL_RANK` from the environment
(`DistContext.from_env`), joins the process group (NCCL on CUDA, gloo on the CPU) and takes its part of every
global batch; the sums of `global_sums` are what every process agrees on (epoch losses, checkpoint sums).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) DDP job, from torchrun's environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one process."""
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "DistContext":
        """The context torchrun describes in `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (one process when unset)."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def resolve_device(spec: str, ctx: DistContext) -> torch.device:
    """`"auto"`: this process's GPU (`cuda:LOCAL_RANK`) when CUDA is available, else the CPU."""
    if spec == "auto":
        return torch.device(f"cuda:{ctx.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(spec)


def join_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the job's process group (NCCL on CUDA, gloo elsewhere) unless there is one process or it is joined.

    Args:
        ctx: this process's place in the job.
        device: this process's device (made the current CUDA device first when it is a GPU).
    """
    if ctx.distributed and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def global_sums(total: float, count: int, ctx: DistContext, device: torch.device) -> tuple[float, int]:
    """(sum, count) over all processes (every process must call it).

    Args:
        total: this process's sum.
        count: this process's count.
        ctx: this process's place in the job (no collective for one process).
        device: where the reduction runs (the process group's device).

    Returns:
        The sum of `total` and of `count` over every process.
    """
    sums = torch.tensor([total, count], dtype=torch.float64, device=device)
    if ctx.distributed:
        torch.distributed.all_reduce(sums)
    return float(sums[0]), int(sums[1])


def global_mean(total: float, count: int, ctx: DistContext, device: torch.device) -> float:
    """The mean over all processes of what `global_sums` adds up; NaN when no process counted anything."""
    total, count = global_sums(total, count, ctx, device)
    return total / count if count > 0 else math.nan
