"""Image transforms on PIL images: ADM center crop, resize + random crop, horizontal flip, to tensor."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from raedit.core.errors import RaeditError


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> float 3 x H x W in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`: box-halving while at least twice too big, then bicubic (as ADM)."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    return image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM center crop: resize the short side to `size`, then crop the central `size` x `size`."""
    image = resize_short_side(image, size)
    left = (image.size[0] - size) // 2
    top = (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def random_crop(image: Image.Image, resize: int, size: int, rng: random.Random) -> Image.Image:
    """Resize the short side to `resize` (e.g. 384), then crop `size` (e.g. 256) at a random place."""
    image = resize_short_side(image, resize)
    left = rng.randint(0, image.size[0] - size)
    top = rng.randint(0, image.size[1] - size)
    return image.crop((left, top, left + size, top + size))


@dataclass
class ImageTransform:
    """The training/evaluation pipeline: `center` crop, or `random` crop after resizing to `resize`; flips."""

    size: int = 256
    crop: str = "center"  # "center" | "random"
    resize: int = 384  # short side before a random crop
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.crop not in ("center", "random"):
            raise RaeditError(f"unknown crop '{self.crop}'; use 'center' or 'random'")

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        rng = rng or random
        if self.crop == "center":
            image = center_crop(image, self.size)
        else:
            image = random_crop(image, max(self.resize, self.size), self.size, rng)
        if self.hflip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(image)
