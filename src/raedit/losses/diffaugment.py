"""DiffAugment (Zhao et al. 2020) as the RAE discriminator uses it (App. C.2): translation and color.

Images are in [-1, 1]. Every operation is differentiable, so the G-side GAN loss passes through it. Each call
draws one set of parameters per image; real and fake batches get independent calls. The ranges follow the
StyleGAN-T / official RAE policy: translation up to 1/8 of the side (zero fill), brightness + U(-0.5, 0.5),
saturation x U(0, 2), contrast x U(0.5, 1.5); cutout is off in the RAE recipe and not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "AugmentParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "diff_augment",
    "sample_augment_params",
    "translate",
]


@dataclass(frozen=True)
class AugmentParams:
    """One draw of DiffAugment parameters for a batch of B images (all tensors of shape B)."""

    shift_h: torch.Tensor  # integer pixels
    shift_w: torch.Tensor  # integer pixels
    brightness: torch.Tensor  # added, in [-0.5, 0.5)
    saturation: torch.Tensor  # factor in [0, 2)
    contrast: torch.Tensor  # factor in [0.5, 1.5)


def sample_augment_params(
    batch: int,
    height: int,
    width: int,
    translation: float = 0.125,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> AugmentParams:
    """Draw per-image parameters; shifts are uniform integers in [-round(side * translation), +round(...)]."""
    uniform = torch.rand(5, batch, device=device, generator=generator)
    max_h, max_w = round(height * translation), round(width * translation)
    return AugmentParams(
        shift_h=(uniform[0] * (2 * max_h + 1)).floor().long() - max_h,
        shift_w=(uniform[1] * (2 * max_w + 1)).floor().long() - max_w,
        brightness=uniform[2] - 0.5,
        saturation=uniform[3] * 2.0,
        contrast=uniform[4] + 0.5,
    )


def translate(images: torch.Tensor, shift_h: torch.Tensor, shift_w: torch.Tensor) -> torch.Tensor:
    """out[b, :, i, j] = images[b, :, i + shift_h[b], j + shift_w[b]], zero where that falls outside.

    images: B x C x H x W; shift_h, shift_w: B integer tensors. Returns B x C x H x W.
    """
    batch, _, height, width = images.shape
    rows = torch.arange(height, device=images.device)[None, :] + shift_h[:, None]  # B x H
    cols = torch.arange(width, device=images.device)[None, :] + shift_w[:, None]  # B x W
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    gathered = images[batch_index, :, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]
    return gathered.permute(0, 3, 1, 2) * inside[:, None].to(images.dtype)


def adjust_brightness(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Add delta[b] to every pixel of image b. images: B x C x H x W, delta: B."""
    return images + delta.view(-1, 1, 1, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean by factor[b] (0: gray, 1: unchanged)."""
    gray = images.mean(dim=1, keepdim=True)
    return (images - gray) * factor.view(-1, 1, 1, 1) + gray


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its overall mean by factor[b] (the mean is kept)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * factor.view(-1, 1, 1, 1) + mean


def diff_augment(
    images: torch.Tensor,
    translation: float = 0.125,
    color: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """App. C.2: DiffAugment before the discriminator: translation, then brightness, saturation, contrast.

    images: B x 3 x H x W in [-1, 1]. translation: largest shift as a fraction of the side (0 turns it off).
    Returns B x 3 x H x W.
    """
    batch, _, height, width = images.shape
    params = sample_augment_params(batch, height, width, translation, images.device, generator)
    if translation > 0:
        images = translate(images, params.shift_h, params.shift_w)
    if color:
        images = adjust_brightness(images, params.brightness.to(images.dtype))
        images = adjust_saturation(images, params.saturation.to(images.dtype))
        images = adjust_contrast(images, params.contrast.to(images.dtype))
    return images
