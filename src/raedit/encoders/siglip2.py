"""SigLIP2 ViT-B/16 at 256 px (fixed resolution) as the RAE encoder (Sec. 3)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import SiglipVisionModel
from transformers.utils import ModelOutput

from raedit.encoders.base import TransformersViTEncoder
from raedit.encoders.hub import load_pretrained, reject_options
from raedit.encoders.spec import EncoderSpec


class Siglip2Encoder(TransformersViTEncoder):
    """`google/siglip2-base-patch16-256`: 256 px input, mean/std 0.5, 16 x 16 patch tokens (SigLIP has no CLS).

    The fixed-resolution SigLIP2 checkpoints are stored as `model_type: siglip` (the NaFlex ones as `siglip2`),
    so the vision tower loads as transformers' `SiglipVisionModel`, without the text tower.

    Output: the last block's tokens through `post_layernorm` without its affine weight and bias. The official
    release does the same (it removes the affine of `post_layernorm` and takes `last_hidden_state`); we chose it
    to match the released decoders and latent statistics, and because every token then has zero mean and unit
    variance over channels, as for DINOv2 and MAE. The MAP pooling head is unused, so it is not built
    (`vision_use_head=False`). The model's `post_layernorm` is replaced by an identity and the non-affine norm is
    applied in `forward_tokens`. `layers` / `layer_combine`: RAEv2's multi-layer latent (`TransformersViTEncoder`).
    """

    def __init__(self, spec: EncoderSpec, model: SiglipVisionModel, layers: list[int] | None = None,
                 layer_combine: str = "mean") -> None:
        super().__init__(spec, model, "post_layernorm", layers=layers, layer_combine=layer_combine)

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, layers: list[int] | None = None,
                     layer_combine: str = "mean", **options: Any) -> "Siglip2Encoder":
        """Load from a hub id or a local directory (see `raedit.encoders.hub.load_pretrained`)."""
        reject_options(spec, options)
        return cls(spec, load_pretrained(SiglipVisionModel, spec, source, vision_use_head=False), layers,
                   layer_combine)

    def run_model(self, normalized: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Normalized B x 3 x 256 x 256 -> B x 256 x C patch tokens (no CLS)."""
        return self.model(pixel_values=normalized, interpolate_pos_encoding=True, **kwargs)
