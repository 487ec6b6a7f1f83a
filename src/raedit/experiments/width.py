"""Experiment `width` (Sec. 4.1, Fig. 3, Table 3, Theorem 1): a DiT narrower than the token dimension n
cannot even overfit one latent; its flow-matching loss stays near the bound (n - d) / n of the normalized loss.

One real latent (an EfficientNet-Lite0 latent of a Fashion-MNIST image, normalized per position and channel),
LightningDiT blocks of widths below, at and above n, trained with the same steps; final loss on fresh noise.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.diffusion.flow import TimeDistribution, flow_matching_loss
from raedit.encoders import build_encoder
from raedit.experiments.results import write_results
from raedit.models import DiTConfig, LightningDiT

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    """Small enough for 2 CPU cores; `widths` are the model widths d compared with the token dimension n."""

    encoder: str = "effnet-lite0"
    input_size: int = 64  # -> 4 x 4 tokens of 112 channels
    widths: list[int] = field(default_factory=lambda: [32, 64, 96, 112, 128, 192])
    depth: int = 1
    head_dim: int = 16
    steps: int = 600
    batch_size: int = 128
    lr: float = 5e-3
    eval_batch: int = 4096
    seed: int = 0


def one_real_latent(settings: Settings) -> torch.Tensor:
    """C x h x w: one Fashion-MNIST training image's tokens, normalized over the first 512 training images."""
    encoder = build_encoder(settings.encoder, input_size=settings.input_size)
    images, _ = load_fashion_mnist("train")
    latents = encoder.encode_latents(to_rgb(images[:512], 32))
    normalized = (latents - latents.mean(0)) / latents.std(0).clamp_min(1e-6)
    return normalized[0]


def overfit(latent: torch.Tensor, width: int, settings: Settings) -> list[float]:
    """Train a LightningDiT of `width` on the one latent; returns the loss curve and, last, the final loss."""
    torch.manual_seed(settings.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the width rule's warning is what this experiment measures
        model = LightningDiT(DiTConfig(tuple(latent.shape), depth=settings.depth, width=width,
                                       num_heads=max(1, width // settings.head_dim), num_classes=1,
                                       class_dropout_prob=0.0))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    times = TimeDistribution("uniform")
    generator = torch.Generator().manual_seed(settings.seed + 1)
    batch = latent.expand(settings.batch_size, -1, -1, -1)
    labels = torch.zeros(settings.batch_size, dtype=torch.long)
    curve = []
    for _ in range(settings.steps):
        loss = flow_matching_loss(model, batch, labels, times, alpha=1.0, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
    with torch.no_grad():
        final = flow_matching_loss(model, latent.expand(settings.eval_batch, -1, -1, -1),
                                   torch.zeros(settings.eval_batch, dtype=torch.long), times, 1.0,
                                   torch.Generator().manual_seed(settings.seed + 2)).item()
    return curve + [final]


def run(out: Path, settings: Settings) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = time.time()
    latent = one_real_latent(settings)
    n = latent.shape[0]
    rows, curves = [], {}
    for width in settings.widths:
        curve = overfit(latent, width, settings)
        curves[width] = curve[:-1]
        bound = max(0.0, (n - width) / n)
        rows.append([width, n, round(bound, 4), round(curve[-1], 4)])
        logger.info("width %d: final loss %.4f, bound %.4f", width, curve[-1], bound)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    widths = [row[0] for row in rows]
    left.plot(widths, [row[3] for row in rows], "o-", label="final loss (measured)")
    left.plot(widths, [row[2] for row in rows], "k--", label="bound (n - d) / n")
    left.axvline(n, color="gray", lw=0.8)
    left.set(xlabel="model width d", ylabel="flow-matching loss", title=f"one latent, token dim n = {n}")
    left.legend()
    for width, curve in curves.items():
        right.plot(curve, label=f"d = {width}")
    right.set(xlabel="step", ylabel="training loss", yscale="log", title="training curves")
    right.legend(fontsize=8)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "width.png", dpi=110)
    plt.close(figure)
    summary = (f"Single-latent overfitting (Sec. 4.1): LightningDiT, depth {settings.depth}, "
               f"{settings.steps} Adam steps, batch {settings.batch_size}, on one normalized "
               f"{settings.encoder} latent of shape {tuple(latent.shape)} (token dimension n = {n}). "
               "Widths below n stay near the bound (n - d) / n; widths at or above n go far below it.")
    write_results(out, "width", "Width rule: loss against the bound (n - d) / n", summary,
                  ["width d", "token dim n", "bound (n-d)/n", "final loss"], rows, started)
    return {"rows": rows}
