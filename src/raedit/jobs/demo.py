"""`raedit demo`: the whole system on the offline default, on a CPU, in one command.

EfficientNet-Lite0 encoder (64 px input -> 4 x 4 x 112 latents) on Fashion-MNIST at 32 px:
  1. train the ViT decoder (stage 1: L1 + perceptual + GAN, noise-augmented latents),
  2. cache the training latents (with mirror images) and store their statistics in the RAE,
  3. train a DiT^DH on the normalized latents (stage 2),
  4. sample a class-balanced set and a grid, 5. FID against the Fashion-MNIST test split.
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

from raedit.autoencoder import RAE, store_latent_stats
from raedit.core.config import load_config
from raedit.core.files import write_json
from raedit.core.images import save_image_grid
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


# `raedit demo`: at most 15 minutes on 2 CPU cores.
FULL = DemoPlan(
    stage1=["data.limit=4000", "train.epochs=3", "loss.disc_start_epoch=1", "loss.gan_start_epoch=2",
            "train.schedule.warmup_epochs=0.2", "eval_images=1000"],
    cache=["data.limit=4000"],
    stage2=["train.epochs=40", "train.schedule.decay_start_epoch=16", "train.schedule.decay_end_epoch=40"],
    samples=1000,
    reference_images=1000,
)
# `raedit benchmark`: at most 60 minutes on 2 CPU cores; its FID (docs/results/benchmark.md) is the number
# later changes must beat. The whole recipes' data (12,000 images, 24,000 latents with mirrors), 3 decoder epochs
# (GAN from the third), 40 DiT^DH epochs (passes over the images, each drawn flipped or not: the steps of the
# 20 epochs over both flips it was measured with).
BENCHMARK = DemoPlan(
    stage1=["train.epochs=3", "loss.disc_start_epoch=1", "loss.gan_start_epoch=2",
            "train.schedule.warmup_epochs=0.1", "eval_images=1000"],
    cache=[],
    stage2=["train.epochs=40", "train.schedule.decay_start_epoch=16", "train.schedule.decay_end_epoch=40"],
    samples=1000,
    reference_images=1000,
)
# `raedit demo --quick`: about 2 minutes, the smoke test of `make test`.
QUICK = DemoPlan(
    stage1=["data.limit=256", "train.epochs=1", "autoencoder.decoder_size=tiny", "loss.disc_start_epoch=1", "train.ema.decay=0.5",
            "loss.gan_start_epoch=1", "eval_images=64", "preview_images=8"],
    cache=["data.limit=256", "shard_size=128"],
    stage2=["train.epochs=4", "train.micro_batch_size=32", "model.depth=1", "model.width=64", "model.num_heads=2",
            "model.head_width=112", "model.head_num_heads=2", "train.schedule.decay_start_epoch=2",
            "train.schedule.decay_end_epoch=4"],
    samples=60,
    reference_images=60,
)


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


PLANS = {"full": FULL, "quick": QUICK, "benchmark": BENCHMARK}


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
    stage1 = load_config(Stage1Config, "stage1/demo", _quiet_training(plan.stage1, out, "stage1"))
    train_decoder(stage1)
    rae_dir = out / "stage1" / "rae"
    reconstruction = json.loads((out / "stage1" / "recon_metrics.json").read_text())
    save_reconstruction_grid(rae_dir, out / "reconstructions.png")
    now = timed("stage1_decoder", now)

    cache_dir = out / "latents"
    cache = load_config(CacheConfig, "stage2/cache_demo", [*plan.cache, f"out={cache_dir}"])
    cache_latents(cache)
    moments = latent_stats_from_cache(cache_dir)
    store_latent_stats(rae_dir, moments.mean, moments.variance, cache.autoencoder.encoder)
    now = timed("latent_cache_and_stats", now)

    stage2 = load_config(Stage2Config, "stage2/demo", [
        *_quiet_training(plan.stage2, out, "stage2"), f"rae={rae_dir}", f"latents={cache_dir}",
        f"data.limit={cache.data.limit}"])
    train_diffusion(stage2)
    now = timed("stage2_diffusion", now)

    samples = out / "samples.npz"
    generate(SampleConfig(ckpt=str(out / "stage2"), num=plan.samples, label_sampling="equal", steps=49,
                          sampler="euler", out=str(samples), grid=str(out / "samples.png"), grid_images=100,
                          batch_size=100, seed=0))
    now = timed("sampling", now)

    result = evaluate_file(samples, "fashion-mnist-test", ("fid",), ref_limit=plan.reference_images,
                           cache_dir=out / "eval-cache")
    timed("fid", now)
    metrics = {
        "mode": plan_name,
        "fid": result.values["fid"], "fid_samples": result.num_samples, "fid_reference": result.num_reference,
        "fid_reference_set": "fashion-mnist test (first images, 32 px upscaled to 299 by the TF Inception)",
        "reconstruction_psnr_db": reconstruction["psnr"], "reconstruction_ssim": reconstruction["ssim"],
        "reconstruction_images": reconstruction["images"], "latent_statistics_count": moments.count,
        "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
        "notes": result.notes,
    }
    write_json(out / "metrics.json", metrics)
    return metrics

