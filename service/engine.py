"""One bundle made ready to serve: verified bundle, quantizer, encoder, catalog lookup.

An `Engine` is immutable once built; a reload builds a new one and swaps the reference, so work
that started on the old engine finishes on it. Its methods are CPU-bound and are called from
thread pools (`prepare` from the decode pool, `encode` from the batcher's pool).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from codebooks import Quantizer, load_bundle
from codebooks.bundle import Bundle
from service.decode import (
    DecodeError,
    check_embedding,
    check_floats,
    decode_base64,
    decode_image,
    decode_wav,
)
from service.encoder import Content, Encoder
from service.errors import InvalidInputError, ItemRef
from service.schemas import ItemIn
from service.settings import Settings

log = logging.getLogger(__name__)

Int32Array = npt.NDArray[np.int32]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Cost:
    """What an item adds to a batch; the batcher caps each sum (settings max_batch_*)."""

    tokens: int = 0
    pixels: int = 0  # values of the encoder's image tensor: 3 x size x size, 0 without image
    audio_s: float = 0.0  # seconds of audio decoded


@dataclass(frozen=True)
class Prepared:
    """One decoded item, ready for the encoder (content) or the quantizer (embedding)."""

    item_id: str
    content: Content | None
    embedding: Float32Array | None  # (d,) when the caller sent one
    cost: Cost


@dataclass(frozen=True)
class Encoded:
    vq: Int32Array  # (B, K)
    rq: Int32Array  # (B, L)
    encode_s: float
    quantize_s: float


class Engine:
    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        self.bundle = bundle
        self.settings = settings
        self.quantizer = Quantizer(bundle, gpu="auto")
        spec = bundle.manifest.encoder
        self.encoder: Encoder | None = None
        if spec is not None:
            self.encoder = Encoder(
                bundle.path,
                spec,
                provider=settings.execution_provider,
                threads=settings.encoder_threads,
                int8=settings.encoder_int8,
            )
        # Catalog lookup without a dict of N strings: ids sorted once, binary search per item.
        self._order = np.argsort(bundle.item_ids, kind="stable")
        self._sorted_ids = bundle.item_ids[self._order]

    @classmethod
    def load(cls, path: Path, settings: Settings) -> Engine:
        start = time.perf_counter()
        engine = cls(load_bundle(path), settings)
        log.info(
            "bundle %s loaded in %.2fs: N=%d d=%d K=%d L=%d Nc=%d encoder=%s",
            engine.version,
            time.perf_counter() - start,
            bundle_n(engine.bundle),
            engine.dim,
            engine.quantizer.k,
            engine.levels,
            engine.bundle.manifest.centroids,
            engine.provider,
        )
        return engine

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def dim(self) -> int:
        return self.bundle.manifest.dim

    @property
    def levels(self) -> int:
        return self.bundle.manifest.levels

    @property
    def provider(self) -> Literal["none"] | str:
        return self.encoder.provider if self.encoder is not None else "none"

    def catalog_entry(self, item_id: str) -> tuple[tuple[int, ...], int] | None:
        """A catalog item's (RQ tuple, suffix) from the bundle, or None."""
        pos = int(np.searchsorted(self._sorted_ids, item_id))
        if pos == len(self._sorted_ids) or self._sorted_ids[pos] != item_id:
            return None
        row = int(self._order[pos])
        codes = tuple(int(c) for c in self.bundle.rq_codes[row])
        return codes, int(self.bundle.sid_suffix[row])

    def prepare(self, item: ItemIn, index: int) -> Prepared:
        """Decode one item (base64, image, WAV, tokens) or check its embedding; a bad field
        raises InvalidInputError naming the item's index, id and field."""
        try:
            return self._prepare(item)
        except DecodeError as err:
            raise InvalidInputError(
                f"items[{index}] ({item.id}): {err}",
                item=ItemRef(index=index, id=item.id, field=err.field),
            ) from err

    def _prepare(self, item: ItemIn) -> Prepared:
        s = self.settings
        has_content = item.text is not None or item.image is not None or item.audio is not None
        if item.embedding is not None:
            if has_content or item.features is not None:
                raise DecodeError(
                    "embedding", "send either an embedding or text/image/audio (or features)"
                )
            return Prepared(item.id, None, check_embedding(item.embedding, self.dim), Cost())
        if item.features is not None:
            return self._prepare_features(item, has_content)
        if not has_content:
            raise DecodeError("item", "no text, image, audio, features or embedding")
        if self.encoder is None:
            raise DecodeError(
                "item",
                f"bundle {self.version} has no encoder; send the item's embedding ({self.dim} "
                "floats)",
            )
        spec = self.encoder.spec
        if spec.mode == "features":
            raise DecodeError(
                "item",
                f"bundle {self.version}'s encoder takes features ({self.encoder.n_features} "
                "floats), not text/image/audio",
            )
        tokens = image = audio = None
        cost_tokens = cost_pixels = 0
        cost_audio = 0.0
        if item.text is not None:
            if len(item.text) > s.max_text_chars:
                raise DecodeError(
                    "text",
                    f"{len(item.text)} characters, more than the limit of {s.max_text_chars}",
                )
            tokens = self.encoder.tokenize(item.text)
            cost_tokens = len(tokens)
        if item.image is not None:
            raw = decode_base64(item.image, "image", s.max_image_bytes)
            image = decode_image(raw, spec.image_size, s.max_image_pixels)
            cost_pixels = image.size
        if item.audio is not None:
            raw = decode_base64(item.audio, "audio", s.max_audio_bytes)
            audio, seconds = decode_wav(
                raw, spec.audio_sample_rate, spec.audio_samples, s.max_audio_s
            )
            cost_audio = seconds
        return Prepared(
            item.id,
            Content(tokens=tokens, image=image, audio=audio),
            None,
            Cost(tokens=cost_tokens, pixels=cost_pixels, audio_s=cost_audio),
        )

    def _prepare_features(self, item: ItemIn, has_content: bool) -> Prepared:
        assert item.features is not None
        if has_content:
            raise DecodeError("features", "send either features or text/image/audio")
        if self.encoder is None or self.encoder.spec.mode != "features":
            raise DecodeError("features", f"bundle {self.version}'s encoder does not take features")
        x = check_floats(item.features, self.encoder.n_features, "features")
        return Prepared(item.id, Content(features=x), None, Cost())

    def encode(self, items: list[Prepared]) -> Encoded:
        """Prepared items -> their VQ and RQ codes, in order; content through the encoder,
        embeddings straight to the quantizer."""
        start = time.perf_counter()
        x = np.empty((len(items), self.dim), dtype=np.float32)
        content_rows = [i for i, p in enumerate(items) if p.content is not None]
        for i, p in enumerate(items):
            if p.embedding is not None:
                x[i] = p.embedding
        if content_rows:
            assert self.encoder is not None  # prepare() refuses content without an encoder
            contents = [items[i].content for i in content_rows]
            x[content_rows] = self.encoder.run([c for c in contents if c is not None])
        encoded_at = time.perf_counter()
        vq, rq = self.quantizer.encode(x)
        if vq.shape[0] != len(items) or rq.shape[0] != len(items):
            raise RuntimeError(f"quantizer answered {vq.shape[0]} rows for {len(items)} items")
        return Encoded(vq, rq, encoded_at - start, time.perf_counter() - encoded_at)

    def warm_up(self) -> None:
        """One pass through every stage so the first real batch pays no start-up cost."""
        rng = np.random.default_rng(0)
        probe = Prepared("warmup", None, rng.standard_normal(self.dim).astype(np.float32), Cost())
        items = [probe]
        if self.encoder is not None and self.encoder.spec.mode == "features":
            content = Content(features=np.ones(self.encoder.n_features, dtype=np.float32))
            items.append(Prepared("warmup-features", content, None, Cost()))
        elif self.encoder is not None:
            spec = self.encoder.spec
            content = Content(
                tokens=self.encoder.tokenize("warm up"),
                image=np.zeros((3, spec.image_size, spec.image_size), dtype=np.float32),
                audio=np.zeros(spec.audio_samples, dtype=np.float32),
            )
            items.append(Prepared("warmup-content", content, None, Cost()))
        self.encode(items)


def bundle_n(bundle: Bundle) -> int:
    return bundle.manifest.n_items
