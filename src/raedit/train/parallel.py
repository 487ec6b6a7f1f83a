"""Data parallelism for training: DDP or FSDP2 wrapping, gradient-sync control, and sharding a model's twin (its
EMA) the way the model is sharded. Which process this is, and the collectives, are `raedit.core.distributed`'s."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, fully_shard

from raedit.core.distributed import DistContext
from raedit.core.errors import RaeditError

STRATEGIES = ("ddp", "fsdp")
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, gathered to the CPU


def wrap_model(
    model: nn.Module, ctx: DistContext, strategy: str = "ddp", find_unused_parameters: bool = False
) -> nn.Module:
    """Move `model` to the device and wrap it for data parallelism when there are several processes.

    "ddp": DistributedDataParallel (rank 0's weights are broadcast at construction, gradients averaged).
    "fsdp": FSDP2 `fully_shard` on every direct child with trainable parameters (on each block of a ModuleList:
    one unit per transformer block), then on the root (parameters become DTensor shards; gradients are
    reduce-scattered and averaged).
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
    # FSDP2 does not broadcast at construction: start every rank from rank 0's weights first.
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)
    return _fully_shard(model, _shard_units(model))


def shard_like(twin: nn.Module, model: nn.Module, ctx: DistContext) -> nn.Module:
    """`twin` (same architecture as `model`, e.g. the module holding its EMA) on the device, sharded exactly as
    `model` is under FSDP2, so that their parameters pair up shard by shard; not wrapped otherwise."""
    twin = twin.to(ctx.device)
    model = unwrap_model(model)
    if not isinstance(model, FSDPModule):
        return twin
    units = [name for name, module in model.named_modules() if name and isinstance(module, FSDPModule)]
    return _fully_shard(twin, units)


def _shard_units(model: nn.Module) -> list[str]:
    """The submodules FSDP2 shards on their own: each direct child with trainable parameters, or, for a container
    (ModuleList: transformer blocks), each of its members with trainable parameters."""
    units = []
    for name, child in model.named_children():
        containers = (nn.ModuleList, nn.ModuleDict)
        members = [(f"{name}.{n}", c) for n, c in child.named_children()] if isinstance(child, containers) else [
            (name, child)]
        units += [member for member, module in members if any(p.requires_grad for p in module.parameters())]
    return units


def _fully_shard(model: nn.Module, units: list[str]) -> nn.Module:
    """`fully_shard` on each named submodule of `model`, then on `model` itself."""
    for name in units:
        fully_shard(model.get_submodule(name))
    fully_shard(model)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights of a plain, DDP or FSDP2 model on the CPU (a collective under FSDP2: call on every rank)."""
    return get_model_state_dict(model, options=FULL_STATE)


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
