"""Writing items (POST /v1/items, PUT /v1/items/{id}) and reading one item's codes."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic_core import to_json

from codebooks.sid import ID_PATTERN
from runtime import Engine, Prepared
from service.deps import EngineDep, JsonBody, ReadAuth, StateDep, WriteAuth
from service.errors import DeadlineExceededError, InvalidInputError, ItemRef, NotFoundError
from service.prepare import prepare_request
from service.reads import read_codes
from service.schemas import Codes, ItemBody, ItemIn, ItemsIn, ItemsOut, error_responses
from service.state import AppState
from store import StoredCodes

router = APIRouter(prefix="/v1", tags=["items"])

# every answer but the 200: for the OpenAPI document
WRITE_ERRORS = error_responses(400, 401, 403, 408, 413, 422, 500, 503)

PathId = Annotated[str, Path(pattern=ID_PATTERN, description="the item id")]
ITEMS = JsonBody(ItemsIn, limit=lambda settings: settings.max_items_per_request)
ITEM = JsonBody(ItemBody)


def codes_out(record: StoredCodes, version: str) -> dict[str, Any]:
    """An item's codes as the `Codes` schema, as a plain dict: answers are serialised
    straight to JSON (`json_response`) instead of being validated again on the way out.

    Every field of `Codes` is filled, by name from the record except `id` (the record's
    `item_id`) and `bundle_version`: a field `Codes` gains that the record lacks fails here
    (AttributeError) instead of going missing from the answers."""
    named = {"id": record.item_id, "bundle_version": version}
    return {
        name: named[name] if name in named else getattr(record, name) for name in Codes.model_fields
    }


def json_response(payload: Any) -> Response:
    return Response(to_json(payload), media_type="application/json")


@router.post(
    "/items",
    dependencies=[WriteAuth],
    response_model=ItemsOut,
    responses=WRITE_ERRORS,
    openapi_extra=ITEMS.openapi,
)
async def post_items(
    body: Annotated[ItemsIn, Depends(ITEMS)], state: StateDep, engine: EngineDep
) -> Response:
    """Encode 1..max_items_per_request items; answers after their codes are in the store."""
    first: dict[str, int] = {}
    for index, item in enumerate(body.items):
        if item.id in first:  # one id, two contents: only one could be stored and answered
            raise InvalidInputError(
                f"items[{index}]: id {item.id!r} is also items[{first[item.id]}]; "
                "an id may appear once per request",
                item=ItemRef(index=index, id=item.id, field="id"),
            )
        first[item.id] = index
    records = await encode(state, engine, body.items)
    items = [codes_out(r, engine.version) for r in records]
    return json_response({"bundle_version": engine.version, "items": items})


@router.put(
    "/items/{item_id}",
    dependencies=[WriteAuth],
    response_model=Codes,
    responses=WRITE_ERRORS,
    openapi_extra=ITEM.openapi,
)
async def put_item(
    item_id: PathId, body: Annotated[ItemBody, Depends(ITEM)], state: StateDep, engine: EngineDep
) -> Response:
    """Encode one item whose id is in the path."""
    (record,) = await encode(state, engine, [ItemIn(id=item_id, **body.model_dump())])
    return json_response(codes_out(record, engine.version))


@router.get(
    "/items/{item_id}/codes",
    dependencies=[ReadAuth],
    response_model=Codes,
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def get_codes(item_id: PathId, state: StateDep, engine: EngineDep) -> Response:
    (record,) = await read_codes(state, engine.version, [item_id])
    if record is None:
        raise NotFoundError(f"item {item_id!r} has no codes under bundle {engine.version}")
    return json_response(codes_out(record, engine.version))


async def encode(state: AppState, engine: Engine, items: list[ItemIn]) -> list[StoredCodes]:
    """Decode every item (all or nothing, in a decode pool), then batch-encode and store,
    under `engine`'s version and under every version uploads are also written to (staged,
    previous); answers `engine`'s records. All of it within one deadline
    (`request_timeout_s` from now): past it, 503 `deadline_exceeded`, and work still waiting
    (to be decoded, in the batcher's queue) is dropped.

    The other versions are written first, the active one last: a request that fails or whose
    caller leaves half-way leaves an item in a staged version at most, never in the active
    version alone, so a staged version always covers the active one."""
    deadline = time.monotonic() + state.settings.request_timeout_s
    targets = [engine, *(e for v, e in state.written.items() if v != engine.version)]
    prepared = await decode(state, targets, items, deadline)
    others = zip(targets[1:], prepared[1:], strict=True)
    await asyncio.gather(
        *(state.batcher.submit(t, p, deadline - time.monotonic()) for t, p in others)
    )
    return await state.batcher.submit(engine, prepared[0], deadline - time.monotonic())


async def decode(
    state: AppState, targets: list[Engine], items: list[ItemIn], deadline: float
) -> list[list[Prepared]]:
    """`prepare_request` in the request's decode pool, given up at `deadline`
    (time.monotonic()): the waiting request is answered 503 and the pool stops at its next
    item (one not started yet is never run)."""
    loop = asyncio.get_running_loop()
    settings = state.settings
    pool = state.decoders.pool_for(items)
    work = partial(
        prepare_request, targets, items, max_pixels=settings.max_request_pixels, deadline=deadline
    )
    start = time.perf_counter()
    try:
        with state.batcher.decoding():
            async with asyncio.timeout(deadline - time.monotonic()):
                prepared = await loop.run_in_executor(pool, work)
    except (TimeoutError, DeadlineExceededError):
        state.metrics.dropped.labels("deadline").inc(len(items))
        raise DeadlineExceededError(
            f"the write's deadline of {settings.request_timeout_s:g} s "
            "(QARM_REQUEST_TIMEOUT_S) passed before its items were decoded; nothing of it "
            "was written"
        ) from None
    state.metrics.stage_seconds.labels("decode").observe(time.perf_counter() - start)
    return prepared
