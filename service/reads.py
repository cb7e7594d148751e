"""Reads from the store, mapped to the service's errors (shared by the routes that read), and
the batch-read answer written straight from the stored bytes."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from pydantic_core import to_json

from service.errors import StoreUnavailableError
from service.state import AppState
from store import StoredCodes, StoreError
from store.base import decode_values

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


async def batch_answer(state: AppState, version: str, ids: Sequence[str]) -> bytes:
    """`BatchGetOut` as JSON bytes: the stored values decoded as one array and written as
    plain lists, not as a record and a model per item (the read path's hot spot)."""
    try:
        values = await guarded(state, "get", state.store.get_values(version, ids))
        found = [n for n, v in enumerate(values) if v is not None]
        decoded = decode_values([ids[n] for n in found], [values[n] or b"" for n in found])
    except StoreError as err:  # a value the store cannot decode
        state.metrics.store_errors.labels(state.store.kind, "get").inc()
        raise StoreUnavailableError(f"store get failed: {err}") from err
    items: list[dict[str, Any] | None] = [None] * len(ids)
    for n, suffix, rq, vq in zip(found, decoded.suffix, decoded.rq, decoded.vq, strict=True):
        items[n] = {
            "id": ids[n],
            "vq": vq,
            "rq": rq,
            "suffix": suffix,
            "sid": f"{'-'.join(map(str, rq))}-{suffix}",
            "bundle_version": version,
        }
    return to_json({"bundle_version": version, "items": items})
