"""DINOv2 with registers (ViT-S/B/L, patch 14) as the RAE encoder (Sec. 3; recipe: DINOv2-B at 224 px)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2WithRegistersModel

from raedit.encoders import EncoderSpec
from raedit.encoders.base import Encoder
from raedit.encoders.hub import load_pretrained, reject_options
from raedit.errors import RaeditError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Dinov2Encoder(Encoder):
    """`facebook/dinov2-with-registers-*`: 224 px bicubic input, ImageNet mean/std, 16 x 16 patch tokens.

    The CLS token and the register tokens are dropped, and the final LayerNorm is applied without its affine
    weight and bias, so every token has zero mean and unit variance over channels (Sec. 3, as the official release).
    The model's own final LayerNorm is replaced by an identity so `last_hidden_state` is the last block's output.
    """

    def __init__(self, spec: EncoderSpec, model: Dinov2WithRegistersModel, input_size: int | None = None) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        self.name = spec.name
        self.input_size = input_size or spec.input_size
        if self.input_size % spec.patch_size:
            raise RaeditError(f"{spec.name}: input_size must be a multiple of the patch size {spec.patch_size}, "
                              f"got {self.input_size}")
        self.patch_size = spec.patch_size
        self.channels = model.config.hidden_size
        self.num_prefix_tokens = 1 + model.config.num_register_tokens  # CLS, then the registers
        self.final_norm_eps = model.config.layer_norm_eps
        model.layernorm = nn.Identity()  # last_hidden_state is then the last block's output; see forward_tokens
        self.model = model

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, input_size: int | None = None,
                     **options: Any) -> "Dinov2Encoder":
        """Load from a hub id or a local directory (see `raedit.encoders.hub.load_pretrained`).

        `input_size` other than 224 interpolates the position embeddings: 448 gives the 32 x 32 tokens of the
        official 512 px model."""
        reject_options(spec, options)
        return cls(spec, load_pretrained(Dinov2WithRegistersModel, spec, source), input_size)

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized B x 3 x 224 x 224 -> B x 256 x C patch tokens, LayerNorm without affine."""
        hidden = self.model(pixel_values=normalized).last_hidden_state
        patch_tokens = hidden[:, self.num_prefix_tokens:]
        # Sec. 3 (encoder E), as the official release: the final LayerNorm without its affine weight and bias
        return F.layer_norm(patch_tokens, (self.channels,), eps=self.final_norm_eps)
