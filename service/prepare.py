"""An API item made ready for the batcher: base64 fields decoded, then the runtime's checks.

Runs in the decode pool. A bad field raises InvalidInputError naming the item's index, id and
field, so a request with one bad item writes nothing.
"""

from __future__ import annotations

from runtime import DecodeError, Engine, Prepared, RawItem
from runtime.decode import decode_base64
from service.errors import InvalidInputError, ItemRef
from service.schemas import ItemIn


def prepare(engine: Engine, item: ItemIn, index: int) -> Prepared:
    try:
        return engine.prepare(raw_item(engine, item))
    except DecodeError as err:
        raise InvalidInputError(
            f"items[{index}] ({item.id}): {err}",
            item=ItemRef(index=index, id=item.id, field=err.field),
        ) from err


def prepare_all(engine: Engine, items: list[ItemIn]) -> list[Prepared]:
    return [prepare(engine, item, index) for index, item in enumerate(items)]


def raw_item(engine: Engine, item: ItemIn) -> RawItem:
    """The item with its base64 image and audio decoded (each refused past its byte limit
    before decoding)."""
    limits = engine.limits
    image = audio = None
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
