"""Experiment `pixel` (Table 11): diffusion on RAE latents against diffusion on pixels of the same dimensionality.

Both arms train the same DiT^DH recipe for the same epochs on the same images (those of `setup.latents`, mirrors
included); the pixel arm's "latents" are the images themselves, resized to `pixel_size` and cut into p x p patches
(`pixels-p6` at 24 px: 4 x 4 tokens of 108 values, 1,728 dimensions, against the 4 x 4 x 112 = 1,792 of the
EfficientNet-Lite0 latents), normalized per position and channel like any latent and decoded exactly by
unpatchifying. The paper's pixel arm is `pixels-p16` at 256 px (16 x 16 x 768, the shape of DINOv2-B latents).
Pixel samples are resized to `fid_resolution` (bilinear, as the reference images) before FID, so both arms are
scored at the same resolution.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.files import atomic_path
from raedit.core.images import from_uint8_hwc, to_uint8_hwc
from raedit.data import DataConfig
from raedit.data.latent_cache import LatentCache
from raedit.encoders import get_spec
from raedit.experiments.generation import (
    GenerationSetup,
    check_inputs,
    fid_of_samples,
    generate_samples,
    sample_and_score,
    stage2_config,
    train_arm,
)
from raedit.experiments.results import bar_plot, write_results
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.jobs.stats import latent_stats_from_cache

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    setup: GenerationSetup = field(default_factory=GenerationSetup)
    pixel_encoder: str = "pixels-p6"
    pixel_size: int = 24
    fid_resolution: int | None = 32  # None: score pixel samples at the size they are generated


def pixel_space(settings: Settings, work: Path) -> tuple[Path, Path]:
    """A parameter-free pixel "RAE" holding the statistics of a cache of the latent arm's images as patch tokens,
    and that cache."""
    source = LatentCache(settings.setup.latents).manifest
    encoder = AutoencoderConfig(encoder=settings.pixel_encoder, encoder_input_size=settings.pixel_size,
                                decoder_size="unpatchify", decoder_patch_size=get_spec(settings.pixel_encoder).patch_size,
                                noise_tau=0.0)
    rae_dir, cache_dir = work / "pixel-rae", work / "pixel-latents"
    data = DataConfig(**{**source["data"], "resolution": settings.pixel_size})
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    cache_latents(CacheConfig(autoencoder=encoder, data=data, out=str(cache_dir), shard_size=4000, batch_size=500,
                              hflip=source["hflip"]))
    moments = latent_stats_from_cache(cache_dir)
    rae = RAE(encoder)
    rae.set_stats(moments.mean, moments.variance)
    rae.save_pretrained(rae_dir)
    return rae_dir, cache_dir


def resized_npz(samples: Path, resolution: int) -> Path:
    """The samples of an ADM npz resized (bilinear, antialiased when shrinking) to `resolution`, rounded to the
    nearest level (the samples were truncated once already)."""
    with np.load(samples) as archive:
        images, labels = archive["arr_0"], archive["labels"]
    pixels = from_uint8_hwc(images)
    pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False,
                           antialias=resolution < pixels.shape[-1])
    path = samples.with_name(f"{samples.stem}-{resolution}px.npz")
    with atomic_path(path) as temporary:
        np.savez(temporary, arr_0=to_uint8_hwc(pixels, "nearest"), labels=labels)
    return path


def run(out: Path, settings: Settings) -> dict:
    started = time.time()
    setup = settings.setup
    check_inputs(setup)
    work = Path(setup.work_dir) / "pixel"
    rows = []
    latent_arm = stage2_config(setup, work / "rae-latents", [])
    info, seconds = train_arm(latent_arm)
    fid = sample_and_score(setup, Path(latent_arm.run_dir))
    shape = info.latent_shape
    rows.append([f"RAE latents ({LatentCache(setup.latents).encoder})", " x ".join(map(str, shape)),
                 shape[0] * shape[1] * shape[2], round(seconds), round(fid, 2)])

    rae_dir, cache_dir = pixel_space(settings, work)
    pixel_arm = stage2_config(setup, work / "pixels", [f"rae={rae_dir}", f"latents={cache_dir}", "latent_shape=null"])
    info, seconds = train_arm(pixel_arm)
    samples = generate_samples(setup, Path(pixel_arm.run_dir))
    if settings.fid_resolution is not None:
        samples = resized_npz(samples, settings.fid_resolution)
    fid = fid_of_samples(setup, samples)
    shape = info.latent_shape
    rows.append([f"pixels ({settings.pixel_encoder}, {settings.pixel_size} px)", " x ".join(map(str, shape)),
                 shape[0] * shape[1] * shape[2], round(seconds), round(fid, 2)])
    logger.info("latents: FID %.2f; pixels: FID %.2f", rows[0][4], rows[1][4])
    bar_plot(out / "pixel.png", {"FID": [row[4] for row in rows]}, [f"{row[0]}\n{row[1]}" for row in rows],
             "FID (lower is better)", "diffusion on RAE latents vs on pixels")
    summary = (f"Same DiT^DH recipe (`{setup.recipe}`, overrides {setup.overrides}), epochs and images per arm. FID "
               f"of {setup.samples} class-balanced samples against {setup.reference_images} {setup.reference} "
               f"images at {settings.fid_resolution or 'the generated'} px.")
    write_results(out, "pixel", "Diffusion on RAE latents vs on pixels of the same dimensionality (Table 11)",
                  summary, ["space", "shape", "dimensions", "train seconds", "FID"], rows, started)
    return {"rows": rows}
