"""Pixels: float images in [0, 1] <-> uint8, and image grids.

`quantize` is the one float -> uint8 conversion of raedit. Every saved image, every sample file and every image a
metric reads (FID, rFID, PSNR of saved reconstructions) goes through it, so they all describe the same pixels. A
network's output (samples, reconstructions) is truncated as the official code and the ADM suite do; an image
resized from a uint8 one (a built-in reference) is rounded, as PIL rounds the ADM reference batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from raedit.core.errors import RaeditError

ROUNDINGS = ("truncate", "nearest")


def quantize(images: torch.Tensor, rounding: str = "truncate") -> torch.Tensor:
    """Float pixels in [0, 1], any layout -> uint8 0..255 on the same device: clamped and scaled by 255, then
    truncated ("truncate": `x.mul(255).to(uint8)`, as the official RAE sampler and the ADM sampling scripts save
    images, so FIDs compare with published ones) or rounded to the nearest level ("nearest", ties to even: half a
    level brighter on average). In float32 either way gives back exactly the levels of a uint8 image / 255."""
    if rounding not in ROUNDINGS:
        raise RaeditError(f"unknown rounding {rounding!r}; use one of {', '.join(ROUNDINGS)}")
    values = images.detach()
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()
    scaled = values.clamp(0, 1) * 255
    return (scaled.round() if rounding == "nearest" else scaled).to(torch.uint8)


def to_uint8_hwc(images: torch.Tensor, rounding: str = "truncate") -> np.ndarray:
    """(B, C, H, W) float in [0, 1] -> (B, H, W, C) uint8 on the CPU: the layout of ADM sample files."""
    return quantize(images, rounding).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8_hwc(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in [0, 1] on `device`."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return pixels.to(device).permute(0, 3, 1, 2).float() / 255.0


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Tile `images` (B, C, H, W) in [0, 1], C in {1, 3}, into one PNG of `nrow` columns (default: about sqrt(B));
    padding pixels are black."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1|3, H, W), got {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(batch)))
    ncol = math.ceil(batch / nrow)
    pixels = to_uint8_hwc(images)
    grid = np.zeros((ncol * (height + padding) + padding, nrow * (width + padding) + padding, channels), np.uint8)
    for index in range(batch):
        row, column = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)
    return path
