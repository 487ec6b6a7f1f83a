"""Similarity of an image to its reference: PSNR, SSIM and a perceptual distance (LPIPS) through a callable.

Images are float B x 3 x H x W in [0, 1]. Each metric is computed per image and averaged over images, so the
result does not depend on how images are batched.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from raedit.core.errors import RaeditError

# A perceptual distance: (images B x 3 x H x W in [0, 1], images B x 3 x H x W in [0, 1]) -> B distances.
PerceptualDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(images: torch.Tensor, references: torch.Tensor) -> None:
    if images.shape != references.shape or images.ndim != 4:
        raise RaeditError(
            f"reconstruction metrics need two B x C x H x W batches of one shape, got "
            f"{tuple(images.shape)} and {tuple(references.shape)}"
        )


def psnr(images: torch.Tensor, references: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: 10 log10(max^2 / MSE). B x C x H x W pairs -> B."""
    _check_pair(images, references)
    mse = (images.double() - references.double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(max_value**2 / mse.clamp(min=1e-20))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * sigma**2))
    return kernel / kernel.sum()


def ssim(images: torch.Tensor, references: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004): 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, valid positions only, averaged over positions and channels. B x C x H x W pairs -> B."""
    _check_pair(images, references)
    if min(images.shape[-2:]) < SSIM_WINDOW:
        raise RaeditError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW}, got {tuple(images.shape[-2:])}")
    x, y = images.double(), references.double()
    channels = x.shape[1]
    kernel_1d = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (SSIM_K1 * max_value) ** 2, (SSIM_K2 * max_value) ** 2
    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x.square()
    var_y = local_mean(y * y) - mu_y.square()
    cov_xy = local_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def perceptual(images: torch.Tensor, references: torch.Tensor, distance: PerceptualDistance) -> torch.Tensor:
    """Per-image perceptual distance (e.g. LPIPS from `raedit.losses.perceptual`) through `distance`. -> B."""
    _check_pair(images, references)
    with torch.no_grad():
        values = distance(images, references)
    values = torch.as_tensor(values).double().reshape(-1)
    if values.shape[0] != images.shape[0]:
        raise RaeditError(f"the perceptual distance returned {values.shape[0]} values for {images.shape[0]} images")
    return values
