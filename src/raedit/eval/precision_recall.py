"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds, as ADM evaluates it.

Each feature set defines a manifold: the union of balls around its vectors, each ball's radius the distance to
that vector's k-th nearest neighbour in the same set (itself excluded; k = 3 in the ADM evaluator and the paper's
protocol). Precision: the fraction of samples inside the reference manifold. Recall: the fraction of reference
vectors inside the sample manifold. Distances are squared Euclidean, in float64, computed block by block; the
blocks change memory use only, not the result.
"""

from __future__ import annotations

import numpy as np
import torch

from raedit.core.errors import RaeditError

DEFAULT_K = 3
DEFAULT_BLOCK = 2048


def _squared_distances(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows R x D, cols C x D (float64) -> R x C squared Euclidean distances, clipped at 0."""
    return (rows.square().sum(1, keepdim=True) - 2.0 * rows @ cols.T + cols.square().sum(1)[None]).clamp_(min=0)


def _as_float64(features: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if tensor.ndim != 2:
        raise RaeditError(f"{name}: expected N x D features, got shape {tuple(tensor.shape)}")
    return tensor


def manifold_radii(features: np.ndarray | torch.Tensor, k: int = DEFAULT_K, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """features N x D -> N squared distances to each vector's k-th nearest neighbour (itself excluded)."""
    feats = _as_float64(features, "features")
    count = feats.shape[0]
    if count <= k:
        raise RaeditError(f"a {k}-nearest-neighbour manifold needs more than {k} vectors, got {count}")
    radii = torch.empty(count, dtype=torch.float64)
    for start in range(0, count, block):
        rows = feats[start : start + block]
        nearest = torch.full((rows.shape[0], 0), 0.0, dtype=torch.float64)
        for col_start in range(0, count, block):
            distances = _squared_distances(rows, feats[col_start : col_start + block])
            candidates = torch.cat([nearest, distances], dim=1)
            nearest = candidates.topk(min(k + 1, candidates.shape[1]), dim=1, largest=False).values
        radii[start : start + rows.shape[0]] = nearest[:, k]  # index 0 is the vector itself (distance 0)
    return radii.numpy()


def inside_manifold(
    queries: np.ndarray | torch.Tensor,
    manifold: np.ndarray | torch.Tensor,
    radii: np.ndarray,
    block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """Boolean Q: whether each query lies within radius of at least one manifold vector (squared distances)."""
    queries_t = _as_float64(queries, "queries")
    manifold_t = _as_float64(manifold, "manifold")
    radii_t = torch.as_tensor(np.asarray(radii), dtype=torch.float64)
    if queries_t.shape[1] != manifold_t.shape[1]:
        raise RaeditError(f"feature dimensions differ: {queries_t.shape[1]} vs {manifold_t.shape[1]}")
    inside = torch.zeros(queries_t.shape[0], dtype=torch.bool)
    for start in range(0, queries_t.shape[0], block):
        rows = queries_t[start : start + block]
        for col_start in range(0, manifold_t.shape[0], block):
            distances = _squared_distances(rows, manifold_t[col_start : col_start + block])
            within = (distances <= radii_t[col_start : col_start + block][None]).any(dim=1)
            inside[start : start + rows.shape[0]] |= within
    return inside.numpy()


def precision_recall(
    reference: np.ndarray | torch.Tensor,
    samples: np.ndarray | torch.Tensor,
    k: int = DEFAULT_K,
    block: int = DEFAULT_BLOCK,
    reference_radii: np.ndarray | None = None,
) -> tuple[float, float]:
    """(precision, recall) of samples N2 x D against reference N1 x D; `reference_radii` may be precomputed."""
    ref_radii = manifold_radii(reference, k, block) if reference_radii is None else reference_radii
    sample_radii = manifold_radii(samples, k, block)
    precision = inside_manifold(samples, reference, ref_radii, block).mean()
    recall = inside_manifold(reference, samples, sample_radii, block).mean()
    return float(precision), float(recall)
