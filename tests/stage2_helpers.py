"""Tiny stage-2 setups for the tests: an EffNet-Lite0 RAE at 32 px (latents 112 x 2 x 2), a latent cache of a
few Fashion-MNIST images, their statistics, and a small DiT^DH."""

from __future__ import annotations

from pathlib import Path

import torch

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.config import load_config
from raedit.data.latent_cache import CacheConfig, LatentCache, cache_latents
from raedit.stats import save_latent_stats

TINY_MODEL = ["model.name=ditdh-s", "model.num_classes=10", "model.depth=1", "model.width=64",
              "model.num_heads=2", "model.head_depth=1", "model.head_width=128", "model.head_num_heads=2"]


def cache_config(out: Path, count: int, **extra: str) -> CacheConfig:
    overrides = ["autoencoder.encoder=effnet-lite0", "autoencoder.encoder_input_size=32", "data.resolution=32",
                 f"data.limit={count}", "batch_size=8", "shard_size=8", f"out={out}"]
    overrides += [f"{key}={value}" for key, value in extra.items()]
    return load_config(CacheConfig, overrides=overrides)


def make_rae_dir(directory: Path, with_stats_from: Path | None = None, input_size: int = 32) -> Path:
    """Save a tiny RAE (untrained decoder) under `directory`; normalized with the cache's statistics if given.
    Input size 32 gives latents (112, 2, 2), 64 gives (112, 4, 4)."""
    torch.manual_seed(0)
    rae = RAE(AutoencoderConfig(encoder="effnet-lite0", encoder_input_size=input_size, decoder_size="tiny",
                                decoder_patch_size=16))
    if with_stats_from is not None:
        rae.set_stats(*cache_stats(with_stats_from))
    rae.save_pretrained(directory)
    return directory


def cache_stats(cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    cache = LatentCache(cache_dir)
    latents = torch.stack([cache[i][0] for i in range(len(cache))])
    return latents.mean(0), latents.var(0, unbiased=False)


def make_setup(root: Path, count: int = 64) -> dict[str, Path]:
    """A latent cache, a statistics file and an RAE without statistics, under `root`."""
    cache = root / "latents"
    cache_latents(cache_config(cache, count))
    stats = root / "stats.safetensors"
    mean, var = cache_stats(cache)
    save_latent_stats(stats, mean, var, "effnet-lite0", count)
    return {"cache": cache, "stats": stats, "rae": make_rae_dir(root / "rae")}
