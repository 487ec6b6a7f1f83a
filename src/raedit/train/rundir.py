"""A run directory: the resolved config, checkpoints/, logs/ and images/ of one training run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class RunDir:
    """Paths of one run: `root/config.yaml`, `root/checkpoints/`, `root/logs/`, `root/images/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def create(self, config_yaml: str) -> None:
        """Make the folders and write the resolved config (call on rank 0)."""
        for folder in (self.checkpoints, self.logs, self.images):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_yaml)

    def image_path(self, tag: str, step: int) -> Path:
        return self.images / f"{tag}-step{step:08d}.png"


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    padding: int = 2,
) -> Path:
    """Tile `images` (B, C, H, W), C in {1, 3}, into one PNG of `nrow` columns (default: about sqrt(B)).

    Values are mapped from `value_range` to 0..255 and clipped; padding pixels are black.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1|3, H, W), got {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(batch)))
    ncol = math.ceil(batch / nrow)
    low, high = value_range
    scaled = ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    pixels = (scaled * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grid = np.zeros((ncol * (height + padding) + padding, nrow * (width + padding) + padding, channels), np.uint8)
    for index in range(batch):
        row, column = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)
    return path
