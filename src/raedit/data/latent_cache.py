"""The latent cache: raw encoder latents of a data set, in safetensors shards with a JSON manifest.

Shard k holds the data set's items [k * shard_size, (k + 1) * shard_size) (and, with `hflip`, their mirror
images). Rank r writes the shards k with k % world_size == r, each atomically (temporary file, then rename), so
ranks never write the same file, and a killed run resumes by skipping the shards already on disk, with any
number of processes. Rank 0 writes `manifest.json` last: a cache without one is incomplete.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from raedit.autoencoder import AutoencoderConfig
from raedit.data import DataConfig, build_dataset
from raedit.encoders import build_encoder
from raedit.errors import RaeditError
from raedit.stats import RunningMoments, save_latent_stats
from raedit.train.distributed import barrier, init_distributed

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class CacheConfig:
    """`raedit cache-latents`: which encoder, which data, where, in what shards."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/latents"
    shard_size: int = 1024
    batch_size: int = 64
    num_workers: int = 0
    hflip: bool = False  # also store the latents of each image flipped left-right
    dtype: str = "float32"


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.safetensors"


def cache_latents(config: CacheConfig) -> Path:
    """Encode `config.data` into shards under `config.out`; returns the manifest path (written by rank 0)."""
    if config.dtype not in DTYPES:
        raise RaeditError(f"unknown cache dtype '{config.dtype}'; use one of {', '.join(DTYPES)}")
    if config.shard_size < 1:
        raise RaeditError(f"shard_size must be positive, got {config.shard_size}")
    context = init_distributed()
    settings = config.autoencoder
    kwargs = {"input_size": settings.encoder_input_size} if settings.encoder_input_size else {}
    encoder = build_encoder(settings.encoder, settings.encoder_weights, **kwargs).to(context.device)
    dataset = build_dataset(config.data)
    directory = Path(config.out)
    directory.mkdir(parents=True, exist_ok=True)
    num_shards = -(-len(dataset) // config.shard_size)
    mine = [k for k in range(context.rank, num_shards, context.world_size)]
    todo = [k for k in mine if not shard_path(directory, k).is_file()]
    if len(todo) < len(mine):
        logger.info("resuming: %d of this rank's %d shards are already on disk", len(mine) - len(todo), len(mine))
    h, w = encoder.grid
    for k in tqdm(todo, desc="caching latents", disable=not context.is_main):
        indices = range(k * config.shard_size, min((k + 1) * config.shard_size, len(dataset)))
        loader = DataLoader(_Indexed(Subset(dataset, indices), indices), batch_size=config.batch_size,
                            num_workers=config.num_workers, collate_fn=_collate_indexed)
        parts: dict[str, list[torch.Tensor]] = {"latents": [], "labels": [], "indices": [], "flipped": []}
        for images, labels, item_indices in _batches(loader):
            images = images.to(context.device)
            for flipped in ([False, True] if config.hflip else [False]):
                tokens = encoder.encode(images.flip(-1) if flipped else images)
                latents = tokens.transpose(1, 2).reshape(len(images), encoder.channels, h, w)
                parts["latents"].append(latents.to("cpu", DTYPES[config.dtype]))
                parts["labels"].append(labels)
                parts["indices"].append(item_indices)
                parts["flipped"].append(torch.full((len(images),), flipped, dtype=torch.bool))
        tensors = {name: torch.cat(values) if values else torch.empty(0) for name, values in parts.items()}
        temporary = shard_path(directory, k).with_suffix(".tmp")
        save_file({name: t.contiguous() for name, t in tensors.items()}, str(temporary))
        temporary.replace(shard_path(directory, k))
    barrier()
    manifest = directory / MANIFEST
    if context.is_main:
        shards = []
        for k in range(num_shards):
            with safe_open(str(shard_path(directory, k)), "pt") as handle:
                shards.append({"file": shard_path(directory, k).name, "count": handle.get_slice("labels").get_shape()[0]})
        description = {
            "encoder": settings.encoder, "latent_shape": [encoder.channels, h, w], "dtype": config.dtype,
            "hflip": config.hflip, "data": asdict(config.data), "shards": shards,
            "count": sum(s["count"] for s in shards), "num_classes": _num_classes(dataset),
        }
        temporary = manifest.with_suffix(".tmp")
        temporary.write_text(json.dumps(description, indent=2) + "\n")
        temporary.replace(manifest)
        logger.info("cached %d latents in %d shards under %s", description["count"], num_shards, directory)
    barrier()
    return manifest


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


class LatentCache(Dataset):
    """A finished cache as a data set: item i is (raw latents C x h x w float32, label)."""

    def __init__(self, directory: str | Path, max_open_shards: int = 8) -> None:
        self.directory = Path(directory)
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            raise RaeditError(f"{self.directory} is not a finished latent cache (no {MANIFEST}); "
                              "run or resume `raedit cache-latents`")
        self.manifest = json.loads(manifest.read_text())
        self.latent_shape = tuple(self.manifest["latent_shape"])
        self.encoder = self.manifest["encoder"]
        self.num_classes = int(self.manifest["num_classes"])
        counts = [shard["count"] for shard in self.manifest["shards"]]
        self.starts = [sum(counts[:k]) for k in range(len(counts))]
        self.length = sum(counts)
        self.max_open_shards = max_open_shards
        self._open: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def _shard(self, k: int) -> dict[str, torch.Tensor]:
        if k not in self._open:
            path = self.directory / self.manifest["shards"][k]["file"]
            with safe_open(str(path), "pt") as handle:
                self._open[k] = {name: handle.get_tensor(name) for name in ("latents", "labels")}
            if len(self._open) > self.max_open_shards:
                self._open.popitem(last=False)
        self._open.move_to_end(k)
        return self._open[k]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        k = bisect.bisect_right(self.starts, index) - 1
        shard = self._shard(k)
        offset = index - self.starts[k]
        return shard["latents"][offset].float(), int(shard["labels"][offset])


def latent_stats_from_cache(cache_dir: Path, out_file: Path) -> int:
    """Per position and channel mean and variance of a finished latent cache (what `raedit stats` computes
    from images, without encoding them again)."""
    cache = LatentCache(cache_dir)
    moments = RunningMoments(cache.latent_shape)
    loader = DataLoader(cache, batch_size=512)
    for latents, _ in loader:
        moments.update(latents)
    save_latent_stats(out_file, moments.mean, moments.variance, cache.encoder, moments.count)
    return moments.count
