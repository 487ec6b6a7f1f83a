"""ImageFolder data sets (the ImageNet layout: one sub-folder per class, classes in sorted order).

An unreadable or corrupted image never stops an epoch: the data set returns None for it, `collate_skipping`
drops it, and `SkippedImages` counts the drops and warns once, with the count, at the end of a pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from raedit.core.errors import RaeditError
from raedit.data.transforms import ImageTransform

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jpeg2000", ".ppm")


class ImageFolder(Dataset):
    """Images under `root/<class>/...`; item i is (float 3 x S x S in [0, 1], class index) or None if unreadable.

    A folder with images directly in it and no class sub-folders is one class (label 0).
    """

    def __init__(self, root: str | Path, transform: ImageTransform | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RaeditError(f"image folder not found: {self.root}")
        self.transform = transform or ImageTransform()
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        if class_dirs:
            self.classes = [p.name for p in class_dirs]
            self.samples = [
                (path, index) for index, folder in enumerate(class_dirs) for path in _images_under(folder)
            ]
        else:
            self.classes = [self.root.name]
            self.samples = [(path, 0) for path in _images_under(self.root)]
        if not self.samples:
            raise RaeditError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                image.load()
                return self.transform(image), label
        except (OSError, UnidentifiedImageError, ValueError) as error:
            logger.debug("skipping unreadable image %s: %s", path, error)
            return None


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def collate_skipping(items: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the readable items; returns (images B x 3 x H x W, labels B, number of items skipped)."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([image for image, _ in kept])
    labels = torch.tensor([label for _, label in kept], dtype=torch.long)
    return images, labels, skipped


class SkippedImages:
    """Iterate a loader built with `collate_skipping`, yielding (images, labels); warn once at the end of a pass."""

    def __init__(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor, int]]) -> None:
        self.loader = loader
        self.count = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.count = 0
        for images, labels, skipped in self.loader:
            self.count += skipped
            if len(labels):
                yield images, labels
        if self.count:
            logger.warning("skipped %d unreadable or corrupted images in this pass", self.count)
