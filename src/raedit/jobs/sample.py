"""`raedit sample`: class-conditional images from a trained denoiser, decoded by the RAE it names.

Sample i has label `labels[i]` and starting noise (and SDE noise) from its own generator, seeded by
(seed, i); each rank integrates a contiguous slice of the indices in batches. So the images depend on neither
the batch size nor the number of processes. Rank 0 writes the ADM-style npz (`arr_0`: N x H x W x 3 uint8,
`labels`: N) and a PNG grid.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import Tensor

from raedit.autoencoder import RAE
from raedit.core.acceleration import ATTENTION_BACKENDS, COMPILE_MODES, attention_backend, compile_module
from raedit.core.config import Rule, at_least, check_values, in_range, one_of
from raedit.core.distributed import DistContext, barrier, init_distributed
from raedit.core.errors import RaeditError
from raedit.core.files import atomic_path
from raedit.core.images import ROUNDINGS, from_uint8_hwc, save_image_grid, to_uint8_hwc
from raedit.diffusion.denoiser_io import DenoiserInfo, load_denoiser
from raedit.diffusion.guidance import guided_velocity, in_precision
from raedit.diffusion.samplers import OFFICIAL_T_END, SAMPLERS, sample, standard_normal_like
from raedit.models.dit import check_base_head

logger = logging.getLogger(__name__)

LABEL_SAMPLING = ("equal", "random")


def _option(help_text: str, choices: tuple[str, ...] | None = None, metavar: tuple[str, ...] | None = None) -> dict:
    """Field metadata: how `raedit sample` presents the field as an option (`raedit.core.dataclass_options`)."""
    return {"help": help_text, "choices": choices, "metavar": metavar}


@dataclass
class SampleConfig:
    """Settings of one sampling job; each field is an option of `raedit sample` (`--cfg-interval` for cfg_interval)."""

    VALID: ClassVar[dict[str, Rule]] = {
        "num": at_least(1), "label_sampling": one_of(LABEL_SAMPLING), "steps": at_least(1),
        "sampler": one_of(SAMPLERS), "cfg": at_least(0), "ag": at_least(0), "ig": at_least(0),
        "grid_images": at_least(0), "batch_size": at_least(1), "t_end": in_range(0, 1, high_open=True),
        "rounding": one_of(ROUNDINGS),
        "attention": one_of(ATTENTION_BACKENDS), "compile": one_of(COMPILE_MODES)}

    ckpt: str = field(metadata=_option(
        "a run directory, its model/ export, a training checkpoint, or a released official stage2_model.pt"))
    num: int = field(default=100, metadata=_option("number of samples"))
    guide_ckpt: str | None = field(
        default=None, metadata=_option("AutoGuidance guide: a smaller or earlier model of the same latents"))
    label_sampling: str = field(default="equal", metadata=_option(
        "equal: classes in turn (N / classes each, the paper's protocol); random: uniform draws", LABEL_SAMPLING))
    classes: list[int] | None = field(default=None, metadata=_option("class ids to sample (none given: all)"))
    steps: int = field(default=49, metadata=_option("integration steps (the paper: Euler on 50 time points)"))
    sampler: str = field(default="euler", metadata=_option("ODE (euler, heun) or SDE sampler", SAMPLERS))
    cfg: float = field(default=1.0, metadata=_option("classifier-free guidance scale (1: none)"))
    cfg_interval: tuple[float, float] = field(
        default=(0.0, 1.0), metadata=_option("apply guidance only for t in [T_MIN, T_MAX]", metavar=("T_MIN", "T_MAX")))
    ag: float = field(default=1.0, metadata=_option("AutoGuidance scale (needs --guide-ckpt)"))
    ig: float = field(default=1.0, metadata=_option(
        "RAEv2's internal guidance scale (1: none; needs a model trained with a base head, model.base_depth)"))
    ig_interval: tuple[float, float] = field(
        default=(0.0, 1.0), metadata=_option("apply internal guidance only for t in [T_MIN, T_MAX]",
                                             metavar=("T_MIN", "T_MAX")))
    out: str = field(default="samples.npz", metadata=_option("ADM-style npz (arr_0: N x H x W x 3 uint8, labels)"))
    grid: str | None = field(default="grid.png", metadata=_option("PNG grid of the first samples ('' for none)"))
    grid_images: int = field(default=100, metadata=_option("samples in the grid"))
    batch_size: int = field(default=64, metadata=_option("samples per batch (the images do not depend on it)"))
    seed: int = field(default=0, metadata=_option("seed of the per-sample noise"))
    bf16: bool = field(default=False, metadata=_option("bf16 autocast (fp32 for final numbers)"))
    compile: str = field(default="none", metadata=_option(
        "torch.compile the denoiser and guide: as one graph (model) or block by block (blocks: compiles faster); "
        "falls back to eager with one log line where compiling fails", COMPILE_MODES))
    attention: str = field(default="auto", metadata=_option(
        "the attention kernel (auto: PyTorch's choice)", tuple(ATTENTION_BACKENDS)))
    rae: str | None = field(default=None, metadata=_option("the RAE directory, instead of the one the model names"))
    t_end: float = field(default=OFFICIAL_T_END, metadata=_option(
        "the last time point before the shift (0.001: the official grid, 1 - linspace(0, 0.999, 50), ending at "
        "about 0.0069 after the shift at 256 px; 0: integrate to data)"))
    rounding: str = field(default="truncate", metadata=_option(
        "float -> uint8: truncate (the official sampler and the ADM suite, so FIDs compare with published ones) "
        "or nearest", ROUNDINGS))


    def problems(self) -> list[tuple[str, str]]:
        return [(name, f"({low}, {high}) must be T_MIN <= T_MAX within [0, 1]")
                for name, (low, high) in (("cfg_interval", self.cfg_interval), ("ig_interval", self.ig_interval))
                if not 0 <= low <= high <= 1]


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


def _check_classes(classes: list[int], num_classes: int) -> list[int]:
    unknown = [c for c in classes if not 0 <= int(c) < num_classes]
    if unknown:
        raise RaeditError(f"unknown class ids {unknown}: the model has classes 0..{num_classes - 1}")
    if not classes:
        raise RaeditError("no classes to sample from")
    return [int(c) for c in classes]


def generate(config: SampleConfig, progress: Callable[[float], None] | None = None) -> Path | None:
    """Run the job on this rank; rank 0 writes `config.out` (and the grid) and returns its path.
    progress: called with the share of this rank's model evaluations done, after each one."""
    check_values(config, spell=lambda key: "--" + key.replace("_", "-"))
    ctx = init_distributed()
    model, info = load_denoiser(config.ckpt, ctx.device)
    guide = None
    if config.guide_ckpt is not None:
        guide, guide_info = load_denoiser(config.guide_ckpt, ctx.device)
        if guide_info.latent_shape != info.latent_shape or (guide_info.encoder and info.encoder
                                                             and guide_info.encoder != info.encoder):
            raise RaeditError(f"the guide {config.guide_ckpt} models latents {guide_info.latent_shape} of "
                              f"encoder {guide_info.encoder}, the model latents {info.latent_shape} of "
                              f"{info.encoder}: not the same latent space")
    classes = _check_classes(config.classes if config.classes is not None else list(range(info.num_classes)),
                             info.num_classes)
    rae = _load_rae_for(config, info, ctx)
    labels = sample_labels(config.num, classes, config.label_sampling, config.seed)
    # Validate the guidance settings once (CFG and AutoGuidance together are refused by the library).
    guided_velocity(model, labels[:1], model.null_label, config.cfg, tuple(config.cfg_interval), guide, config.ag,
                    config.ig, tuple(config.ig_interval))
    check_base_head(model, with_base=config.ig != 1.0)  # before the RAE loads and the first batch

    compile_module(model, "the denoiser", config.compile)
    if guide is not None:
        compile_module(guide, "the guide", config.compile)

    mine = rank_slice(config.num, ctx)
    images: list[np.ndarray] = []
    started = time.perf_counter()
    evaluations = _EvaluationCounter(config, len(mine), progress)
    for start in range(mine.start, mine.stop, config.batch_size):
        indices = range(start, min(start + config.batch_size, mine.stop))
        generators = sample_generators(config.seed, indices, ctx.device)
        noise = standard_normal_like(torch.empty((len(indices), *info.latent_shape), device=ctx.device), generators)
        batch_labels = labels[indices.start:indices.stop].to(ctx.device)
        velocity = guided_velocity(in_precision(model, ctx.device.type, config.bf16), batch_labels,
                                   model.null_label, config.cfg, tuple(config.cfg_interval),
                                   in_precision(guide, ctx.device.type, config.bf16) if guide is not None else None,
                                   config.ag, config.ig, tuple(config.ig_interval))
        velocity = evaluations.counted(velocity)
        with attention_backend(config.attention):
            latents = sample(velocity, noise, config.sampler, config.steps, info.shift_alpha, config.t_end,
                             generator=generators)
        with torch.no_grad():
            images.append(to_uint8_hwc(rae.decode(latents.float()), config.rounding))
    elapsed = time.perf_counter() - started
    logger.info("rank %d: %d images in %.1f s (%.2f images/s)", ctx.rank, len(mine), elapsed,
                len(mine) / max(elapsed, 1e-9))
    return _write(config, ctx, images, labels)


class _EvaluationCounter:
    """Reports the share of the sampling's model evaluations done (Heun evaluates twice a step)."""

    def __init__(self, config: SampleConfig, num: int, progress: Callable[[float], None] | None) -> None:
        per_batch = config.steps * (2 if config.sampler == "heun" else 1)
        self.total = per_batch * math.ceil(num / config.batch_size)
        self.done = 0
        self.progress = progress

    def counted(self, velocity: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        if self.progress is None:
            return velocity

        def counting(x: Tensor, t: Tensor) -> Tensor:
            result = velocity(x, t)
            self.done += 1
            self.progress(min(1.0, self.done / self.total))
            return result

        return counting


def _load_rae_for(config: SampleConfig, info: DenoiserInfo, ctx: DistContext) -> RAE:
    """The RAE the model names (or --rae), with the latent statistics it holds."""
    rae_dir = config.rae or info.rae
    if not rae_dir:
        raise RaeditError(f"{config.ckpt} names no RAE: give --rae <a saved RAE directory> (`raedit "
                          f"import-official` makes one from a released decoder and its statistics)")
    rae = RAE.from_pretrained(rae_dir, decode_only=True)
    if rae.latent_shape != info.latent_shape:
        raise RaeditError(f"the model {config.ckpt} was trained on latents {info.latent_shape}, but the RAE "
                          f"at {rae_dir} gives {rae.latent_shape}")
    if not rae.normalized:
        raise RaeditError(f"the RAE at {rae_dir} holds no latent statistics, so its latent space is not the "
                          f"model's: store them with `raedit stats CONFIG rae={rae_dir}`")
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
    with atomic_path(out) as temporary:
        np.savez(temporary, arr_0=everything, labels=labels.numpy())
    for path in parts:
        path.unlink()
    if config.grid:
        count = min(config.grid_images, len(everything))
        columns = len(set(labels[:count].tolist())) if config.label_sampling == "equal" else None
        save_image_grid(from_uint8_hwc(everything[:count]), config.grid, nrow=columns)
    barrier()
    logger.info("wrote %d samples to %s", len(everything), out)
    return out
