"""The training loop both stages share: data sharding per epoch, gradient accumulation, one or more
optimized models in turn, EMA, checkpoints, resume, and the stops (NaN/inf loss, SIGTERM, Ctrl-C).

A loop is a list of `Phase`s over one data stream. Each optimizer step takes `grad_accum_steps`
micro-batches; every active phase runs its loss over all of them (summing gradients, all-reduced only on the
last), then clips, steps its optimizer and updates its EMA. Stage 2 has one phase (the DiT); stage 1 has
two: the decoder (generator) and then the discriminator, which starts at a later epoch.

A step never waits for the device: losses and gradient norms stay on it, and a step whose loss or gradient norm
is NaN or inf is skipped there (the fused optimizers take a `found_inf` flag, as under a gradient scaler) and
recorded. The host reads them at log steps (`logging.every_steps`) and before every checkpoint, so a non-finite
step stops the run, named, before any non-finite state is saved. Under torchrun the same sync point shares stop
signals (SIGTERM, Ctrl-C) in one small all-reduce; a single process checks its signal flag every step.

Wiring, e.g. for stage 1 (on every rank):

    ctx = init_distributed(config.train.distributed.backend)
    decoder = wrap_model(decoder, ctx, config.train.distributed.strategy)
    disc = wrap_model(disc, ctx, config.train.distributed.strategy)
    steps = steps_per_epoch(len(data), config.train, ctx.world_size)
    g_opt, d_opt = build_adamw(decoder.parameters(), ...), build_adamw(disc.parameters(), ...)
    phases = [
        Phase("generator", decoder, g_opt, g_loss, build_schedule(g_opt, ..., steps, epochs),
              EMA(decoder, 0.9978), grad_clip),          # g_loss adds the GAN term once ctx.epoch >= its start
        Phase("discriminator", disc, d_opt, d_loss, ..., start_epoch=d_start_epoch),
    ]
    result = TrainLoop(config.train, ctx, phases, data, RunDir(out), to_yaml(config)).run(resume=args.resume)
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from raedit.core.acceleration import attention_backend, compile_module
from raedit.core.distributed import DistContext, all_reduce_max
from raedit.core.errors import RaeditError
from raedit.core.images import save_image_grid
from raedit.train.checkpoint import Progress, TrainComponents, latest_checkpoint, load_checkpoint, save_checkpoint
from raedit.train.config import TrainLoopConfig
from raedit.train.ema import EMA
from raedit.train.epoch_shards import EpochShardSampler
from raedit.train.optim import clip_gradients, step_unless_non_finite
from raedit.train.parallel import gradient_sync, unwrap_model
from raedit.train.precision import autocast_context, configure_matmul_precision
from raedit.train.run_dir import RunDir
from raedit.train.schedules import LRSchedule
from raedit.train.tracking import MetricLogger, ProgressBar

log = logging.getLogger(__name__)

# Above this share of the initial weights left in an EMA at the run's end, the run warns: its EMA model, the one
# saved and sampled, is mostly untrained (decay ** steps: 0.998 keeps 37% after 500 steps).
EMA_INITIAL_SHARE_WARNING = 0.1


class NonFiniteLossError(RaeditError):
    """A loss or gradient norm became NaN or infinite; that step was not taken, and the run stopped at the next
    sync point without saving anything after it."""


@dataclass
class StepContext:
    """What a loss function knows of the moment it is called at."""

    step: int  # optimizer steps done before this one
    epoch: int
    micro_index: int  # which micro-batch of this optimizer step, 0 .. num_micro - 1
    num_micro: int
    phase: str


LossFn = Callable[[Any, StepContext], "tuple[torch.Tensor, dict[str, torch.Tensor | float]]"]


@dataclass
class Phase:
    """One model optimized by its own loss: `loss_fn(batch, ctx) -> (scalar loss, {name: value to log})`.

    `model` is the module as wrapped by `wrap_model` (its gradients are what get synchronized); `batch` is a
    micro-batch already on the device. The loss must be the mean over the micro-batch: the loop divides it by
    the number of micro-batches, so accumulated gradients equal those of one large batch. A phase may call
    another phase's model; through `parallel.unwrap_model(...)` that call skips DDP's gradient hooks, and
    the gradients it leaves on that model are cleared before that model's own phase.
    """

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    scheduler: LRSchedule | None = None
    ema: EMA | None = None
    grad_clip: float = 0.0
    start_epoch: int = 0  # the phase takes no steps before this epoch, and its schedule counts only its own steps


@dataclass
class LoopResult:
    """Why the loop returned: "finished" (all epochs), "stopped" (stop_after_steps) or "interrupted"."""

    reason: str
    progress: Progress
    checkpoint: Path | None = None
    signal_name: str | None = None


def steps_per_epoch(dataset_size: int, config: TrainLoopConfig, world_size: int) -> int:
    """Optimizer steps in one epoch: each process's shard, cut into groups of accumulated micro-batches."""
    config = config.for_processes(world_size)
    shard = dataset_size // world_size if config.drop_last else -(-dataset_size // world_size)
    return shard // (config.micro_batch_size * config.grad_accum_steps)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _ignore_stop_signals(worker_id: int) -> None:
    """Data workers leave SIGINT/SIGTERM to the main process, which checkpoints and then ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class _Running:
    """Metric sums (device tensors or floats: nothing is read from the device before a log line) and time since
    the last log line."""

    sums: dict[str, Tensor | float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # a phase not yet started logs nothing
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, metrics: dict[str, Tensor | float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1

    def take_means(self, samples_per_step: int) -> dict[str, float]:
        """Mean of each metric, plus steps/s and samples/s, since the last call; then start afresh."""
        on_device = [key for key, value in self.sums.items() if isinstance(value, Tensor)]
        sums = {key: float(value) for key, value in self.sums.items() if key not in on_device}
        if on_device:  # one transfer for all of them
            sums.update(zip(on_device, torch.stack([self.sums[key] for key in on_device]).tolist()))
        means = {key: sums[key] / self.counts[key] for key in self.sums}
        steps_per_second = self.steps / max(time.perf_counter() - self.started, 1e-9)
        means["speed/steps_per_s"] = steps_per_second
        means["speed/samples_per_s"] = steps_per_second * samples_per_step
        self.sums, self.counts, self.steps, self.started = {}, {}, 0, time.perf_counter()
        return means


class _NonFiniteWatch:
    """The first step at which a phase's loss or gradient norm was NaN or inf, kept on the device:
    (step, loss, gradient norm), with step -1 while every step was finite."""

    def __init__(self, device: torch.device) -> None:
        self.record = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)

    def observe(self, step: Tensor, loss: Tensor, norm: Tensor) -> Tensor:
        """Record `step` (1-based) if it is the first non-finite one; returns whether it was finite (on the device)."""
        finite = torch.isfinite(loss) & torch.isfinite(norm)
        first = ~finite & (self.record[0] < 0)
        self.record = torch.where(first, torch.stack([step, loss.double(), norm.double()]), self.record)
        return finite


class TrainLoop:
    """Runs `phases` over `dataset` for `config.epochs` epochs, checkpointing into `run_dir` (each checkpoint with
    `config_yaml` as config.yaml and `extra_files`, {name: text}, beside it).

    images_fn: called on every rank every `config.logging.image_every_steps` steps; returns
    {tag: images (B, C, H, W) in [0, 1]} that rank 0 saves as grids in the run's images/ folder.
    on_step_end: called on every rank after each optimizer step.
    """

    def __init__(
        self,
        config: TrainLoopConfig,
        ctx: DistContext,
        phases: list[Phase],
        dataset: Dataset,
        run_dir: RunDir,
        config_yaml: str = "",
        extra_files: dict[str, str] | None = None,
        collate_fn: Callable | None = None,
        images_fn: Callable[[], dict[str, torch.Tensor]] | None = None,
        on_step_end: Callable[[TrainLoop], None] | None = None,
    ) -> None:
        names = [phase.name for phase in phases]
        if not phases or len(set(names)) != len(names):
            raise ValueError(f"phases need distinct names, got {names}")
        config = config.for_processes(ctx.world_size)
        self.config = config
        self.ctx = ctx
        self.phases = phases
        self.dataset = dataset
        self.run_dir = run_dir
        self.config_yaml = config_yaml
        self.extra_files = extra_files or {}
        self.collate_fn = collate_fn
        self.images_fn = images_fn
        self.on_step_end = on_step_end
        size = len(dataset)  # type: ignore[arg-type]
        if size == 0:
            raise RaeditError("the training data set is empty")
        self.steps_per_epoch = steps_per_epoch(size, config, ctx.world_size)
        if self.steps_per_epoch == 0:
            raise RaeditError(
                f"the data set ({size} items over {ctx.world_size} processes) is smaller than one optimizer "
                f"step ({config.micro_batch_size} x {config.grad_accum_steps} per process)"
            )
        self.sampler = EpochShardSampler(size, ctx.rank, ctx.world_size, seed=config.seed, drop_last=config.drop_last)
        self.progress = Progress()
        self._signal: int | None = None
        self._stop_agreed = False  # under torchrun: whether any rank had a stop signal at the last sync point
        self._last_saved_step = -1
        self._last_synced_step = -1
        self._last_checkpoint: Path | None = None
        self._watches = {phase.name: _NonFiniteWatch(ctx.device) for phase in phases}
        self._device_step = torch.zeros((), dtype=torch.float64, device=ctx.device)  # the step, counted on the device
        self._apply_speed_switches()

    def _apply_speed_switches(self) -> None:
        """`train.speed`: compile each phase's model, recompute DiT activations in the backward pass."""
        speed = self.config.speed
        models = [unwrap_model(phase.model) for phase in self.phases]
        if speed.activation_checkpointing:
            checkpointable = [model for model in models if hasattr(model, "checkpoint_activations")]
            if not checkpointable:
                raise RaeditError("train.speed.activation_checkpointing applies to the DiT models of stage 2; "
                                  f"this run trains {', '.join(type(model).__name__ for model in models)}")
            for model in checkpointable:
                model.checkpoint_activations = True
        for phase, model in zip(self.phases, models):
            compile_module(model, f"the {phase.name} model", speed.compile)

    # --- state ------------------------------------------------------------------------------------------

    @property
    def components(self) -> TrainComponents:
        return TrainComponents(
            models={p.name: p.model for p in self.phases},
            optimizers={p.name: p.optimizer for p in self.phases},
            schedulers={p.name: p.scheduler for p in self.phases if p.scheduler is not None},
            emas={p.name: p.ema for p in self.phases if p.ema is not None},
        )

    @property
    def samples_per_step(self) -> int:
        return self.config.micro_batch_size * self.config.grad_accum_steps * self.ctx.world_size

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    def _warn_about_short_emas(self) -> None:
        """Warn when an EMA would still hold more than EMA_INITIAL_SHARE_WARNING of its initial weights after
        every step of the run (decay ** total_steps)."""
        for phase in self.phases:
            if phase.ema is not None and phase.ema.decay ** self.total_steps > EMA_INITIAL_SHARE_WARNING:
                log.warning("%s: an EMA of decay %g keeps %.0f%% of the initial weights after this run's %d steps; "
                            "its model, the one saved, is mostly untrained: lower train.ema.decay or train longer",
                            phase.name, phase.ema.decay, 100 * phase.ema.decay ** self.total_steps, self.total_steps)

    def resume(self) -> bool:
        """Load the newest complete checkpoint of the run, if there is one; True when one was loaded."""
        path = latest_checkpoint(self.run_dir.checkpoints)
        if path is None:
            log.info("no checkpoint to resume from in %s: starting afresh", self.run_dir.checkpoints)
            return False
        self.progress = load_checkpoint(path, self.components, self.ctx)
        self._last_saved_step = self.progress.step
        self._last_checkpoint = path
        return True

    def save(self) -> Path | None:
        """Write a checkpoint of the current state (call on every rank); a non-finite step since the last sync
        point stops the run instead."""
        self._synchronize()
        path = save_checkpoint(
            self.run_dir.checkpoints,
            self.components,
            self.progress,
            self.ctx,
            config_yaml=self.config_yaml,
            keep_last=self.config.checkpoint.keep_last,
            extra_files=self.extra_files,
        )
        self._last_saved_step = self.progress.step
        self._last_checkpoint = path
        return path

    # --- signals ----------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._signal is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._signal = signum
        log.warning("%s received: checkpointing after this step", signal.Signals(signum).name)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    # --- the loop ---------------------------------------------------------------------------------------

    def _loader(self, epoch: int) -> DataLoader:
        start = self.progress.batch_in_epoch * self.config.micro_batch_size
        self.sampler.set_epoch(epoch, start=start)
        if hasattr(self.dataset, "set_epoch"):  # a data set that draws per pass (a latent cache's flips)
            self.dataset.set_epoch(epoch, self.config.seed)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch * 1009 + self.ctx.rank)
        return DataLoader(
            self.dataset,
            batch_size=self.config.micro_batch_size,
            sampler=self.sampler,
            num_workers=self.config.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.ctx.device.type == "cuda",
            prefetch_factor=self.config.speed.prefetch_factor if self.config.num_workers > 0 else None,
            drop_last=True,
            generator=generator,  # keeps the global RNG untouched, so a resumed run draws the same numbers
            worker_init_fn=_ignore_stop_signals if self.config.num_workers > 0 else None,
        )

    def run(self, resume: bool = False) -> LoopResult:
        """Train until the last epoch, `stop_after_steps`, a signal, or a non-finite loss (raised)."""
        configure_matmul_precision(self.config.precision.tf32)
        self._warn_about_short_emas()
        self._signal, self._stop_agreed = None, False
        if resume:
            self.resume()
        self._device_step.fill_(self.progress.step)
        previous_handlers = self._install_signal_handlers()
        metrics = MetricLogger(
            self.run_dir.logs,
            self.ctx.is_main,
            tensorboard=self.config.logging.tensorboard,
            wandb=self.config.logging.wandb,
            wandb_project=self.config.logging.wandb_project,
            run_config=OmegaConf.to_container(OmegaConf.create(self.config_yaml)) if self.config_yaml else None,
        )
        bar = ProgressBar(
            self.total_steps,
            self.progress.step,
            self.samples_per_step,
            enabled=self.ctx.is_main and self.config.logging.progress_bar,
        )
        try:
            return self._run(metrics, bar)
        finally:
            bar.close()
            metrics.close()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)

    def _run(self, metrics: MetricLogger, bar: ProgressBar) -> LoopResult:
        config = self.config
        running = _Running()
        stop_after = config.stop_after_steps
        while self.progress.epoch < config.epochs:
            epoch = self.progress.epoch
            done_in_epoch = self.progress.batch_in_epoch // config.grad_accum_steps
            batches = iter(self._loader(epoch))
            for _ in range(done_in_epoch, self.steps_per_epoch):
                if stop_after is not None and self.progress.step >= stop_after:
                    return self._finish("stopped")
                micro_batches = [_to_device(next(batches), self.ctx.device) for _ in range(config.grad_accum_steps)]
                step_metrics = self._optimizer_step(micro_batches, epoch)
                self.progress.step += 1
                self.progress.batch_in_epoch += config.grad_accum_steps
                running.add(step_metrics)
                self._after_step(metrics, bar, running)
                if self._stop_requested():
                    return self._finish("interrupted")
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0
            every_epochs = config.checkpoint.every_epochs
            if every_epochs > 0 and self.progress.epoch % every_epochs == 0:
                self.save()
        return self._finish("finished")

    def _optimizer_step(self, micro_batches: list[Any], epoch: int) -> dict[str, Tensor | float]:
        """Every active phase: accumulate gradients over the micro-batches, clip, step unless non-finite, EMA."""
        num_micro = len(micro_batches)
        attention = self.config.speed.attention
        logged: dict[str, Tensor | float] = {}
        self._device_step += 1
        for phase in self.phases:
            if epoch < phase.start_epoch:
                continue
            phase.optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
            part_sums: dict[str, Tensor | float] = {}
            for index, batch in enumerate(micro_batches):
                step_ctx = StepContext(self.progress.step, epoch, index, num_micro, phase.name)
                with gradient_sync(phase.model, enabled=index == num_micro - 1), attention_backend(attention):
                    with autocast_context(self.ctx.device, self.config.precision.autocast):
                        loss, parts = phase.loss_fn(batch, step_ctx)
                    (loss / num_micro).backward()
                loss_sum += loss.detach().double()
                for key, value in parts.items():
                    value = value.detach().double() if isinstance(value, Tensor) else float(value)
                    part_sums[key] = part_sums.get(key, 0.0) + value
            params = [p for group in phase.optimizer.param_groups for p in group["params"]]
            grad_norm = clip_gradients(params, phase.grad_clip)
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            loss_mean = loss_sum / num_micro
            finite = self._watches[phase.name].observe(self._device_step, loss_mean, grad_norm)
            step_unless_non_finite(phase.optimizer, finite)
            if phase.ema is not None:
                phase.ema.update(phase.model)
            logged[f"{phase.name}/loss"] = loss_mean
            logged[f"{phase.name}/grad_norm"] = grad_norm.double()
            logged.update({f"{phase.name}/{k}": v / num_micro for k, v in part_sums.items()})
        for phase in self.phases:
            if phase.scheduler is not None and epoch >= phase.start_epoch:
                logged[f"{phase.name}/lr"] = phase.scheduler.get_last_lr()[0]
                phase.scheduler.step()
        return logged

    def _synchronize(self) -> None:
        """A sync point (log steps and checkpoints, on every rank): read the non-finite records from the device and,
        under torchrun, agree in one all-reduce on stop signals and non-finite steps of any rank. Raises
        `NonFiniteLossError` naming the first non-finite step."""
        if self._last_synced_step == self.progress.step:
            return
        self._last_synced_step = self.progress.step
        names = list(self._watches)
        records = torch.stack([self._watches[name].record for name in names]).tolist()
        bad = [(int(step), name, loss, norm) for name, (step, loss, norm) in zip(names, records) if step >= 0]
        stop, any_bad = all_reduce_max([float(self._signal is not None), float(bool(bad))], self.ctx.device)
        self._stop_agreed = stop > 0
        if any_bad > 0:
            self._raise_non_finite(min(bad) if bad else None)

    def _raise_non_finite(self, first: tuple[int, str, float, float] | None) -> None:
        kept = f"the last good checkpoint is {self._last_checkpoint}" if self._last_checkpoint else "no checkpoint yet"
        if first is None:
            message = f"non-finite loss or gradient norm in another process by step {self.progress.step}"
        else:
            step, phase, loss, norm = first
            what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
            epoch = (step - 1) // self.steps_per_epoch
            message = f"non-finite {what} in phase '{phase}' at step {step} (epoch {epoch})"
        if self.ctx.is_main:
            log.error("%s; stopping; %s", message, kept)
        raise NonFiniteLossError(f"{message}; stopped; {kept}")

    def _after_step(self, metrics: MetricLogger, bar: ProgressBar, running: _Running) -> None:
        step = self.progress.step
        log_every = self.config.logging.every_steps
        if step % (log_every or 1) == 0:
            self._synchronize()
        if log_every > 0 and step % log_every == 0:
            means = running.take_means(self.samples_per_step)
            metrics.log(step, means)
            bar.advance({k: v for k, v in means.items() if k.endswith("/loss")})
        else:
            bar.advance()
        image_every = self.config.logging.image_every_steps
        if self.images_fn is not None and image_every > 0 and step % image_every == 0:
            grids = self.images_fn()
            if self.ctx.is_main:
                for tag, images in grids.items():
                    save_image_grid(images, self.run_dir.image_path(tag, step))
        every_steps = self.config.checkpoint.every_steps
        if every_steps > 0 and step % every_steps == 0:
            self.save()
        if self.on_step_end is not None:
            self.on_step_end(self)

    def _stop_requested(self) -> bool:
        """Whether to stop after this step for a SIGTERM or SIGINT: this process's own flag in a single process;
        under torchrun, what the ranks agreed at the last sync point (every rank stops at the same step)."""
        return self._stop_agreed if self.ctx.is_distributed else self._signal is not None

    def _finish(self, reason: str) -> LoopResult:
        if self._last_saved_step != self.progress.step:
            self.save()
        signal_name = signal.Signals(self._signal).name if self._signal is not None else None
        log.info("training %s at step %d (epoch %d)", reason, self.progress.step, self.progress.epoch)
        return LoopResult(reason, self.progress, self._last_checkpoint, signal_name)


__all__ = [
    "LoopResult",
    "NonFiniteLossError",
    "Phase",
    "StepContext",
    "TrainLoop",
    "steps_per_epoch",
]
