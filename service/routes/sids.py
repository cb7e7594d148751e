"""Reverse lookup: semantic ID -> item."""

from __future__ import annotations

import re

from fastapi import APIRouter

from service.deps import EngineDep, ReadAuth, StateDep
from service.errors import BadRequestError, NotFoundError
from service.reads import guarded
from service.schemas import SidOut, error_responses

router = APIRouter(prefix="/v1", tags=["sids"])

# fullmatch, not `^...$`: `$` also matches before a final newline ("1-2-0\n"). Numbers are
# written as the store writes them, without leading zeros (docs/store.md).
SID = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:-(?:0|[1-9][0-9]{0,8}))*")


# 422: never answered (the path takes any text), declared for the shape FastAPI would give it
@router.get(
    "/sids/{sid}",
    dependencies=[ReadAuth],
    responses=error_responses(400, 401, 403, 404, 422, 500, 503),
)
async def item_for_sid(sid: str, state: StateDep, engine: EngineDep) -> SidOut:
    """The item whose semantic ID (`c1-...-cL-suffix`) this is."""
    levels = engine.levels
    if not SID.fullmatch(sid) or len(sid.split("-")) != levels + 1:
        raise BadRequestError(
            f"sid {sid!r}: expected {levels} RQ codes and a suffix joined by '-', in decimal "
            "without leading zeros (as the store writes them)"
        )
    item_id = await guarded(state, "sid", state.store.item_for_sid(engine.version, sid))
    if item_id is None:
        raise NotFoundError(f"no item has semantic ID {sid!r} under bundle {engine.version}")
    return SidOut(sid=sid, id=item_id, bundle_version=engine.version)
