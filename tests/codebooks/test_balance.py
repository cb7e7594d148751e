from __future__ import annotations

import numpy as np
import pytest

from codebooks.balance import balance_bias, balanced_kmeans, sinkhorn_potentials, squared_distances
from codebooks.metrics import perplexity
from codebooks.rq import nearest_centroids


def _crowded(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Most items sit near two of the 16 centroids: plain assignment is far from balanced."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((16, 8)).astype(np.float32)
    near = rng.choice([0, 1], size=3000)
    items = centroids[near] + 0.8 * rng.standard_normal((3000, 8))
    spread = rng.standard_normal((1000, 8)) * 2.0
    return np.concatenate([items, spread]).astype(np.float32), centroids


def test_sinkhorn_potentials_spread_the_soft_mass_evenly() -> None:
    residual, centroids = _crowded()
    g = sinkhorn_potentials(squared_distances(residual, centroids))
    codes = nearest_centroids(residual, centroids, g.astype(np.float32))
    counts = np.bincount(codes, minlength=16)
    assert counts.max() < 2 * len(residual) / 16  # was about 3000 / 2 on two centroids
    assert g.mean() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("target", [0.6, 0.85])
def test_the_bias_reaches_the_target_perplexity(target: float) -> None:
    residual, centroids = _crowded()
    before = perplexity(nearest_centroids(residual, centroids), 16)
    bias = balance_bias(residual, centroids, target=target)
    after = perplexity(nearest_centroids(residual, centroids, bias), 16)
    assert before < 0.6 * 16
    assert after >= target * 16


def test_the_smallest_sufficient_bias_is_taken() -> None:
    residual, centroids = _crowded()
    mild = balance_bias(residual, centroids, target=0.6)
    strong = balance_bias(residual, centroids, target=0.85)
    assert np.abs(mild).max() < np.abs(strong).max()


def test_no_bias_where_assignment_is_already_even() -> None:
    rng = np.random.default_rng(1)
    centroids = rng.standard_normal((8, 4)).astype(np.float32)
    residual = (centroids[np.arange(800) % 8] + 0.01 * rng.standard_normal((800, 4))).astype(
        np.float32
    )
    np.testing.assert_array_equal(
        balance_bias(residual, centroids, target=0.9), np.zeros(8, dtype=np.float32)
    )


def test_balanced_kmeans_keeps_the_balance_and_wins_back_error() -> None:
    residual, centroids = _crowded()

    def mse(c: np.ndarray, bias: np.ndarray) -> float:
        return float(((residual - c[nearest_centroids(residual, c, bias)]) ** 2).sum(axis=1).mean())

    bias_only = balance_bias(residual, centroids, target=0.85)
    moved, bias = balanced_kmeans(residual, centroids, target=0.85)
    assert perplexity(nearest_centroids(residual, moved, bias), 16) >= 0.85 * 16
    assert mse(moved, bias) < mse(centroids, bias_only)
