"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.follower import Follower
from service.schemas import Health
from service.state import AppState
from store import StoreError

router = APIRouter(tags=["health"])

# the probes answer their 503s with their own body, not the error body
PROBE_503: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "`status` (`dead`, `not_ready`) and `detail` say why"}
}


@router.get("/healthz", response_model=Health, responses=PROBE_503)
async def healthz(request: Request) -> JSONResponse:
    """200 while the process answers, also while it starts or its store is down (those mend
    themselves); 503 once its batcher or its follower has died, or start-up failed after
    waiting for the store, which only a restart mends, so that a liveness probe restarts it."""
    state = getattr(request.app.state, "qarm", None)
    follower = getattr(request.app.state, "follower", None)
    start_error = getattr(request.app.state, "start_error", None)
    if start_error is not None:
        body = Health(status="dead", detail=f"start-up failed ({start_error!r}); restart")
        return JSONResponse(body.model_dump(), status_code=503)
    if isinstance(state, AppState):
        detail = None
        if state.batcher.error is not None:
            detail = f"the batcher died ({state.batcher.error!r}); restart the process"
        elif isinstance(follower, Follower) and follower.error is not None:
            detail = f"the follower died ({follower.error!r}); restart the process"
        if detail is not None:
            body = Health(status="dead", bundle_version=state.engine.version, detail=detail)
            return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok").model_dump())


@router.get("/readyz", response_model=Health, responses=PROBE_503)
async def readyz(request: Request) -> JSONResponse:
    """200 when the bundle is loaded and warmed up, the batcher runs and the store answers;
    before that (also while the store has not answered since start-up) 503 saying why."""
    state = getattr(request.app.state, "qarm", None)
    if not isinstance(state, AppState):
        waiting = getattr(request.app.state, "waiting", None)
        return _not_ready(None, waiting or "starting: the bundle is not loaded yet", 1)
    version, retry = state.engine.version, state.settings.retry_after_s
    if not state.batcher.alive:
        detail = f"the batcher is not running ({state.batcher.error!r})"
        return _not_ready(version, detail, retry)
    try:
        await state.store.ping()
    except StoreError as err:
        state.metrics.store_errors.labels(state.store.kind, "ping").inc()
        return _not_ready(version, f"the store does not answer: {err}", retry)
    return JSONResponse(Health(status="ready", bundle_version=version).model_dump())


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _not_ready(version: str | None, detail: str, retry_after_s: int) -> JSONResponse:
    body = Health(status="not_ready", bundle_version=version, detail=detail).model_dump()
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry_after_s)})
