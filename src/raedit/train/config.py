"""Config dataclasses of the training machinery; the stage-1 and stage-2 configs nest them.

Durations are in epochs (floats allowed) so that one recipe fits any batch size and data set size; the loop
turns them into optimizer steps once it knows the number of steps per epoch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from raedit.core.acceleration import ATTENTION_BACKENDS, COMPILE_MODES
from raedit.core.config import Rule, above, at_least, check_values, in_range, one_of
from raedit.core.errors import RaeditError

SCHEDULE_KINDS = ("constant", "cosine", "linear_decay")
OPTIMIZERS = ("adamw", "muon")


@dataclass
class OptimConfig:
    """The optimizer and gradient clipping (recipe: AdamW, lr 2e-4, betas 0.9/0.95, weight decay 0, clip 1.0 in
    stage 2). name: "adamw", or "muon" (RAEv2: Muon for the 2-D weights, AdamW with the betas for the rest)."""

    VALID: ClassVar[dict[str, Rule]] = {
        "name": one_of(OPTIMIZERS), "lr": above(0), "beta1": in_range(0, 1, high_open=True),
        "beta2": in_range(0, 1, high_open=True), "weight_decay": at_least(0), "eps": above(0),
        "grad_clip": at_least(0), "muon_momentum": in_range(0, 1, high_open=True)}

    name: str = "adamw"
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    eps: float = 1e-8
    grad_clip: float = 0.0  # max global gradient norm; 0 turns clipping off
    fused: bool = True  # the fused AdamW kernel where the device has one
    muon_momentum: float = 0.95  # Muon's Nesterov momentum (RAEv2: 0.95)


@dataclass
class ScheduleConfig:
    """Learning-rate factor over training.

    kind: "constant" | "cosine" (linear warm-up, then cosine to `min_lr` at `decay_end_epoch`, or at the end of
    training when that is null) |
    "linear_decay" (linear warm-up, constant until `decay_start_epoch`, then linear to `min_lr` at
    `decay_end_epoch`, or at the end of training when that is null).
    """

    VALID: ClassVar[dict[str, Rule]] = {
        "kind": one_of(SCHEDULE_KINDS), "warmup_epochs": at_least(0), "min_lr": at_least(0),
        "decay_start_epoch": at_least(0), "decay_end_epoch": at_least(0)}

    kind: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    decay_start_epoch: float = 0.0
    decay_end_epoch: float | None = None

    def problems(self) -> list[tuple[str, str]]:
        if self.decay_end_epoch is not None and self.decay_end_epoch < self.decay_start_epoch:
            return [("decay_end_epoch", f"{self.decay_end_epoch} is before decay_start_epoch "
                                        f"{self.decay_start_epoch}")]
        return []


@dataclass
class EMAConfig:
    """Exponential moving average of the weights, updated after every optimizer step."""

    VALID: ClassVar[dict[str, Rule]] = {"decay": in_range(0, 1, high_open=True)}

    decay: float = 0.9999
    enabled: bool = True


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    VALID: ClassVar[dict[str, Rule]] = {"every_steps": at_least(0), "every_epochs": at_least(0),
                                        "keep_last": at_least(0)}

    every_steps: int = 0  # 0: only at epoch ends (per `every_epochs`), at the end and on interruption
    every_epochs: int = 1  # 0: never at epoch ends
    keep_last: int = 3  # 0 keeps all


@dataclass
class DistributedConfig:
    """How the model is spread over processes (launched by torchrun, or a single process)."""

    VALID: ClassVar[dict[str, Rule]] = {"strategy": one_of(("ddp", "fsdp"))}

    strategy: str = "ddp"  # "ddp" | "fsdp" (FSDP2 fully_shard) ; a single process needs no wrapper
    backend: str | None = None  # null: nccl with CUDA, gloo otherwise
    find_unused_parameters: bool = False


@dataclass
class PrecisionConfig:
    """fp32 weights and optimizer; matmuls in TF32 where available; optional bf16 autocast."""

    VALID: ClassVar[dict[str, Rule]] = {"autocast": one_of(("fp32", "bf16"))}

    autocast: str = "fp32"  # "fp32" | "bf16"
    tf32: bool = True


@dataclass
class SpeedConfig:
    """Switches that make a step faster without changing what it computes (each is tested against eager fp32;
    docs/benchmarks/README.md has what they gain). bf16 is `precision.autocast`."""

    VALID: ClassVar[dict[str, Rule]] = {"compile": one_of(COMPILE_MODES), "attention": one_of(ATTENTION_BACKENDS),
                                        "prefetch_factor": at_least(1)}

    # torch.compile each trained model: "model" (one graph), "blocks" (each transformer block: compiles faster) or
    # "none"; falls back to eager with one log line where compiling fails
    compile: str = "none"
    attention: str = "auto"  # the SDPA kernel: auto (PyTorch's choice) | flash | efficient | cudnn | math
    activation_checkpointing: bool = False  # recompute DiT block activations in the backward pass (XL at large batch)
    prefetch_factor: int = 2  # micro-batches each data worker loads ahead (with num_workers > 0; PyTorch's default)


@dataclass
class LoggingConfig:
    """Where metrics go: stdout always, TensorBoard when importable, wandb when asked and installed."""

    VALID: ClassVar[dict[str, Rule]] = {"every_steps": at_least(0), "image_every_steps": at_least(0)}

    # Log lines every this many steps; also the loop's sync points (non-finite checks, and under torchrun the
    # stop-signal check). 0: no log lines, a sync point every step.
    every_steps: int = 10
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "raedit"
    progress_bar: bool = True
    image_every_steps: int = 0  # 0: no periodic image grids


@dataclass
class TrainLoopConfig:
    """The generic loop: data, accumulation, duration, and the pieces above."""

    VALID: ClassVar[dict[str, Rule]] = {
        "epochs": at_least(1), "global_batch_size": at_least(1), "micro_batch_size": at_least(1),
        "grad_accum_steps": at_least(1), "num_workers": at_least(0), "stop_after_steps": at_least(1)}

    epochs: int = 1
    # The batch of one optimizer step over all processes, as the paper states it (512 for the decoder, 1024 for
    # stage 2): each process then takes global / (processes x grad_accum_steps) samples a micro-batch, or, with
    # micro_batch_size given, global / (processes x micro_batch_size) accumulation steps. null: micro_batch_size
    # (default 32) and grad_accum_steps (default 1) per process, whatever the number of processes.
    global_batch_size: int | None = None
    micro_batch_size: int | None = None  # samples a process takes at once
    grad_accum_steps: int | None = None  # micro-batches per optimizer step
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = True  # drop the ragged end of each process's shard
    stop_after_steps: int | None = None  # stop early (the schedule still spans `epochs`)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def problems(self) -> list[tuple[str, str]]:
        if self.schedule.warmup_epochs > self.epochs:
            return [("schedule.warmup_epochs", f"{self.schedule.warmup_epochs} is longer than the run "
                                               f"(epochs {self.epochs})")]
        return []

    def for_processes(self, world_size: int) -> "TrainLoopConfig":
        """This config with micro_batch_size and grad_accum_steps set for `world_size` processes (see
        `global_batch_size`); a value out of range or a global batch that doesn't split evenly is a `RaeditError`."""
        check_values(self, "train.")
        micro, accum, total = self.micro_batch_size, self.grad_accum_steps, self.global_batch_size
        if total is None:
            return dataclasses.replace(self, micro_batch_size=micro or 32, grad_accum_steps=accum or 1)
        if micro is None:
            accum = accum or 1
            micro, rest = divmod(total, world_size * accum)
        elif accum is None:
            accum, rest = divmod(total, world_size * micro)
        else:  # both given: they must make up the global batch
            rest = total - world_size * micro * accum
        if rest or not accum or not micro:
            raise RaeditError(f"train.global_batch_size={total} doesn't split into {world_size} processes x "
                              f"micro_batch_size={micro or '?'} x grad_accum_steps={accum or '?'}: choose the "
                              f"number of processes, or micro_batch_size or grad_accum_steps, so that it does")
        return dataclasses.replace(self, micro_batch_size=micro, grad_accum_steps=accum)
