"""Decoder-training losses (Sec. 3, App. C.2): L1 + w_p * perceptual + w_g * lambda_adaptive * GAN.

`DecoderLossConfig` holds the choices and weights; the training loop combines the pieces:

    rec = l1_loss(recon, images) + cfg.perceptual_weight * perceptual(recon, images)
    gan = generator_adversarial_loss(disc, recon)                     # from epoch cfg.gan_start_epoch
    total, weight = adaptive_gan_loss(rec, gan, recon, decoder_last_layer.weight, cfg.gan_weight)
    # total = rec + cfg.gan_weight * weight * gan in value and gradient
    d_loss = discriminator_loss(disc, images, recon.detach())         # from epoch cfg.disc_start_epoch
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from raedit.core.config import Rule, above, at_least, in_range
from raedit.losses.diffaugment import diff_augment
from raedit.losses.discriminator import Discriminator, build_discriminator
from raedit.losses.gan import (
    adaptive_gan_loss,
    discriminator_loss,
    generator_adversarial_loss,
    generator_loss,
    hinge_discriminator_loss,
    quantize_8bit,
)
from raedit.losses.perceptual import PerceptualLoss, build_perceptual_loss

__all__ = [
    "DecoderLossConfig",
    "Discriminator",
    "PerceptualLoss",
    "adaptive_gan_loss",
    "build_discriminator",
    "build_perceptual_loss",
    "diff_augment",
    "discriminator_loss",
    "generator_adversarial_loss",
    "generator_loss",
    "hinge_discriminator_loss",
    "l1_loss",
    "quantize_8bit",
]


@dataclass
class DecoderLossConfig:
    """Loss choices of stage 1. Defaults: the paper's weights and schedule with the offline networks.

    The paper's recipe sets perceptual = 'lpips-vgg' and discriminator_backbone = 'dino-vits8'.
    """

    VALID: ClassVar[dict[str, Rule]] = {
        "perceptual_weight": at_least(0), "gan_weight": at_least(0), "max_adaptive_weight": above(0),
        "disc_start_epoch": at_least(0), "gan_start_epoch": at_least(0), "perceptual_start_epoch": at_least(0),
        "discriminator_input_size": at_least(1), "discriminator_kernel_size": at_least(1),
        "discriminator_group_size": at_least(1),
        "diffaug_translation": in_range(0, 1, high_open=True)}

    perceptual: str = "effnet-lite0"  # 'lpips-vgg' | 'effnet-lite0' | 'effnet-lite2'
    perceptual_weight: float = 1.0
    # First epoch with the perceptual term (0: from the start, as the official recipe). Before it the decoder
    # learns on L1 alone: cheaper steps, and a faster rise in PSNR, in short CPU runs (docs/results/demo.md).
    perceptual_start_epoch: int = 0
    vgg_weights: str | None = None  # VGG16 file for lpips-vgg; default torch hub cache
    discriminator_backbone: str = "effnet-lite0"  # 'dino-vits8' | 'effnet-lite0' | 'effnet-lite2'
    discriminator_weights: str | None = None  # hub id / directory / .pth; default the standard source
    discriminator_input_size: int = 224
    discriminator_kernel_size: int = 9
    discriminator_group_size: int = 1  # local batch norm group; 1 as in the official code
    gan_weight: float = 0.75
    max_adaptive_weight: float = 1e4
    disc_start_epoch: int = 6  # first epoch with discriminator updates
    gan_start_epoch: int = 8  # first epoch with the G-side GAN term
    diffaug_translation: float = 0.125
    diffaug_color: bool = True


def l1_loss(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sec. 3: pixel L1, mean over all elements. B x 3 x H x W (twice) -> scalar."""
    return (images - targets).abs().mean()
