"""Class accuracy of class-conditional samples: does each sample show the class it was drawn for?

FID says how close the sample distribution is to the real one, not whether "class 3" samples are trousers. Here a
classifier trained on real labelled images judges every sample against its label; its accuracy on real test
images is reported beside it as the ceiling (a generator's samples can exceed it: guidance makes them
prototypical).

The classifier is a linear probe (`raedit.eval.probe.fit_linear_probe`: L2-regularized multinomial logistic
regression, L-BFGS, on standardized features) on frozen features of EfficientNet-Lite2 (its ImageNet weights ship
offline): the images resized to 64 px, the spatial means of its MBConv stages 3 to 7 and of its 1280-channel head,
2,024 features. Lite2 is a network of its own, not the offline RAE's Lite0 encoder, so a sample is not judged by
the latent space it was generated in. On Fashion-MNIST (10,000 training images, weight decay 1e-2) it scores
about 0.89 to 0.90 on the test split (`docs/results/demo.md`).

Labelled image sets: a built-in data set (`fashion-mnist-train`, `fashion-mnist-test`), an npz with `arr_0` and
`labels` (raedit's and ADM's sample files), or an image folder in the ImageNet layout (center crops). The fitted
probe and its test accuracy are cached next to the reference statistics.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from raedit.core.errors import RaeditError
from raedit.core.files import atomic_path
from raedit.core.images import from_uint8_hwc, to_uint8_hwc
from raedit.data.fashion_mnist import load_fashion_mnist
from raedit.data.image_folder import ImageFolder
from raedit.data.transforms import ImageTransform
from raedit.encoders import build_encoder
from raedit.eval.image_sets import iterate_batches
from raedit.eval.probe import LinearProbe, fit_linear_probe
from raedit.eval.reference import BUILTIN_REFERENCES, builtin_reference_images, source_identity

logger = logging.getLogger(__name__)

FEATURE_NETWORK = "effnet-lite2"
FEATURE_INPUT_SIZE = 64
FIRST_STAGE = 2  # stages 3..7 (0-based 2..6) and the head
WEIGHT_DECAY = 1e-2
PROBE_VERSION = 1
CLASSIFIER = (f"linear probe (L2 logistic regression, weight decay {WEIGHT_DECAY:g}) on frozen {FEATURE_NETWORK} "
              f"features at {FEATURE_INPUT_SIZE} px (mean-pooled stages 3-7 and head)")


class ProbeFeatures:
    """The frozen feature network: uint8 batches B x H x W x 3 -> N x 2024 float64 features."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.encoder = build_encoder(FEATURE_NETWORK, input_size=FEATURE_INPUT_SIZE).to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        parts = [self.encoder.network.pooled_features(self.encoder.normalize(chunk), FIRST_STAGE).double().cpu().numpy()
                 for batch in batches for chunk in self.encoder.cpu_chunks(from_uint8_hwc(batch, self.device))]
        if not parts:
            raise RaeditError("no images to classify")
        return np.concatenate(parts)


def labelled_images(source: str, resolution: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x R x R x 3, labels N) of a labelled image set, at the samples' resolution `resolution`."""
    path = Path(source)
    if source in BUILTIN_REFERENCES:
        _, labels = load_fashion_mnist(BUILTIN_REFERENCES[source])
        images = builtin_reference_images(source, resolution, limit)
        return images, labels[:len(images)]
    if path.suffix.lower() == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as archive:
            if "arr_0" not in archive.files or "labels" not in archive.files:
                raise RaeditError(f"{path} holds no labelled images (arr_0 and labels) for class accuracy")
            images, labels = archive["arr_0"][:limit], archive["labels"][:limit]
        if images.shape[1:3] != (resolution, resolution):
            images = to_uint8_hwc(torch.nn.functional.interpolate(
                from_uint8_hwc(images), size=(resolution, resolution), mode="bilinear", antialias=True))
        return images, labels.astype(np.int64)
    if path.is_dir():
        folder = ImageFolder(path, ImageTransform(resolution, "center"))
        count = len(folder) if limit is None else min(limit, len(folder))
        items = [folder[index] for index in range(count)]
        unreadable = sum(item is None for item in items)
        if unreadable:
            raise RaeditError(f"{unreadable} unreadable images in {path}")
        return (to_uint8_hwc(torch.stack([image for image, _ in items]), "nearest"),
                np.array([label for _, label in items], dtype=np.int64))
    raise RaeditError(f"no labelled images at {source}: give a built-in data set ({', '.join(BUILTIN_REFERENCES)}), "
                      "an npz with arr_0 and labels, or an image folder with one sub-folder per class")


@dataclass(frozen=True)
class ClassProbe:
    """The fitted classifier and its accuracy on the real test images (the ceiling)."""

    probe: LinearProbe
    test_accuracy: float
    num_train: int
    num_test: int


def _probe_cache(train: str, test: str, resolution: int, train_limit: int | None, test_limit: int | None,
                 cache_dir: Path) -> Path:
    identities = [source_identity(source) for source in (train, test)]
    key = f"{identities}|{resolution}|{train_limit}|{test_limit}|{CLASSIFIER}|v{PROBE_VERSION}"
    return cache_dir / f"class-probe-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def class_probe(train: str, test: str, resolution: int, features: ProbeFeatures, cache_dir: Path,
                train_limit: int | None = None, test_limit: int | None = None, batch_size: int = 250) -> ClassProbe:
    """The classifier fitted on `train` and scored on `test` (labelled sets, `labelled_images`), cached."""
    cache = _probe_cache(train, test, resolution, train_limit, test_limit, cache_dir)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as archive:
            probe = LinearProbe(*(torch.from_numpy(archive[name]) for name in ("mean", "std", "weight", "bias")))
            logger.info("class-accuracy probe from cache %s", cache)
            return ClassProbe(probe, float(archive["test_accuracy"]), int(archive["num_train"]),
                              int(archive["num_test"]))
    (train_images, train_labels), (test_images, test_labels) = (
        labelled_images(source, resolution, limit) for source, limit in ((train, train_limit), (test, test_limit)))
    logger.info("class accuracy: features of %d training and %d test images", len(train_images), len(test_images))
    train_features = features(iterate_batches(train_images, batch_size, train))
    probe = fit_linear_probe(train_features, train_labels, WEIGHT_DECAY)
    test_accuracy = probe.accuracy(features(iterate_batches(test_images, batch_size, test)), test_labels)
    with atomic_path(cache) as temporary:
        np.savez(temporary, mean=probe.mean.numpy(), std=probe.std.numpy(), weight=probe.weight.numpy(),
                 bias=probe.bias.numpy(), test_accuracy=test_accuracy, num_train=len(train_labels),
                 num_test=len(test_labels))
    return ClassProbe(probe, test_accuracy, len(train_labels), len(test_labels))
