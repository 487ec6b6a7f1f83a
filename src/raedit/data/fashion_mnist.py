"""Fashion-MNIST, the offline default data set: the IDX files of the Debian package `dataset-fashion-mnist`."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from raedit.core.errors import RaeditError

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _debian_dirs() -> list[Path]:
    """Folders holding the package's IDX files, as `dpkg -L` lists them (none when dpkg is absent)."""
    if shutil.which("dpkg") is None:
        return []
    listing = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, check=False)
    return sorted({Path(line).parent for line in listing.stdout.splitlines() if "idx" in line})


def _find_file(stem: str, root: str | Path | None) -> Path:
    folders = [Path(root)] if root is not None else [DEFAULT_DIR, *_debian_dirs()]
    for folder in folders:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    where = ", ".join(str(f) for f in folders)
    raise RaeditError(
        f"Fashion-MNIST file {stem}[.gz] not found in {where}; "
        f"install it with `apt-get install {DEBIAN_PACKAGE}` or give the folder holding the IDX files"
    )


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < header_bytes:
        raise RaeditError(f"{path} is too short to be an IDX file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes)


@lru_cache(maxsize=4)
def load_fashion_mnist(split: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 28 x 28, int64 labels N) of the `train` (60k) or `test` (10k) split."""
    if split not in _FILES:
        raise RaeditError(f"unknown Fashion-MNIST split '{split}'; use 'train' or 'test'")
    images_stem, labels_stem = _FILES[split]
    images = _read_idx(_find_file(images_stem, root), header_bytes=16)
    labels = _read_idx(_find_file(labels_stem, root), header_bytes=8).astype(np.int64)
    if images.size != labels.size * 28 * 28:
        raise RaeditError(f"Fashion-MNIST {split}: {images.size} pixels do not match {labels.size} labels")
    images = images.reshape(-1, 28, 28)
    images.flags.writeable = False
    return images, labels


def to_rgb(images: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 N x 28 x 28 grayscale -> float N x 3 x R x R in [0, 1] (bilinear resize, gray copied to RGB)."""
    pixels = torch.tensor(np.asarray(images), dtype=torch.float32).unsqueeze(1) / 255.0
    if resolution != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False,
                               antialias=resolution < pixels.shape[-1])
    return pixels.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


class FashionMNIST(Dataset):
    """Fashion-MNIST as RGB: item i is (float 3 x R x R in [0, 1], label); 10 classes.

    `limit` keeps the first `limit` images (a fixed subset for short CPU runs).
    """

    num_classes = len(CLASS_NAMES)

    def __init__(self, split: str = "train", resolution: int = 32, root: str | None = None,
                 limit: int | None = None, hflip: bool = False) -> None:
        images, labels = load_fashion_mnist(split, root)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images, self.labels = images, labels
        self.resolution = resolution
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = to_rgb(self.images[index : index + 1], self.resolution)[0]
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, int(self.labels[index])
