"""Experiment `shift` (Sec. 4.2, Table 4): FID with and without the dimension-dependent noise-schedule shift,
at equal compute, on latents large enough that the rule's shift is well above 1.

Every arm trains the same DiT^DH for the same steps on the same latents; only the shift alpha of the training
times and of the sampling grid differs: "none" (alpha = 1), "auto" (alpha = sqrt(m / 4096) for latents of m
dimensions, the paper's rule) and fixed values. The paper's latents (DINOv2-B, 768 x 16 x 16) have m = 196,608
and alpha = 6.93. The setup's demo latents (112 x 4 x 4, m = 1,792) would get alpha = 0.66, about no shift; so by
default the experiment makes a denser latent space from the same images (`DenserGrid`): the same encoder at a
larger input gives more tokens (EfficientNet-Lite0 at 192 px: 112 x 12 x 12, m = 16,128, alpha = 1.98). It caches
those latents, then trains their decoder (which only the sampling needs) beside the first arm and the other arms
two at a time, a process and a core each.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from raedit.autoencoder import RAE, adopt_trained_decoder
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.core.side_by_side import run_side_by_side
from raedit.data import DataConfig
from raedit.data.latent_cache import LatentCache
from raedit.diffusion.denoiser_io import read_denoiser_info
from raedit.experiments.generation import GenerationSetup, check_inputs, sample_and_score, stage2_config
from raedit.experiments.results import bar_plot, write_results
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.jobs.stats import latent_stats_from_cache
from raedit.train.stage1 import Stage1Config, train_decoder
from raedit.train.stage2 import train_diffusion

logger = logging.getLogger(__name__)


@dataclass
class DenserGrid:
    """The setup's images encoded by the setup's encoder at a larger input: more tokens of the same channels."""

    encoder_input_size: int | None = 192  # EfficientNet-Lite0 tokens are 16 px apart: 12 x 12; None: the
    # setup's latent space as it is
    image_size: int = 36  # the images' size, and the decoder's output (its patch: image_size / tokens per side)
    images: int | None = 4000  # the first N of the setup's images (None: all); encoding at 192 px is slow
    mirror_images: bool = False  # also cache each image's mirror image (twice the encoding time)
    stage1_recipe: str = "stage1/demo"
    stage1_overrides: list[str] = field(default_factory=list)


@dataclass
class Settings:
    setup: GenerationSetup = field(default_factory=GenerationSetup)
    shifts: list[str] = field(default_factory=lambda: ["none", "auto", "6.93"])  # values of flow.shift
    denser_grid: DenserGrid = field(default_factory=DenserGrid)


def make_denser_space(setup: GenerationSetup, grid: DenserGrid, work: Path) -> tuple[Path, Path, Stage1Config]:
    """Cache the setup's images at the grid's input size and save an RAE holding the cache's statistics (its
    decoder untrained); returns that RAE's folder, the cache and the stage-1 config of its decoder."""
    if setup.latents is None:
        raise RaeditError("denser_grid takes its images from setup.latents, which is null: give a latent cache, "
                          "or keep the setup's latent space with denser_grid.encoder_input_size=null")
    source = LatentCache(setup.latents).manifest
    stage1 = load_config(Stage1Config, grid.stage1_recipe, [
        *grid.stage1_overrides, f"autoencoder.encoder={source['encoder']}",
        f"autoencoder.encoder_input_size={grid.encoder_input_size}", f"eval_data.resolution={grid.image_size}",
        f"latents={work / 'latents'}", f"run_dir={work / 'decoder'}", "train.logging.tensorboard=false"])
    images = source["data"]["limit"] if grid.images is None else grid.images
    if images > source["data"]["limit"]:
        raise RaeditError(f"denser_grid.images={grid.images} is more than the {source['data']['limit']} images of "
                          f"setup.latents")
    stage1.data = DataConfig(**{**source["data"], "resolution": grid.image_size, "limit": images})  # cached
    tokens_per_side = RAE(stage1.autoencoder).latent_shape[-1]
    if grid.image_size % tokens_per_side:
        raise RaeditError(f"denser_grid.image_size {grid.image_size} is not a multiple of the {tokens_per_side} "
                          f"tokens per side of a {grid.encoder_input_size} px input")
    stage1.autoencoder.decoder_patch_size = grid.image_size // tokens_per_side
    cache_dir = work / "latents"
    cache_latents(CacheConfig(autoencoder=stage1.autoencoder, data=stage1.data, out=str(cache_dir),
                              shard_size=4000, batch_size=200, hflip=grid.mirror_images))
    moments = latent_stats_from_cache(cache_dir)
    rae = RAE(stage1.autoencoder)
    rae.set_stats(moments.mean, moments.variance)
    rae.save_pretrained(work / "rae")
    return work / "rae", cache_dir, stage1


def run(out: Path, settings: Settings) -> dict:
    started = time.time()
    setup = settings.setup
    check_inputs(setup)
    if not settings.shifts:
        raise RaeditError("shifts is empty: give at least one flow.shift value, e.g. shifts=[none,auto]")
    work = Path(setup.work_dir) / "shift"
    space: list[str] = []
    jobs = []
    grid = settings.denser_grid if settings.denser_grid.encoder_input_size is not None else None
    if grid is not None:
        if work.exists():
            shutil.rmtree(work)
        rae_dir, cache_dir, stage1 = make_denser_space(setup, grid, work)
        space = [f"rae={rae_dir}", f"latents={cache_dir}", "latent_shape=null"]
        jobs.append((train_decoder, stage1))
    arms = [stage2_config(setup, work / f"shift-{shift}", [*space, f"flow.shift={shift}"])
            for shift in settings.shifts]
    for config in arms:  # from scratch, not resumed
        shutil.rmtree(config.run_dir, ignore_errors=True)
    jobs += [(train_diffusion, config) for config in arms]
    seconds = []
    for first in range(0, len(jobs), 2):  # two at a time, a core each
        seconds += run_side_by_side(jobs[first:first + 2])
    if grid is not None:
        decoder_seconds = seconds.pop(0)
        decoder_psnr = json.loads((work / "decoder" / "recon_metrics.json").read_text())["psnr"]
        adopt_trained_decoder(rae_dir, work / "decoder" / "rae")
    rows = []
    for shift, config, arm_seconds in zip(settings.shifts, arms, seconds):
        info = read_denoiser_info(config.run_dir)
        fid = sample_and_score(setup, Path(config.run_dir))
        rows.append([shift, round(info.shift_alpha, 3), round(arm_seconds), round(fid, 2)])
        logger.info("shift %s (alpha %.3f): FID %.2f", shift, info.shift_alpha, fid)
    latent_shape = info.latent_shape
    dims = latent_shape[0] * latent_shape[1] * latent_shape[2]
    best = min(rows, key=lambda row: row[3])
    bar_plot(out / "shift.png", {"FID": [row[3] for row in rows]},
             [f"{row[0]}\nalpha={row[1]}" for row in rows], "FID (lower is better)",
             f"shift, latents {' x '.join(map(str, latent_shape))} (m = {dims})")
    made = "" if grid is None else (
        f" The latents: the first {grid.images or 'all'} of the setup's images"
        f"{' and their mirror images' if grid.mirror_images else ''} at {grid.image_size} px, encoded at "
        f"{grid.encoder_input_size} px; their decoder (`{grid.stage1_recipe}`, overrides "
        f"{grid.stage1_overrides}) trained in {decoder_seconds:.0f} s beside the first arm (held-out PSNR "
        f"{decoder_psnr:.2f} dB).")
    summary = (f"Same model, data and steps per arm (recipe `{setup.recipe}`, overrides {setup.overrides}); only "
               f"the shift alpha of training times and sampling grid differs; arms trained two at a time, a core "
               f"each. Latents {' x '.join(map(str, latent_shape))} (m = {dims}).{made} FID of {setup.samples} "
               f"class-balanced samples ({setup.sampler}, {setup.sampling_steps} steps) against "
               f"{setup.reference_images} {setup.reference} images at the samples' size. Best: shift {best[0]} "
               f"(alpha {best[1]}, FID {best[3]}).")
    write_results(out, "shift", "Dimension-dependent noise-schedule shift (Table 4)", summary,
                  ["flow.shift", "alpha", "train seconds", "FID"], rows, started, extra={"latent_dims": dims})
    return {"rows": rows}
