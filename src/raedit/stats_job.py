"""`raedit stats`: latent statistics of an autoencoder's encoder over a data set, each rank a shard."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from raedit.autoencoder import AutoencoderConfig
from raedit.data import DataConfig, build_dataset
from raedit.data.image_folder import SkippedImages, collate_skipping
from raedit.encoders import build_encoder
from raedit.stats import RunningMoments, save_latent_stats
from raedit.train.distributed import init_distributed

logger = logging.getLogger(__name__)


@dataclass
class StatsConfig:
    """Which encoder's latents, over which data, written where."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 64
    num_workers: int = 0
    out: str = "runs/stats/stats.safetensors"


def compute_latent_stats(config: StatsConfig) -> RunningMoments:
    """Mean and variance per position and channel of the raw tokens over `config.data`; rank 0 writes them.

    Runs under torchrun too: each rank encodes every world_size-th image and the moments are merged exactly.
    """
    context = init_distributed()
    settings = config.autoencoder
    kwargs = {"input_size": settings.encoder_input_size} if settings.encoder_input_size else {}
    encoder = build_encoder(settings.encoder, settings.encoder_weights, **kwargs).to(context.device)
    dataset = build_dataset(config.data)
    shard = Subset(dataset, range(context.rank, len(dataset), context.world_size))
    loader = DataLoader(shard, batch_size=config.batch_size, num_workers=config.num_workers,
                        collate_fn=collate_skipping)
    h, w = encoder.grid
    moments = RunningMoments((encoder.channels, h, w))
    batches = tqdm(SkippedImages(loader), total=len(loader), desc="latent stats", disable=not context.is_main)
    for images, _ in batches:
        tokens = encoder.encode(images.to(context.device))
        moments.update(tokens.transpose(1, 2).reshape(-1, encoder.channels, h, w))
    moments.all_reduce()
    if context.is_main:
        save_latent_stats(config.out, moments.mean, moments.variance, settings.encoder, moments.count)
        logger.info("latent statistics of %d images written to %s", moments.count, config.out)
    return moments
