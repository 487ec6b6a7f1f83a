"""Experiment `noise-aug` (Sec. 4.3, Table 5): decoders trained on clean latents (tau = 0) and on noise-augmented
latents (z + tau * u * eps), compared on reconstruction (rFID), on reconstruction from noised latents, and on
generation (FID of one diffusion model's samples decoded by each).

The diffusion model does not depend on the decoder (it models the frozen encoder's latents), so one stage-2 run
serves both arms: its samples are decoded once by each decoder, which is given the latent statistics of the
setup's RAE (the same latent space). The paper: noise augmentation costs a little rFID (0.49 -> 0.57) and buys
generation FID (4.81 -> 4.28), because generated latents are off the clean manifold. That shows only where the
decoders are good enough that generation FID sits well above rFID: here the decoders follow the demo's schedule
(L1, the discriminator's warm-up, then perceptual + GAN) on the setup's latent cache, trained side by side, a
process each, and the diffusion model is short. The rFID of latents with Gaussian noise of `latent_noise`
(normalized units) added measures the robustness the augmentation is for directly.
tau is in raw token units (`autoencoder.noise_tau`): the paper's 0.8 is relative to DINOv2's unit-RMS tokens, so
for EfficientNet-Lite0 tokens (RMS about 7) the matching value is 5.6.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from raedit.autoencoder import RAE, saved_latent_stats, store_latent_stats
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.core.files import atomic_path
from raedit.core.images import to_uint8_hwc
from raedit.core.side_by_side import run_side_by_side
from raedit.data.latent_cache import LatentCache
from raedit.experiments.generation import (
    GenerationSetup,
    check_inputs,
    fid_of_samples,
    sample_and_score,
    stage2_config,
    train_arm,
)
from raedit.experiments.results import bar_plot, write_results
from raedit.jobs.eval_recon import validation_batches
from raedit.train.stage1 import Stage1Config, train_decoder

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    setup: GenerationSetup = field(default_factory=GenerationSetup)
    stage1_recipe: str = "stage1/demo"
    stage1_overrides: list[str] = field(default_factory=list)  # for both decoders
    noise_taus: list[float] = field(default_factory=lambda: [0.0, 5.6])  # raw token units
    reconstruction_data: str = "fashion-mnist-test"  # the same images as the FID reference
    latent_noise: float = 0.3  # std of the noise added to normalized latents for the noised-latent rFID


def reconstructions_npz(rae_dir: Path, data: str, count: int, path: Path, latent_noise: float = 0.0) -> Path:
    """Reconstruct the first `count` images of `data` with the RAE at `rae_dir`, with Gaussian noise of std
    `latent_noise` added to the normalized latents (seeded: the same noise for every decoder); write them as an
    ADM npz."""
    rae = RAE.from_pretrained(rae_dir).eval()
    generator = torch.Generator().manual_seed(0)
    images = []
    with torch.no_grad():
        for batch in validation_batches(data, rae.image_size[0], count, 100):
            latents = rae.encode(batch)
            noise = torch.randn(latents.shape, generator=generator)
            images.append(to_uint8_hwc(rae.decode(latents + latent_noise * noise)))
    with atomic_path(path) as temporary:
        np.savez(temporary, arr_0=np.concatenate(images))
    return path


def decoder_config(settings: Settings, tau: float, run_dir: Path) -> Stage1Config:
    """The stage-1 recipe for the decoder of noise level `tau`, reading the setup's latent cache when it has one
    (its images are the cache's)."""
    cache = []
    if settings.setup.latents is not None:
        cached_data = LatentCache(settings.setup.latents).manifest["data"]
        cache = [f"latents={settings.setup.latents}", f"data.limit={cached_data['limit']}"]
    return load_config(Stage1Config, settings.stage1_recipe, [
        *cache, *settings.stage1_overrides, f"autoencoder.noise_tau={tau}", f"run_dir={run_dir}",
        "train.logging.tensorboard=false"])


def run(out: Path, settings: Settings) -> dict:
    started = time.time()
    setup = settings.setup
    check_inputs(setup)
    if not settings.noise_taus:
        raise RaeditError("noise_taus is empty: give the decoders' noise levels, e.g. noise_taus=[0.0,5.6]")
    work = Path(setup.work_dir) / "noise-aug"
    decoders = {tau: work / f"decoder-tau{tau:g}" for tau in settings.noise_taus}
    for run_dir in decoders.values():
        if run_dir.exists():
            shutil.rmtree(run_dir)
    trained = run_side_by_side([(train_decoder, decoder_config(settings, tau, run_dir))
                                for tau, run_dir in decoders.items()])
    diffusion = stage2_config(setup, work / "diffusion", [])
    _, diffusion_seconds = train_arm(diffusion)
    count = setup.reference_images or 1000
    rows = []
    for (tau, run_dir), seconds in zip(decoders.items(), trained):
        rae_dir = run_dir / "rae"
        store_latent_stats(rae_dir, *saved_latent_stats(setup.rae))  # the diffusion model's latent space
        rfid = fid_of_samples(setup, reconstructions_npz(rae_dir, settings.reconstruction_data, count,
                                                         run_dir / "reconstructions.npz"))
        noised_rfid = fid_of_samples(setup, reconstructions_npz(
            rae_dir, settings.reconstruction_data, count, run_dir / "reconstructions-noised.npz",
            settings.latent_noise))
        gfid = sample_and_score(setup, Path(diffusion.run_dir), rae=str(rae_dir), tag=f"samples-tau{tau:g}")
        recon = json.loads((run_dir / "recon_metrics.json").read_text())
        rows.append([tau, round(seconds), round(recon["psnr"], 2), round(rfid, 2), round(noised_rfid, 2),
                     round(gfid, 2)])
        logger.info("tau %g: PSNR %.2f, rFID %.2f (noised latents %.2f), generation FID %.2f", tau, recon["psnr"],
                    rfid, noised_rfid, gfid)
    bar_plot(out / "noise-aug.png", {"rFID": [row[3] for row in rows],
                                     f"rFID, latents + {settings.latent_noise:g} noise": [row[4] for row in rows],
                                     "generation FID": [row[5] for row in rows]},
             [f"tau = {row[0]:g}" for row in rows], "FID (lower is better)", "noise-augmented decoder training")
    summary = (f"Decoders from `{settings.stage1_recipe}` with overrides {settings.stage1_overrides}, differing only "
               f"in noise_tau (raw token units), trained side by side (a process each; seconds below); one "
               f"DiT^DH (`{setup.recipe}`, overrides {setup.overrides}, {diffusion_seconds:.0f} s) whose "
               f"{setup.samples} class-balanced samples (no guidance) each decoder decodes. rFID: reconstructions "
               f"of the first {count} {settings.reconstruction_data} images against those images, from their "
               f"latents and from their normalized latents plus Gaussian noise of std {settings.latent_noise:g} "
               f"(the same noise for both); generation FID against the same images. PSNR on the stage-1 held-out "
               f"images.")
    write_results(out, "noise-aug", "Noise-augmented decoder training (Table 5)", summary,
                  ["noise_tau (raw)", "decoder train seconds", "PSNR dB", "rFID",
                   f"rFID, latents + {settings.latent_noise:g} noise", "generation FID"], rows, started)
    return {"rows": rows}
