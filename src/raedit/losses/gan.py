"""The adversarial part of the decoder loss (Sec. 3 and App. C.2: GAN with a frozen-feature discriminator).

Conventions: `discriminator_loss` and `generator_adversarial_loss` take images in [0, 1] (the project's range)
and map them to [-1, 1], the range the discriminator and DiffAugment work in (as in the official release).
`discriminator` arguments are a `raedit.losses.discriminator.Discriminator` or its DDP wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raedit.losses.diffaugment import diff_augment

__all__ = [
    "adaptive_gan_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "generator_loss",
    "hinge_discriminator_loss",
    "quantize_8bit",
]


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """App. C.2: hinge loss for D, 0.5 * (mean relu(1 - real) + mean relu(1 + fake)).

    logits_real, logits_fake: any shape (B x T per-token logits); returns a scalar.
    """
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """App. C.2: the decoder's (generator's) adversarial loss, -mean(logits). Returns a scalar."""
    return -logits_fake.mean()


def quantize_8bit(images_pm1: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of an 8-bit image (plain rounding, no gradient path).

    The discriminator sees fakes as quantized as the real data, so it cannot tell them apart by off-grid values.
    B x 3 x H x W -> same shape, values k / 127.5 - 1 for integers k in [0, 255].
    """
    levels = torch.round((images_pm1.clamp(-1.0, 1.0) + 1.0) * 127.5)
    return levels / 127.5 - 1.0


def discriminator_loss(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    translation: float = 0.125,
    color: bool = True,
) -> torch.Tensor:
    """Hinge loss of D on real images and (detached, 8-bit quantized) fakes, each DiffAugmented independently.

    real, fake: B x 3 x H x W in [0, 1]. Real and fake go through the discriminator as one 2B batch, so a DDP
    wrapper sees one forward per backward (local batch norm groups never mix them when B is a multiple of the
    group size). Returns a scalar; gradients reach only the discriminator heads.
    """
    real_pm1 = real.detach() * 2.0 - 1.0
    fake_pm1 = quantize_8bit(fake.detach() * 2.0 - 1.0)
    both = torch.cat([diff_augment(real_pm1, translation=translation, color=color),
                      diff_augment(fake_pm1, translation=translation, color=color)])
    logits_real, logits_fake = discriminator(both).chunk(2)
    return hinge_discriminator_loss(logits_real, logits_fake)


def generator_adversarial_loss(
    discriminator: nn.Module, fake: torch.Tensor, translation: float = 0.125, color: bool = True
) -> torch.Tensor:
    """G-side GAN loss -mean(D(DiffAugment(fake))); fake B x 3 x H x W in [0, 1], not quantized (it needs gradients).

    Put the discriminator in eval mode for this pass (as the official loop does) so that its spectral-norm power
    iteration only advances on D steps. Returns a scalar.
    """
    return generator_loss(discriminator(diff_augment(fake * 2.0 - 1.0, translation=translation, color=color)))


def adaptive_gan_loss(
    reconstruction_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    images: torch.Tensor,
    last_layer_weight: torch.Tensor,
    gan_weight: float = 1.0,
    max_weight: float = 1e4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """App. C.2: reconstruction_loss + gan_weight * lambda * gan_loss, with the adaptive weight
    lambda = ||grad L_rec|| / (||grad L_gan|| + 1e-6) at the decoder's last layer, clamped to [0, max_weight].

    Both losses depend on the decoder only through `images` (its output; their graphs reach it), so each is
    differentiated through its loss network (the perceptual network, the discriminator) once, to `images`; the
    last layer's gradients and the decoder's follow from those image gradients by the chain rule. The returned
    loss has the value of the sum above and, on backward, exactly its gradients, without the second pass through
    the loss networks that taking the last layer's gradients from the losses themselves costs.
    Returns (loss, lambda detached).
    """
    grad_rec_images = torch.autograd.grad(reconstruction_loss, images)[0]
    grad_gan_images = torch.autograd.grad(gan_loss, images)[0]
    grad_rec = torch.autograd.grad(images, last_layer_weight, grad_rec_images, retain_graph=True)[0]
    grad_gan = torch.autograd.grad(images, last_layer_weight, grad_gan_images, retain_graph=True)[0]
    weight = (grad_rec.norm() / (grad_gan.norm() + 1e-6)).clamp(0.0, max_weight).detach()
    pulled = (images * (grad_rec_images + gan_weight * weight * grad_gan_images)).sum()
    value = (reconstruction_loss + gan_weight * weight * gan_loss).detach()
    return pulled - pulled.detach() + value, weight
