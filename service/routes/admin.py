"""Operating the service: switching bundles without a restart."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.deps import AdminAuth, JsonBody, StateDep
from service.schemas import ReloadIn, ReloadOut, error_responses
from service.state import reload

router = APIRouter(prefix="/admin", tags=["admin"])
RELOAD = JsonBody(ReloadIn, required=False)


@router.post(
    "/reload",
    dependencies=[AdminAuth],
    responses=error_responses(400, 401, 403, 408, 409, 413, 422, 500, 503),
    openapi_extra=RELOAD.openapi,
)
async def reload_bundle(state: StateDep, body: Annotated[ReloadIn, Depends(RELOAD)]) -> ReloadOut:
    """Load a bundle (default: the newest under artifacts), activate it in the store and
    switch to it atomically; requests in flight finish on the previous one."""
    previous, version = await reload(state, body.bundle)
    return ReloadOut(previous_version=previous, bundle_version=version)
