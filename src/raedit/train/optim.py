"""AdamW (fused where the device has a kernel for it), or RAEv2's Muon for the matrices with AdamW for the rest;
global gradient-norm clipping, and an optimizer step that is skipped on the device when the step is not finite."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from raedit.train.config import OptimConfig

log = logging.getLogger(__name__)


def build_adamw(params: Iterable[nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable `params` (recipe: lr 2e-4, betas (0.9, 0.95), weight decay 0).

    With `config.fused`, the fused kernel is used where the parameters' device supports it; otherwise (or
    where it does not) the default implementation.
    """
    trainable = [p for p in params if p.requires_grad]
    kwargs = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=config.weight_decay)
    if config.fused:
        try:
            return torch.optim.AdamW(trainable, fused=True, **kwargs)
        except RuntimeError as error:  # parameters on a device without a fused kernel
            log.info("fused AdamW unavailable (%s); using the default implementation", error)
    return torch.optim.AdamW(trainable, **kwargs)


def build_optimizer(params: Iterable[nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `config.name` over the trainable `params`: AdamW (`build_adamw`), or `MuonWithAdamW`."""
    if config.name == "muon":
        return MuonWithAdamW([p for p in params if p.requires_grad], config)
    return build_adamw(params, config)


class MuonWithAdamW(torch.optim.Optimizer):
    """RAEv2's optimizer (its code's "gmuon"): Muon for every 2-D parameter (linear weights, the label table),
    AdamW for the rest (biases, norm gains, convolutions), under one learning-rate schedule.

    Muon is torch's (`torch.optim.Muon`: Nesterov momentum `muon_momentum`, 5 Newton-Schulz steps, the learning
    rate scaled by 0.2 sqrt(max(fan_out, fan_in)) to match AdamW's update RMS, as RAEv2's `adjust_lr="rms_norm"`);
    RAEv2 uses Gram Newton-Schulz with Polar-Express coefficients instead, so its updates differ slightly. Both get
    `config.lr` and `config.weight_decay`.

    One optimizer to the training loop and its checkpoints: the param groups are Muon's then AdamW's, the state
    is one table, and each step is both inner steps.
    """

    def __init__(self, params: list[nn.Parameter], config: OptimConfig) -> None:
        matrices = [p for p in params if p.ndim == 2]
        others = [p for p in params if p.ndim != 2]
        self.muon = torch.optim.Muon(matrices, lr=config.lr, weight_decay=config.weight_decay,
                                     momentum=config.muon_momentum, nesterov=True,
                                     adjust_lr_fn="match_rms_adamw") if matrices else None
        self.adamw = torch.optim.AdamW(others, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                                       weight_decay=config.weight_decay) if others else None
        groups = [group for inner in self.inner() for group in inner.param_groups]
        super().__init__(groups, defaults={})
        self._share_groups_and_state()

    def inner(self) -> list[torch.optim.Optimizer]:
        return [optimizer for optimizer in (self.muon, self.adamw) if optimizer is not None]

    def _share_groups_and_state(self) -> None:
        """Point the inner optimizers at this one's param groups and state (after loading, they are new objects)."""
        start = 0
        for optimizer in self.inner():
            count = len(optimizer.param_groups)
            optimizer.param_groups = self.param_groups[start:start + count]
            optimizer.state = self.state
            start += count

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share_groups_and_state()

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for optimizer in self.inner():
            optimizer.step()
        return loss


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most `max_norm` (0: no clipping).

    Returns the global norm before clipping (a 0-dim tensor; non-finite if a gradient is).
    """
    grads_of = [p for p in params if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(grads_of, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in grads_of])


def step_unless_non_finite(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """`optimizer.step()`, not taken when `finite` (a 0-dim bool tensor) is False.

    The fused optimizers (AdamW, Adam, SGD with fused=True) read the flag on the device, as they read a gradient
    scaler's `found_inf`, so the host never waits; any other optimizer reads it on the host.
    """
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        if bool(finite):
            optimizer.step()
        return
    optimizer.found_inf = (~finite).float()  # the attribute torch.amp.GradScaler sets for these optimizers
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
