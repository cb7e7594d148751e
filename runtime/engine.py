"""One bundle made ready to encode: verified bundle, quantizer, encoder, catalog lookup.

An `Engine` is immutable once built; a service switching bundles builds a new one and swaps
the reference, so work that started on the old engine finishes on it. Its methods are
CPU-bound: the service calls them from thread pools (`prepare` from the decode pool, `encode`
from the batcher's pool), the backfill from its Ray actors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from codebooks import Quantizer, load_bundle
from codebooks.bundle import Bundle
from codebooks.vq import own_row_first
from runtime.decode import (
    DecodeError,
    check_embedding,
    check_floats,
    check_text,
    decode_image,
    decode_wav,
)
from runtime.encoder import Content, Encoder

log = logging.getLogger(__name__)

Int32Array = npt.NDArray[np.int32]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs its encoder (the service's QARM_* settings of the same names)."""

    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    encoder_threads: int = 0  # ONNX Runtime intra-op threads, 0: ONNX Runtime's choice
    encoder_int8: bool = False  # the manifest's int8_file instead of its float encoder


@dataclass(frozen=True)
class InputLimits:
    """The most one item may hold; each is refused with the field named before decoding."""

    max_text_chars: int = 10_000
    max_image_bytes: int = 10 << 20
    max_image_pixels: int = 25_000_000
    max_audio_bytes: int = 20 << 20
    max_audio_s: float = 60.0

    @classmethod
    def of(cls, settings: object) -> InputLimits:
        """The limits from a settings object with fields of the same names."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class RawItem:
    """One item as it arrives, before decoding: encoded image and audio bytes, or the
    embedding (or upstream features) computed elsewhere."""

    id: str
    text: str | None = None
    image: bytes | None = None  # JPEG or PNG
    audio: bytes | None = None  # PCM WAV
    embedding: Sequence[float] | Float32Array | None = None
    features: Sequence[float] | Float32Array | None = None


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
    def __init__(self, bundle: Bundle, options: EngineOptions, limits: InputLimits) -> None:
        self.bundle = bundle
        self.limits = limits
        self.quantizer = Quantizer(bundle, gpu="auto")
        spec = bundle.manifest.encoder
        self.encoder: Encoder | None = None
        if spec is not None:
            self.encoder = Encoder(
                bundle.path,
                spec,
                provider=options.execution_provider,
                threads=options.encoder_threads,
                int8=options.encoder_int8,
            )
        # Catalog lookup without a dict of N strings: ids sorted once, binary search per item.
        self._order = np.argsort(bundle.item_ids, kind="stable")
        self._sorted_ids = bundle.item_ids[self._order]

    @classmethod
    def load(
        cls, path: Path, options: EngineOptions | None = None, limits: InputLimits | None = None
    ) -> Engine:
        start = time.perf_counter()
        engine = cls(load_bundle(path), options or EngineOptions(), limits or InputLimits())
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

    def catalog_rows(self, start: int, stop: int) -> tuple[Encoded, Int32Array]:
        """Codes of the bundle's own catalog rows start..stop-1, without the encoder: RQ codes
        from the bundle, VQ codes searched with each row's vector read back from the bundle
        (a row's own id comes first, as for a catalog item posted again). Answers the codes
        and the rows' build suffixes (`bundle.sid_suffix`)."""
        begin = time.perf_counter()
        x = self.bundle.catalog_vectors(start, stop)
        read = time.perf_counter()
        vq = own_row_first(self.quantizer.encode(x)[0], np.arange(start, stop))
        rq = self.bundle.rq_codes[start:stop]
        encoded = Encoded(vq, rq, read - begin, time.perf_counter() - read)
        return encoded, self.bundle.sid_suffix[start:stop]

    def prepare(self, item: RawItem) -> Prepared:
        """Decode one item (image, WAV, tokens) or check its embedding; a bad field raises
        DecodeError naming the field (the caller adds which item it was)."""
        s = self.limits
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
            tokens = self.encoder.tokenize(check_text(item.text, s.max_text_chars))
            cost_tokens = len(tokens)
        if item.image is not None:
            check_size(item.image, "image", s.max_image_bytes)
            image = decode_image(item.image, spec.image_size, s.max_image_pixels)
            cost_pixels = image.size
        if item.audio is not None:
            check_size(item.audio, "audio", s.max_audio_bytes)
            audio, seconds = decode_wav(
                item.audio, spec.audio_sample_rate, spec.audio_samples, s.max_audio_s
            )
            cost_audio = seconds
        return Prepared(
            item.id,
            Content(tokens=tokens, image=image, audio=audio),
            None,
            Cost(tokens=cost_tokens, pixels=cost_pixels, audio_s=cost_audio),
        )

    def _prepare_features(self, item: RawItem, has_content: bool) -> Prepared:
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


def check_size(raw: bytes, field: str, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise DecodeError(field, f"{len(raw)} bytes, more than the limit of {max_bytes}")
    if not raw:
        raise DecodeError(field, "empty")
