from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codebooks.build import BuildConfig, build
from codebooks.bundle import Bundle, BundleError, load_bundle
from codebooks.clustered import SyntheticEmbeddings, clustered_embeddings
from codebooks.embeddings import EmbeddingError
from codebooks.quantizer import Quantizer
from codebooks.vq import own_row_first, recall_at_k, search


@pytest.fixture(scope="module")
def quantizer(bundle: Bundle) -> Quantizer:
    return Quantizer(bundle, gpu="off")


def test_catalog_items_get_the_codes_the_build_gave_them(
    quantizer: Quantizer, embedded: SyntheticEmbeddings
) -> None:
    vq, rq = quantizer.encode(embedded.embeddings)
    assert vq.shape == (3000, 5)
    assert vq.dtype == rq.dtype == np.int32
    np.testing.assert_array_equal(rq, quantizer.bundle.rq_codes)
    np.testing.assert_array_equal(vq[:, 0], np.arange(3000))  # each item is its own nearest row


def test_scale_does_not_change_the_codes(
    quantizer: Quantizer, embedded: SyntheticEmbeddings
) -> None:
    x = embedded.embeddings[:100]
    a = quantizer.encode(x)
    b = quantizer.encode(x * np.float32(3.5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.zeros((2, 16), dtype=np.float64), "dtype must be float32"),
        (np.ones((2, 17), dtype=np.float32), r"shape must be \(n >= 1, 16\), got \(2, 17\)"),
        (np.ones(16, dtype=np.float32), r"shape must be \(n >= 1, 16\), got \(16,\)"),
        (np.ones((0, 16), dtype=np.float32), r"got \(0, 16\)"),
        ([[1.0] * 16], "expected a numpy array"),
    ],
)
def test_malformed_batches_are_refused(quantizer: Quantizer, batch: object, message: str) -> None:
    with pytest.raises(EmbeddingError, match=message):
        quantizer.encode(batch)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "row 2 contains NaN or inf"),
        (np.inf, "row 2 contains NaN"),
        (0.0, "row 2 has norm 0"),
    ],
)
def test_a_bad_row_is_refused_naming_the_row(
    quantizer: Quantizer, embedded: SyntheticEmbeddings, value: float, message: str
) -> None:
    x = embedded.embeddings[:4].copy()
    x[2] = value
    with pytest.raises(EmbeddingError, match=message) as err:
        quantizer.encode(x)
    assert err.value.row == 2


def test_concurrent_callers_get_the_serial_answers(
    quantizer: Quantizer, embedded: SyntheticEmbeddings
) -> None:
    chunks = np.array_split(embedded.embeddings, 24)
    serial = [quantizer.encode(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(quantizer.encode, chunks))
    for (vq_a, rq_a), (vq_b, rq_b) in zip(serial, concurrent, strict=True):
        np.testing.assert_array_equal(vq_a, vq_b)
        np.testing.assert_array_equal(rq_a, rq_b)


@settings(max_examples=25, deadline=None)
@given(perm=st.permutations(list(range(40))))
def test_batch_order_is_preserved(
    quantizer: Quantizer, embedded: SyntheticEmbeddings, perm: list[int]
) -> None:
    x = embedded.embeddings[:40]
    vq, rq = quantizer.encode(x)
    vq_p, rq_p = quantizer.encode(x[perm])
    np.testing.assert_array_equal(rq_p, rq[perm])
    np.testing.assert_array_equal(vq_p[:, 0], vq[perm, 0])


def test_every_vq_code_is_a_real_row_even_when_probed_lists_are_short(tmp_path: Path) -> None:
    """An IVF index whose nprobe lists hold fewer than K items returns -1 for the rest; the
    quantizer searches those rows again over every list, so no code is ever -1."""
    embedded = clustered_embeddings(3000, 16, seed=0)
    config = BuildConfig(k=25, levels=2, centroids=16, vq_index="ivf", target_recall=0.3, gpu="off")
    bundle = load_bundle(build(embedded.ids, embedded.embeddings, config, tmp_path))
    queries = clustered_embeddings(4000, 16, seed=3).embeddings
    assert (search(bundle.vq_index, queries, 25) < 0).any()  # the case exists at this nprobe
    vq, _ = Quantizer(bundle, gpu="off").encode(queries)
    assert vq.min() >= 0
    assert all(len(set(row)) == 25 for row in vq.tolist())


def test_huge_but_finite_rows_are_normalised_not_zeroed(
    quantizer: Quantizer, embedded: SyntheticEmbeddings
) -> None:
    x = embedded.embeddings[:3].copy()
    huge = x * np.float32(1e30)  # float32 norms of these overflow to inf
    np.testing.assert_array_equal(quantizer.encode(huge)[1], quantizer.encode(x)[1])


def exact_top_k(catalog: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The slow, obvious reference: float64 inner products, best first, ties to the lower row."""
    q = queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ catalog.astype(np.float64).T
    rows = np.arange(catalog.shape[0])
    return np.array([np.lexsort((rows, -s))[:k] for s in scores], dtype=np.int32)


@settings(max_examples=20, deadline=None)
@given(rows=st.lists(st.integers(0, 2999), min_size=1, max_size=64), noise=st.floats(0.0, 0.3))
def test_vq_codes_do_not_depend_on_the_batch(
    quantizer: Quantizer, embedded: SyntheticEmbeddings, rows: list[int], noise: float
) -> None:
    rng = np.random.default_rng(len(rows))
    x = embedded.embeddings[rows] + noise * rng.standard_normal((len(rows), 16)).astype(np.float32)
    together, _ = quantizer.encode(x)
    alone = np.concatenate([quantizer.encode(x[i : i + 1])[0] for i in range(len(rows))])
    np.testing.assert_array_equal(together, alone)
    catalog = quantizer.bundle.vq_index.reconstruct_n(0, quantizer.bundle.manifest.n_items)
    np.testing.assert_array_equal(together, exact_top_k(catalog, x, quantizer.k))


def test_tied_neighbours_come_lowest_row_first(tmp_path: Path) -> None:
    """Rows with equal scores (here: the same vector four times) are ordered by row, whatever
    order faiss's heap leaves them in, so a code is one well-defined answer."""
    base = clustered_embeddings(200, 16, groups=4, subgroups=2, seed=5)
    ids = np.array([f"i{n}" for n in range(800)])
    config = BuildConfig(k=6, levels=2, centroids=8, niter=5, train_items=800, gpu="off")
    bundle = load_bundle(build(ids, np.repeat(base.embeddings, 4, axis=0), config, tmp_path))
    quantizer = Quantizer(bundle, gpu="off")
    x = base.embeddings[:50]
    vq, _ = quantizer.encode(x)
    catalog = bundle.vq_index.reconstruct_n(0, 800)
    np.testing.assert_array_equal(vq, exact_top_k(catalog, x, 6))
    assert (vq[:, :4] == 4 * np.arange(50)[:, None] + np.arange(4)).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf-sq8", "ivf-pq"])
def test_a_graph_or_compressed_bundle_answers_like_an_exact_one(
    tmp_path: Path, embedded: SyntheticEmbeddings, kind: str
) -> None:
    """Written, verified and loaded again, an HNSW or IVF-PQ bundle gives every catalog item
    its own row first and K distinct real rows, re-ranked on the exact vectors; an IVF-PQ
    bundle keeps those vectors on disk, mapped rather than read into memory."""
    config = BuildConfig(
        k=5,
        levels=2,
        centroids=16,
        vq_index=kind,
        target_recall=0.9,
        gpu="off",
    )
    bundle = load_bundle(build(embedded.ids, embedded.embeddings, config, tmp_path))
    assert bundle.manifest.vq.kind == kind
    assert bundle.manifest.vq.recall_source == "held-out catalog rows"
    x = embedded.embeddings
    np.testing.assert_allclose(bundle.catalog_vectors(10, 20), x[10:20], atol=1e-6)
    if kind != "hnsw":
        assert isinstance(bundle.vectors, np.memmap)
    vq, _ = Quantizer(bundle, gpu="off").encode(x)
    assert all(len(set(row)) == 5 for row in vq.tolist())
    assert (vq[:, 0] == np.arange(len(x))).mean() >= 0.99
    own = own_row_first(vq, np.arange(len(x)))
    np.testing.assert_array_equal(own[:, 0], np.arange(len(x)))
    assert all(len(set(row)) == 5 for row in own.tolist())
    exact = exact_top_k(x, x[:200], 5)
    assert recall_at_k(vq[:200], exact) >= 0.9


def test_an_ivf_pq_bundle_without_its_vectors_is_refused(
    tmp_path: Path, embedded: SyntheticEmbeddings
) -> None:
    config = BuildConfig(k=5, levels=2, centroids=16, vq_index="ivf-pq", gpu="off")
    path = build(embedded.ids, embedded.embeddings, config, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]["vq_vectors.npy"]
    (path / "manifest.json").chmod(0o644)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"vq_vectors\.npy"):
        load_bundle(path)
