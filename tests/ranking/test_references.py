"""The LR and DCN references: their inputs by hand, and what side features let them learn."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from ranking.codes import ItemCodes
from ranking.data import PAD, Samples
from ranking.features import Field, SideFeatures
from ranking.model import RankConfig
from ranking.references import code_columns, design_matrix, train_dcn, train_lr


def _side() -> SideFeatures:
    genres = Field("genres", np.array([[0, 1], [0, -1], [1, -1], [2, -1]]), ("A", "B", "C"))
    gender = Field("gender", np.array([[1], [0]]), ("F", "M"))
    return SideFeatures((genres,), (gender,))


def _samples(user: list[int], item: list[int], label: list[bool]) -> Samples:
    n = len(user)
    return Samples(
        np.array(user, dtype=np.int64),
        np.array(item, dtype=np.int64),
        np.arange(n, dtype=np.int64),
        np.array(label),
        np.full((n, 1), PAD, dtype=np.int64),
    )


def test_design_matrix_by_hand() -> None:
    samples = _samples([0, 1], [0, 3], [True, False])
    known = np.array([True, True, True, False])  # item 3 was never trained on: no ID column
    x = design_matrix(samples, 2, known, _side()).toarray()
    # columns: user 0-1 | item 0-3 | gender F, M | genres A, B, C
    assert x.tolist() == [
        [1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0],
        [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1],
    ]


def test_references_score_cold_items_by_their_side_features() -> None:
    """Genre A is clicked, C is not; item 1 (A) and item 3 (C) are never trained on: only
    their genres can tell them apart, and both references must use them."""
    rng = np.random.default_rng(0)
    item = rng.choice([0, 2], size=600)  # item 0: A and B, clicked; item 2: B alone, not
    train = _samples(rng.integers(0, 2, size=600).tolist(), item.tolist(), (item == 0).tolist())
    cold = _samples([0, 0], [1, 3], [True, False])
    lr = train_lr(train, 2, 4, _side(), seed=0)(cold)
    assert lr[0] > lr[1] + 0.2
    dcn = train_dcn(train, 2, 4, _side(), RankConfig(dim=4, epochs=5, batch_size=64))(cold)
    assert dcn[0] > dcn[1] + 0.2


def test_code_columns_by_hand() -> None:
    codes = ItemCodes(
        vq=np.array([[0, 1], [1, 2], [2, 0]], dtype=np.int32),
        rq=np.array([[0, 1], [0, 2], [1, 1]], dtype=np.int32),
        embedding=np.eye(3, dtype=np.float32),
        n_vq=3,
        n_rq=3,
    )
    x = code_columns(codes).toarray()
    # VQ multi-hot (1/K each) | level-1 prefixes (0), (1) | level-2 prefixes (0,1), (0,2), (1,1)
    assert x.tolist() == [
        [0.5, 0.5, 0.0, 1, 0, 1, 0, 0],
        [0.0, 0.5, 0.5, 1, 0, 0, 1, 0],
        [0.5, 0.0, 0.5, 0, 1, 0, 0, 1],
    ]
