"""Experiment `noise-aug` (Sec. 4.3, Table 5): decoders trained on clean latents (tau = 0) and on noise-augmented
latents (z + tau * u * eps), compared on reconstruction (rFID) and on generation (FID of one diffusion model's
samples decoded by each).

The diffusion model does not depend on the decoder (it models the frozen encoder's latents), so one stage-2 run
serves both arms: its samples are decoded once by each decoder, which is given the latent statistics of the
setup's RAE (the same latent space). The paper: noise augmentation costs a little rFID
(0.49 -> 0.57) and buys generation FID (4.81 -> 4.28), because generated latents are off the clean manifold.
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
from raedit.core.files import atomic_path
from raedit.core.images import to_uint8_hwc
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


def reconstructions_npz(rae_dir: Path, data: str, count: int, path: Path) -> Path:
    """Reconstruct the first `count` images of `data` with the RAE at `rae_dir`; write them as an ADM npz."""
    rae = RAE.from_pretrained(rae_dir).eval()
    images = []
    with torch.no_grad():
        for batch in validation_batches(data, rae.image_size[0], count, 100):
            images.append(to_uint8_hwc(rae.decode(rae.encode(batch))))
    with atomic_path(path) as temporary:
        np.savez(temporary, arr_0=np.concatenate(images))
    return path


def run(out: Path, settings: Settings) -> dict:
    started = time.time()
    setup = settings.setup
    check_inputs(setup)
    work = Path(setup.work_dir) / "noise-aug"
    diffusion = stage2_config(setup, work / "diffusion", [])
    _, diffusion_seconds = train_arm(diffusion)
    rows = []
    for tau in settings.noise_taus:
        run_dir = work / f"decoder-tau{tau:g}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        stage1 = load_config(Stage1Config, settings.stage1_recipe, [
            *settings.stage1_overrides, f"autoencoder.noise_tau={tau}", f"run_dir={run_dir}",
            "train.logging.tensorboard=false"])
        decoder_started = time.perf_counter()
        train_decoder(stage1)
        seconds = time.perf_counter() - decoder_started
        rae_dir = run_dir / "rae"
        reconstructions = reconstructions_npz(rae_dir, settings.reconstruction_data, setup.reference_images or 1000,
                                              run_dir / "reconstructions.npz")
        rfid = fid_of_samples(setup, reconstructions)
        store_latent_stats(rae_dir, *saved_latent_stats(setup.rae))  # to decode the diffusion model's latents
        gfid = sample_and_score(setup, Path(diffusion.run_dir), rae=str(rae_dir), tag=f"samples-tau{tau:g}")
        recon = json.loads((run_dir / "recon_metrics.json").read_text())
        rows.append([tau, round(seconds), round(recon["psnr"], 2), round(rfid, 2), round(gfid, 2)])
        logger.info("tau %g: PSNR %.2f, rFID %.2f, generation FID %.2f", tau, recon["psnr"], rfid, gfid)
    bar_plot(out / "noise-aug.png", {"rFID": [row[3] for row in rows], "generation FID": [row[4] for row in rows]},
             [f"tau = {row[0]:g}" for row in rows], "FID (lower is better)", "noise-augmented decoder training")
    summary = (f"Decoders from `{settings.stage1_recipe}` with overrides {settings.stage1_overrides}, differing only "
               f"in noise_tau (raw token units); one DiT^DH (`{setup.recipe}`, overrides {setup.overrides}, "
               f"{diffusion_seconds:.0f} s) whose {setup.samples} class-balanced samples each decoder decodes. rFID: "
               f"reconstructions of the first {setup.reference_images} {settings.reconstruction_data} images against "
               f"those images; generation FID against the same images. PSNR on the stage-1 held-out images.")
    write_results(out, "noise-aug", "Noise-augmented decoder training (Table 5)", summary,
                  ["noise_tau (raw)", "decoder train seconds", "PSNR dB", "rFID", "generation FID"], rows, started)
    return {"rows": rows}
