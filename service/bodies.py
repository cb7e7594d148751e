"""Request bodies parsed and validated off the event loop: `validate_body` and `BodyParser`.

json.loads and pydantic-core hold the GIL for the whole of one call, so a thread would not
free the event loop: a 53 MB body of 160,000 items validated in a thread stalled it for 1.2 s
(/healthz and every other request waited). `BodyParser` sends a body larger than
`parse_inline_bytes` to a worker process, where the loop only pickles bytes; a smaller one
(a few ms of work at most) is validated where it is, saving the trip.

Routes never declare a body parameter (FastAPI would read and parse it before any
dependency, auth included): `service.deps.JsonBody` reads it after the route's auth and hands
it here.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from prometheus_client import Gauge
from pydantic import BaseModel, ValidationError

from service.errors import BadRequestError, ServiceError, UnavailableError, invalid_input

M = TypeVar("M", bound=BaseModel)


def validate_body(
    model: type[M], raw: bytes, caps: Mapping[str, int], where: str
) -> M | ServiceError:
    """`raw` (JSON) as `model`, or the error to answer, returned rather than raised so that
    what comes back from the worker process is the error alone (no traceback, no input).

    Parsed as FastAPI did (json.loads of the bytes: UTF-8/16/32, `NaN` taken), then validated
    with `caps` as the validation context (the per-app limits the models check first, e.g.
    `{"limit": 256}` items). `where` (`METHOD /path`) starts the 400s' messages."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        return BadRequestError(
            f"{where}: the body is not valid JSON ({err.msg} at character {err.pos})"
        )
    except (UnicodeDecodeError, RecursionError, ValueError) as err:
        return BadRequestError(f"{where}: the body cannot be parsed as JSON: {_why(err)}")
    try:
        return model.model_validate(data, context=dict(caps))
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        return invalid_input([{**first, "loc": ("body", *first["loc"])}], data)


def _why(err: Exception) -> str:
    """Why json.loads refused a body that is not a JSON syntax error."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start})"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(err):
        return "an integer has too many digits (at most 4300)"
    return type(err).__name__


class BodyParser:
    """Validates request bodies: up to `inline_bytes` on the event loop, larger ones in one
    worker process (started with the first large body, replaced if it dies). `in_flight`
    counts the bodies sent to it and not yet back."""

    def __init__(self, inline_bytes: int, in_flight: Gauge) -> None:
        self.inline_bytes = inline_bytes
        self.in_flight = in_flight
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    async def parse(self, model: type[M], raw: bytes, caps: Mapping[str, int], where: str) -> M:
        if len(raw) <= self.inline_bytes:
            result = validate_body(model, raw, caps, where)
        else:
            result = await self._in_worker(model, raw, caps, where)
        if isinstance(result, ServiceError):
            raise result
        return result

    async def _in_worker(
        self, model: type[M], raw: bytes, caps: Mapping[str, int], where: str
    ) -> M | ServiceError:
        self.in_flight.inc()
        try:
            pool = await self._worker()
            future = pool.submit(validate_body, model, raw, dict(caps), where)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # killed (e.g. out of memory on a hostile body): the next body gets a new one
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise UnavailableError(
                f"{where}: the process that parses request bodies died; try again"
            ) from None
        finally:
            self.in_flight.dec()

    async def _worker(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:
                self._pool = await asyncio.to_thread(_started_pool)
            return self._pool

    async def close(self) -> None:
        """Stop the worker process, once the body it parses (if any) is done."""
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            self._pool = None


def _started_pool() -> ProcessPoolExecutor:
    """One worker process, up and running. Spawned, not forked (the service has threads), and
    from a thread: starting it forks this process and then waits for the child to read its
    start-up data, 0.3 s on the event loop on a loaded machine."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(int).result()
    return pool
