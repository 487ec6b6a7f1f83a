import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from raedit.core.errors import RaeditError
from raedit.data import DataConfig, build_dataset
from raedit.data.fashion_mnist import FashionMNIST, load_fashion_mnist, to_rgb
from raedit.data.image_folder import ImageFolder, SkippedImages, collate_skipping
from raedit.data.transforms import ImageTransform, center_crop, random_crop


def test_fashion_mnist_splits_and_balanced_labels():
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == np.uint8
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    assert 60 < train_images.mean() < 90  # mostly dark background, bright garments


def test_fashion_mnist_rgb_at_a_chosen_resolution():
    dataset = FashionMNIST("test", resolution=64, limit=10)
    image, label = dataset[3]
    assert len(dataset) == 10 and image.shape == (3, 64, 64)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert 0 <= image.min() and image.max() <= 1
    raw, labels = load_fashion_mnist("test")
    assert label == labels[3]
    same_size = to_rgb(raw[3:4], 28)[0, 0]
    assert torch.allclose(same_size * 255, torch.from_numpy(raw[3].astype(np.float32)))


def test_fashion_mnist_from_a_given_folder_and_missing_files(tmp_path):
    with pytest.raises(RaeditError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", str(tmp_path))
    with pytest.raises(RaeditError, match="unknown Fashion-MNIST split"):
        load_fashion_mnist("val")


def write_image(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_classes_sorted_and_corrupt_images_skipped_and_counted(tmp_path, caplog):
    write_image(tmp_path / "zebra" / "a.png", (255, 0, 0))
    write_image(tmp_path / "apple" / "b.jpg", (0, 255, 0))
    write_image(tmp_path / "apple" / "c.png", (0, 0, 255))
    (tmp_path / "apple" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "zebra" / "truncated.jpg").write_bytes((tmp_path / "apple" / "b.jpg").read_bytes()[:50])
    dataset = ImageFolder(tmp_path, ImageTransform(size=16))
    assert dataset.classes == ["apple", "zebra"]
    assert len(dataset) == 5
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_skipping)
    passes = SkippedImages(loader)
    with caplog.at_level(logging.WARNING):
        batches = list(passes)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (3, 3, 16, 16)
    assert sorted(labels.tolist()) == [0, 0, 1]
    assert passes.count == 2
    warnings = [r for r in caplog.records if "skipped 2 unreadable" in r.getMessage()]
    assert len(warnings) == 1


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(RaeditError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(RaeditError, match="not found"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(RaeditError, match="data.path"):
        build_dataset(DataConfig(name="folder"))


def test_center_crop_and_random_crop_geometry():
    gradient = np.tile((np.arange(400) // 2).astype(np.uint8)[None, :], (200, 1))
    image = Image.fromarray(np.stack([gradient] * 3, -1))
    crop = center_crop(image, 100)
    assert crop.size == (100, 100)
    # short side 200 -> 100 (box halving); the central columns of the 200-wide image are 50..149
    pixels = np.asarray(crop).astype(int)
    assert abs(pixels[50, 0, 0] - 50) <= 2 and abs(pixels[50, 99, 0] - 149) <= 2
    rng = random.Random(0)
    lefts = {np.asarray(random_crop(image, 120, 100, rng))[0, 0, 0] for _ in range(30)}
    assert len(lefts) > 5  # the crop moves
    flipped = ImageTransform(size=100, hflip=True)
    outs = {float(flipped(image, random.Random(seed))[0, 0, 0]) for seed in range(20)}
    assert len(outs) == 2  # flipped or not


def test_unknown_dataset_and_crop():
    with pytest.raises(RaeditError, match="unknown data set"):
        build_dataset(DataConfig(name="imagenet"))
    with pytest.raises(RaeditError, match="unknown crop"):
        ImageTransform(crop="diagonal")
