"""What the generation experiments share: train a stage-2 arm from a recipe plus overrides, sample it
class-balanced and score the samples with FID against a reference set.

The default setting is the latent space of `raedit benchmark` (EfficientNet-Lite0, 4 x 4 x 112, on 12,000
Fashion-MNIST images and their mirrors; its RAE holds the statistics and a 21 dB decoder):
  raedit benchmark                                         # -> runs/benchmark/rae, runs/benchmark/latents
`raedit demo` makes the same kind of space from 5,000 images in a quarter of the time (setup.rae=runs/demo/rae
setup.latents=runs/demo/latents).
On GPUs the same experiment runs at full size by pointing `setup.recipe`, `setup.rae` (holding its statistics),
`setup.latents` and `setup.reference` at an ImageNet recipe, its RAE, cache and reference batch.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raedit.core.config import find_config, load_config
from raedit.core.errors import RaeditError
from raedit.diffusion.denoiser_io import DenoiserInfo, read_denoiser_info
from raedit.eval.evaluate import evaluate_file
from raedit.jobs.sample import SampleConfig, generate
from raedit.train.stage2 import Stage2Config, train_diffusion

logger = logging.getLogger(__name__)


@dataclass
class GenerationSetup:
    """The stage-2 recipe every arm starts from, the latent space it trains in, and the FID protocol."""

    recipe: str = "stage2/demo"  # a YAML file or a shipped recipe
    rae: str | None = "runs/benchmark/rae"  # with its latent statistics
    latents: str | None = "runs/benchmark/latents"
    overrides: list[str] = field(default_factory=list)  # on top of the recipe, for every arm
    samples: int = 1000
    sampler: str = "euler"
    sampling_steps: int = 49
    batch_size: int = 100
    reference: str = "fashion-mnist-test"  # built-in name, npz, image folder or statistics file
    reference_images: int | None = 1000  # the first N reference images; None: all
    eval_device: str | None = None  # the Inception network's device; None: cuda when there is one, else cpu
    work_dir: str = "runs/experiments"  # arms' runs go to <work_dir>/<experiment>/<arm>


def check_inputs(setup: GenerationSetup) -> None:
    """One clear error when the latent space the experiment needs was not made yet."""
    find_config(setup.recipe)
    for key in ("rae", "latents"):
        path = getattr(setup, key)
        if path is not None and not Path(path).exists():
            raise RaeditError(f"setup.{key}={path} does not exist: make it first (see the commands in "
                              f"raedit.experiments.generation) or point setup.{key} elsewhere")


def stage2_config(setup: GenerationSetup, run_dir: Path, overrides: list[str]) -> Stage2Config:
    """The recipe with the setup's latent space and overrides, then the arm's `overrides`."""
    paths = [f"{key}={value}" for key, value in (("rae", setup.rae), ("latents", setup.latents)) if value is not None]
    return load_config(Stage2Config, setup.recipe, [*paths, *setup.overrides, *overrides, f"run_dir={run_dir}",
                                                    "train.logging.tensorboard=false"])


def train_arm(config: Stage2Config) -> tuple[DenoiserInfo, float]:
    """Train one arm from scratch (its run folder is replaced); returns its model's description and the wall
    seconds."""
    if Path(config.run_dir).exists():
        shutil.rmtree(config.run_dir)
    started = time.perf_counter()
    train_diffusion(config)
    return read_denoiser_info(config.run_dir), time.perf_counter() - started


def metrics_of_samples(setup: GenerationSetup, samples: Path, metrics: tuple[str, ...] = ("fid",),
                       probe_train_limit: int | None = None) -> dict[str, float]:
    """`metrics` of an npz of samples against the setup's reference (its statistics, and the class-accuracy probe
    fitted on `probe_train_limit` training images, cached under work_dir)."""
    device = setup.eval_device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_file(samples, setup.reference, metrics, ref_limit=setup.reference_images,
                           cache_dir=Path(setup.work_dir) / "eval-cache", device=device,
                           probe_train_limit=probe_train_limit)
    return {name: float(result.values[name]) for name in metrics}


def fid_of_samples(setup: GenerationSetup, samples: Path) -> float:
    """FID of an npz of samples against the setup's reference (its statistics cached under work_dir)."""
    return metrics_of_samples(setup, samples)["fid"]


def generate_samples(setup: GenerationSetup, run_dir: Path, rae: str | None = None, tag: str = "samples",
                     ig: float = 1.0, ig_interval: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Class-balanced samples of the arm in `run_dir` (a run or one of its checkpoints; decoded by `rae` instead of
    its own when given; with internal guidance `ig` on `ig_interval`), written to `<run_dir>/<tag>.npz` with a grid
    `<tag>.png`."""
    samples = run_dir / f"{tag}.npz"
    generate(SampleConfig(ckpt=str(run_dir), num=setup.samples, label_sampling="equal", steps=setup.sampling_steps,
                          sampler=setup.sampler, out=str(samples), grid=str(run_dir / f"{tag}.png"), grid_images=100,
                          batch_size=setup.batch_size, seed=0, rae=rae, ig=ig, ig_interval=ig_interval))
    return samples


def sample_and_score(setup: GenerationSetup, run_dir: Path, rae: str | None = None, tag: str = "samples") -> float:
    """`generate_samples`, then the FID of those samples."""
    fid = fid_of_samples(setup, generate_samples(setup, run_dir, rae, tag))
    logger.info("%s/%s: FID %.2f", run_dir, tag, fid)
    return fid
