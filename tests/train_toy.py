"""A tiny model, synthetic data and a loop builder shared by the tests of raedit.train (also run as the
body of subprocess and torchrun workers)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from raedit.core.distributed import DistContext
from raedit.train.config import TrainLoopConfig
from raedit.train.ema import EMA
from raedit.train.loop import Phase, StepContext, TrainLoop, steps_per_epoch
from raedit.train.optim import build_adamw
from raedit.train.parallel import shard_like, wrap_model
from raedit.train.run_dir import RunDir
from raedit.train.schedules import build_schedule


class ToyData(Dataset):
    """`size` items (index, x of 4 features, y = a fixed linear map of x); the index identifies the item."""

    def __init__(self, size: int = 64) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(size, 4, generator=generator)
        self.y = self.x @ torch.randn(4, 2, generator=generator) + 0.1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return index, self.x[index], self.y[index]


def toy_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 2))


def toy_config(**overrides) -> TrainLoopConfig:
    config = TrainLoopConfig(epochs=2, micro_batch_size=4, grad_accum_steps=2, seed=3)
    config.optim.lr = 1e-2
    config.schedule.kind = "cosine"
    config.schedule.warmup_epochs = 0.5
    config.schedule.min_lr = 1e-3
    config.ema.decay = 0.9
    config.checkpoint.every_epochs = 0
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, value)
    return config


def noisy_mse(batch, ctx: StepContext, model: nn.Module, seen: list | None = None) -> tuple[torch.Tensor, dict]:
    """Mean squared error with input noise drawn from the global RNG (so resume must restore it)."""
    index, x, y = batch
    if seen is not None:
        seen.extend(index.tolist())
    noisy = x + 0.01 * torch.randn_like(x)
    loss = (model(noisy) - y).pow(2).mean()
    return loss, {"mse": loss.detach()}


def build_loop(
    run_root: str | Path,
    config: TrainLoopConfig,
    ctx: DistContext | None = None,
    dataset: Dataset | None = None,
    dropout: float = 0.1,
    seen: list | None = None,
    loss_fn=None,
    model_seed: int = 0,
    ema_in_module: bool = False,
) -> TrainLoop:
    """One-phase loop ("model", with AdamW, schedule and EMA) over ToyData; with `ema_in_module` the EMA holds its
    averages in a twin of the model (sharded like it)."""
    ctx = ctx or DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    dataset = dataset if dataset is not None else ToyData()
    model = wrap_model(toy_model(seed=model_seed, dropout=dropout), ctx, strategy=config.distributed.strategy)
    optimizer = build_adamw(model.parameters(), config.optim)
    steps = steps_per_epoch(len(dataset), config, ctx.world_size)
    schedule = build_schedule(optimizer, config.schedule, steps, config.epochs)
    average = shard_like(toy_model(dropout=dropout), model, ctx) if ema_in_module else None
    ema = EMA(model, config.ema.decay, average)
    run_dir = RunDir(run_root)
    if ctx.is_main:
        run_dir.create("toy: true\n")
    if loss_fn is None:
        def loss_fn(batch, step_ctx):
            return noisy_mse(batch, step_ctx, model, seen)
    phase = Phase("model", model, optimizer, loss_fn, scheduler=schedule, ema=ema, grad_clip=config.optim.grad_clip)
    return TrainLoop(config, ctx, [phase], dataset, run_dir, config_yaml="toy: true\n")
