"""The synthetic catalog and log: seeded, shaped as documented, confounded as Figure 6."""

from __future__ import annotations

import numpy as np

from catalogs.content import AUDIO_SAMPLES, IMAGE_SIZE
from catalogs.interactions import Interactions
from catalogs.synthetic import SyntheticCatalog, synthetic_catalog, synthetic_interactions


def test_content_is_seeded_and_shaped(catalog: SyntheticCatalog) -> None:
    rows = np.array([0, 5, 399])
    a = catalog.content(rows)
    b = synthetic_catalog(400, n_groups=8, seed=3).content(rows)
    assert a.texts == b.texts
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.image.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert a.image.dtype == np.float32
    assert a.audio.shape == (3, AUDIO_SAMPLES)
    assert a.audio.dtype == np.float32
    assert a.image.min() >= 0.0
    assert a.image.max() <= 1.0
    assert synthetic_catalog(400, n_groups=8, seed=4).content(rows).texts != a.texts


def test_missing_modalities_are_masked_and_zero(catalog: SyntheticCatalog) -> None:
    content = catalog.content(np.arange(len(catalog)))
    no_image = content.image_mask == 0
    no_audio = content.audio_mask == 0
    assert 0 < no_image.sum() < len(catalog)
    assert 0 < no_audio.sum() < len(catalog)
    assert not content.image[no_image].any()
    assert content.image[~no_image].any(axis=(1, 2, 3)).all()
    assert not content.audio[no_audio].any()


def test_styles_are_shared_across_businesses(catalog: SyntheticCatalog) -> None:
    """The confounder: a style is worn by two businesses and a business wears two styles."""
    pairs = {(int(b), int(s)) for b, s in zip(catalog.business, catalog.style, strict=True)}
    for style in range(8):
        assert {b for b, s in pairs if s == style} == {style, (style - 1) % 8}
    same_style = catalog.style[:, None] == catalog.style[None, :]
    same_business = catalog.business[:, None] == catalog.business[None, :]
    # Looking alike and being bought alike disagree for a large share of item pairs.
    assert (same_style & ~same_business).sum() > 0.3 * same_style.sum()


def test_log_is_sorted_skewed_and_follows_taste(
    catalog: SyntheticCatalog, events: Interactions
) -> None:
    assert len(events) == 30_000
    order = np.lexsort((events.ts, events.user))
    np.testing.assert_array_equal(order, np.arange(len(events)))
    assert 0.3 < events.label.mean() < 0.9
    counts = np.sort(np.bincount(events.item, minlength=len(catalog)))[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # a head and a long tail
    # A user's positive items concentrate on few businesses, their negatives do not.
    pos = events.positives()
    top_share = []
    for label_mask in (events.label, ~events.label):
        u, b = events.user[label_mask], catalog.business[events.item[label_mask]]
        table = np.zeros((events.n_users, 8))
        np.add.at(table, (u, b), 1)
        busy = table.sum(1) >= 10
        top_share.append((np.sort(table[busy], 1)[:, -2:].sum(1) / table[busy].sum(1)).mean())
    assert top_share[0] > 0.9 > top_share[1]
    assert len(pos) == int(events.label.sum())


def test_log_is_seeded(catalog: SyntheticCatalog) -> None:
    a = synthetic_interactions(catalog, 1000, seed=9)
    b = synthetic_interactions(catalog, 1000, seed=9)
    np.testing.assert_array_equal(a.item, b.item)
    np.testing.assert_array_equal(a.label, b.label)
