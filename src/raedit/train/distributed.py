"""Process-group setup: from torchrun's environment, or a plain single process; DDP / FSDP2 wrapping.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT); without them the run is one process
and every collective below is a no-op, so the same training code runs with and without torchrun.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from raedit.errors import RaeditError

log = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")


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


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest `value` over all processes (the value itself in a single process)."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def all_gather_objects(value: object) -> list[object]:
    """Every process's `value`, in rank order (`[value]` in a single process)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def wrap_model(
    model: nn.Module, ctx: DistContext, strategy: str = "ddp", find_unused_parameters: bool = False
) -> nn.Module:
    """Move `model` to the device and wrap it for data parallelism when there are several processes.

    "ddp": DistributedDataParallel (rank 0's weights are broadcast at construction, gradients averaged).
    "fsdp": FSDP2 `fully_shard` on every direct child with parameters, then on the root (parameters become
    DTensor shards; gradients are reduce-scattered and averaged).
    """
    if strategy not in STRATEGIES:
        raise RaeditError(f"unknown distributed strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    if strategy == "ddp":
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )
    from torch.distributed.fsdp import fully_shard

    # FSDP2 does not broadcast at construction: start every rank from rank 0's weights first.
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)
    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 modules are the user's module already)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce inside this block when `enabled` is False (accumulation micro-batches).

    DDP: `no_sync()`; FSDP2: `set_requires_gradient_sync(False)`; a plain module has nothing to skip.
    """
    if enabled:
        yield
        return
    if isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
        return
    set_sync = getattr(model, "set_requires_gradient_sync", None)
    if set_sync is None:
        yield
        return
    set_sync(False)
    try:
        yield
    finally:
        set_sync(True)
