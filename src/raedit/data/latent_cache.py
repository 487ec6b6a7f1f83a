"""The latent cache as a data set: raw encoder latents in safetensors shards with a JSON manifest.

`raedit cache-latents` (`raedit.jobs.cache_latents`) writes it: shard k holds the data set's items
[k * shard_size, (k + 1) * shard_size) (and, with `hflip`, their mirror images), and `manifest.json`, written last,
lists the shards; a cache without one is incomplete.

An item is an image, flipped or not: a cache with mirror images has as many items as images, and each pass
(`set_epoch`) draws one of the two versions of every image, as the official training's random horizontal flip
does on the fly. So an epoch is one pass over the images, whatever the cache holds, and an "800 epoch" recipe
means 800 passes over ImageNet.

`ImagesWithLatents` pairs each drawn latent with its image (flipped the same way), so that stage 1 trains the
decoder on cached latents instead of running the frozen encoder on every batch.
"""

from __future__ import annotations

import bisect
import random
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import Dataset

from raedit.core.errors import RaeditError
from raedit.core.files import read_json, read_state_dict
from raedit.data import DataConfig, build_dataset

MANIFEST = "manifest.json"
SHARD_TENSORS = ("latents", "labels", "indices", "flipped")  # what `raedit cache-latents` writes in a shard
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.safetensors"


class LatentCache(Dataset):
    """A finished cache as a data set: item i is (raw latents C x h x w float32, label) of image i; with mirror
    images stored, the version (flipped or not) drawn for this pass from (seed, epoch, i)."""

    def __init__(self, directory: str | Path, max_open_shards: int = 8) -> None:
        self.directory = Path(directory)
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            raise RaeditError(f"{self.directory} is not a finished latent cache (no {MANIFEST}); "
                              "run or resume `raedit cache-latents`")
        self.manifest = read_json(manifest, "latent cache manifest")
        try:
            self.latent_shape = tuple(int(size) for size in self.manifest["latent_shape"])
            self.encoder = str(self.manifest["encoder"])
            self.num_classes = int(self.manifest["num_classes"])
            self.hflip = bool(self.manifest.get("hflip", False))
            # Images per shard: a shard with mirror images holds each of its images twice.
            counts = [int(shard["count"]) // (2 if self.hflip else 1) for shard in self.manifest["shards"]]
            self.files = [self.directory / str(shard["file"]) for shard in self.manifest["shards"]]
        except (KeyError, TypeError, ValueError) as error:
            raise RaeditError(f"{manifest} is not a latent cache manifest: {error!r}") from None
        self.epoch, self.seed = 0, 0
        self.starts = [sum(counts[:k]) for k in range(len(counts))]
        self.length = sum(counts)
        self.max_open_shards = max_open_shards
        self._open: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Draw this pass's versions of the images (with mirror images; otherwise nothing changes)."""
        self.epoch, self.seed = epoch, seed

    def stored_latents(self, batch_size: int = 512) -> Iterator[torch.Tensor]:
        """Every latent the cache stores (mirror images included), in batches: B x C x h x w float32."""
        for k in range(len(self.files)):
            latents = self._read_shard(k)["latents"]
            for start in range(0, len(latents), batch_size):
                yield latents[start:start + batch_size].float()

    def _shard(self, k: int) -> dict[str, torch.Tensor]:
        if k not in self._open:
            self._open[k] = self._read_shard(k)
            if self.hflip:
                self._open[k]["versions"] = _versions(self._open[k], self.files[k])
            if len(self._open) > self.max_open_shards:
                self._open.popitem(last=False)
        self._open.move_to_end(k)
        return self._open[k]

    def _read_shard(self, k: int) -> dict[str, torch.Tensor]:
        """Shard k's tensors, checked: its latents finite floats of the cache's shape, one label (and, with mirror
        images, one index and flag) each, as many as the manifest says; else a `RaeditError` naming the file."""
        path = self.files[k]
        tensors = read_state_dict(path, "latent cache shard")
        names = SHARD_TENSORS if self.hflip or "indices" in tensors else SHARD_TENSORS[:2]
        missing = [name for name in names if name not in tensors]
        if missing:
            raise RaeditError(f"{path} lacks {missing[0]!r}: re-create the shard (delete it and resume caching)")
        unexpected = sorted(set(tensors) - set(SHARD_TENSORS))
        if unexpected:
            raise RaeditError(f"{path} holds an unexpected {unexpected[0]!r}: not a shard of this cache")
        latents, count = tensors["latents"], int(self.manifest["shards"][k]["count"])
        if count == 0:  # every image of the shard was unreadable
            return {name: torch.empty(0, *self.latent_shape) if name == "latents" else tensors[name] for name in names}
        if tuple(latents.shape) != (count, *self.latent_shape) or not latents.is_floating_point():
            raise RaeditError(f"{path} holds {latents.dtype} latents of shape {tuple(latents.shape)}, the manifest "
                              f"{count} x {self.latent_shape}: re-create the shard")
        if any(tuple(tensors[name].shape) != (count,) for name in names[1:]):
            raise RaeditError(f"{path}: its labels or indices don't number its {count} latents; re-create the shard")
        if not all(bool(torch.isfinite(chunk).all()) for chunk in latents.split(512)):
            raise RaeditError(f"{path} holds NaN or inf latents: re-create the shard")
        return {name: tensors[name] for name in names}

    def _locate(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        """The shard of item `index` and the position of this pass's version of it there."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        k = bisect.bisect_right(self.starts, index) - 1
        shard = self._shard(k)
        offset = index - self.starts[k]
        if self.hflip:
            flipped = random.Random((self.seed << 80) + (self.epoch << 40) + index).random() < 0.5
            offset = int(shard["versions"][offset, int(flipped)])
        return shard, offset

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        shard, offset = self._locate(index)
        return shard["latents"][offset].float(), int(shard["labels"][offset])

    def source_of(self, index: int) -> tuple[int, bool]:
        """(index in the cached data set, flipped) of this pass's version of item `index`."""
        shard, offset = self._locate(index)
        if "indices" not in shard:
            raise RaeditError(f"{self.directory} was written without image indices (an earlier raedit): "
                              "re-create it to pair its latents with their images")
        flipped = bool(shard["flipped"][offset]) if "flipped" in shard else False
        return int(shard["indices"][offset]), flipped


class ImagesWithLatents(Dataset):
    """Item i: (image, raw cached latents C x h x w, label) of the cache's item i, the image flipped like the
    version of its latents drawn for this pass. `data` must be the data the cache was made of (checked against
    its manifest), read without random transforms, so the image is exactly the one that was encoded."""

    def __init__(self, cache: LatentCache, data: DataConfig) -> None:
        if data.hflip or (data.name == "folder" and data.crop == "random"):
            raise RaeditError("a latent cache paired with its images needs deterministic images (data.hflip false, "
                              "data.crop center): the cache itself stores the mirror images")
        cached_data = cache.manifest.get("data")
        if cached_data != asdict(data):
            different = sorted(key for key in asdict(data) if (cached_data or {}).get(key) != asdict(data)[key])
            raise RaeditError(f"the latent cache {cache.directory} was made of other data than `data` (they differ "
                              f"in {', '.join(different) or 'everything'}): cache these images, or give their data")
        self.cache, self.images = cache, build_dataset(data)

    def __len__(self) -> int:
        return len(self.cache)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        self.cache.set_epoch(epoch, seed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        latents, label = self.cache[index]
        source, flipped = self.cache.source_of(index)
        item = self.images[source]
        if item is None:
            raise RaeditError(f"image {source} of the latent cache {self.cache.directory} is no longer readable")
        image, image_label = item
        if image_label != label:
            raise RaeditError(f"image {source} has label {image_label}, its cached latents {label}: the latent "
                              f"cache {self.cache.directory} was made of other images; re-create it")
        return (image.flip(-1) if flipped else image), latents, label


def _versions(shard: dict[str, torch.Tensor], path: Path) -> torch.Tensor:
    """(images, 2): the positions of each image's latents and of its mirror image's in a shard."""
    plain, mirrored = (~shard["flipped"]).nonzero().flatten(), shard["flipped"].nonzero().flatten()
    if len(plain) != len(mirrored) or not torch.equal(shard["indices"][plain], shard["indices"][mirrored]):
        raise RaeditError(f"{path}: the mirror images don't pair up with the images; re-create the cache")
    return torch.stack([plain, mirrored], dim=1)
