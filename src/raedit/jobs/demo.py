"""`raedit demo`: the whole system on the offline default, on a CPU, in one command.

EfficientNet-Lite0 encoder (64 px input -> 4 x 4 x 112 latents) on Fashion-MNIST at 32 px:
  1. encode the training images once into the latent cache (with mirror images) and take their statistics,
  2. train the ViT decoder on the cached latents (stage 1: L1 + perceptual + GAN, noise-augmented latents) and,
     at the same time in a second process, a DiT^DH on the normalized cached latents (stage 2): the denoiser
     needs the latent space, not the decoder, so the two stages share the cores instead of waiting in turn,
  3. put the trained decoder into the RAE the denoiser names, sample a class-balanced set and a grid,
  4. FID against the Fashion-MNIST test split, and the samples' class accuracy (`raedit.eval.class_accuracy`).
The recipes are the shipped `stage1/demo`, `stage2/cache_demo` and `stage2/demo` (package data, so the demo runs
from an installed wheel anywhere), shortened by the overrides below; everything lands under `runs/demo/` (or
`--out`), with `metrics.json` holding the measured numbers and wall times. The same pipeline with longer plans is
`raedit benchmark` (BENCHMARK); `raedit demo --quick` (QUICK) is its smoke test.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raedit.autoencoder import RAE, adopt_trained_decoder
from raedit.core.config import load_config
from raedit.core.files import write_json
from raedit.core.images import save_image_grid
from raedit.core.side_by_side import run_side_by_side
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.eval.evaluate import evaluate_file
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.jobs.sample import SampleConfig, generate
from raedit.jobs.stats import latent_stats_from_cache
from raedit.train.stage1 import Stage1Config, train_decoder
from raedit.train.stage2 import Stage2Config, train_diffusion

logger = logging.getLogger(__name__)


@dataclass
class DemoPlan:
    """Overrides of the demo recipes, and the size of the sampling and evaluation."""

    stage1: list[str] = field(default_factory=list)
    cache: list[str] = field(default_factory=list)
    stage2: list[str] = field(default_factory=list)
    samples: int = 1000
    reference_images: int = 1000
    probe_images: int = 10000  # real training images the class-accuracy classifier is fitted on
    cfg: float = 1.0  # classifier-free guidance scale of the samples (1: none)


# The decoder of the demo plans: 4 blocks of width 256 (the S size is 6 x 384), trained in bf16 on L1 alone for
# its first epochs (measured per wall second on one core: S fp32 17.18 dB after 420 s, this 18.19 dB with the
# perceptual term, 20.05 dB after 180 s on L1 alone), then with the perceptual term and the discriminator, and the
# GAN in the last epochs (decoding gray: reconstruction FID 107 with one GAN epoch, 89 with two; in colour with one:
# 166): docs/results/demo.md.
DEMO_DECODER = ["autoencoder.decoder_size=4x256x4x1024", "train.precision.autocast=bf16",
                "train.schedule.warmup_epochs=0.1", "eval_images=1000"]
# `raedit demo`: at most 15 minutes on 2 CPU cores, install included. Stage 1 and stage 2 run side by side on a
# core each for about the same time.
FULL = DemoPlan(
    stage1=[*DEMO_DECODER, "train.epochs=7", "loss.disc_start_epoch=4", "loss.perceptual_start_epoch=5",
            "loss.gan_start_epoch=5"],
    cache=["data.limit=5000"],
    stage2=["train.epochs=41", "train.schedule.decay_start_epoch=16", "train.schedule.decay_end_epoch=41"],
    probe_images=3000,
    # Guidance trades FID for class-true samples: with the two-GAN-epoch decoder (docs/results/demo.md) FID / class
    # accuracy were 91.3 / 0.52 at 1.5, 97.0 / 0.66 at 2.5 and 103.9 / 0.75 at 4.
    cfg=2.0,
)
# `raedit benchmark`: at most 60 minutes on 2 CPU cores; its FID (docs/results/benchmark.md) is the number
# later changes must beat. The whole recipes' data (12,000 images, 24,000 latents with mirrors), the demo's decoder
# schedule about 3 times longer (14 L1 epochs, the discriminator's warm-up, 4 GAN epochs), and a DiT^DH trained for
# about as long beside it. Measured in a first run (2026-12-02, stopped): stage 1 at 0.14 s per L1 step, 0.37 s per
# warm-up step and about 1.0 s per GAN step, stage 2 at 8.1 steps of 64 per second, on a core each; 150 DiT^DH
# epochs would have taken 58 minutes, 100 take about as long as stage 1 (40 minutes).
BENCHMARK = DemoPlan(
    stage1=[*DEMO_DECODER, "train.epochs=19", "loss.disc_start_epoch=14", "loss.perceptual_start_epoch=15",
            "loss.gan_start_epoch=15"],
    cache=[],
    stage2=["train.epochs=100", "train.schedule.decay_start_epoch=40", "train.schedule.decay_end_epoch=100"],
    cfg=2.0,
)
# `raedit demo --quick`: about 2 minutes, the smoke test of `make test`.
QUICK = DemoPlan(
    stage1=["data.limit=256", "train.epochs=1", "autoencoder.decoder_size=tiny", "loss.disc_start_epoch=1",
            "train.ema.decay=0.5", "loss.gan_start_epoch=1", "eval_images=64", "preview_images=8"],
    cache=["data.limit=256", "shard_size=128"],
    stage2=["train.epochs=4", "train.micro_batch_size=32", "model.depth=1", "model.width=64", "model.num_heads=2",
            "model.head_width=112", "model.head_num_heads=2", "train.schedule.decay_start_epoch=2",
            "train.schedule.decay_end_epoch=4"],
    samples=60,
    reference_images=60,
    probe_images=500,
)
PLANS = {"full": FULL, "quick": QUICK, "benchmark": BENCHMARK}


def _quiet_training(overrides: list[str], out: Path, name: str) -> list[str]:
    return [*overrides, f"run_dir={out / name}", "train.logging.tensorboard=false"]


def save_reconstruction_grid(rae_dir: Path, path: Path, count: int = 10) -> None:
    """One test image of each class (top row) over its reconstruction by the trained RAE (bottom row)."""
    rae = RAE.from_pretrained(rae_dir).eval()
    images, labels = load_fashion_mnist("test")
    first_of_class = [int((labels == label).nonzero()[0][0]) for label in range(count)]
    originals = to_rgb(images[first_of_class], rae.image_size[0])
    with torch.no_grad():
        reconstructions = rae.decode(rae.encode(originals))
    save_image_grid(torch.cat([originals, reconstructions]), path, nrow=count)


def run_demo(out: str | Path = "runs/demo", plan_name: str = "full") -> dict:
    """Run every stage of the plan `plan_name` (full | quick | benchmark); returns (and writes to
    `<out>/metrics.json`) what was measured."""
    plan = PLANS[plan_name]
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        logger.info("demo: %s done in %.0f s", name, timings[name])
        return time.perf_counter()

    now = time.perf_counter()
    cache_dir = out / "latents"
    cache = load_config(CacheConfig, "stage2/cache_demo", [*plan.cache, f"out={cache_dir}"])
    cache_latents(cache)
    moments = latent_stats_from_cache(cache_dir)
    now = timed("latent_cache_and_stats", now)

    # The RAE the denoiser names: the stage-1 architecture with the cache's statistics; its decoder is put in
    # when stage 1 ends (the denoiser trains on latents alone, so it need not wait for the decoder).
    stage1 = load_config(Stage1Config, "stage1/demo", [
        *_quiet_training(plan.stage1, out, "stage1"), f"latents={cache_dir}", f"data.limit={cache.data.limit}"])
    rae_dir = out / "rae"
    latent_space = RAE(stage1.autoencoder)
    latent_space.set_stats(moments.mean, moments.variance)
    latent_space.save_pretrained(rae_dir)
    stage2 = load_config(Stage2Config, "stage2/demo", [
        *_quiet_training(plan.stage2, out, "stage2"), f"rae={rae_dir}", f"latents={cache_dir}",
        f"data.limit={cache.data.limit}", "train.logging.image_every_steps=0"])
    # Stage 1 and stage 2 at the same time, a process and half the cores each.
    decoder_seconds, denoiser_seconds = run_side_by_side([(train_decoder, stage1), (train_diffusion, stage2)])
    timings["stage1_decoder"], timings["stage2_diffusion"] = round(decoder_seconds, 1), round(denoiser_seconds, 1)
    adopt_trained_decoder(rae_dir, out / "stage1" / "rae")
    reconstruction = json.loads((out / "stage1" / "recon_metrics.json").read_text())
    save_reconstruction_grid(rae_dir, out / "reconstructions.png")
    now = timed("both_stages", now)

    samples = out / "samples.npz"
    generate(SampleConfig(ckpt=str(out / "stage2"), num=plan.samples, label_sampling="equal", steps=49,
                          sampler="euler", out=str(samples), grid=str(out / "samples.png"), grid_images=100,
                          batch_size=100, seed=0, cfg=plan.cfg))
    now = timed("sampling", now)

    result = evaluate_file(samples, "fashion-mnist-test", ("fid", "class_acc"), ref_limit=plan.reference_images,
                           cache_dir=out / "eval-cache", probe_train_limit=plan.probe_images)
    timed("evaluation", now)
    metrics = {
        "mode": plan_name,
        "fid": result.values["fid"], "fid_samples": result.num_samples, "fid_reference": result.num_reference,
        "fid_reference_set": "fashion-mnist test (first images, 32 px upscaled to 299 by the TF Inception)",
        "cfg": plan.cfg, "class_accuracy": result.values["class_acc"],
        "class_accuracy_real_test": result.values["class_acc_real"],
        "reconstruction_psnr_db": reconstruction["psnr"], "reconstruction_ssim": reconstruction["ssim"],
        "reconstruction_images": reconstruction["images"], "latent_statistics_count": moments.count,
        "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
        "notes": result.notes,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
