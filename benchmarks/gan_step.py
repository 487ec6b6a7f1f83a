"""The cost of the decoder's GAN step (App. C.2) with its adaptive weight taken two ways, on the demo's models:

- direct: lambda from the last layer's gradients of L_rec and L_gan (each a pass back through its loss network),
  then the backward of L_rec + w_g * lambda * L_gan (a second pass through both loss networks);
- one pass: `raedit.losses.gan.adaptive_gan_loss`, which takes both losses' gradients to the decoded images once
  and the last layer's and the decoder's from those (same value and gradients, checked here too).

The two alternate, `--rounds` times, each timing `--steps` decoder steps (forward, the adaptive weight, backward);
the ratio of each round and their median are printed.

    python benchmarks/gan_step.py [--rounds 7] [--steps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.losses import build_discriminator, build_perceptual_loss, generator_adversarial_loss
from raedit.losses.gan import adaptive_gan_loss

BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # The demo's stage 1: EfficientNet-Lite0 tokens of 32 px images, the 4 x 256 decoder in bf16, the
    # EfficientNet perceptual loss and discriminator (stage1/demo).
    rae = RAE(AutoencoderConfig(encoder="effnet-lite0", encoder_input_size=64, decoder_size="4x256x4x1024",
                                decoder_patch_size=8, grayscale=True)).train()
    perceptual = build_perceptual_loss("effnet-lite0")
    discriminator = build_discriminator("effnet-lite0", 64).eval()
    targets = torch.rand(BATCH, 3, 32, 32)
    with torch.no_grad():
        latents = rae.encode(targets)
    last_layer = rae.decoder.last_layer

    def losses() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = rae.decode(latents, clamp=False)
        reconstruction = (images - targets).abs().mean() + perceptual(images, targets)
        return images, reconstruction, generator_adversarial_loss(discriminator, images)

    def direct(bf16: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            _, reconstruction, gan = losses()
            grad_rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
            grad_gan = torch.autograd.grad(gan, last_layer, retain_graph=True)[0]
            weight = (grad_rec.norm() / (grad_gan.norm() + 1e-6)).clamp(0.0, 1e4).detach()
            total = reconstruction + weight * gan
        total.backward()
        return total.detach(), weight

    def one_pass(bf16: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            images, reconstruction, gan = losses()
            total, weight = adaptive_gan_loss(reconstruction, gan, images, last_layer)
        total.backward()
        return total.detach(), weight

    def gradients(step, bf16: bool) -> torch.Tensor:
        """All decoder parameters' gradients after one step, as one vector."""
        rae.decoder.zero_grad()
        torch.manual_seed(1)  # the same DiffAugment draws
        step(bf16)
        return torch.cat([parameter.grad.flatten() for parameter in rae.decoder.parameters()])

    for bf16 in (False, True):
        fast, slow = gradients(one_pass, bf16), gradients(direct, bf16)
        print(f"{'bf16 autocast' if bf16 else 'float32'}: |g_one_pass - g_direct| / |g_direct| = "
              f"{float((fast - slow).norm() / slow.norm()):.1e}")

    def seconds(step) -> float:
        started = time.perf_counter()
        for _ in range(args.steps):
            rae.decoder.zero_grad()
            step()
        return (time.perf_counter() - started) / args.steps

    seconds(direct), seconds(one_pass)  # warm-up
    ratios = []
    for round_index in range(args.rounds):
        slow, fast = seconds(direct), seconds(one_pass)
        ratios.append(slow / fast)
        print(f"round {round_index + 1}: direct {slow:.3f} s/step, one pass {fast:.3f} s/step, ratio {ratios[-1]:.2f}")
    print(f"median ratio direct / one pass over {args.rounds} rounds: {statistics.median(ratios):.2f} "
          f"({args.threads} thread(s), batch {BATCH})")


if __name__ == "__main__":
    main()
