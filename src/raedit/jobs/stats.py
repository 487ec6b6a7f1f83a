"""`raedit stats`: latent statistics of an encoder over a data set (each rank a shard), or of a latent cache.

The statistics go to a file (`out`) and, with `rae=DIR`, into the saved RAE of that latent space, their one owner
(`raedit.autoencoder.store_latent_stats`): stage 2 and sampling read them from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from raedit.autoencoder import AutoencoderConfig, store_latent_stats
from raedit.core.config import Rule, at_least
from raedit.core.distributed import init_distributed
from raedit.core.errors import RaeditError
from raedit.data import DataConfig, build_dataset
from raedit.data.image_folder import SkippedImages, collate_skipping
from raedit.data.latent_cache import LatentCache
from raedit.latent_stats import RunningMoments, save_latent_stats

logger = logging.getLogger(__name__)


@dataclass
class StatsConfig:
    """Which encoder's latents, over which data, written where."""

    VALID: ClassVar[dict[str, Rule]] = {"batch_size": at_least(1), "num_workers": at_least(0)}

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 64
    num_workers: int = 0
    out: str | None = "runs/stats/stats.safetensors"  # a statistics file; null: none
    rae: str | None = None  # a saved RAE of this encoder to store the statistics in


def compute_latent_stats(config: StatsConfig) -> RunningMoments:
    """Mean and variance per position and channel of the raw latents over `config.data`; rank 0 writes them.

    Runs under torchrun too: each rank encodes every world_size-th image and the moments are merged exactly.
    """
    if config.out is None and config.rae is None:
        raise RaeditError("nowhere to write the statistics: give out=FILE, rae=DIR, or both")
    context = init_distributed()
    encoder = config.autoencoder.build_encoder().to(context.device)
    dataset = build_dataset(config.data)
    shard = Subset(dataset, range(context.rank, len(dataset), context.world_size))
    loader = DataLoader(shard, batch_size=config.batch_size, num_workers=config.num_workers,
                        collate_fn=collate_skipping)
    moments = RunningMoments((encoder.channels, *encoder.grid))
    batches = tqdm(SkippedImages(loader), total=len(loader), desc="latent stats", disable=not context.is_main)
    for images, _ in batches:
        moments.update(encoder.encode_latents(images.to(context.device)))
    moments.all_reduce()
    if context.is_main:
        if config.out is not None:
            save_latent_stats(config.out, moments.mean, moments.variance, config.autoencoder.latent_space,
                              moments.count)
            logger.info("latent statistics of %d images written to %s", moments.count, config.out)
        if config.rae is not None:
            store_latent_stats(config.rae, moments.mean, moments.variance, config.autoencoder.latent_space)
            logger.info("latent statistics of %d images stored in the RAE %s", moments.count, config.rae)
    return moments


def latent_stats_from_cache(cache_dir: str | Path) -> RunningMoments:
    """Mean and variance per position and channel of every latent a finished cache stores, mirror images
    included (for a cache without them, what `compute_latent_stats` gives for the cached images, without encoding
    them again)."""
    cache = LatentCache(cache_dir)
    moments = RunningMoments(cache.latent_shape)
    for latents in cache.stored_latents():
        moments.update(latents)
    return moments
