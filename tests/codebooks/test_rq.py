from __future__ import annotations

import logging
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codebooks.clustered import clustered_embeddings
from codebooks.rq import (
    ResidualCodebooks,
    nearest_centroids,
    rq_decode,
    rq_encode,
)
from codebooks.rq_train import train_faiss_rq, train_residual_kmeans


def _reference_nearest(residual: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The obvious O(n * Nc) loop that nearest_centroids must agree with."""
    out = []
    for r in residual.astype(np.float64):
        out.append(int(np.argmin(((r[None, :] - centroids.astype(np.float64)) ** 2).sum(axis=1))))
    return np.array(out)


def test_nearest_centroids_matches_the_obvious_loop() -> None:
    rng = np.random.default_rng(0)
    residual = rng.standard_normal((500, 8)).astype(np.float32)
    centroids = rng.standard_normal((32, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        nearest_centroids(residual, centroids), _reference_nearest(residual, centroids)
    )


def test_near_ties_are_decided_as_float64_decides_them() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 16)).astype(np.float32)
    centroids = np.stack([a, b, rng.standard_normal(16).astype(np.float32)])
    steps = np.concatenate([-np.logspace(-7, -3, 50), [0.0], np.logspace(-7, -3, 50)])
    residual = ((a + b) / 2 + steps[:, None] * (b - a)).astype(np.float32)
    expected = _reference_nearest(residual, centroids)
    assert set(expected) == {0, 1}  # the points straddle the boundary between a and b
    np.testing.assert_array_equal(nearest_centroids(residual, centroids), expected)
    for row in range(len(residual)):  # one at a time: a batch of one takes other BLAS kernels
        assert nearest_centroids(residual[row : row + 1], centroids)[0] == expected[row]


def test_bias_moves_items_to_the_favoured_centroid() -> None:
    centroids = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    point = np.array([[0.4, 0.0]], dtype=np.float32)  # nearer to centroid 0
    assert nearest_centroids(point, centroids)[0] == 0
    bias = np.array([0.0, 1.0], dtype=np.float32)  # a prior large enough to outweigh the distance
    assert nearest_centroids(point, centroids, bias)[0] == 1


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), levels=st.integers(2, 5), n=st.integers(64, 400))
def test_residual_error_falls_level_by_level(seed: int, levels: int, n: int) -> None:
    x = clustered_embeddings(n, 8, groups=6, seed=seed).embeddings
    books = train_residual_kmeans(x, levels, 8, seed=seed, niter=8)
    mse = rq_encode(x, books).level_mse
    start = float(np.mean((x.astype(np.float64) ** 2).sum(axis=1)))
    assert mse[0] <= start
    assert np.all(np.diff(mse) <= 1e-7), mse


def test_decode_of_encode_leaves_the_last_level_residual() -> None:
    x = clustered_embeddings(600, 8, seed=3).embeddings
    books = train_residual_kmeans(x, 4, 16, seed=0, niter=8)
    encoding = rq_encode(x, books)
    error = ((x - rq_decode(encoding.codes, books)).astype(np.float64) ** 2).sum(axis=1).mean()
    assert error == pytest.approx(encoding.level_mse[-1], rel=1e-4)
    assert encoding.codes.dtype == np.int32
    assert encoding.codes.min() >= 0
    assert encoding.codes.max() < 16


@pytest.fixture(scope="module")
def trained() -> tuple[np.ndarray, ResidualCodebooks]:
    x = clustered_embeddings(300, 8, seed=5).embeddings
    return x, train_residual_kmeans(x, 4, 16, seed=0, niter=8)


@settings(max_examples=20, deadline=None)
@given(rows=st.lists(st.integers(0, 299), min_size=1, max_size=40))
def test_an_items_code_does_not_depend_on_its_batch(
    trained: tuple[np.ndarray, ResidualCodebooks], rows: list[int]
) -> None:
    x, books = trained
    whole = rq_encode(x, books).codes
    np.testing.assert_array_equal(rq_encode(x[rows], books).codes, whole[rows])


def test_training_is_deterministic_for_a_seed() -> None:
    x = clustered_embeddings(800, 8, seed=2).embeddings
    a = train_residual_kmeans(x, 3, 16, seed=7, niter=5)
    b = train_residual_kmeans(x, 3, 16, seed=7, niter=5)
    c = train_residual_kmeans(x, 3, 16, seed=8, niter=5)
    assert a.centroids.tobytes() == b.centroids.tobytes()
    assert a.centroids.tobytes() != c.centroids.tobytes()


def test_training_refuses_fewer_items_than_centroids() -> None:
    x = clustered_embeddings(10, 8, seed=0).embeddings
    with pytest.raises(ValueError, match="needs at least 16 training items, got 10"):
        train_residual_kmeans(x, 2, 16, seed=0)


@pytest.mark.parametrize("n", [40, 600])  # fewer and more rows than its PCA needs
def test_faiss_rq_trains_on_small_and_large_samples(n: int) -> None:
    x = clustered_embeddings(n, 32, seed=4).embeddings
    books = train_faiss_rq(x, 3, 8, seed=0)
    mse = rq_encode(x, books).level_mse
    assert books.centroids.shape == (3, 8, 32)
    assert mse[-1] < float(np.mean((x.astype(np.float64) ** 2).sum(axis=1)))


@pytest.mark.parametrize("method", ["kmeans", "faiss-rq"])
def test_a_small_sample_is_reported_once_and_trains_the_same(
    method: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """faiss would print its too-few-points warning at every level; we log it once, and the
    threshold that silences faiss changes no codebook."""
    x = clustered_embeddings(300, 16, seed=2).embeddings
    train = train_faiss_rq if method == "faiss-rq" else train_residual_kmeans
    with caplog.at_level(logging.WARNING, logger="codebooks.rq_train"):
        books = train(x, 4, 16, seed=0, niter=5)
    assert "WARNING clustering" not in capfd.readouterr().out
    assert [r.getMessage() for r in caplog.records].count(
        "training 16 centroids per level on 300 items (faiss advises at least 624): the "
        "codebooks are sparse and deep levels hold about one item per code"
    ) == 1
    with mock.patch("codebooks.rq_train._min_points_per_centroid", return_value=39):
        loud = train(x, 4, 16, seed=0, niter=5)
    np.testing.assert_array_equal(books.centroids, loud.centroids)
