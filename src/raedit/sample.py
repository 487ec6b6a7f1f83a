"""The sampling job of `raedit sample`: class-conditional images from a trained denoiser, decoded by its RAE.

Sample i has label `labels[i]` and starting noise (and SDE noise) from its own generator, seeded by
(seed, i); each rank integrates a contiguous slice of the indices in batches. So the images depend on neither
the batch size nor the number of processes. Rank 0 writes the ADM-style npz (`arr_0`: N x H x W x 3 uint8,
`labels`: N) and a PNG grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from raedit.autoencoder import RAE
from raedit.diffusion.denoiser_io import DenoiserInfo, load_denoiser, load_denoiser_stats
from raedit.diffusion.guidance import guided_velocity
from raedit.diffusion.samplers import SAMPLERS, sample, standard_normal_like
from raedit.errors import RaeditError
from raedit.train.distributed import DistContext, barrier, init_distributed
from raedit.train.rundir import save_image_grid

logger = logging.getLogger(__name__)

LABEL_SAMPLING = ("equal", "random")


@dataclass
class SampleConfig:
    """Settings of one sampling job (the options of `raedit sample`)."""

    ckpt: str
    num: int = 100
    guide_ckpt: str | None = None
    label_sampling: str = "equal"
    classes: list[int] | None = None  # class ids to draw from; None: all of the model's classes
    steps: int = 49  # the paper: Euler on 50 time points
    sampler: str = "euler"
    cfg: float = 1.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    ag: float = 1.0
    out: str = "samples.npz"
    grid: str | None = "grid.png"
    grid_images: int = 100
    batch_size: int = 64
    seed: int = 0
    bf16: bool = False
    rae: str | None = None  # overrides the RAE directory recorded with the model
    t_end: float = 0.0


def sample_labels(num: int, classes: list[int], method: str, seed: int) -> Tensor:
    """Labels (num,) of the samples. "equal": classes in turn, so each gets num / len(classes) (the first
    num % len(classes) one more); "random": uniform draws from a generator seeded by `seed`."""
    if method not in LABEL_SAMPLING:
        raise RaeditError(f"unknown label sampling {method!r}; use one of {', '.join(LABEL_SAMPLING)}")
    table = torch.tensor(classes, dtype=torch.long)
    if method == "equal":
        return table[torch.arange(num) % len(classes)]
    return table[torch.randint(len(classes), (num,), generator=torch.Generator().manual_seed(seed))]


def sample_generators(seed: int, indices: range, device: torch.device) -> list[torch.Generator]:
    """One generator per sample index, seeded by (seed, index): the same noise in any batch or rank."""
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + index) for index in indices]


def rank_slice(num: int, ctx: DistContext) -> range:
    """The contiguous indices this rank samples."""
    return range(ctx.rank * num // ctx.world_size, (ctx.rank + 1) * num // ctx.world_size)


def to_uint8(images: Tensor) -> np.ndarray:
    """Images (B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _check_classes(classes: list[int], num_classes: int) -> list[int]:
    unknown = [c for c in classes if not 0 <= int(c) < num_classes]
    if unknown:
        raise RaeditError(f"unknown class ids {unknown}: the model has classes 0..{num_classes - 1}")
    if not classes:
        raise RaeditError("no classes to sample from")
    return [int(c) for c in classes]


def generate(config: SampleConfig) -> Path | None:
    """Run the job on this rank; rank 0 writes `config.out` (and the grid) and returns its path."""
    if config.sampler not in SAMPLERS:
        raise RaeditError(f"unknown sampler {config.sampler!r}; known: {', '.join(SAMPLERS)}")
    if config.num < 1 or config.batch_size < 1:
        raise RaeditError("--num and --batch-size must be at least 1")
    ctx = init_distributed()
    model, info = load_denoiser(config.ckpt, ctx.device)
    guide = None
    if config.guide_ckpt is not None:
        guide, guide_info = load_denoiser(config.guide_ckpt, ctx.device)
        if guide_info.latent_shape != info.latent_shape or (guide_info.encoder and info.encoder
                                                             and guide_info.encoder != info.encoder):
            raise RaeditError(f"the guide {config.guide_ckpt} models latents {tuple(guide_info.latent_shape)} of "
                              f"encoder {guide_info.encoder}, the model latents {tuple(info.latent_shape)} of "
                              f"{info.encoder}: not the same latent space")
    classes = _check_classes(config.classes if config.classes is not None else list(range(info.num_classes)),
                             info.num_classes)
    rae = _load_rae_for(config, info, ctx)
    labels = sample_labels(config.num, classes, config.label_sampling, config.seed)
    # Validate the guidance settings once (CFG and AutoGuidance together are refused by the library).
    guided_velocity(model, labels[:1], model.null_label, config.cfg, tuple(config.cfg_interval), guide, config.ag)

    def run_model(network: torch.nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """The network in fp32, or under bf16 autocast with `bf16` (its velocity returned in fp32)."""
        def forward(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16) if config.bf16 else nullcontext():
                return network(x, t, y).float()
        return forward

    mine = rank_slice(config.num, ctx)
    images: list[np.ndarray] = []
    started = time.perf_counter()
    for start in range(mine.start, mine.stop, config.batch_size):
        indices = range(start, min(start + config.batch_size, mine.stop))
        generators = sample_generators(config.seed, indices, ctx.device)
        noise = standard_normal_like(torch.empty((len(indices), *info.latent_shape), device=ctx.device), generators)
        batch_labels = labels[indices.start:indices.stop].to(ctx.device)
        velocity = guided_velocity(run_model(model), batch_labels, model.null_label, config.cfg,
                                   tuple(config.cfg_interval), run_model(guide) if guide is not None else None,
                                   config.ag)
        latents = sample(velocity, noise, config.sampler, config.steps, info.shift_alpha, config.t_end,
                         generator=generators)
        with torch.no_grad():
            images.append(to_uint8(rae.decode(latents.float())))
    elapsed = time.perf_counter() - started
    logger.info("rank %d: %d images in %.1f s (%.2f images/s)", ctx.rank, len(mine), elapsed,
                len(mine) / max(elapsed, 1e-9))
    return _write(config, ctx, images, labels)


def _load_rae_for(config: SampleConfig, info: DenoiserInfo, ctx: DistContext) -> RAE:
    """The RAE of the model (or --rae), normalized with the statistics saved with the model."""
    rae_dir = config.rae or info.rae
    if not rae_dir:
        raise RaeditError(f"{config.ckpt} names no RAE: give --rae <a saved RAE directory>")
    rae = RAE.from_pretrained(rae_dir)
    if rae.latent_shape != tuple(info.latent_shape):
        raise RaeditError(f"the model {config.ckpt} was trained on latents {tuple(info.latent_shape)}, but the RAE "
                          f"at {rae_dir} gives {rae.latent_shape}")
    stats = load_denoiser_stats(config.ckpt)
    if stats is not None:
        rae.set_stats(*stats)
    return rae.to(ctx.device).eval()


def _write(config: SampleConfig, ctx: DistContext, images: list[np.ndarray], labels: Tensor) -> Path | None:
    """Gather the ranks' parts in index order through files next to `out`; rank 0 writes npz and grid."""
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part{ctx.rank:05d}.npy")
    mine = np.concatenate(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
    np.save(part, mine)
    barrier()
    if not ctx.is_main:
        barrier()
        return None
    parts = [out.with_name(f".{out.name}.part{rank:05d}.npy") for rank in range(ctx.world_size)]
    arrays = [np.load(path) for path in parts]
    everything = np.concatenate([array for array in arrays if len(array)])
    np.savez(out, arr_0=everything, labels=labels.numpy())
    for path in parts:
        path.unlink()
    if config.grid:
        count = min(config.grid_images, len(everything))
        columns = len(set(labels[:count].tolist())) if config.label_sampling == "equal" else None
        grid_images = torch.from_numpy(everything[:count]).permute(0, 3, 1, 2).float() / 255
        save_image_grid(grid_images, config.grid, nrow=columns)
    barrier()
    logger.info("wrote %d samples to %s", len(everything), out)
    return out
