"""Fréchet distance between Gaussians fitted to feature sets: FID, sFID and FD on encoder features.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))  (Heusel et al. 2017; the metric of recipe.md's
evaluation protocol). Everything is float64. The trace of the matrix square root is computed from symmetric
eigen-decompositions: with S1 = B B^T, S1 S2 has the nonzero eigenvalues of the symmetric PSD matrix B^T S2 B,
so tr((S1 S2)^(1/2)) = sum of the square roots of the eigenvalues of B^T S2 B. That avoids scipy's `sqrtm` on a
non-symmetric product (complex parts, near-singular failures, ADM's eps fix) while giving the same value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from raedit.core.errors import RaeditError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GaussianStats:
    """Mean (D) and covariance (D x D, float64) of a feature set of `count` vectors.

    `factor` (N x D, centered features / sqrt(N - 1), so sigma = factor^T factor) is kept when N <= D: the
    covariance then has rank < N and the Fréchet distance is computed from N x N matrices instead of D x D.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    factor: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray, name: str = "features") -> "GaussianStats":
        """features N x D -> mean and unbiased covariance (as `np.cov(rowvar=False)`, ADM's choice)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise RaeditError(f"{name}: expected N x D features, got shape {features.shape}")
        count, dim = features.shape
        if count < 2:
            raise RaeditError(f"{name}: a covariance needs at least 2 samples, got {count}")
        if count <= dim:
            logger.warning(
                "%s: %d samples for %d-dimensional features: the covariance is singular and the Fréchet "
                "distance is biased upwards; use more than %d samples (the paper's protocol uses 50,000)",
                name, count, dim, dim,
            )
        mu = features.mean(axis=0)
        centered = features - mu
        factor = centered / np.sqrt(count - 1)
        return cls(mu, factor.T @ factor, count, factor if count <= dim else None)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for symmetric PSD sigma1, sigma2 (D x D), via symmetric eigen-decompositions.

    sigma1 = V diag(w) V^T; eigenvalues at or below rounding level (D * eps * max w, numpy's rank tolerance) are
    dropped, so the inner matrix diag(sqrt w) V^T sigma2 V diag(sqrt w) is only rank x rank.
    """
    s1 = torch.as_tensor(np.asarray(sigma1), dtype=torch.float64)
    s2 = torch.as_tensor(np.asarray(sigma2), dtype=torch.float64)
    values, vectors = torch.linalg.eigh((s1 + s1.T) / 2)
    tolerance = values.abs().max() * s1.shape[0] * torch.finfo(torch.float64).eps
    keep = values > tolerance
    scaled = vectors[:, keep] * values[keep].sqrt()  # D x r: scaled @ scaled.T = sigma1
    inner = scaled.T @ ((s2 + s2.T) / 2) @ scaled
    inner_values = torch.linalg.eigvalsh((inner + inner.T) / 2)
    return float(inner_values.clamp(min=0).sqrt().sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); mu: D, sigma: D x D."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise RaeditError(
            f"Fréchet distance of mismatched statistics: means {mu1.shape} vs {mu2.shape}, "
            f"covariances {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(distance, 0.0))


def frechet_distance_of(stats1: GaussianStats, stats2: GaussianStats) -> float:
    """`frechet_distance` of two `GaussianStats`, through a low-rank factor when either has one.

    With sigma1 = B^T B (B: N x D), S1 S2 has the nonzero eigenvalues of B S2 B^T (N x N); with both factored,
    those are the squared singular values of B1 B2^T, so tr((S1 S2)^(1/2)) is its nuclear norm.
    """
    if stats1.factor is None and stats2.factor is None:
        return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma)
    if stats1.mu.shape != stats2.mu.shape:
        raise RaeditError(f"Fréchet distance of mismatched statistics: means {stats1.mu.shape} vs {stats2.mu.shape}")
    if stats1.factor is not None and stats2.factor is not None:
        cross = torch.as_tensor(stats1.factor) @ torch.as_tensor(stats2.factor).T
        trace_sqrt = float(torch.linalg.svdvals(cross).sum())
    else:
        factored, other = (stats1, stats2) if stats1.factor is not None else (stats2, stats1)
        factor = torch.as_tensor(factored.factor)
        inner = factor @ torch.as_tensor(other.sigma) @ factor.T
        trace_sqrt = float(torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum())
    diff = stats1.mu - stats2.mu
    distance = diff @ diff + np.trace(stats1.sigma) + np.trace(stats2.sigma) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))
