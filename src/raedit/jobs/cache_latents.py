"""`raedit cache-latents`: encode a data set once into the latent cache (`raedit.data.latent_cache`).

Rank r of a torchrun job writes the shards k with k % world_size == r, each atomically, so ranks never write the
same file, and a killed run resumes by skipping the shards already on disk, with any number of processes. Rank 0
writes the manifest last. A cache directory holds one cache: `cache_config.json`, written first, says what its
shards hold, and a run whose settings would give other shards is refused instead of mixing them in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from raedit.autoencoder import AutoencoderConfig
from raedit.core.config import Rule, at_least, check_values, one_of
from raedit.core.distributed import barrier, init_distributed
from raedit.core.errors import RaeditError
from raedit.core.files import read_json, save_tensors, write_json
from raedit.data import DataConfig, build_dataset
from raedit.data.latent_cache import DTYPES, MANIFEST, shard_path

logger = logging.getLogger(__name__)

DESCRIPTION = "cache_config.json"  # the settings that decide what the shards hold
CONTENT_KEYS = ("data", "shard_size", "hflip", "dtype")  # with the encoder: what decides the shards' content


@dataclass
class CacheConfig:
    """`raedit cache-latents`: which encoder, which data, where, in what shards."""

    VALID: ClassVar[dict[str, Rule]] = {"shard_size": at_least(1), "batch_size": at_least(1),
                                        "num_workers": at_least(0), "dtype": one_of(DTYPES)}

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/latents"
    shard_size: int = 1024
    batch_size: int = 64
    num_workers: int = 0
    hflip: bool = False  # also store the latents of each image flipped left-right
    dtype: str = "float32"


def cache_latents(config: CacheConfig) -> Path:
    """Encode `config.data` into shards under `config.out`; returns the manifest path (written by rank 0)."""
    check_values(config)
    context = init_distributed()
    encoder = config.autoencoder.build_encoder().to(context.device)
    dataset = build_dataset(config.data)
    directory = Path(config.out)
    claim_cache_directory(directory, config, context.is_main)
    num_shards = -(-len(dataset) // config.shard_size)
    mine = [k for k in range(context.rank, num_shards, context.world_size)]
    todo = [k for k in mine if not shard_path(directory, k).is_file()]
    if len(todo) < len(mine):
        logger.info("resuming: %d of this rank's %d shards are already on disk", len(mine) - len(todo), len(mine))
    for k in tqdm(todo, desc="caching latents", disable=not context.is_main):
        indices = range(k * config.shard_size, min((k + 1) * config.shard_size, len(dataset)))
        loader = DataLoader(_Indexed(Subset(dataset, indices), indices), batch_size=config.batch_size,
                            num_workers=config.num_workers, collate_fn=_collate_indexed)
        parts: dict[str, list[torch.Tensor]] = {"latents": [], "labels": [], "indices": [], "flipped": []}
        for images, labels, item_indices in _batches(loader):
            images = images.to(context.device)
            for flipped in ([False, True] if config.hflip else [False]):
                latents = encoder.encode_latents(images.flip(-1) if flipped else images)
                parts["latents"].append(latents.to("cpu", DTYPES[config.dtype]))
                parts["labels"].append(labels)
                parts["indices"].append(item_indices)
                parts["flipped"].append(torch.full((len(images),), flipped, dtype=torch.bool))
        save_tensors(shard_path(directory, k),
                     {name: torch.cat(values) if values else torch.empty(0) for name, values in parts.items()})
    barrier()
    manifest = directory / MANIFEST
    if context.is_main:
        shards = []
        for k in range(num_shards):
            with safe_open(str(shard_path(directory, k)), "pt") as handle:
                shards.append({"file": shard_path(directory, k).name, "count": handle.get_slice("labels").get_shape()[0]})
        description = {
            "encoder": config.autoencoder.latent_space, "latent_shape": [encoder.channels, *encoder.grid],
            "dtype": config.dtype, "hflip": config.hflip, "data": asdict(config.data), "shards": shards,
            "count": sum(s["count"] for s in shards), "num_classes": _num_classes(dataset),
        }
        write_json(manifest, description)
        logger.info("cached %d latents in %d shards under %s", description["count"], num_shards, directory)
    barrier()
    return manifest


def claim_cache_directory(directory: Path, config: CacheConfig, is_main: bool) -> None:
    """Make `directory` this cache's (on every rank; rank 0 writes): refuse one that holds another cache's shards,
    or shards of unknown origin, before anything is written."""
    encoder = config.autoencoder
    content = json.loads(json.dumps({  # as the description file holds it
        "encoder": [encoder.encoder, encoder.encoder_weights, encoder.encoder_input_size]
        + ([encoder.encoder_layers, encoder.encoder_layer_combine] if encoder.encoder_layers is not None else []),
        **{key: value for key, value in asdict(config).items() if key in CONTENT_KEYS}}))
    description = directory / DESCRIPTION
    if description.is_file():
        held = read_json(description, "latent cache description")
        different = sorted(key for key in set(held) | set(content) if held.get(key) != content.get(key))
        if different:
            raise RaeditError(f"{directory} holds a latent cache of other settings (they differ in "
                              f"{', '.join(different)}): choose another out, or delete it")
    elif (directory / MANIFEST).is_file() or any(directory.glob("shard-*.safetensors")):
        logger.warning("%s was started by an earlier raedit (no %s): continuing it without checking its settings",
                       directory, DESCRIPTION)
    elif directory.is_dir() and any(directory.iterdir()):
        raise RaeditError(f"{directory} holds files but no {DESCRIPTION} (not a latent cache): choose another out, "
                          f"or delete it")
    barrier()
    if is_main and not description.is_file():
        write_json(description, content)
    barrier()


def _num_classes(dataset: Dataset) -> int:
    if hasattr(dataset, "num_classes"):
        return int(dataset.num_classes)
    return len(getattr(dataset, "classes", [0]))


class _Indexed(Dataset):
    """Items of `subset` with their index in the full data set attached."""

    def __init__(self, subset: Subset, indices: range) -> None:
        self.subset, self.indices = subset, indices

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, position: int):
        item = self.subset[position]
        return None if item is None else (*item, self.indices[position])


def _collate_indexed(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(images, labels, data set indices) of the readable items, and how many were unreadable."""
    kept = [item for item in items if item is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), len(items)
    images = torch.stack([image for image, _, _ in kept])
    labels = torch.tensor([label for _, label, _ in kept], dtype=torch.long)
    indices = torch.tensor([index for _, _, index in kept], dtype=torch.long)
    return images, labels, indices, len(items) - len(kept)


def _batches(loader: DataLoader):
    """(images, labels, indices) of the readable items; one warning with the count of unreadable ones."""
    skipped = 0
    for images, labels, indices, dropped in loader:
        skipped += dropped
        if len(labels):
            yield images, labels, indices
    if skipped:
        logger.warning("skipped %d unreadable or corrupted images while caching", skipped)
