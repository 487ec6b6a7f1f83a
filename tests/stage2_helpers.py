"""Tiny stage-2 setups for the tests: an EffNet-Lite0 RAE at 32 px (latents 112 x 2 x 2), a latent cache of a
few Fashion-MNIST images, the RAE holding their statistics, and a small DiT^DH."""

from __future__ import annotations

from pathlib import Path

import torch

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.config import load_config
from raedit.data.latent_cache import LatentCache
from raedit.diffusion.denoiser_io import DenoiserInfo, save_denoiser
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.models import build_model, model_config

TINY_MODEL = ["model.name=ditdh-s", "model.num_classes=10", "model.depth=1", "model.width=64",
              "model.num_heads=2", "model.head_depth=1", "model.head_width=128", "model.head_num_heads=2"]


def cache_config(out: Path, count: int, **extra: str) -> CacheConfig:
    overrides = ["autoencoder.encoder=effnet-lite0", "autoencoder.encoder_input_size=32", "data.resolution=32",
                 f"data.limit={count}", "batch_size=8", "shard_size=8", f"out={out}"]
    overrides += [f"{key}={value}" for key, value in extra.items()]
    return load_config(CacheConfig, overrides=overrides)


def make_rae_dir(directory: Path, stats: tuple[torch.Tensor, torch.Tensor] | None = None, input_size: int = 32) -> Path:
    """Save a tiny RAE (untrained decoder) under `directory`, normalized with `stats` (mean, var) if given.
    Input size 32 gives latents (112, 2, 2), 64 gives (112, 4, 4)."""
    torch.manual_seed(0)
    rae = RAE(AutoencoderConfig(encoder="effnet-lite0", encoder_input_size=input_size, decoder_size="tiny",
                                decoder_patch_size=16))
    if stats is not None:
        rae.set_stats(*stats)
    rae.save_pretrained(directory)
    return directory


def cache_stats(cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    cache = LatentCache(cache_dir)
    latents = torch.stack([cache[i][0] for i in range(len(cache))])
    return latents.mean(0), latents.var(0, unbiased=False)


def make_setup(root: Path, count: int = 64) -> dict[str, Path]:
    """A latent cache and an RAE holding its statistics, under `root`."""
    cache = root / "latents"
    cache_latents(cache_config(cache, count))
    return {"cache": cache, "rae": make_rae_dir(root / "rae", stats=cache_stats(cache))}


TINY = dict(depth=1, width=64, num_heads=2, head_depth=1, head_width=128, head_num_heads=2, num_classes=10)


def save_model(directory: Path, rae: Path, latent_shape=(112, 2, 2), seed: int = 0, **changes) -> Path:
    """A tiny DiT^DH with random (non-zero) output layers, exported like a training run's model."""
    args = {**TINY, **changes}
    torch.manual_seed(seed)
    model = build_model(model_config("ditdh-s", latent_shape, **args))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
        model.y_embedder.embedding_table.weight.normal_(0, 1.0)  # classes that make a visible difference
    info = DenoiserInfo(model.config, 0.5, str(rae), "effnet-lite0")
    return save_denoiser(directory, model.state_dict(), info)
