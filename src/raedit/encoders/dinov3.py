"""DINOv3 (ViT-S/B/L, patch 16, LVD-1689M) as the RAE encoder: RAEv2's encoder (arXiv 2605.18324, DINOv3-L/16)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel
from transformers.utils import ModelOutput

from raedit.encoders.base import TransformersViTEncoder
from raedit.encoders.hub import load_pretrained, reject_options
from raedit.encoders.spec import EncoderSpec

# Token width -> (layers, heads) of the released DINOv3 ViT-S/B/L (MLP 4 x width, patch 16, 4 registers).
DINOV3_DEPTH_AND_HEADS = {384: (12, 6), 768: (12, 12), 1024: (24, 16)}


class Dinov3Encoder(TransformersViTEncoder):
    """`facebook/dinov3-vit{s,b,l}16-pretrain-lvd1689m`: 256 px input, ImageNet mean/std, 16 x 16 patch tokens.

    The input is resized as RAEv2 does (its `make_dinov3_transform`: torchvision `Resize` of a tensor, bilinear
    with antialiasing). The CLS token and the register tokens are dropped, and the final LayerNorm (`norm`) is
    applied without its affine weight and bias, as RAEv2 does (it swaps `norm` for a non-affine LayerNorm). The
    model's `norm` is replaced by an identity, so `last_hidden_state` is the last block's output. The position
    encoding is RoPE, so any `input_size` that is a multiple of 16 works without interpolating a table.
    `layers` / `layer_combine`: RAEv2's multi-layer latent (`TransformersViTEncoder`); its K=7 latent is
    `layers=[11, 13, 15, 17, 19, 21, 23]` of `dinov3-l` (its config `dinov3l-k7`).
    """

    resize_mode = "bilinear"
    resize_antialias = True

    def __init__(self, spec: EncoderSpec, model: DINOv3ViTModel, input_size: int | None = None,
                 layers: list[int] | None = None, layer_combine: str = "mean") -> None:
        super().__init__(spec, model, "norm", input_size, layers, layer_combine)
        self.num_prefix_tokens = 1 + model.config.num_register_tokens  # CLS, then the registers

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, input_size: int | None = None,
                     layers: list[int] | None = None, layer_combine: str = "mean", **options: Any) -> "Dinov3Encoder":
        """Load from a hub id or a local directory (see `raedit.encoders.hub.load_pretrained`)."""
        reject_options(spec, options)
        return cls(spec, load_pretrained(DINOv3ViTModel, spec, source), input_size, layers, layer_combine)

    @classmethod
    def with_random_weights(cls, spec: EncoderSpec, input_size: int | None = None) -> "Dinov3Encoder":
        """The released architecture of `spec` (S, B or L by its width) with random weights: for measuring speed
        and counting operations without the weights."""
        layers, heads = DINOV3_DEPTH_AND_HEADS[spec.channels]
        config = DINOv3ViTConfig(hidden_size=spec.channels, intermediate_size=4 * spec.channels,
                                 num_hidden_layers=layers, num_attention_heads=heads, patch_size=spec.patch_size,
                                 num_register_tokens=4)
        return cls(spec, DINOv3ViTModel(config), input_size)

    def run_model(self, normalized: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Normalized B x 3 x 256 x 256 -> tokens B x (1 + 4 + 256) x C: CLS, registers, patches."""
        return self.model(pixel_values=normalized, **kwargs)
