"""DistributedDataParallel for ``torchrun``: process group set-up, model wrapping, rank-0-only output.

``torchrun --nproc_per_node=N -m medcad train ...`` starts N processes with ``RANK`` /
``WORLD_SIZE`` / ``LOCAL_RANK`` in their environment; :func:`init_distributed` joins them (NCCL on
GPUs, gloo on the CPU) and returns a :class:`DistContext`. Every rank builds the same model from
the same seed, so the weights start equal and DDP keeps them equal (gradients all-reduced, buffers
broadcast from rank 0). Samplers take ``rank`` / ``world_size`` to split each epoch's draws; only
rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Joins the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def device_for(context: DistContext, device: str = "auto") -> str:
    """This rank's device name: its own GPU under DDP on CUDA, else the configured one."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and context.distributed:
        return f"cuda:{context.local_rank}"
    return device


class StateDictDDP(nn.parallel.DistributedDataParallel):
    """DDP whose ``state_dict`` / ``load_state_dict`` are the wrapped model's (no ``module.`` prefix),
    so checkpoints and model folders written under DDP load into the plain network."""

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def wrap_model(model: nn.Module, context: DistContext, device: str) -> nn.Module:
    """The model on ``device``, wrapped in DDP when distributed."""
    model.to(device)
    if not context.distributed:
        return model
    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return StateDictDDP(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside a DDP wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shutdown(context: DistContext) -> None:
    """Leaves the process group (after a barrier, so no rank exits while others still talk)."""
    if context.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
