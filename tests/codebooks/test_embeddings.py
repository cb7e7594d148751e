from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codebooks.embeddings import EmbeddingError, load_embeddings, save_embeddings


def test_an_npy_pair_round_trips(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    ids = np.array(["a", "b", "c", "d", "e"])
    emb, id_path = save_embeddings(tmp_path, ids, x)
    got_ids, got_x = load_embeddings(emb, id_path)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_x, x)


def test_parquet_with_id_and_embedding_columns(tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"id": [10, 11], "embedding": [[1.0, 0.0], [0.0, 1.0]]}), path)
    ids, x = load_embeddings(path)
    assert ids.tolist() == ["10", "11"]
    assert x.dtype == np.float32
    assert x.shape == (2, 2)


def test_ids_that_do_not_match_the_rows_are_refused(tmp_path: Path) -> None:
    emb, id_path = save_embeddings(
        tmp_path, np.array(["a", "b"]), np.ones((2, 3), dtype=np.float32)
    )
    np.save(id_path, np.array(["a", "b", "c"]))
    with pytest.raises(EmbeddingError, match="expected 2 ids"):
        load_embeddings(emb, id_path)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    emb, id_path = save_embeddings(
        tmp_path, np.array(["a", "b", "a"]), np.ones((3, 3), dtype=np.float32)
    )
    with pytest.raises(EmbeddingError, match="item id 'a' appears twice"):
        load_embeddings(emb, id_path)


def test_an_npy_catalog_needs_its_ids(tmp_path: Path) -> None:
    emb, _ = save_embeddings(tmp_path, np.array(["a"]), np.ones((1, 3), dtype=np.float32))
    with pytest.raises(EmbeddingError, match="needs --ids"):
        load_embeddings(emb, None)
