"""A request's items made ready for the batcher: base64 decoded, then the runtime's checks.

Runs in a decode pool, never on the event loop. A request with an image or audio goes to the
`media` pool, any other (text, embeddings, features) to the `light` one, so a cheap write never
queues behind image decoding. Before any image is decoded, the request's pixels are summed from
the image headers and refused past the request's budget; between items the write's deadline is
checked, so a request whose caller has been answered 503 stops using the pool. A bad field
raises InvalidInputError naming the item's index, id and field, so a request with one bad item
writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from runtime import DecodeError, Engine, InputLimits, Prepared, RawItem
from runtime.decode import decode_base64, image_size
from service.errors import DeadlineExceededError, InvalidInputError, ItemRef
from service.schemas import ItemIn


@dataclass(frozen=True)
class DecodePools:
    """The thread pools requests are decoded in: `media` for those with an image or audio,
    `light` for the rest."""

    media: ThreadPoolExecutor
    light: ThreadPoolExecutor

    @classmethod
    def start(cls, media_threads: int, light_threads: int) -> DecodePools:
        return cls(
            ThreadPoolExecutor(media_threads, thread_name_prefix="qarm-decode"),
            ThreadPoolExecutor(light_threads, thread_name_prefix="qarm-light"),
        )

    def pool_for(self, items: Sequence[ItemIn]) -> ThreadPoolExecutor:
        media = any(item.image is not None or item.audio is not None for item in items)
        return self.media if media else self.light

    def shutdown(self) -> None:
        self.media.shutdown(wait=True)
        self.light.shutdown(wait=True)


def prepare_request(
    targets: Sequence[Engine], items: Sequence[ItemIn], *, max_pixels: int, deadline: float
) -> list[list[Prepared]]:
    """Every item made ready for every engine of `targets` (one list per engine, in item
    order), all or nothing. Base64 first, then the images' pixels summed from their headers
    (more than `max_pixels` in all: InvalidInputError on the item that passes it), then each
    item decoded; once `deadline` (time.monotonic()) has passed, DeadlineExceededError before
    the next item. The engines share the service's input limits."""
    limits = targets[0].limits
    raws = [raw_item(limits, item, index) for index, item in enumerate(items)]
    check_pixels(raws, limits.max_image_pixels, max_pixels)
    return [
        [prepare(engine, raw, index, deadline) for index, raw in enumerate(raws)]
        for engine in targets
    ]


def prepare(engine: Engine, raw: RawItem, index: int, deadline: float) -> Prepared:
    if time.monotonic() >= deadline:
        raise DeadlineExceededError(
            "the write's deadline (QARM_REQUEST_TIMEOUT_S) passed while its items were "
            "decoded; nothing of it was written"
        )
    with naming(index, raw.id):
        return engine.prepare(raw)


def raw_item(limits: InputLimits, item: ItemIn, index: int) -> RawItem:
    """The item with its base64 image and audio decoded (each refused past its byte limit
    before decoding)."""
    image = audio = None
    with naming(index, item.id):
        if item.image is not None:
            image = decode_base64(item.image, "image", limits.max_image_bytes)
        if item.audio is not None:
            audio = decode_base64(item.audio, "audio", limits.max_audio_bytes)
    return RawItem(
        id=item.id,
        text=item.text,
        image=image,
        audio=audio,
        embedding=item.embedding,
        features=item.features,
    )


def check_pixels(raws: Sequence[RawItem], max_image_pixels: int, max_pixels: int) -> None:
    """Refuse the request once its images' pixels, read from their headers, pass `max_pixels`
    (an image over `max_image_pixels` is refused on its own)."""
    total = 0
    for index, raw in enumerate(raws):
        if raw.image is None:
            continue
        with naming(index, raw.id):
            width, height = image_size(raw.image, max_image_pixels)
            total += width * height
            if total > max_pixels:
                raise DecodeError(
                    "image",
                    f"{width}x{height} pixels bring the request's images to {total} pixels, "
                    f"more than the limit of {max_pixels} per request "
                    "(QARM_MAX_REQUEST_PIXELS); send the images in several requests",
                )


@contextmanager
def naming(index: int, item_id: str) -> Iterator[None]:
    """A DecodeError inside becomes the 422 naming the item: index, id and field."""
    try:
        yield
    except DecodeError as err:
        raise InvalidInputError(
            f"items[{index}] ({item_id}): {err}",
            item=ItemRef(index=index, id=item_id, field=err.field),
        ) from err
