"""AdamW (fused where the device has a kernel for it), global gradient-norm clipping, and an optimizer step that
is skipped on the device when the step is not finite."""

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
