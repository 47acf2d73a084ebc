"""Multi-process training under `torchrun`: process group, device per rank, gradient sync.

Under `torchrun --nproc_per_node N` the environment carries RANK, WORLD_SIZE and
LOCAL_RANK; without it everything here is a no-op for one process, so training
code has one path. Downstream models use DistributedDataParallel. The GAN loops
average gradients by hand with `average_gradients`, because their R1 penalty
differentiates through the discriminator twice, which DDP's hooks do not support.

The global batch stays what the config says: each rank trains on
batch // world_size samples, so the effective batch, and therefore the schedule,
does not change with the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from inspect_train.errors import InputError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        """This rank's share of the global batch; the global batch must divide evenly."""
        if global_batch % self.world_size:
            raise InputError(f"batch size {global_batch} does not divide over {self.world_size} processes")
        return global_batch // self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_gradients(self, parameters) -> None:
        """All-reduce the mean of every gradient, in one flat buffer (one message, not one per tensor)."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over ranks (for logging losses)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel when running on several processes, else the model itself."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def seed_offset(self) -> int:
        """Added to the data seed so ranks draw different samples from the same run seed."""
        return 1_000_003 * self.rank


def resolve_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """`auto` (default) picks this rank's GPU when there is one, else the CPU."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {requested}: no CUDA GPU is visible on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(requested_device: str | None = None) -> DistContext:
    """Join the process group torchrun set up (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
