"""Learning-rate schedules as factors of the base rate per optimizer step, with a checkpointable state.

Each schedule sets `lr = base_lr * factor(step)` on every parameter group of its optimizer; its state is just
the step count, so a resumed run continues the curve exactly.
"""

from __future__ import annotations

import math

import torch

from raedit.core.errors import RaeditError
from raedit.train.config import SCHEDULE_KINDS, ScheduleConfig


class LRSchedule:
    """lr(step) = base_lr * factor(step); `step()` after each optimizer step, like a torch LR scheduler.

    Piecewise: linear warm-up from 0 over `warmup_steps` (factor (s + 1) / warmup_steps), then by kind:
    - "constant": 1;
    - "cosine": min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2, p going 0 -> 1 from the end of the
      warm-up to `decay_end` (recipe, stage 1: 2e-4 -> 2e-5 after 1 warm-up epoch);
    - "linear_decay": 1 until `decay_start`, then linearly to min_ratio at `decay_end`
      (recipe, stage 2: constant for 40 epochs, then linear to 2e-5 at epoch 800).
    After the end the factor stays at min_ratio.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        total_steps: int,
        warmup_steps: int = 0,
        min_ratio: float = 0.0,
        decay_start: int = 0,
        decay_end: int | None = None,
    ) -> None:
        if kind not in SCHEDULE_KINDS:
            raise RaeditError(f"unknown schedule kind '{kind}'; choose one of {', '.join(SCHEDULE_KINDS)}")
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_ratio)
        self.decay_start = max(int(decay_start), self.warmup_steps)
        self.decay_end = self.total_steps if decay_end is None else int(decay_end)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The multiplier of the base rate for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            span = max(self.decay_end - self.warmup_steps, 1)
            progress = min((step - self.warmup_steps) / span, 1.0)
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.decay_start:
            return 1.0
        span = max(self.decay_end - self.decay_start, 1)
        progress = min((step - self.decay_start) / span, 1.0)
        return 1.0 + (self.min_ratio - 1.0) * progress

    def _apply(self) -> None:
        factor = self.factor(self.last_step)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * factor

    def step(self) -> None:
        """Advance one optimizer step and set the rate for the next one."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The rate of each parameter group for the coming optimizer step."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self._apply()


def build_schedule(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> LRSchedule:
    """The schedule of `config` for a run of `epochs` epochs of `steps_per_epoch` optimizer steps.

    `min_lr` is absolute; it is divided by the optimizer's (first group's) base rate.
    """
    base_lr = optimizer.param_groups[0]["lr"]
    min_ratio = config.min_lr / base_lr if base_lr > 0 else 0.0

    def to_steps(epochs_value: float) -> int:
        return int(round(epochs_value * steps_per_epoch))

    return LRSchedule(
        optimizer,
        kind=config.kind,
        total_steps=steps_per_epoch * epochs,
        warmup_steps=to_steps(config.warmup_epochs),
        min_ratio=min_ratio,
        decay_start=to_steps(config.decay_start_epoch),
        decay_end=None if config.decay_end_epoch is None else to_steps(config.decay_end_epoch),
    )
