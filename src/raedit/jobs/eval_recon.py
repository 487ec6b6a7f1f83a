"""`raedit eval-recon`: reconstruct a validation set through a saved RAE and report rFID, PSNR, SSIM, LPIPS."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from raedit.autoencoder import RAE
from raedit.core.errors import RaeditError
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.data.image_folder import ImageFolder
from raedit.data.transforms import ImageTransform
from raedit.eval.autoencoder_metrics import evaluate_reconstructions
from raedit.eval.inception import InceptionFeatures
from raedit.losses.perceptual import build_perceptual_loss

logger = logging.getLogger(__name__)

PERCEPTUAL_CHOICES = ("lpips-vgg", "effnet-lite0", "effnet-lite2", "none")


@dataclass
class EvalReconConfig:
    """What `raedit eval-recon CONFIG [key=value ...]` reads."""

    autoencoder: str = ""  # a directory written by RAE.save_pretrained
    data: str = "fashion-mnist-test"  # fashion-mnist-test | fashion-mnist-train | an image folder
    num_images: int = 1000  # the first N images of the data set (the paper: all 50k ImageNet val images)
    batch_size: int = 50
    perceptual: str = "lpips-vgg"  # lpips-vgg (paper; needs VGG16 weights) | effnet-lite0 | effnet-lite2 | none
    vgg_weights: str | None = None  # VGG16 file for lpips-vgg (default: the torch hub cache)
    rfid: bool = True
    device: str = "cpu"
    json: str | None = None  # write the results here as JSON


def validation_batches(data: str, size: int, num_images: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Center-cropped validation images at the decoder's output `size`: batches B x 3 x size x size in [0, 1]."""
    if data in ("fashion-mnist-test", "fashion-mnist-train"):
        images, _ = load_fashion_mnist(data.rsplit("-", 1)[1])
        images = images[:num_images]
        for start in range(0, len(images), batch_size):
            yield to_rgb(images[start : start + batch_size], size)
        return
    folder = ImageFolder(data, ImageTransform(size=size, crop="center"))
    batch: list[torch.Tensor] = []
    for index in range(min(num_images, len(folder))):
        item = folder[index]
        if item is None:
            logger.warning("skipping unreadable image %s", folder.samples[index][0])
            continue
        batch.append(item[0])
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def run_eval_recon(config: EvalReconConfig) -> dict:
    """Load the RAE, reconstruct `num_images` validation images, return the metrics (see `evaluate_reconstructions`)."""
    if not config.autoencoder:
        raise RaeditError("eval-recon needs `autoencoder`: a directory written by RAE.save_pretrained")
    if config.perceptual not in PERCEPTUAL_CHOICES:
        raise RaeditError(f"unknown perceptual '{config.perceptual}'; choose from {', '.join(PERCEPTUAL_CHOICES)}")
    device = torch.device(config.device)
    rae = RAE.from_pretrained(config.autoencoder).to(device).eval()
    size = rae.image_size[0]

    notes = []
    distance = None
    perceptual_name = "lpips" if config.perceptual == "lpips-vgg" else f"perceptual_{config.perceptual}"
    if config.perceptual != "none":
        try:
            loss = build_perceptual_loss(config.perceptual, vgg_weights=config.vgg_weights).to(device)
            distance = lambda images, targets: loss.distance(images.to(device), targets.to(device)).cpu()  # noqa: E731
        except RaeditError as error:
            if config.vgg_weights is not None:  # weights the user named must load
                raise
            notes.append(f"{perceptual_name} unavailable: {error}")
            logger.warning("%s", notes[-1])

    inception = None
    if config.rfid:
        inception = InceptionFeatures(device=device)

    def reconstruct(images: torch.Tensor) -> torch.Tensor:
        return rae.decode(rae.encode(images.to(device))).cpu()

    batches = (b.to(device) for b in validation_batches(config.data, size, config.num_images, config.batch_size))
    result = evaluate_reconstructions(reconstruct, batches, inception, distance, perceptual_name)
    result["notes"] = notes
    result["autoencoder"] = str(Path(config.autoencoder))
    result["data"] = config.data
    return result
