"""Reading codes in bulk, and items by RQ prefix."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from service.deps import EngineDep, JsonBody, ReadAuth, StateDep
from service.errors import BadRequestError
from service.reads import batch_answer, guarded
from service.schemas import BatchGetIn, BatchGetOut, PrefixItemsOut, error_responses

router = APIRouter(prefix="/v1", tags=["codes"])

# fullmatch, not `^...$`: `$` also matches before a final newline ("1-2\n"). Codes are written
# as the store's keys write them, without leading zeros (docs/store.md).
PREFIX = re.compile(r"(?:0|[1-9][0-9]{0,4})(?:-(?:0|[1-9][0-9]{0,4}))*")
IDS = JsonBody(BatchGetIn, limit=lambda settings: settings.max_batch_get)


@router.post(
    "/codes:batchGet",
    dependencies=[ReadAuth],
    response_model=BatchGetOut,
    responses=error_responses(400, 401, 403, 408, 413, 422, 500, 503),
    openapi_extra=IDS.openapi,
)
async def batch_get(
    body: Annotated[BatchGetIn, Depends(IDS)], state: StateDep, engine: EngineDep
) -> Response:
    """Codes of up to max_batch_get ids, in request order; null for an unknown id."""
    answer = await batch_answer(state, engine.version, body.ids)
    return Response(answer, media_type="application/json")


@router.get(
    "/codes/rq/{prefix}/items",
    dependencies=[ReadAuth],
    responses=error_responses(400, 401, 403, 422, 500, 503),
)
async def items_by_prefix(
    prefix: str,
    state: StateDep,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, description="most items answered")] = 100,
) -> PrefixItemsOut:
    """Items whose first l RQ codes are `prefix` (`c1-c2-...-cl`, 1 <= l <= L)."""
    codes = parse_prefix(prefix, engine.levels, engine.bundle.manifest.centroids)
    cap = state.settings.max_prefix_items
    if limit > cap:
        raise BadRequestError(f"limit {limit} is more than the cap of {cap} items per lookup")
    items = await guarded(
        state, "prefix", state.store.items_for_prefix(engine.version, codes, limit)
    )
    return PrefixItemsOut(prefix=codes, items=items, bundle_version=engine.version)


def parse_prefix(text: str, levels: int, centroids: int) -> list[int]:
    """`12-0-255` -> [12, 0, 255]; 400 unless 1..L integers each in 0..Nc-1."""
    if not PREFIX.fullmatch(text):
        raise BadRequestError(
            f"prefix {text!r}: expected 1..{levels} codes joined by '-', in decimal without "
            "leading zeros (as the store writes them)"
        )
    codes = [int(c) for c in text.split("-")]
    if len(codes) > levels:
        raise BadRequestError(
            f"prefix {text!r}: {len(codes)} codes, the bundle has {levels} levels"
        )
    if max(codes) >= centroids:
        raise BadRequestError(f"prefix {text!r}: a code >= {centroids} (Nc)")
    return codes
