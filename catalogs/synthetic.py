"""A seeded synthetic multimodal catalog and interaction log, with a Figure-6-like confounder.

Every item belongs to a latent *business* group (who buys it) and has a content *style* (what
it looks and sounds like). Styles are shared across businesses on purpose, as in Figure 6 of the
QARM paper: business g sells items of style g and of style g+1, so items that look alike are
bought by two different crowds, and one crowd buys two different looks. Content similarity and
business similarity therefore disagree measurably; only a weak cue in the content (a model code
in the title, a corner patch in the cover, an overtone in the audio) tells businesses apart, and
that is what alignment on behaviour must learn to attend to.

Content is rendered on demand from a few numbers per item (`SyntheticCatalog.content`), so a
catalog of any size costs no memory and rendering a row is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from catalogs.content import (
    AUDIO_SAMPLES,
    IMAGE_SIZE,
    SAMPLE_RATE,
    FloatArray,
    IntArray,
    ItemContent,
)
from catalogs.files import Files
from catalogs.interactions import Interactions
from runtime.media import png_bytes, wav_bytes

# One theme of everyday words per content style: MiniLM knows these words, so pre-trained text
# similarity follows the style (the confounder), not the business.
THEMES: tuple[tuple[str, ...], ...] = (
    ("pasta", "sauce", "kitchen", "recipe", "garlic", "oven", "dinner", "chef"),
    ("football", "goal", "stadium", "league", "match", "striker", "coach", "penalty"),
    ("lipstick", "makeup", "mascara", "skin", "beauty", "blush", "powder", "serum"),
    ("engine", "car", "tyre", "garage", "motor", "brake", "wheel", "racing"),
    ("puppy", "dog", "kitten", "cat", "leash", "pet", "collar", "treats"),
    ("guitar", "song", "concert", "drums", "melody", "band", "chorus", "stage"),
    ("tent", "hiking", "mountain", "trail", "camping", "backpack", "forest", "compass"),
    ("laptop", "keyboard", "software", "computer", "screen", "code", "chip", "server"),
    ("garden", "flowers", "soil", "seeds", "roses", "tulips", "compost", "plants"),
    ("baby", "stroller", "diaper", "toddler", "crib", "nursery", "bottle", "toys"),
    ("yoga", "fitness", "workout", "gym", "running", "stretch", "muscle", "cardio"),
    ("novel", "book", "poetry", "author", "chapter", "library", "story", "reading"),
    ("coffee", "espresso", "latte", "beans", "barista", "mug", "roast", "cafe"),
    ("fishing", "boat", "lake", "bait", "river", "anchor", "sailing", "harbor"),
    ("painting", "canvas", "brush", "gallery", "sketch", "artist", "colour", "easel"),
    ("phone", "camera", "selfie", "charger", "photo", "lens", "video", "tripod"),
)
ADJECTIVES = ("new", "best", "great", "classic", "cheap", "premium", "daily", "top", "fresh", "big")


@dataclass(frozen=True)
class SyntheticCatalog:
    """N items drawn from `n_groups` businesses; content is rendered from these per-item numbers."""

    seed: int
    business: IntArray  # (N,) latent business group: who buys the item
    style: IntArray  # (N,) content style: what the item looks like (business or business+1)
    popularity: npt.NDArray[np.float64]  # (N,) relative popularity within its business
    has_image: npt.NDArray[np.bool_]
    has_audio: npt.NDArray[np.bool_]
    words: IntArray  # (N, 4) theme word choices and an adjective, for the title
    pitch: npt.NDArray[np.float64]  # (N,) per-item jitter of the style's base pitch

    @property
    def ids(self) -> npt.NDArray[np.str_]:
        return np.char.add("item-", np.char.zfill(np.arange(len(self)).astype(str), 7))

    @property
    def groups(self) -> IntArray:
        return self.business

    def __len__(self) -> int:
        return len(self.business)

    def texts(self, rows: IntArray) -> list[str | None]:
        return [self._title(int(r)) for r in rows]

    def content(self, rows: IntArray) -> ItemContent:
        """Render the content of catalog rows `rows` (deterministic per row)."""
        rows = np.asarray(rows, dtype=np.int64)
        texts = self.texts(rows)
        image = np.stack([self._image(int(r)) for r in rows]) if len(rows) else _empty_images()
        audio = np.stack([self._audio(int(r)) for r in rows]) if len(rows) else _empty_audio()
        image_mask = self.has_image[rows].astype(np.float32)
        audio_mask = self.has_audio[rows].astype(np.float32)
        image *= image_mask[:, None, None, None]
        audio *= audio_mask[:, None]
        return ItemContent(texts, image, image_mask, audio, audio_mask)

    def _title(self, row: int) -> str:
        theme = THEMES[int(self.style[row]) % len(THEMES)]
        w = self.words[row]
        business = int(self.business[row])
        # The model code is the business's only cue in the text: a few sub-word tokens.
        code = f"{chr(ord('a') + business % 26)}{chr(ord('q') + business // 26 % 10)}{business}"
        return (
            f"{ADJECTIVES[w[3] % len(ADJECTIVES)]} {theme[w[0]]} {theme[w[1]]} "
            f"{theme[w[2]]} model {code}"
        )

    def _image(self, row: int) -> FloatArray:
        rng = np.random.default_rng((self.seed, 1, row))
        style, business = int(self.style[row]), int(self.business[row])
        hue = _palette(style)
        yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
        angle = np.pi * (style % 8) / 8
        stripes = 0.5 + 0.5 * np.sin(
            2 * np.pi * (3 + style % 5) * (xx * np.cos(angle) + yy * np.sin(angle))
        )
        img = hue[:, None, None] * (0.6 + 0.4 * stripes[None])
        # The business cue: a small patch in one corner, in the business's own colour.
        patch = 8
        y0 = 0 if business % 2 == 0 else IMAGE_SIZE - patch
        x0 = 0 if business // 2 % 2 == 0 else IMAGE_SIZE - patch
        corner = img[:, y0 : y0 + patch, x0 : x0 + patch]
        corner[:] = 0.5 * corner + 0.5 * _palette(business * 7 + 3)[:, None, None]
        img += 0.08 * rng.standard_normal(img.shape)
        out: FloatArray = np.clip(img, 0.0, 1.0).astype(np.float32)
        return out

    def _audio(self, row: int) -> FloatArray:
        rng = np.random.default_rng((self.seed, 2, row))
        style, business = int(self.style[row]), int(self.business[row])
        t = np.arange(AUDIO_SAMPLES, dtype=np.float64) / SAMPLE_RATE
        base = 220.0 * 2 ** (style / 6) * self.pitch[row]  # the style's pitch, half-tone steps
        overtone = 2000.0 + 5000.0 * (business % 64) / 64  # the business cue: a quiet high tone
        phase = rng.uniform(0, 2 * np.pi, size=2)
        wave = 0.6 * np.sin(2 * np.pi * base * t + phase[0])
        wave += 0.05 * np.sin(2 * np.pi * overtone * t + phase[1])
        wave += 0.05 * rng.standard_normal(AUDIO_SAMPLES)
        out: FloatArray = wave.astype(np.float32)
        return out


def synthetic_catalog(
    n_items: int,
    *,
    n_groups: int = 16,
    confounded: float = 0.5,
    missing_image: float = 0.1,
    missing_audio: float = 0.2,
    seed: int = 0,
) -> SyntheticCatalog:
    """Draw `n_items` items from `n_groups` businesses.

    A share `confounded` of each business's items wears the next business's style (the
    Figure-6 confounder); `missing_image` and `missing_audio` are the shares of items without
    a cover or a clip. Popularity within a business is Zipf-like (a long tail).
    """
    if n_items < 1 or n_groups < 2:
        raise ValueError(f"need n_items >= 1 and n_groups >= 2, got {n_items}, {n_groups}")
    rng = np.random.default_rng(seed)
    business = rng.integers(0, n_groups, size=n_items)
    style = (business + (rng.random(n_items) < confounded)) % n_groups
    rank = rng.permutation(n_items) + 1
    popularity = 1.0 / rank.astype(np.float64) ** 0.8
    return SyntheticCatalog(
        seed=seed,
        business=business.astype(np.int64),
        style=style.astype(np.int64),
        popularity=popularity,
        has_image=rng.random(n_items) >= missing_image,
        has_audio=rng.random(n_items) >= missing_audio,
        words=rng.integers(0, 8, size=(n_items, 4)).astype(np.int64),
        pitch=rng.uniform(0.97, 1.03, size=n_items),
    )


def synthetic_interactions(
    catalog: SyntheticCatalog,
    n_events: int,
    *,
    n_users: int | None = None,
    groups_per_user: int = 2,
    explore: float = 0.3,
    days: int = 30,
    seed: int = 0,
) -> Interactions:
    """Draw `n_events` events by users who each like `groups_per_user` businesses.

    A share `explore` of events are impressions of globally popular items, mostly negative; the
    rest come from the user's businesses, mostly positive. User activity is log-normal and item
    popularity Zipf-like, so both have long tails. Vectorised: a million events take seconds.
    """
    rng = np.random.default_rng((seed, 3))
    n_groups = int(catalog.business.max()) + 1
    n_users = n_users if n_users is not None else max(1, n_events // 40)
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    user = np.sort(rng.choice(n_users, size=n_events, p=activity / activity.sum()))
    liked = rng.integers(0, n_groups, size=(n_users, groups_per_user))

    exploring = rng.random(n_events) < explore
    group = liked[user, rng.integers(0, groups_per_user, size=n_events)]
    item = _draw_in_group(catalog, group, rng)
    pop = catalog.popularity / catalog.popularity.sum()
    item[exploring] = rng.choice(len(catalog), size=int(exploring.sum()), p=pop)

    in_taste = (liked[user] == catalog.business[item][:, None]).any(axis=1)
    label = np.where(in_taste, rng.random(n_events) < 0.8, rng.random(n_events) < 0.05)
    ts = rng.integers(0, days * 86_400, size=n_events)
    order = np.lexsort((ts, user))
    return Interactions(
        user=user[order].astype(np.int64),
        item=item[order].astype(np.int64),
        ts=ts[order].astype(np.int64),
        label=label[order],
    )


def _draw_in_group(
    catalog: SyntheticCatalog, group: IntArray, rng: np.random.Generator
) -> IntArray:
    """One item per entry of `group`, drawn within that business by popularity.

    Inverse-CDF sampling over all businesses at once: items sorted by business, each business's
    CDF shifted by its index, then a single searchsorted for `group + u`.
    """
    order = np.argsort(catalog.business, kind="stable")
    b = catalog.business[order]
    p = catalog.popularity[order]
    totals = np.bincount(b, weights=p, minlength=int(b.max()) + 1)
    if (totals == 0).any():
        raise ValueError("every business group needs at least one item")
    before = np.concatenate(([0.0], np.cumsum(totals)))[b]  # mass of the businesses before b
    cdf = b + (np.cumsum(p) - before) / totals[b]  # business g's CDF runs over (g, g + 1]
    u = np.clip(rng.random(len(group)), 1e-12, 1 - 1e-12)
    pos = np.minimum(np.searchsorted(cdf, group + u), len(order) - 1)
    return order[pos].astype(np.int64)


def _palette(k: int) -> FloatArray:
    """A distinct saturated RGB colour for index k (golden-angle hues)."""
    h = (k * 0.618034) % 1.0
    rgb = np.abs(((h * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1
    out: FloatArray = (0.15 + 0.85 * np.clip(rgb, 0, 1)).astype(np.float32)
    return out


def _empty_images() -> FloatArray:
    return np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)


def _empty_audio() -> FloatArray:
    return np.zeros((0, AUDIO_SAMPLES), dtype=np.float32)


def write_synthetic(
    catalog: SyntheticCatalog,
    events: Interactions,
    out: Path,
    *,
    chunk: int = 10_000,
    progress: bool = True,
) -> Files:
    """The catalog and its log as a user's two files (docs/data.md): PNG covers and WAV clips
    as bytes, the business as a `group` column; written `chunk` rows at a time."""
    out.mkdir(parents=True, exist_ok=True)
    ids = catalog.ids
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("image", pa.binary()),
            ("audio", pa.binary()),
            ("group", pa.int32()),
        ]
    )
    with pq.ParquetWriter(out / "items.parquet", schema) as writer:
        for start in tqdm(range(0, len(catalog), chunk), desc="items", disable=not progress):
            rows = np.arange(start, min(start + chunk, len(catalog)))
            content = catalog.content(rows)
            image = [
                png_bytes(content.image[j]) if content.image_mask[j] else None
                for j in range(len(rows))
            ]
            audio = [
                wav_bytes(content.audio[j], SAMPLE_RATE) if content.audio_mask[j] else None
                for j in range(len(rows))
            ]
            batch = [ids[rows].tolist(), content.texts, image, audio, catalog.business[rows]]
            writer.write_table(pa.table(batch, schema=schema))
    log = pa.table(
        {
            "user": pa.array(np.char.add("user-", events.user.astype(str)).tolist()),
            "item": pa.array(ids[events.item].tolist()),
            "ts": pa.array(events.ts, pa.int64()),
            "label": pa.array(events.label.astype(np.int8), pa.int8()),
        }
    )
    pq.write_table(log, out / "events.parquet")
    return Files(out / "items.parquet", out / "events.parquet", group_column="group")
