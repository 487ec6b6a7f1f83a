"""Cheap stand-ins for the Inception extractor and an encoder, for tests of the evaluation plumbing."""

import numpy as np
import torch

from raedit.encoders.base import Encoder


class FakeInception:
    """uint8 B x H x W x 3 -> per-image colour statistics as "pool" (B x 6) and "spatial" (B x 4) features."""

    has_logits = False

    def __init__(self) -> None:
        self.images_seen = 0
        self.shapes: set[tuple[int, ...]] = set()

    def __call__(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
        pixels = torch.from_numpy(np.asarray(batch)).double() / 255
        self.images_seen += pixels.shape[0]
        self.shapes.add(tuple(pixels.shape[1:]))
        pool = torch.cat([pixels.mean(dim=(1, 2)), pixels.std(dim=(1, 2))], dim=1)
        quarter = pixels.shape[1] // 2
        spatial = torch.stack([pixels[:, :quarter, :quarter].mean((1, 2, 3)), pixels[:, quarter:, :quarter].mean((1, 2, 3)),
                               pixels[:, :quarter, quarter:].mean((1, 2, 3)), pixels[:, quarter:, quarter:].mean((1, 2, 3))], 1)
        return {"pool": pool.float(), "spatial": spatial.float()}


class PatchMeanEncoder(Encoder):
    """Tokens = 4 x 4 average-pooled pixels at 16 px: 16 tokens of 3 channels."""

    name = "patch-mean"
    input_size = 16
    patch_size = 4
    channels = 3

    def __init__(self) -> None:
        super().__init__((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.calls = 0

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        pooled = torch.nn.functional.avg_pool2d(normalized, self.patch_size)  # B x 3 x 4 x 4
        return pooled.flatten(2).transpose(1, 2)


class PooledPixelsEncoder(Encoder):
    """One token holding the 4 x 4 average-pooled 16 px image: 1 token of 48 channels."""

    name = "pooled-pixels"
    input_size = 16
    patch_size = 16
    channels = 48

    def __init__(self) -> None:
        super().__init__((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(normalized, 4).flatten(1)[:, None, :]
