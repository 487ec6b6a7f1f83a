"""What the page does, without the page: sample (the `raedit sample` job, with the command that reproduces it)
and reconstruct uploaded images through an RAE, with PSNR and SSIM."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from raedit.autoencoder import RAE
from raedit.core.dataclass_options import command_line
from raedit.core.errors import RaeditError
from raedit.core.images import to_uint8_hwc
from raedit.data.class_names import class_names
from raedit.data.transforms import ImageTransform
from raedit.diffusion.denoiser_io import read_denoiser_info
from raedit.eval.similarity import psnr, ssim
from raedit.jobs.sample import SampleConfig, generate

GUIDANCE = ("none", "cfg", "autoguidance")
SAMPLES_FILE, GRID_FILE = "samples.npz", "grid.png"


def model_class_names(model: str) -> list[str]:
    """The class names of the denoiser at `model` (its run's data set when it is a run directory)."""
    run_dir = model if (Path(model) / "config.yaml").is_file() else None
    return class_names(read_denoiser_info(model).num_classes, run_dir)


@dataclass
class SampleRequest:
    """The page's sampling settings."""

    model: str
    classes: list[int]
    num: int = 10
    sampler: str = "euler"
    steps: int = 25
    guidance: str = "none"  # none | cfg | autoguidance
    scale: float = 1.0  # the guidance scale (1: none)
    interval: tuple[float, float] = (0.0, 1.0)  # CFG only for t in [low, high]
    guide: str | None = None  # the AutoGuidance guide model
    seed: int = 0

    def config(self, out_dir: Path) -> SampleConfig:
        """The `raedit sample` settings, writing into `out_dir`."""
        if not self.model:
            raise RaeditError("choose a model")
        if not self.classes:
            raise RaeditError("choose at least one class")
        if self.guidance not in GUIDANCE:
            raise RaeditError(f"unknown guidance {self.guidance!r}; use one of {', '.join(GUIDANCE)}")
        if self.guidance == "autoguidance" and not self.guide:
            raise RaeditError("AutoGuidance needs a guide model: a smaller or earlier model of the same latents")
        scale, interval = float(self.scale), tuple(float(t) for t in self.interval)
        guided = {"cfg": {"cfg": scale, "cfg_interval": interval},
                  "autoguidance": {"ag": scale, "guide_ckpt": self.guide}}.get(self.guidance, {})
        return SampleConfig(ckpt=self.model, num=int(self.num), classes=[int(c) for c in self.classes],
                            sampler=self.sampler, steps=int(self.steps), seed=int(self.seed),
                            out=str(out_dir / SAMPLES_FILE), grid=str(out_dir / GRID_FILE), **guided)


@dataclass
class SampleResult:
    images: list[tuple[np.ndarray, str]]  # H x W x 3 uint8, with its class name
    npz: Path
    grid: Path
    command: str  # the `raedit sample` command that writes the same npz (into the working directory)


def sample_command(config: SampleConfig) -> str:
    """The `raedit sample` command of `config`, writing samples.npz and grid.png into the working directory."""
    return command_line("raedit sample", dataclasses.replace(config, out=SAMPLES_FILE, grid=GRID_FILE))


def run_sample(request: SampleRequest, out_dir: Path, progress: Callable[[float], None] | None = None) -> SampleResult:
    """Sample as `raedit sample` does (the same images for the same settings), into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = request.config(out_dir)
    generate(config, progress)
    names = model_class_names(request.model)
    with np.load(config.out) as archive:
        images, labels = archive["arr_0"], archive["labels"]
    return SampleResult([(image, names[label]) for image, label in zip(images, labels)], Path(config.out),
                        Path(config.grid), sample_command(config))


@dataclass
class Reconstruction:
    name: str
    original: np.ndarray  # H x W x 3 uint8, the center crop the encoder saw
    reconstruction: np.ndarray
    psnr: float  # dB
    ssim: float


def compute_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_rae(rae_dir: str) -> RAE:
    """The RAE with its encoder's weights (encoding needs them), on the GPU where there is one, or a one-line
    error saying what is missing."""
    if not rae_dir:
        raise RaeditError("choose an RAE")
    try:
        return RAE.from_pretrained(rae_dir).to(compute_device()).eval()
    except RaeditError:
        raise
    except Exception as error:  # a hub download that cannot happen here, a missing weights package, ...
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RaeditError(f"the RAE at {rae_dir} cannot encode here: its encoder's weights did not load "
                          f"({first_line})") from None


def reconstruct_files(rae: RAE, files: list[str]) -> tuple[list[Reconstruction], list[str]]:
    """Each readable image center-cropped to the RAE's size, encoded and decoded; and one problem line for each
    file that is not an image."""
    if not files:
        raise RaeditError("upload at least one image")
    transform = ImageTransform(size=rae.image_size[0], crop="center")
    results, problems = [], []
    for file in files:
        name = Path(file).name
        try:
            with Image.open(file) as image:
                original = transform(image.convert("RGB"))[None]
        except (OSError, UnidentifiedImageError, ValueError):
            problems.append(f"{name} is not an image that can be read")
            continue
        with torch.no_grad():
            decoded = rae.decode(rae.encode(original.to(compute_device()))).float().cpu()
        results.append(Reconstruction(name, to_uint8_hwc(original)[0], to_uint8_hwc(decoded)[0],
                                      float(psnr(decoded, original)[0]), float(ssim(decoded, original)[0])))
    return results, problems
