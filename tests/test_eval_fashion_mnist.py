"""FID on real data: two halves of Fashion-MNIST train are far closer than train and a noised copy."""

import numpy as np

from raedit.data.fashion_mnist import load_fashion_mnist
from raedit.eval.features import inception_features
from raedit.eval.frechet import GaussianStats, frechet_distance_of
from raedit.eval.image_sets import iterate_batches
from raedit.eval.inception import InceptionFeatures

COUNT = 32  # per set; 3 sets through Inception (about 10 s on 2 cores)


def test_real_halves_are_closer_than_real_and_noised():
    images, _ = load_fashion_mnist("train")
    rgb = np.repeat(images[: 2 * COUNT, :, :, None], 3, axis=3)
    half_a, half_b = rgb[:COUNT], rgb[COUNT:]
    noise = np.random.default_rng(0).normal(0, 0.2 * 255, half_b.shape)
    noised_b = np.clip(half_b + noise, 0, 255).round().astype(np.uint8)
    extractor = InceptionFeatures()
    stats = {}
    for name, array in (("a", half_a), ("b", half_b), ("noised", noised_b)):
        features = inception_features(extractor, iterate_batches(array, 16))
        stats[name] = {kind: GaussianStats.from_features(features[kind]) for kind in ("pool", "spatial")}
    # with 32 images per set both distances carry a large small-sample bias; the ordering must hold regardless
    for kind, margin in (("pool", 2.0), ("spatial", 1.2)):
        real = frechet_distance_of(stats["a"][kind], stats["b"][kind])
        noised = frechet_distance_of(stats["a"][kind], stats["noised"][kind])
        assert real > 0
        assert noised > margin * real, (kind, real, noised)
