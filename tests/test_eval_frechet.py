"""Fréchet distance: zero on identical statistics, the closed form for Gaussians, scipy agreement, bad input."""

import logging

import numpy as np
import pytest
from scipy import linalg

from raedit.core.errors import RaeditError
from raedit.eval.frechet import GaussianStats, frechet_distance, frechet_distance_of, trace_sqrt_product


def _random_covariance(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / dim


def test_distance_of_a_feature_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(300, 64))
    stats = GaussianStats.from_features(features)
    assert abs(frechet_distance_of(stats, stats)) < 1e-8


def test_diagonal_gaussians_match_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 5 + 1 + 1 + 4 = 11
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(11.0)


def test_full_covariances_agree_with_scipy_sqrtm():
    rng = np.random.default_rng(1)
    sigma1, sigma2 = _random_covariance(rng, 40), _random_covariance(rng, 40)
    expected = np.trace(linalg.sqrtm(sigma1 @ sigma2)).real
    assert trace_sqrt_product(sigma1, sigma2) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_stay_finite_and_real():
    rng = np.random.default_rng(2)
    sigma1, sigma2 = _random_covariance(rng, 50, rank=5), _random_covariance(rng, 50, rank=7)
    distance = frechet_distance(np.zeros(50), sigma1, np.zeros(50), sigma2)
    assert np.isfinite(distance)
    # the ADM-style fix (eps on the diagonal, scipy sqrtm) gives the same value up to the eps perturbation
    eps = 1e-10 * np.eye(50)
    covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps)).real
    assert distance == pytest.approx(np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean), abs=1e-4)


def test_sampled_gaussians_approach_the_population_distance():
    rng = np.random.default_rng(3)
    dim = 6
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    sigma1, sigma2 = _random_covariance(rng, dim), _random_covariance(rng, dim)
    population = frechet_distance(mu1, sigma1, mu2, sigma2)
    samples1 = rng.multivariate_normal(mu1, sigma1, size=200_000)
    samples2 = rng.multivariate_normal(mu2, sigma2, size=200_000)
    empirical = frechet_distance_of(GaussianStats.from_features(samples1), GaussianStats.from_features(samples2))
    assert empirical == pytest.approx(population, rel=0.02)


def test_covariance_is_unbiased_like_numpy_cov():
    features = np.random.default_rng(4).normal(size=(50, 5))
    stats = GaussianStats.from_features(features)
    np.testing.assert_allclose(stats.sigma, np.cov(features, rowvar=False), rtol=1e-12)
    assert stats.count == 50


def test_too_few_samples_warns_with_the_count(caplog):
    with caplog.at_level(logging.WARNING):
        GaussianStats.from_features(np.random.default_rng(5).normal(size=(20, 64)), "my samples")
    assert "my samples: 20 samples for 64-dimensional features" in caplog.text


def test_bad_shapes_raise():
    with pytest.raises(RaeditError, match="at least 2 samples"):
        GaussianStats.from_features(np.zeros((1, 4)))
    with pytest.raises(RaeditError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_low_rank_factor_paths_equal_the_full_computation():
    rng = np.random.default_rng(6)
    few1 = GaussianStats.from_features(rng.normal(size=(20, 60)))
    few2 = GaussianStats.from_features(rng.normal(size=(25, 60)) * 2 + 1)
    many = GaussianStats.from_features(rng.normal(size=(200, 60)))
    assert few1.factor is not None and many.factor is None
    for a, b in ((few1, few2), (few1, many), (many, few2)):
        full = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
        assert frechet_distance_of(a, b) == pytest.approx(full, rel=1e-7)
        assert frechet_distance_of(b, a) == pytest.approx(full, rel=1e-7)


def test_sfid_sized_features_on_a_low_dimensional_manifold():
    # Two sets on a 5-d subspace of the 2023-d sFID space (17 x 17 x 7): the distance equals the one computed
    # in the subspace's own coordinates, since the Fréchet distance is invariant to isometries.
    rng = np.random.default_rng(7)
    basis, _ = np.linalg.qr(rng.normal(size=(2023, 5)))
    coords1 = rng.normal(size=(120, 5)) * [1, 2, 3, 1, 1]
    coords2 = rng.normal(size=(150, 5)) + [4, 0, 0, 1, 0]
    embedded = frechet_distance_of(GaussianStats.from_features(coords1 @ basis.T),
                                   GaussianStats.from_features(coords2 @ basis.T))
    assert embedded == pytest.approx(frechet_distance_of(GaussianStats.from_features(coords1),
                                                         GaussianStats.from_features(coords2)), rel=1e-9)
    assert embedded > 15  # the mean shift alone contributes about 17
