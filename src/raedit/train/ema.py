"""Exponential moving average of a model's weights, updated after every optimizer step."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import distribute_tensor

from raedit.train.parallel import unwrap_model


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind an FSDP2 shard (a collective), or the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class EMA:
    """Averaged parameters and copied buffers of a model, keyed by name.

    shadow <- decay * shadow + (1 - decay) * param after each optimizer step (recipe: 0.9978 for the stage-1
    decoder, 0.9995 for the stage-2 model). Build it after `wrap_model`, so that it starts from the weights every
    rank shares (DDP broadcasts rank 0's at construction).

    `average`: a module of the model's architecture to hold the averages, so that they can be run (sampled from,
    decoded with) without a further copy; sharded like the model under FSDP2 (`parallel.shard_like`). Without one
    the averages are tensors of their own (shards under FSDP2). `state_dict` gathers full tensors either way.
    """

    def __init__(self, model: nn.Module, decay: float, average: nn.Module | None = None) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.average = average
        module = unwrap_model(model)
        if average is None:
            self.shadow_params = {name: p.detach().clone() for name, p in module.named_parameters()}
            self.shadow_buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
            return
        if {name for name, _ in average.named_parameters()} != {name for name, _ in module.named_parameters()}:
            raise ValueError("the EMA's average module has other parameters than the model")
        self.shadow_params = dict(average.requires_grad_(False).named_parameters())
        self.shadow_buffers = dict(average.named_buffers())
        shadows = {**self.shadow_params, **self.shadow_buffers}
        with torch.no_grad():
            for name, value in [*module.named_parameters(), *module.named_buffers()]:
                shadows[name].copy_(value)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current weights of `model` (the module the EMA was built from)."""
        module = unwrap_model(model)
        params = dict(module.named_parameters())
        names = list(self.shadow_params)
        shadows = [self.shadow_params[name] for name in names]
        currents = [params[name].detach() for name in names]
        if shadows:
            torch._foreach_lerp_(shadows, currents, 1.0 - self.decay)
        for name, buffer in module.named_buffers():
            if name in self.shadow_buffers:
                self.shadow_buffers[name].copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) shadow tensors, named like the model's own state dict."""
        state = {name: _full(t) for name, t in self.shadow_params.items()}
        state.update({name: _full(t) for name, t in self.shadow_buffers.items()})
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Set the shadows from full tensors (as `state_dict` returns); the names must match exactly."""
        expected = set(self.shadow_params) | set(self.shadow_buffers)
        if set(state) != expected:
            missing = sorted(expected - set(state))[:3]
            unexpected = sorted(set(state) - expected)[:3]
            raise KeyError(f"EMA state does not match the model: missing {missing}, unexpected {unexpected}")
        for name, shadow in {**self.shadow_params, **self.shadow_buffers}.items():
            value = state[name].to(dtype=shadow.dtype)
            if hasattr(shadow, "device_mesh"):  # an FSDP2 shard: keep this rank's piece
                mesh = shadow.device_mesh
                shadow.copy_(distribute_tensor(value.to(mesh.device_type), mesh, shadow.placements))
            else:
                shadow.copy_(value.to(shadow.device))
