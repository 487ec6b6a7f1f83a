"""Exponential moving average of a model's weights, updated after every optimizer step."""

from __future__ import annotations

import torch
from torch import nn

from raedit.train.distributed import unwrap_model


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind an FSDP2 shard (a collective), or the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class EMA:
    """Shadow copies of a model's parameters (averaged) and buffers (copied), keyed by parameter name.

    shadow <- decay * shadow + (1 - decay) * param after each optimizer step (recipe: 0.9978 for the stage-1
    decoder, 0.9995 for the stage-2 model). Build it after `wrap_model`, so that it starts from the weights
    every rank shares (DDP broadcasts rank 0's at construction). Under FSDP2 the shadows are shards like the
    parameters; `state_dict` gathers them.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        module = unwrap_model(model)
        self.shadow_params = {name: p.detach().clone() for name, p in module.named_parameters()}
        self.shadow_buffers = {name: b.detach().clone() for name, b in module.named_buffers()}

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
                from torch.distributed.tensor import distribute_tensor

                mesh = shadow.device_mesh
                shadow.copy_(distribute_tensor(value.to(mesh.device_type), mesh, shadow.placements))
            else:
                shadow.copy_(value.to(shadow.device))

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into a plain (unwrapped, unsharded) `module`, e.g. for sampling."""
        module.load_state_dict(self.state_dict(), strict=True)
