"""Reads from the store, mapped to the service's errors (shared by the routes that read)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TypeVar

from service.errors import StoreUnavailableError
from service.state import AppState
from store import StoredCodes, StoreError

T = TypeVar("T")


async def guarded(state: AppState, op: str, call: Awaitable[T]) -> T:
    """Await a store call; a store failure becomes 503 + Retry-After and is counted."""
    try:
        return await call
    except StoreError as err:
        state.metrics.store_errors.labels(state.store.kind, op).inc()
        raise StoreUnavailableError(f"store {op} failed: {err}") from err


async def read_codes(state: AppState, version: str, ids: Sequence[str]) -> list[StoredCodes | None]:
    return await guarded(state, "get", state.store.get_many(version, ids))
