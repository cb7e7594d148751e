"""The ranker's features on hand-made codes: cross features, padding, every variant trains."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ranking.codes import ItemCodes  # noqa: E402
from ranking.data import PAD, Samples  # noqa: E402
from ranking.features import Field, SideFeatures  # noqa: E402
from ranking.model import (  # noqa: E402
    VARIANTS,
    RankConfig,
    Ranker,
    neighbour_pool,
    predict,
    train_ranker,
)


def _codes() -> ItemCodes:
    rq = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1], [2, 0, 0]], dtype=np.int32)
    vq = np.array([[i, (i + 1) % 5] for i in range(5)], dtype=np.int32)
    emb = np.eye(5, 4, dtype=np.float32)
    return ItemCodes(vq=vq, rq=rq, embedding=emb, n_vq=5, n_rq=3)


def test_cross_features_count_shared_prefixes() -> None:
    model = Ranker(2, 5, _codes(), RankConfig(variant="vqrq", dim=4))
    item = torch.tensor([0])
    history = torch.tensor([[1, 2, 3, 4]])  # vs target codes (0, 0, 0)
    feats = model.cross_features(item, history, history != model.pad).view(1, 3, 5)
    counts = torch.expm1(feats[0, :, -1]).round()
    assert counts.tolist() == [2.0, 1.0, 0.0]  # prefix 0: items 1,2; 0-0: item 1; 0-0-0: none
    ids = model.item_emb(history[0])
    assert torch.allclose(feats[0, 1, :4], ids[0])  # level 2: item 1 alone
    assert torch.allclose(feats[0, 0, :4], ids[:2].mean(0))
    assert torch.all(feats[0, 2] == 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_change_the_score(variant: str) -> None:
    torch.manual_seed(0)
    model = Ranker(2, 5, _codes(), RankConfig(variant=variant, dim=4))  # type: ignore[arg-type]
    model.eval()
    user, item = torch.tensor([1]), torch.tensor([3])
    short = model(user, item, torch.tensor([[2, 1]]))
    padded = model(user, item, torch.tensor([[PAD, PAD, PAD, 2, 1]]))
    assert torch.allclose(short, padded, atol=1e-6)
    empty = model(user, item, torch.tensor([[PAD, PAD]]))
    assert torch.isfinite(empty).all()


def test_training_learns_a_separable_rule() -> None:
    """Item 0 and 1 are always clicked, 3 and 4 never: any variant must rank them apart."""
    rng = np.random.default_rng(0)
    n = 600
    item = rng.choice([0, 1, 3, 4], size=n).astype(np.int64)
    samples = Samples(
        user=rng.integers(0, 2, size=n).astype(np.int64),
        item=item,
        ts=np.arange(n, dtype=np.int64),
        label=item < 2,
        history=np.full((n, 3), PAD, dtype=np.int64),
    )
    for variant in VARIANTS:
        config = RankConfig(variant=variant, dim=4, epochs=5, batch_size=64)
        p = predict(train_ranker(samples, 2, 5, _codes(), config), samples)
        assert p[samples.label].min() > p[~samples.label].max(), variant


def test_attention_matches_the_concatenated_din_input() -> None:
    torch.manual_seed(0)
    model = Ranker(2, 5, _codes(), RankConfig(variant="vqrq", dim=4))
    target = torch.randn(3, 7)
    hist = torch.randn(3, 5, 7)
    model.attention_in = torch.nn.Linear(28, 6)
    q = target[:, None, :].expand_as(hist)
    reference = model.attention_in(torch.cat([q, hist, q - hist, q * hist], dim=-1))
    assert torch.allclose(model.attention_hidden(target, hist), reference, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_item_table_path_matches_per_slot_features(variant: str) -> None:
    torch.manual_seed(0)
    model = Ranker(2, 5, _codes(), RankConfig(variant=variant, dim=4))  # type: ignore[arg-type]
    item, history = torch.tensor([0, 3, 4]), torch.tensor([[1, 2, 5], [5, 5, 0], [3, 4, 1]])
    target, hist = model.item_reprs(item, history)  # 12 slots > 6 rows: the table path
    assert torch.allclose(target, model.item_repr(item))
    assert torch.allclose(hist, model.item_repr(history))


def _side() -> SideFeatures:
    """Items 0-2 are of genre A, 3-5 of genre B; two users of two age buckets."""
    genre = Field("genre", np.array([[0], [0], [0], [1], [1], [1]]), ("A", "B"))
    age = Field("age", np.array([[0], [1]]), ("young", "old"))
    return SideFeatures((genre,), (age,))


def _six_codes() -> ItemCodes:
    """Six items on a circle: each item's VQ code is itself, then its two neighbours."""
    angles = np.arange(6) * (2 * np.pi / 6)
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    vq = np.array([[i, (i + 1) % 6, (i - 1) % 6] for i in range(6)], dtype=np.int32)
    rq = np.zeros((6, 2), dtype=np.int32)
    return ItemCodes(vq, rq, emb, n_vq=6, n_rq=2, vq_rows=np.arange(6, dtype=np.int64))


def test_side_features_need_features() -> None:
    with pytest.raises(ValueError, match="side=True needs the side features"):
        Ranker(2, 6, _six_codes(), RankConfig(variant="vq", side=True))


def test_neighbour_pool_by_hand() -> None:
    trained = np.array([True, True, False, True, True, True])
    rows, weights = neighbour_pool(_six_codes(), 3, trained, temperature=0.5)
    # item 1: never itself, and item 2 has no trained ID -> item 0 alone
    assert rows[1].tolist() == [6, 6, 0]
    assert weights[1].tolist() == [0.0, 0.0, 1.0]
    # item 2 (the cold one): its neighbours 3 and 1 are equally similar
    assert rows[2].tolist() == [6, 3, 1]
    assert np.allclose(weights[2], [0.0, 0.5, 0.5])
    # a nearer neighbour weighs more: softmax(inner product / temperature)
    codes = replace(_six_codes(), vq=np.array([[0, 1, 3]] * 6, dtype=np.int32))
    _, w = neighbour_pool(codes, 3, np.ones(6, dtype=bool), temperature=0.5)
    sim = codes.embedding[[0, 1, 3]] @ codes.embedding[4]
    expected = np.exp(sim / 0.5) / np.exp(sim / 0.5).sum()
    assert np.allclose(w[4], expected)
    assert w[4, 2] > w[4, 0] > w[4, 1]  # item 3 is next to 4, item 1 opposite


def test_the_cold_path_pools_trained_neighbours_ids() -> None:
    torch.manual_seed(0)
    trained = np.array([True, True, False, True, True, True])
    config = RankConfig(variant="vq", dim=4, cold_pool=True, pool_temperature=0.5)
    model = Ranker(2, 6, _six_codes(), config, trained)
    ids = model.item_emb.weight
    cold = model.id_embedding(torch.tensor([2]))[0]
    assert torch.allclose(cold, (ids[1] + ids[3]) / 2, atol=1e-6)
    warm = model.id_embedding(torch.tensor([4]))[0]
    assert torch.allclose(warm, ids[4])
    dropped = model.id_embedding(torch.tensor([4]), cold=True)[0]
    assert torch.allclose(dropped, (ids[3] + ids[5]) / 2, atol=1e-6)
    # ID dropout sends exactly the drawn targets down the cold path
    item, history = torch.tensor([4, 4]), torch.tensor([[0, 1], [0, 1]])
    target, _ = model.item_reprs(item, history, drop=torch.tensor([True, False]))
    assert torch.allclose(target[0], model.item_repr(item[:1], cold=True)[0])
    assert torch.allclose(target[1], model.item_repr(item[:1])[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_side_padding_does_not_change_the_score(variant: str) -> None:
    torch.manual_seed(0)
    config = RankConfig(variant=variant, dim=4, side=True, cold_pool=True)  # type: ignore[arg-type]
    model = Ranker(2, 6, _six_codes(), config, features=_side())
    model.eval()
    user, item = torch.tensor([1]), torch.tensor([3])
    short = model(user, item, torch.tensor([[2, 1]]))
    padded = model(user, item, torch.tensor([[PAD, PAD, PAD, 2, 1]]))
    assert torch.allclose(short, padded, atol=1e-6)


def test_side_features_rank_a_cold_item_by_its_genre() -> None:
    """Genre A is clicked, genre B is not; items 2 (A) and 5 (B) are never trained on. Without
    side features both are the same out-of-vocabulary item; with them, 2 ranks above 5."""
    rng = np.random.default_rng(0)
    n = 800
    item = rng.choice([0, 1, 3, 4], size=n).astype(np.int64)
    samples = Samples(
        user=rng.integers(0, 2, size=n).astype(np.int64),
        item=item,
        ts=np.arange(n, dtype=np.int64),
        label=item < 3,
        history=np.full((n, 2), PAD, dtype=np.int64),
    )
    cold = Samples(
        np.array([0, 0]), np.array([2, 5]), np.zeros(2, np.int64), np.array([True, False]),
        np.full((2, 2), PAD, dtype=np.int64),
    )  # fmt: skip
    base = RankConfig(variant="base", dim=4, epochs=4, batch_size=64, id_dropout=0.3)
    for side, expect_gap in ((False, False), (True, True)):
        model = train_ranker(samples, 2, 6, _six_codes(), replace(base, side=side), _side())
        p = predict(model, cold)
        assert (p[0] - p[1] > 0.2) == expect_gap, (side, p)
