"""The latent cache as a data set: raw encoder latents in safetensors shards with a JSON manifest.

`raedit cache-latents` (`raedit.jobs.cache_latents`) writes it: shard k holds the data set's items
[k * shard_size, (k + 1) * shard_size) (and, with `hflip`, their mirror images), and `manifest.json`, written last,
lists the shards; a cache without one is incomplete.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from raedit.core.errors import RaeditError

MANIFEST = "manifest.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.safetensors"


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
