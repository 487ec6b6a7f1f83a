"""Pixel patches as the "encoder": the pixel-space diffusion baseline of the paper's Table 11.

Table 11 compares diffusion on RAE latents with diffusion on pixels of the same dimensionality: `pixels-p16`
turns a 256 px image into 16 x 16 tokens of 16 x 16 x 3 = 768 values, the shape of DINOv2-B latents. The
tokens are the non-overlapping p x p patches of the image, resized to `input_size` (antialiased bicubic, as
EfficientNet-Lite; clamped to [0, 1], as a stored image would be) and normalized with mean = std = 0.5, so values
lie in [-1, 1]. Each token holds its 3 * p * p values in the order of `F.unfold`: (channel, row in patch, column
in patch). There are no weights; `raedit.decoder.PatchUnpatchify` is the exact inverse.
"""

from __future__ import annotations

import torch

from raedit.core.errors import RaeditError
from raedit.encoders.base import Encoder
from raedit.encoders.spec import HALF, NO_WEIGHTS, EncoderSpec

__all__ = ["PixelPatchEncoder"]


class PixelPatchEncoder(Encoder):
    """Normalized pixels cut into p x p patches: tokens B x (input_size / p)^2 x 3 p^2."""

    resize_mode = "bicubic"
    resize_antialias = True

    def __init__(self, name: str, input_size: int, patch_size: int) -> None:
        super().__init__(pixel_mean=HALF, pixel_std=HALF)
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0 \
                or input_size % patch_size:
            raise RaeditError(f"{name}: input_size must be a positive multiple of the patch size {patch_size}, "
                              f"got {input_size!r}")
        self.name = name
        self.input_size = input_size
        self.patch_size = patch_size
        self.channels = 3 * patch_size * patch_size

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, input_size: int | None = None) -> "PixelPatchEncoder":
        """Build `spec.name` ("pixels-p16", ...); `source` must be "none". input_size: default `spec.input_size`."""
        if source != NO_WEIGHTS:
            raise RaeditError(f"{spec.name} has no weights, got encoder weights '{source}'")
        return cls(spec.name, spec.input_size if input_size is None else input_size, spec.patch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """As `Encoder.normalize`, clamped to [-1, 1]: a resized image's bicubic overshoot is cut off."""
        return super().normalize(images).clamp(-1.0, 1.0)

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized B x 3 x H x W -> B x (H/p * W/p) x (3 p p), patches row-major, values (channel, row, col)."""
        batch, channels, height, width = normalized.shape
        p = self.patch_size
        patches = normalized.reshape(batch, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(batch, (height // p) * (width // p), channels * p * p)
