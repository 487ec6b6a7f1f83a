"""How well an autoencoder reconstructs a validation set: rFID against the same images, and the mean PSNR, SSIM
and perceptual distance of each image to its reconstruction (`raedit.eval.similarity`).

rFID follows recipe.md's protocol: reconstruct the (center-cropped) validation images and compare them with those
same images, not with a generation reference batch. Originals and reconstructions are quantized to 8 bits (the
images a user would save) before every metric, so all numbers describe the same pixels.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import torch

from raedit.core.errors import RaeditError
from raedit.core.images import quantize
from raedit.eval.frechet import GaussianStats, frechet_distance_of
from raedit.eval.inception import InceptionFeatures
from raedit.eval.similarity import PerceptualDistance, perceptual, psnr, ssim

logger = logging.getLogger(__name__)

# images B x 3 x H x W in [0, 1] -> reconstructions B x 3 x H x W in [0, 1]
ReconstructFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate_reconstructions(
    reconstruct_fn: ReconstructFn,
    images_iter: Iterable[torch.Tensor],
    inception: InceptionFeatures | None,
    perceptual_distance: PerceptualDistance | None = None,
    perceptual_name: str = "lpips",
) -> dict[str, float | int | str]:
    """Metrics of `reconstruct_fn` on batches of images B x 3 x H x W in [0, 1] (already center-cropped).

    Returns {"rfid", "psnr" (dB), "ssim", perceptual_name, "num_images"}; rFID is skipped (absent) when
    `inception` is None and the perceptual entry is "unavailable" without a distance. Means are over images.
    """
    pool_original, pool_recon = [], []
    psnrs, ssims, distances = [], [], []
    for images in images_iter:
        original = quantize(images).cpu()
        with torch.no_grad():
            recon = reconstruct_fn(images)
        if recon.shape != images.shape:
            raise RaeditError(f"reconstructions have shape {tuple(recon.shape)}, images {tuple(images.shape)}")
        recon = quantize(recon).cpu()
        original_unit, recon_unit = original.double() / 255, recon.double() / 255
        psnrs.append(psnr(recon_unit, original_unit))
        ssims.append(ssim(recon_unit, original_unit))
        if perceptual_distance is not None:
            distances.append(perceptual(recon_unit.float(), original_unit.float(), perceptual_distance))
        if inception is not None:
            pool_original.append(inception(original)["pool"].numpy())
            pool_recon.append(inception(recon)["pool"].numpy())
    if not psnrs:
        raise RaeditError("no images to reconstruct")
    count = int(sum(len(p) for p in psnrs))
    result: dict[str, float | int | str] = {"num_images": count}
    if inception is not None:
        result["rfid"] = frechet_distance_of(
            GaussianStats.from_features(np.concatenate(pool_recon), "reconstructions"),
            GaussianStats.from_features(np.concatenate(pool_original), "originals"),
        )
    result["psnr"] = float(torch.cat(psnrs).mean())
    result["ssim"] = float(torch.cat(ssims).mean())
    result[perceptual_name] = float(torch.cat(distances).mean()) if distances else "unavailable"
    return result
