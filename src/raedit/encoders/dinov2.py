"""DINOv2 with registers (ViT-S/B/L, patch 14) as the RAE encoder (Sec. 3; recipe: DINOv2-B at 224 px)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
from transformers.utils import ModelOutput

from raedit.encoders.base import TransformersViTEncoder
from raedit.encoders.hub import load_pretrained, reject_options
from raedit.encoders.spec import EncoderSpec

# Token width -> (layers, heads) of the released DINOv2 ViT-S/B/L (MLP 4 x width, patch 14, 518 px positions).
DINOV2_DEPTH_AND_HEADS = {384: (12, 6), 768: (12, 12), 1024: (24, 16)}


class Dinov2Encoder(TransformersViTEncoder):
    """`facebook/dinov2-with-registers-*`: 224 px bicubic input, ImageNet mean/std, 16 x 16 patch tokens.

    The CLS token and the register tokens are dropped, and the final LayerNorm is applied without its affine
    weight and bias, so every token has zero mean and unit variance over channels (Sec. 3, as the official release).
    The model's own final LayerNorm is replaced by an identity so `last_hidden_state` is the last block's output.
    `layers` / `layer_combine`: RAEv2's multi-layer latent (`TransformersViTEncoder`).
    """

    def __init__(self, spec: EncoderSpec, model: Dinov2WithRegistersModel, input_size: int | None = None,
                 layers: list[int] | None = None, layer_combine: str = "mean") -> None:
        super().__init__(spec, model, "layernorm", input_size, layers, layer_combine)
        self.num_prefix_tokens = 1 + model.config.num_register_tokens  # CLS, then the registers

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, input_size: int | None = None,
                     layers: list[int] | None = None, layer_combine: str = "mean", **options: Any) -> "Dinov2Encoder":
        """Load from a hub id or a local directory (see `raedit.encoders.hub.load_pretrained`).

        `input_size` other than 224 interpolates the position embeddings: 448 gives the 32 x 32 tokens of the
        official 512 px model."""
        reject_options(spec, options)
        return cls(spec, load_pretrained(Dinov2WithRegistersModel, spec, source), input_size, layers, layer_combine)

    @classmethod
    def with_random_weights(cls, spec: EncoderSpec, input_size: int | None = None) -> "Dinov2Encoder":
        """The released architecture of `spec` (S, B or L by its width) with random weights: for measuring speed
        and counting operations without the weights."""
        layers, heads = DINOV2_DEPTH_AND_HEADS[spec.channels]
        config = Dinov2WithRegistersConfig(hidden_size=spec.channels, num_hidden_layers=layers,
                                           num_attention_heads=heads, patch_size=spec.patch_size, image_size=518,
                                           num_register_tokens=4)
        return cls(spec, Dinov2WithRegistersModel(config), input_size)

    def run_model(self, normalized: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Normalized B x 3 x 224 x 224 -> tokens B x (1 + 4 + 256) x C: CLS, registers, patches."""
        return self.model(pixel_values=normalized, **kwargs)
