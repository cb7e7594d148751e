from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.neighbors import NearestNeighbors

from codebooks.clustered import clustered_embeddings, near_duplicates
from codebooks.vq import (
    VQKind,
    VQSettings,
    _least,
    build_vq_index,
    choose_kind,
    default_shortlist,
    nearest,
    recall_at_k,
    recall_per_query,
    search,
)


def _exact_top_k(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's brute-force cosine neighbours: the oracle (rows are unit vectors)."""
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x)
    found: np.ndarray = nn.kneighbors(queries, return_distance=False)
    return found.astype(np.int32)


@pytest.fixture(scope="module")
def hard() -> tuple[np.ndarray, np.ndarray]:
    """A small hard set: 20,000 noisy copies of 1,000 sources whose neighbourhoods overlap,
    and 1,000 new copies as the uploads."""
    base = clustered_embeddings(1000, 16, seed=3).embeddings
    catalog, _ = near_duplicates(base, 20_000, noise=0.5, seed=0)
    uploads, _ = near_duplicates(base, 1000, noise=0.5, seed=1)
    return catalog, uploads


def test_flat_index_returns_the_exact_top_k_nearest_first() -> None:
    x = clustered_embeddings(2000, 16, seed=0).embeddings
    index, info = build_vq_index(x, "flat", VQSettings(k=10))
    found = search(index, x[:50], 10)
    assert info.kind == "flat"
    assert info.chosen.recall_at_k is None
    assert found.dtype == np.int32
    np.testing.assert_array_equal(found[:, 0], np.arange(50))  # an item is its own nearest row
    np.testing.assert_array_equal(
        np.sort(found, axis=1), np.sort(_exact_top_k(x, x[:50], 10), axis=1)
    )
    scores = np.einsum("qd,qkd->qk", x[:50], x[found])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # nearest first


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivf-sq8", "ivf-pq"])
def test_the_recall_a_build_promises_is_the_recall_new_uploads_get(
    hard: tuple[np.ndarray, np.ndarray], kind: VQKind
) -> None:
    """Tuned on catalog rows held out of the index, the estimate agrees with the recall that
    new near-duplicate uploads measure against exact search, and meets the target."""
    catalog, uploads = hard
    index, info = build_vq_index(catalog, kind, VQSettings(k=25, target_recall=0.9))
    assert info.recall_source == "held-out catalog rows"
    assert info.recall_queries == 2000  # N/10 of the 20,000
    assert index.ntotal == len(catalog)  # the held-out rows were added after tuning
    shortlist = info.chosen.shortlist or default_shortlist(25, len(catalog))
    found = nearest(index, catalog.__getitem__, uploads, 25, shortlist)
    measured = recall_at_k(found, _exact_top_k(catalog, uploads, 25))
    assert info.chosen.recall_at_k is not None
    assert abs(info.chosen.recall_at_k - measured) <= 0.02
    assert measured >= 0.9 - 0.01
    if kind != "hnsw":
        assert info.chosen.nprobe is not None
        assert info.chosen.nlist is not None
        assert info.chosen.nprobe < info.chosen.nlist  # the tuning stopped before all lists


def test_caller_queries_tune_the_index_instead_of_catalog_rows(
    hard: tuple[np.ndarray, np.ndarray],
) -> None:
    catalog, uploads = hard
    _, info = build_vq_index(catalog, "ivf", VQSettings(k=25, target_recall=0.9), queries=uploads)
    assert info.recall_source == "caller queries"
    assert info.recall_queries == len(uploads)


def test_auto_keeps_the_fastest_kind_that_reaches_the_target(
    hard: tuple[np.ndarray, np.ndarray],
) -> None:
    catalog, _ = hard
    _, info = build_vq_index(catalog, "auto", VQSettings(k=25, target_recall=0.9))
    assert [c.kind for c in info.candidates] == ["ivf", "hnsw", "ivf-sq8", "ivf-pq"]
    reaching = [c for c in info.candidates if (c.recall_at_k or 0) >= 0.9]
    assert info.chosen in info.candidates
    assert info.chosen.queries_per_s == max(c.queries_per_s or 0 for c in reaching)
    assert all(c.bytes_per_item and c.build_s for c in info.candidates)


def test_auto_builds_only_what_fits_the_memory_budget(
    hard: tuple[np.ndarray, np.ndarray],
) -> None:
    catalog, _ = hard
    budget = 20.0 * len(catalog)  # room for 16-d PQ codes (8 B + id), not for SQ8 or floats
    settings = VQSettings(k=25, target_recall=0.9, memory_bytes=budget)
    _, info = build_vq_index(catalog, "auto", settings)
    assert [c.kind for c in info.candidates] == ["ivf-pq"]


def test_auto_is_exact_up_to_the_threshold() -> None:
    assert choose_kind(100, "auto", exact_max_items=100) == "flat"
    assert choose_kind(101, "auto", exact_max_items=100) == "auto"
    assert choose_kind(10**7, "flat", exact_max_items=100) == "flat"


@given(low=st.integers(1, 50), span=st.integers(0, 5000), threshold=st.integers(1, 6000))
def test_least_finds_the_first_passing_setting(low: int, span: int, threshold: int) -> None:
    high = low + span
    found = _least(low, high, lambda value: value >= threshold)
    assert found == (max(threshold, low) if threshold <= high else None)


def test_recall_counts_the_share_of_true_neighbours_found() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int32)
    found = np.array([[4, 3, 2, 1], [5, 6, 0, 9]], dtype=np.int32)
    assert recall_at_k(found, truth) == pytest.approx(6 / 8)
    np.testing.assert_allclose(recall_per_query(found, truth), [1.0, 0.5])
