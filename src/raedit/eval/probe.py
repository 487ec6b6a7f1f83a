"""Linear probe: a linear classifier on frozen, mean-pooled encoder tokens (the paper's Table 1d, "RAE latents are
semantic": DINOv2-B 84.5, SigLIP2-B 79.1, MAE-B 68.0, SD-VAE 8.0 top-1 on ImageNet).

Features are standardized with the training set's mean and std, then a multinomial logistic regression with an
L2 penalty is fit full-batch with L-BFGS (deterministic: no data order, no minibatches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raedit.core.errors import RaeditError
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.encoders import Encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    """Top-1 accuracies (fractions) of the linear probe."""

    train_top1: float
    test_top1: float
    num_train: int
    num_test: int
    num_classes: int


def _check(features: np.ndarray, labels: np.ndarray, name: str) -> None:
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise RaeditError(f"{name}: expected features N x C and labels N, got {features.shape} and {labels.shape}")


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear classifier on standardized features: logits = ((x - mean) / std) @ weight + bias."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Features N x C -> predicted classes N."""
        x = (torch.as_tensor(features, dtype=torch.float64) - self.mean) / self.std
        return (x @ self.weight + self.bias).argmax(1).numpy()

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy (a fraction) on features N x C with labels N."""
        _check(features, labels, "features")
        return float((self.predict(features) == np.asarray(labels)).mean())


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, weight_decay: float = 1e-4,
                     max_iterations: int = 500, num_classes: int | None = None) -> LinearProbe:
    """Multinomial logistic regression with an L2 penalty on standardized features N x C (labels N, ints
    0..K-1), fit full-batch with L-BFGS."""
    _check(features, labels, "train")
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    num_classes = num_classes or int(y.max()) + 1
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iterations, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach())


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    weight_decay: float = 1e-4,
    max_iterations: int = 500,
) -> ProbeResult:
    """Fit a linear classifier on train features N x C (labels N, ints 0..K-1); report train and test top-1."""
    _check(test_features, test_labels, "test")
    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    probe = fit_linear_probe(train_features, train_labels, weight_decay, max_iterations, num_classes)
    return ProbeResult(probe.accuracy(train_features, train_labels), probe.accuracy(test_features, test_labels),
                       len(train_labels), len(test_labels), num_classes)


@torch.no_grad()
def pooled_tokens(encoder: Encoder, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Frozen encoder tokens, mean-pooled: images N x 3 x H x W in [0, 1] -> N x C (float32)."""
    device = next(iter(encoder.buffers())).device
    pooled = [
        encoder.encode(images[start : start + batch_size].to(device)).float().mean(dim=1).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(pooled).numpy()


def probe_fashion_mnist(
    encoder: Encoder,
    num_train: int = 2000,
    num_test: int = 1000,
    resolution: int | None = None,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
) -> ProbeResult:
    """Linear probe of `encoder` on the first `num_train` Fashion-MNIST training and `num_test` test images,
    resized (as training data, `raedit.data.fashion_mnist.to_rgb`) to `resolution` (default: the encoder's)."""
    resolution = resolution or encoder.input_size
    features, labels = {}, {}
    for split, count in (("train", num_train), ("test", num_test)):
        images, split_labels = load_fashion_mnist(split)
        if count < 1 or count > len(images):
            raise RaeditError(f"Fashion-MNIST {split} has {len(images)} images; asked for {count}")
        logger.info("encoding %d Fashion-MNIST %s images with %s", count, split, encoder.name)
        features[split] = np.concatenate([
            pooled_tokens(encoder, to_rgb(images[start : min(start + batch_size, count)], resolution), batch_size)
            for start in range(0, count, batch_size)
        ])
        labels[split] = split_labels[:count]
    return linear_probe(features["train"], labels["train"], features["test"], labels["test"], weight_decay)
