from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from codebooks.clustered import clustered_embeddings
from codebooks.vq import build_vq_index, choose_kind, default_nlist, recall_at_k, search


def _exact_top_k(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's brute-force cosine neighbours: the oracle (rows are unit vectors)."""
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x)
    found: np.ndarray = nn.kneighbors(queries, return_distance=False)
    return found


def test_flat_index_returns_the_exact_top_k_nearest_first() -> None:
    x = clustered_embeddings(2000, 16, seed=0).embeddings
    index, info = build_vq_index(x, 10, kind="flat")
    found = search(index, x[:50], 10)
    assert info.kind == "flat"
    assert info.recall_at_k is None
    assert found.dtype == np.int32
    np.testing.assert_array_equal(found[:, 0], np.arange(50))  # an item is its own nearest row
    np.testing.assert_array_equal(
        np.sort(found, axis=1), np.sort(_exact_top_k(x, x[:50], 10), axis=1)
    )
    scores = np.einsum("qd,qkd->qk", x[:50], x[found])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # nearest first


def test_ivf_index_reaches_the_target_recall_it_reports() -> None:
    x = clustered_embeddings(20000, 16, seed=1).embeddings
    index, info = build_vq_index(x, 10, kind="ivf", target_recall=0.9, recall_queries=300, seed=0)
    assert info.kind == "ivf"
    assert info.nlist == default_nlist(20000)
    assert info.nprobe is not None
    assert info.nprobe < info.nlist  # the tuning stopped before searching every list
    assert info.recall_at_k is not None
    assert info.recall_at_k >= 0.9
    rng = np.random.default_rng(42)  # fresh queries, not the ones the build tuned on
    queries = x[rng.choice(len(x), 300, replace=False)]
    measured = recall_at_k(
        search(index, queries, 10), _exact_top_k(x, queries, 10).astype(np.int32)
    )
    assert measured >= 0.85


def test_auto_is_exact_up_to_the_threshold() -> None:
    assert choose_kind(100, "auto", exact_max_items=100) == "flat"
    assert choose_kind(101, "auto", exact_max_items=100) == "ivf"
    assert choose_kind(10**7, "flat", exact_max_items=100) == "flat"


def test_recall_counts_the_share_of_true_neighbours_found() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int32)
    found = np.array([[4, 3, 2, 1], [5, 6, 0, 9]], dtype=np.int32)
    assert recall_at_k(found, truth) == pytest.approx(6 / 8)
