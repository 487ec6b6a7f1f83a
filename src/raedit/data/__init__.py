"""Data sets: ImageFolder (ImageNet layout), built-in Fashion-MNIST, transforms, and a factory by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch.utils.data import Dataset

from raedit.core.config import Rule, at_least, one_of
from raedit.core.errors import RaeditError
from raedit.data.fashion_mnist import FashionMNIST
from raedit.data.image_folder import ImageFolder
from raedit.data.transforms import ImageTransform

__all__ = ["DataConfig", "FashionMNIST", "ImageFolder", "ImageTransform", "build_dataset"]


@dataclass
class DataConfig:
    """Which images to read: `fashion-mnist` (built-in) or a folder path in the ImageNet layout."""

    VALID: ClassVar[dict[str, Rule]] = {
        "name": one_of(("fashion-mnist", "folder")), "resolution": at_least(1), "crop": one_of(("center", "random")),
        "resize": at_least(1), "limit": at_least(1)}

    name: str = "fashion-mnist"  # "fashion-mnist" or "folder"
    path: str | None = None  # the folder (for "folder"), or the IDX folder for fashion-mnist (None: Debian's)
    split: str = "train"  # fashion-mnist: train | test
    resolution: int = 32
    crop: str = "center"  # folder: center | random
    resize: int = 384  # folder: short side before a random crop
    hflip: bool = False
    limit: int | None = None  # fashion-mnist: only the first `limit` images


def build_dataset(config: DataConfig) -> Dataset:
    if config.name == "fashion-mnist":
        return FashionMNIST(config.split, config.resolution, config.path, config.limit, config.hflip)
    if config.name == "folder":
        if not config.path:
            raise RaeditError("data.name=folder needs data.path, the image folder")
        transform = ImageTransform(config.resolution, config.crop, config.resize, config.hflip)
        return ImageFolder(config.path, transform)
    raise RaeditError(f"unknown data set '{config.name}'; use 'fashion-mnist' or 'folder'")
