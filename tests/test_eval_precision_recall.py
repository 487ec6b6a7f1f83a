"""Precision/recall with k-NN manifolds: exact answers on lattices, a brute-force check, block independence."""

import numpy as np
import pytest

from raedit.core.errors import RaeditError
from raedit.eval.precision_recall import inside_manifold, manifold_radii, precision_recall


def _grid(columns: range, rows: range, offset: float = 0.0) -> np.ndarray:
    return np.array([[x + offset, y] for x in columns for y in rows], dtype=np.float64)


def _brute_force(reference: np.ndarray, samples: np.ndarray, k: int) -> tuple[float, float]:
    def radii(points):
        d = ((points[:, None] - points[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]

    def inside(queries, points, r):
        d = ((queries[:, None] - points[None]) ** 2).sum(-1)
        return (d <= r[None]).any(1)

    return inside(samples, reference, radii(reference)).mean(), inside(reference, samples, radii(samples)).mean()


def test_identical_sets_have_full_precision_and_recall():
    features = np.random.default_rng(0).normal(size=(200, 16))
    assert precision_recall(features, features) == (1.0, 1.0)


def test_far_apart_sets_have_zero_precision_and_recall():
    rng = np.random.default_rng(1)
    assert precision_recall(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 100.0) == (0.0, 0.0)


def test_lattice_with_known_answer():
    # Reference: a 10 x 10 unit lattice; k = 3 radii are 1 inside and on edges, sqrt(2) at corners.
    # Samples: its left half (columns 0-4) plus 50 points far away.
    reference = _grid(range(10), range(10))
    samples = np.concatenate([_grid(range(5), range(10)), _grid(range(5), range(10), offset=100.0)])
    np.testing.assert_allclose(sorted(set(manifold_radii(reference))), [1.0, 2.0])  # squared radii
    precision, recall = precision_recall(reference, samples, k=3)
    assert precision == 0.5  # the half on the lattice
    assert recall == 0.6  # columns 0-4, and column 5 at distance 1 from column 4's balls


def test_matches_brute_force_and_does_not_depend_on_the_block_size():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(157, 12))
    samples = rng.normal(size=(143, 12)) * 1.3 + 0.4
    expected = _brute_force(reference, samples, k=3)
    for block in (1, 7, 64, 4096):
        assert precision_recall(reference, samples, k=3, block=block) == pytest.approx(expected, abs=0)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0


def test_radii_exclude_the_point_itself():
    points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    np.testing.assert_allclose(manifold_radii(points, k=1), [1.0, 1.0, 4.0, 9.0, 16.0])
    assert inside_manifold(np.array([[2.0], [20.0]]), points, manifold_radii(points, k=1)).tolist() == [True, False]


def test_too_few_vectors_raise():
    with pytest.raises(RaeditError, match="more than 3 vectors"):
        manifold_radii(np.zeros((3, 2)))
