"""Processes: which one this is (from torchrun's environment, or a plain single process) and the few collectives
every job needs (barrier, max, gather).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT); without them the run is one process and
every collective below is a no-op, so the same job runs with and without torchrun. Wrapping models for data
parallelism is training's business (`raedit.train.parallel`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, device: str | None = None) -> DistContext:
    """Join the process group torchrun describes in the environment, or describe a single process.

    backend: None picks nccl when CUDA is available, gloo otherwise. device: None picks cuda:LOCAL_RANK when
    CUDA is available, cpu otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=torch_device if torch_device.type == "cuda" else None)
        log.info("process group: backend %s, rank %d of %d", backend, rank, world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """The largest of each of `values` over all processes (the values themselves in a single process)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def all_gather_objects(value: object) -> list[object]:
    """Every process's `value`, in rank order (`[value]` in a single process)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
