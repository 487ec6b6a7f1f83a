"""Image sets to evaluate: ADM-style npz files, image folders and in-process generators, validated.

Everything becomes uint8 batches N x H x W x 3 (the ADM sample format). Problems with the input (a missing key,
a wrong dtype, shape or value range, images of mixed sizes) are `RaeditError`s that say what was found.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from raedit.core.errors import RaeditError
from raedit.core.images import to_uint8_hwc

logger = logging.getLogger(__name__)

NPZ_KEY = "arr_0"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def _check_shape(shape: tuple[int, ...], source: str) -> None:
    if len(shape) != 4 or shape[-1] != 3:
        hint = " (channels first? ADM files are N x H x W x 3)" if len(shape) == 4 and shape[1] == 3 else ""
        raise RaeditError(f"{source}: expected images of shape N x H x W x 3, got {shape}{hint}")
    if shape[0] == 0:
        raise RaeditError(f"{source}: holds no images")


def validate_images(array: np.ndarray, source: str) -> np.ndarray:
    """Check an image array and return it as uint8 N x H x W x 3.

    Accepted: uint8, or another integer dtype whose values all lie in 0..255. Float arrays are refused (their
    scale is ambiguous): convert them with `(x * 255).round().clip(0, 255).astype(np.uint8)` first.
    """
    _check_shape(array.shape, source)
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise RaeditError(
            f"{source}: expected uint8 pixels, got {array.dtype}; convert floats in [0, 1] with "
            "(x * 255).round().clip(0, 255).astype(uint8)"
        )
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise RaeditError(f"{source}: pixel values must lie in 0..255, found {low}..{high}")
    return array.astype(np.uint8)


class NpzImages:
    """uint8 images N x H x W x 3 stored under a key of an npz file, read batch by batch (as the ADM evaluator
    reads its inputs), so 50,000 samples never sit in memory at once."""

    def __init__(self, path: Path, key: str, shape: tuple[int, ...]) -> None:
        self.path, self.key, self.shape = path, key, shape

    def __len__(self) -> int:
        return self.shape[0]

    def first(self, count: int) -> "NpzImages":
        """The first `count` images (all of them when there are fewer)."""
        return NpzImages(self.path, self.key, (min(count, self.shape[0]), *self.shape[1:]))

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 batches of at most `batch_size` images, in file order."""
        image_bytes = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{self.key}.npy") as member:
            _read_npy_header(member)
            for start in range(0, self.shape[0], batch_size):
                count = min(batch_size, self.shape[0] - start)
                try:
                    raw = member.read(count * image_bytes)
                except (zipfile.BadZipFile, OSError, EOFError) as error:  # e.g. a CRC that doesn't match
                    raise RaeditError(f"{self.path}: '{self.key}' is damaged ({error})") from None
                if len(raw) != count * image_bytes:
                    raise RaeditError(f"{self.path}: '{self.key}' is truncated after about {start} images")
                yield np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(count, *self.shape[1:])


def _read_npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(member)


def open_npz_images(path: str | Path, key: str = NPZ_KEY) -> NpzImages | np.ndarray:
    """An ADM-style npz (`arr_0`: uint8 N x H x W x 3), checked from its header and read lazily.

    Non-uint8 integer arrays are read whole and checked for the 0..255 range (`validate_images`).
    """
    path = Path(path)
    if not path.is_file():
        raise RaeditError(f"sample file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.removesuffix(".npy") for name in archive.namelist()]
            if key not in names:
                raise RaeditError(f"{path}: no array '{key}' (found: {', '.join(names) or 'nothing'})")
            with archive.open(f"{key}.npy") as member:
                shape, fortran_order, dtype = _read_npy_header(member)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise RaeditError(f"{path}: not a readable npz file ({error})") from None
    if dtype != np.uint8 or fortran_order:
        return load_npz_images(path, key)
    _check_shape(tuple(shape), str(path))
    return NpzImages(path, key, tuple(shape))


def load_npz_images(path: str | Path, key: str = NPZ_KEY) -> np.ndarray:
    """ADM-style npz (`arr_0`: uint8 N x H x W x 3) -> validated uint8 N x H x W x 3, read whole."""
    path = Path(path)
    if not path.is_file():
        raise RaeditError(f"sample file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise RaeditError(f"{path}: no array '{key}' (found: {', '.join(archive.files) or 'nothing'})")
            array = archive[key]
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise RaeditError(f"{path}: not a readable npz file ({error})") from None
    return validate_images(array, str(path))


def load_image_folder(path: str | Path, limit: int | None = None) -> np.ndarray:
    """All images under a folder (recursively, sorted by path), as RGB -> uint8 N x H x W x 3 (one size)."""
    folder = Path(path)
    if not folder.is_dir():
        raise RaeditError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if limit is not None:
        files = files[:limit]
    if not files:
        raise RaeditError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except (OSError, UnidentifiedImageError) as error:
            raise RaeditError(f"cannot read image {file}: {error}") from None
        if images[-1].shape != images[0].shape:
            raise RaeditError(
                f"images of different sizes in {folder}: {files[0].name} is {images[0].shape[:2]}, "
                f"{file.name} is {images[-1].shape[:2]}; evaluate images of one resolution"
            )
    return np.stack(images)


def load_images(path: str | Path) -> np.ndarray | NpzImages:
    """An npz file (read lazily when uint8) or an image folder -> uint8 N x H x W x 3 images."""
    path = Path(path)
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix.lower() == ".npz":
        return open_npz_images(path)
    raise RaeditError(f"{path}: expected an .npz file (arr_0: N x H x W x 3 uint8) or an image folder")


def to_uint8_batch(batch: np.ndarray | torch.Tensor, source: str = "generator") -> np.ndarray:
    """One batch from a generator -> uint8 B x H x W x 3.

    Accepted: uint8 (or 0..255 integer) B x H x W x 3 arrays or tensors, or float tensors/arrays B x 3 x H x W
    in [0, 1] (a decoder's output), quantized to 8 bits as the ADM sampling scripts do.
    """
    pixels = torch.as_tensor(np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else batch).detach().cpu()
    if not pixels.is_floating_point():
        return validate_images(pixels.numpy(), source)
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise RaeditError(f"{source}: float images must be B x 3 x H x W in [0, 1], got shape {tuple(pixels.shape)}")
    low, high = float(pixels.min()), float(pixels.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise RaeditError(f"{source}: float images must lie in [0, 1], found {low:.3g}..{high:.3g}")
    return validate_images(to_uint8_hwc(pixels), source)


def iterate_batches(
    images: np.ndarray | NpzImages | Iterable, batch_size: int, source: str = "samples"
) -> Iterator[np.ndarray]:
    """Images (uint8 N x H x W x 3, in memory or an `NpzImages`) or an iterable of batches (a generator)
    -> uint8 batches of at most batch_size."""
    if batch_size < 1:
        raise RaeditError(f"batch size must be positive, got {batch_size}")
    if isinstance(images, NpzImages):
        yield from images.batches(batch_size)
        return
    if isinstance(images, np.ndarray):
        array = validate_images(images, source)
        for start in range(0, array.shape[0], batch_size):
            yield array[start : start + batch_size]
        return
    for batch in images:
        array = to_uint8_batch(batch, source)
        for start in range(0, array.shape[0], batch_size):
            yield array[start : start + batch_size]

