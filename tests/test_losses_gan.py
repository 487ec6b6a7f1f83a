"""GAN loss pieces: hinge / generator losses, 8-bit quantization, adaptive weight, D and G loss wiring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raedit.losses import (
    DecoderLossConfig,
    adaptive_gan_loss,
    discriminator_loss,
    generator_adversarial_loss,
    generator_loss,
    hinge_discriminator_loss,
    quantize_8bit,
)
from raedit.losses.discriminator import Discriminator, FeatureBackbone


def test_hinge_and_generator_losses_on_known_logits():
    real = torch.tensor([[2.0, 0.5, -1.0]])
    fake = torch.tensor([[-2.0, 0.0, 1.5]])
    # relu(1 - real) = [0, 0.5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 2.5] -> mean 7/6
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 7 / 6))
    assert generator_loss(fake).item() == pytest.approx(0.5 / 3)
    assert hinge_discriminator_loss(torch.full((2, 4), 5.0), torch.full((2, 4), -5.0)).item() == 0.0


def test_quantize_8bit_is_exact():
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    assert torch.equal(quantize_8bit(levels), levels)
    x = torch.rand(10_000) * 2.4 - 1.2
    q = quantize_8bit(x)
    codes = (q + 1) * 127.5
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.min() >= -1e-4 and codes.max() <= 255 + 1e-4
    expected_codes = torch.round((x.clamp(-1, 1) + 1) * 127.5)
    assert torch.allclose(codes, expected_codes, atol=1e-4)
    inside = x.abs() <= 1
    assert (q[inside] - x[inside]).abs().max() <= 1 / 255 + 1e-6
    assert torch.equal(quantize_8bit(q), q)
    assert quantize_8bit(torch.tensor([-3.0, 3.0])).tolist() == [-1.0, 1.0]


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    torch.manual_seed(0)
    last = nn.Linear(3, 4, bias=False)
    x = torch.randn(5, 3)
    target = torch.randn(5, 4)
    y = last(x)
    rec = (y - target).abs().mean()
    gan = -(y * torch.linspace(0.1, 1.0, 4)).mean()
    loss, weight = adaptive_gan_loss(rec, gan, y, last.weight, gan_weight=0.5)
    # By hand: d rec / dW = sign(y - t)^T x / 20, d gan / dW = -(c^T 1) x-sums / 20.
    grad_rec = torch.sign(y - target).detach().T @ x / 20
    grad_gan = -(torch.linspace(0.1, 1.0, 4)[:, None] * x.sum(0)[None, :]) / 20
    expected = grad_rec.norm() / (grad_gan.norm() + 1e-6)
    assert weight.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not weight.requires_grad
    assert loss.item() == pytest.approx((rec + 0.5 * expected * gan).item(), rel=1e-6)
    loss.backward()
    assert torch.allclose(last.weight.grad, grad_rec + 0.5 * expected * grad_gan, atol=1e-6)


def test_adaptive_gan_loss_has_the_gradients_of_the_weighted_sum():
    """Against the direct formula: lambda from the last layer's gradients of each loss (two passes through the
    loss networks), then the backward of rec + w_g * lambda * gan; every decoder parameter's gradient agrees."""
    torch.manual_seed(0)

    def decoder_and_losses():
        torch.manual_seed(1)
        hidden, last = nn.Linear(6, 8), nn.Linear(8, 12)
        perceptual, critic = nn.Sequential(nn.Linear(12, 10), nn.Tanh()), nn.Sequential(nn.Linear(12, 5), nn.GELU())
        return hidden, last, perceptual, critic

    latents, target = torch.randn(7, 6), torch.randn(7, 12)

    def forward(hidden, last, perceptual, critic):
        images = last(torch.relu(hidden(latents)))
        rec = (images - target).abs().mean() + (perceptual(images) - perceptual(target)).pow(2).mean()
        return images, rec, -critic(images).mean()

    hidden, last, perceptual, critic = decoder_and_losses()
    images, rec, gan = forward(hidden, last, perceptual, critic)
    loss, weight = adaptive_gan_loss(rec, gan, images, last.weight, gan_weight=0.7, max_weight=1e4)
    loss.backward()
    fast = [parameter.grad.clone() for parameter in (*hidden.parameters(), *last.parameters())]

    hidden, last, perceptual, critic = decoder_and_losses()
    images, rec, gan = forward(hidden, last, perceptual, critic)
    grad_rec = torch.autograd.grad(rec, last.weight, retain_graph=True)[0]
    grad_gan = torch.autograd.grad(gan, last.weight, retain_graph=True)[0]
    direct_weight = grad_rec.norm() / (grad_gan.norm() + 1e-6)
    direct = rec + 0.7 * direct_weight.detach() * gan
    direct.backward()
    assert weight.item() == pytest.approx(direct_weight.item(), rel=1e-6)
    assert loss.item() == pytest.approx(direct.item(), rel=1e-6)
    for got, want in zip(fast, [parameter.grad for parameter in (*hidden.parameters(), *last.parameters())]):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_adaptive_weight_clamps_when_gan_gradient_vanishes():
    last = nn.Linear(3, 4)
    y = last(torch.randn(5, 3))
    rec = y.pow(2).mean()
    assert adaptive_gan_loss(rec, 0.0 * y.sum(), y, last.weight)[1].item() == 1e4
    y = last(torch.randn(5, 3))
    rec = y.pow(2).mean()
    assert adaptive_gan_loss(rec, 0.0 * y.sum(), y, last.weight, max_weight=50.0)[1].item() == 50.0


class RecordingDiscriminator(Discriminator):
    """A discriminator on a frozen 1x1-conv backbone that records the images it sees."""

    def __init__(self) -> None:
        class Pixels(FeatureBackbone):
            def __init__(self) -> None:
                super().__init__()
                self.proj = nn.Conv2d(3, 4, 1)
                self.channels = (4,)
                self.freeze()

            def forward(self, images_pm1):
                return [self.proj(images_pm1).flatten(2)]

        super().__init__(Pixels(), kernel_size=3)
        self.seen: list[torch.Tensor] = []

    def forward(self, images_pm1):
        self.seen.append(images_pm1.detach().clone())
        return super().forward(images_pm1)


def test_discriminator_loss_quantizes_fakes_and_only_trains_heads():
    torch.manual_seed(0)
    disc = RecordingDiscriminator()
    real = torch.rand(2, 3, 8, 8)
    fake = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = discriminator_loss(disc, real, fake, translation=0.0, color=False)
    loss.backward()
    seen_real, seen_fake = disc.seen[0].chunk(2)  # one forward on the concatenated batch
    assert len(disc.seen) == 1
    assert torch.allclose(seen_real, real * 2 - 1)
    assert torch.equal(seen_fake, quantize_8bit(fake.detach() * 2 - 1))
    assert fake.grad is None
    assert all(p.grad is not None for p in disc.heads.parameters())
    assert all(p.grad is None for p in disc.backbone.parameters())


def test_generator_loss_reaches_the_unquantized_fake():
    torch.manual_seed(0)
    disc = RecordingDiscriminator().eval()
    fake = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = generator_adversarial_loss(disc, fake, translation=0.0, color=False)
    assert torch.allclose(disc.seen[0], fake.detach() * 2 - 1)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_config_defaults_are_the_paper_weights_and_schedule():
    config = DecoderLossConfig()
    assert (config.perceptual_weight, config.gan_weight) == (1.0, 0.75)
    assert (config.disc_start_epoch, config.gan_start_epoch) == (6, 8)
    assert config.max_adaptive_weight == 1e4 and config.discriminator_kernel_size == 9
