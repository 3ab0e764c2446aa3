"""torchrun/DDP support: read the environment torchrun sets, pick the backend, and run every collective
on the process group's device.

NCCL only reduces CUDA tensors and gloo only CPU ones, so every collective tensor is made on
:attr:`DistContext.device` (:func:`collective_tensor`); a CPU tensor all-reduced over NCCL is the
classic first-step crash. We rely on torch's own DistributedDataParallel; this module only decides
rank, world size and device, so the trainer has one code path for 1 or N processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    joined: bool = False  # in a process group (also a world of one, to exercise DDP itself)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.joined


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def init_distributed(device_type: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1, or ``MEDSEG_FORCE_DDP=1`` for a
    world of one): NCCL on CUDA, gloo on CPU; collectives then use the rank's own device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    forced = os.environ.get("MEDSEG_FORCE_DDP") == "1" and "MASTER_ADDR" in os.environ
    if world_size <= 1 and not forced:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device_type))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, joined=True)


def collective_tensor(values: list[float], context: DistContext, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A tensor for a collective, on the process group's device."""
    return torch.tensor(values, dtype=dtype, device=context.device)


def _active(context: DistContext) -> bool:
    return context.enabled and dist.is_available() and dist.is_initialized()


def any_rank(flag: bool, context: DistContext) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop together)."""
    if not _active(context):
        return flag
    tensor = collective_tensor([1.0 if flag else 0.0], context)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def mean_over_ranks(value: float, context: DistContext) -> float:
    if not _active(context):
        return value
    tensor = collective_tensor([value], context)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item() / dist.get_world_size())


def gather_to_main(value: Any, context: DistContext) -> list[Any]:
    """Every rank's ``value`` on rank 0 (a one-item list elsewhere): each rank's RNG state is saved, not only rank 0's."""
    if not _active(context):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(context: DistContext) -> None:
    if _active(context):
        dist.barrier(device_ids=[context.device.index] if context.device.type == "cuda" else None)


def shutdown(context: DistContext) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
