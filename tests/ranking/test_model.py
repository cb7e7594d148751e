"""The ranker's features on hand-made codes: cross features, padding, every variant trains."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ranking.codes import ItemCodes  # noqa: E402
from ranking.data import PAD, Samples  # noqa: E402
from ranking.model import VARIANTS, RankConfig, Ranker, predict, train_ranker  # noqa: E402


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
