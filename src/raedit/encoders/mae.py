"""MAE ViT-B/16 at 256 px, with no masking, as the RAE encoder (Sec. 3)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import ViTMAEModel
from transformers.utils import ModelOutput

from raedit.encoders.base import TransformersViTEncoder
from raedit.encoders.hub import load_pretrained, reject_options
from raedit.encoders.spec import EncoderSpec


class MaeEncoder(TransformersViTEncoder):
    """`facebook/vit-mae-base` (the encoder of the pre-training checkpoint): 256 px input, ImageNet mean/std.

    The 14 x 14 position embeddings (224 px) are interpolated to 16 x 16. Masking is off (ratio 0) and tokens keep
    their raster order: transformers' ViTMAE shuffles tokens by `argsort(noise)` even at ratio 0, so a fixed noise
    `0, 1, ..., N-1` is passed (identity permutation). The CLS token is dropped and the final LayerNorm is applied
    without its affine weight and bias, as in the official release (the model's own final LayerNorm is replaced by
    an identity and the non-affine norm is applied in `forward_tokens`). `layers` / `layer_combine`: RAEv2's
    multi-layer latent (`TransformersViTEncoder`).
    """

    num_prefix_tokens = 1  # CLS

    def __init__(self, spec: EncoderSpec, model: ViTMAEModel, layers: list[int] | None = None,
                 layer_combine: str = "mean") -> None:
        super().__init__(spec, model, "layernorm", layers=layers, layer_combine=layer_combine)

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, layers: list[int] | None = None,
                     layer_combine: str = "mean", **options: Any) -> "MaeEncoder":
        """Load from a hub id or a local directory (see `raedit.encoders.hub.load_pretrained`)."""
        reject_options(spec, options)
        return cls(spec, load_pretrained(ViTMAEModel, spec, source, mask_ratio=0.0), layers, layer_combine)

    def run_model(self, normalized: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Normalized B x 3 x 256 x 256 -> B x (1 + 256) x C tokens: CLS, then the patches in raster order."""
        batch = normalized.shape[0]
        raster_order = torch.arange(self.num_tokens, device=normalized.device, dtype=torch.float32)  # exact in fp32
        return self.model(pixel_values=normalized, noise=raster_order.expand(batch, -1), interpolate_pos_encoding=True,
                          **kwargs)
