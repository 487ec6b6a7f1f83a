"""Names of the classes a class-conditional model was trained on, for people to choose from.

A model's run directory says its data set (`config.yaml`: `data.name`, and `data.path` for an image folder); a
model without one (a released checkpoint, a bare export) is named by its number of classes: 1,000 are ImageNet-1k's,
10 the offline default's (Fashion-MNIST). Otherwise the classes are numbered.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from raedit.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_NAMES

IMAGENET_CLASSES = 1000


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k classes in index order (the sorted WordNet ids of the ADM / torchvision folders),
    by their common short names (`imagenet_classes.txt`, package data)."""
    text = resources.files("raedit.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def numbered(count: int) -> list[str]:
    return [f"class {index}" for index in range(count)]


def class_names(num_classes: int, run_dir: str | Path | None = None) -> list[str]:
    """The names of classes 0..num_classes-1 of the model trained in `run_dir` (when known)."""
    data = _run_data(run_dir)
    if data.get("name") == "fashion-mnist" and num_classes == len(FASHION_MNIST_NAMES):
        return list(FASHION_MNIST_NAMES)
    if data.get("name") == "folder" and data.get("path") and Path(data["path"]).is_dir():
        folders = sorted(entry.name for entry in Path(data["path"]).iterdir() if entry.is_dir())  # as ImageFolder
        if len(folders) == num_classes:
            return list(imagenet_class_names()) if num_classes == IMAGENET_CLASSES else folders
    if num_classes == IMAGENET_CLASSES:
        return list(imagenet_class_names())
    if not data and num_classes == len(FASHION_MNIST_NAMES):
        return list(FASHION_MNIST_NAMES)
    return numbered(num_classes)


def _run_data(run_dir: str | Path | None) -> dict:
    """The `data` section of the run's config.yaml ({} when there is none)."""
    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return {}
    config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
    return config.get("data") or {}
