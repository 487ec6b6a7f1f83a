"""Linear probe: separable features are learned, random labels are not, real pixels of Fashion-MNIST probe well."""

import numpy as np
from eval_fakes import PatchMeanEncoder, PooledPixelsEncoder

from raedit.eval.probe import linear_probe, pooled_tokens, probe_fashion_mnist


def _clusters(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(size=(5, 16)) * 3
    labels = rng.integers(0, 5, count)
    return centers[labels] + rng.normal(size=(count, 16)), labels


def test_separable_clusters_are_classified():
    result = linear_probe(*_clusters(300, 1), *_clusters(200, 2))
    assert result.test_top1 > 0.95 and result.num_classes == 5


def test_random_labels_stay_near_chance():
    rng = np.random.default_rng(3)
    result = linear_probe(rng.normal(size=(200, 16)), rng.integers(0, 10, 200),
                          rng.normal(size=(500, 16)), rng.integers(0, 10, 500))
    assert result.test_top1 < 0.2


def test_pooled_tokens_average_the_tokens():
    import torch

    encoder = PatchMeanEncoder()
    images = torch.rand(5, 3, 16, 16)
    expected = ((images - 0.5) / 0.5).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(pooled_tokens(encoder, images, batch_size=2), expected, atol=1e-6)


def test_fashion_mnist_probe_on_coarse_pixels():
    # 48 features (4 x 4-pooled pixels in one token) already separate most Fashion-MNIST classes
    result = probe_fashion_mnist(PooledPixelsEncoder(), num_train=600, num_test=300, batch_size=128)
    assert result.test_top1 > 0.55 and result.train_top1 >= result.test_top1
