"""The micro-batcher: items from concurrent requests share one encoder pass and one store write.

Requests decode their items in the decode pool (so decoding overlaps the encoder's work on
the previous batch), then `submit` them. One task owns the queue and loops:

    wait for a first item, then up to max_wait_ms for a full batch while requests are
             still decoding items (batch_wait=while_decoding: a lone request does not
             wait) or in any case (batch_wait=always)
    collate: take items of one engine up to max_batch and the token/pixel/audio caps,
             dropping (and counting) items whose caller is gone or whose deadline passed
    encoder + quantizer in the encode thread pool (never on the event loop)
    write the whole batch to the store (one pipeline / one transaction), as a task that
             overlaps the encoding of the next batch; writes stay one at a time, in order
    answer every item exactly once

Admission is bounded: a full queue answers 503 with Retry-After. A batch that fails (encoder,
store) fails only its own items; if the loop itself dies, every queued and in-flight item is
failed, the death is logged, and `alive` turns false, which turns /readyz red. `close` drains:
it stops admission and returns when every accepted item has its answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field

from runtime.engine import Encoded, Engine, Prepared
from service.errors import (
    BatcherDeadError,
    DeadlineExceededError,
    EncoderFailedError,
    OverloadedError,
    ServiceError,
    StoreUnavailableError,
    UnavailableError,
    WriteFailedError,
)
from service.metrics import Metrics
from store import NewCodes, Store, StoredCodes, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_batch: int  # items
    max_tokens: int  # text tokens
    max_pixels: int  # image tensor values
    max_audio_s: float  # seconds of audio


@dataclass(eq=False)
class Work:
    """One queued item: what to encode, with which engine, and where its answer goes."""

    prepared: Prepared
    engine: Engine
    future: asyncio.Future[StoredCodes]
    enqueued: float  # loop time
    deadline: float  # loop time


@dataclass
class Batch:
    items: list[Work] = field(default_factory=list)
    dropped_deadline: list[Work] = field(default_factory=list)
    dropped_gone: list[Work] = field(default_factory=list)


def collate(queue: deque[Work], limits: Limits, now: float) -> Batch:
    """Pop the next batch off the head of `queue`.

    The batch holds items of one engine (the head's), at most `max_batch` of them, and their
    summed tokens, pixels and audio seconds stay within the caps; the first item is always
    taken, so an item larger than a cap still runs, alone. Items whose future is already done
    (the caller went away) or whose deadline is at or before `now` are popped into the
    dropped lists and never reach the encoder. Items not taken stay queued, in order.
    """
    batch = Batch()
    tokens = pixels = 0
    audio = 0.0
    while queue and len(batch.items) < limits.max_batch:
        work = queue[0]
        if work.deadline <= now:
            batch.dropped_deadline.append(queue.popleft())
            continue
        if work.future.done():
            batch.dropped_gone.append(queue.popleft())
            continue
        cost = work.prepared.cost
        if batch.items and (
            work.engine is not batch.items[0].engine
            or tokens + cost.tokens > limits.max_tokens
            or pixels + cost.pixels > limits.max_pixels
            or audio + cost.audio_s > limits.max_audio_s
        ):
            break
        tokens, pixels, audio = tokens + cost.tokens, pixels + cost.pixels, audio + cost.audio_s
        batch.items.append(queue.popleft())
    return batch


class Batcher:
    def __init__(
        self,
        store: Store,
        pool: Executor,
        metrics: Metrics,
        *,
        limits: Limits,
        max_wait_s: float,
        max_queue: int,
        wait_always: bool = False,
    ) -> None:
        self.store = store
        self.limits = limits
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.wait_always = wait_always  # wait max_wait even when no request is decoding
        self._pool = pool
        self._metrics = metrics
        self._queue: deque[Work] = deque()
        self._inflight: list[list[Work]] = []  # batches being encoded or written
        self._arrived = asyncio.Event()
        self._decoding = 0  # requests decoding items they will submit
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="qarm-batcher")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self.error is None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """Around a request's decoding: the batcher waits (up to max_wait) for its items."""
        self._decoding += 1
        try:
            yield
        finally:
            self._decoding -= 1
            self._arrived.set()

    async def submit(
        self, engine: Engine, items: Sequence[Prepared], timeout_s: float
    ) -> list[StoredCodes]:
        """Queue `items` and wait, at most `timeout_s` (what is left of the write's deadline),
        for their stored codes (in order); raises a ServiceError."""
        if not self.alive:
            raise BatcherDeadError(f"the batcher is not running ({self.error!r})")
        if self._closing:
            raise UnavailableError("the service is shutting down")
        if len(self._queue) + len(items) > self.max_queue:
            raise OverloadedError(
                f"queue holds {len(self._queue)} items; {len(items)} more would pass the "
                f"limit of {self.max_queue}"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in items]
        self._queue.extend(
            Work(p, engine, f, now, now + timeout_s) for p, f in zip(items, futures, strict=True)
        )
        self._metrics.queue_depth.set(len(self._queue))
        self._arrived.set()
        try:
            async with asyncio.timeout(timeout_s):
                return list(await asyncio.gather(*futures))
        except TimeoutError as err:
            raise DeadlineExceededError(
                "not encoded and stored before the write's deadline (QARM_REQUEST_TIMEOUT_S)"
            ) from err
        finally:
            for f in futures:
                if not f.done():  # a caller that leaves early: its queued items are dropped
                    f.cancel()
                elif not f.cancelled():
                    f.exception()  # mark every answer as seen, even those gather did not raise

    async def close(self) -> None:
        """Stop admitting, answer everything accepted, then end the loop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:  # already logged and answered by _run
                log.info("batcher closed after it had died")

    async def _run(self) -> None:
        # The store write of one batch overlaps the encoding of the next; writes stay one at a
        # time and in order, so suffix decisions never race inside this process.
        writing: asyncio.Task[None] | None = None
        try:
            while await self._fill():
                batch = collate(self._queue, self.limits, asyncio.get_running_loop().time())
                self._metrics.queue_depth.set(len(self._queue))
                self._drop(batch)
                if not batch.items:
                    continue
                self._inflight.append(batch.items)
                encoded = await self._encode(batch.items)
                if writing is not None:
                    await writing
                    writing = None
                if encoded is None:
                    self._inflight.remove(batch.items)
                    continue
                writing = asyncio.create_task(self._write(batch.items, *encoded))
            if writing is not None:
                await writing
        except BaseException as err:
            self.error = err
            if writing is not None:
                writing.cancel()
            log.exception("batcher died; failing %d queued items", len(self._queue))
            dead = BatcherDeadError(f"batcher died: {err!r}")
            self._fail([w for works in self._inflight for w in works] + list(self._queue), dead)
            self._queue.clear()
            self._metrics.queue_depth.set(0)
            raise

    async def _fill(self) -> bool:
        """Wait for a batch's worth of items; False when closing and nothing is left."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            if self._closing:
                return False
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._queue[0].enqueued + self.max_wait_s
        # Wait for company only while some is on its way (a request decoding its items):
        # a lone upload goes at once instead of paying max_wait_ms.
        while (
            len(self._queue) < self.limits.max_batch
            and not self._closing
            and (self.wait_always or self._decoding)
        ):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
        return True

    def _drop(self, batch: Batch) -> None:
        if batch.dropped_deadline:
            self._metrics.dropped.labels("deadline").inc(len(batch.dropped_deadline))
            self._fail(batch.dropped_deadline, DeadlineExceededError("dropped: deadline passed"))
        if batch.dropped_gone:
            self._metrics.dropped.labels("caller_gone").inc(len(batch.dropped_gone))

    async def _encode(self, batch: list[Work]) -> tuple[Engine, list[NewCodes]] | None:
        """Encoder + quantizer in the encode pool; None (items failed) if they raise."""
        loop = asyncio.get_running_loop()
        m = self._metrics
        now = loop.time()
        for work in batch:
            m.queue_wait.observe(now - work.enqueued)
        m.batch_size.observe(len(batch))
        engine = batch[0].engine
        try:
            encoded, new = await loop.run_in_executor(
                self._pool, _encode, engine, [w.prepared for w in batch]
            )
        except Exception as err:
            log.exception("encoder failed on a batch of %d items", len(batch))
            self._fail(batch, EncoderFailedError(f"encoder failed on this batch: {err}"))
            return None
        m.stage_seconds.labels("encode").observe(encoded.encode_s)
        m.stage_seconds.labels("quantize").observe(encoded.quantize_s)
        return engine, new

    async def _write(self, batch: list[Work], engine: Engine, new: list[NewCodes]) -> None:
        """One store write for the batch, then exactly one answer per item."""
        m = self._metrics
        start = asyncio.get_running_loop().time()
        try:
            records = await self.store.write(engine.version, new)
        except StoreError as err:
            m.store_errors.labels(self.store.kind, "write").inc()
            self._fail(batch, StoreUnavailableError(f"store write failed: {err}"))
            return
        except Exception as err:  # a bug in one batch must not kill the batcher for all
            log.exception("store write failed on a batch of %d items", len(batch))
            self._fail(batch, WriteFailedError(f"writing this batch failed: {err!r}"))
            return
        finally:
            self._inflight.remove(batch)
        m.stage_seconds.labels("store").observe(asyncio.get_running_loop().time() - start)
        if len(records) != len(batch):  # every item gets exactly one answer
            self._fail(batch, EncoderFailedError("the store answered for other items"))
            raise RuntimeError(f"store answered {len(records)} records for {len(batch)} items")
        for work, record in zip(batch, records, strict=True):
            if not work.future.done():
                work.future.set_result(record)
        for source in ("embedding", "content"):
            n = sum((w.prepared.embedding is not None) == (source == "embedding") for w in batch)
            if n:
                m.items_encoded.labels(source).inc(n)

    @staticmethod
    def _fail(works: Sequence[Work], error: ServiceError) -> None:
        for work in works:
            if not work.future.done():
                work.future.set_exception(error)


def _encode(engine: Engine, items: list[Prepared]) -> tuple[Encoded, list[NewCodes]]:
    """Thread-pool side of a batch: the codes, and what the store needs to decide suffixes."""
    encoded = engine.encode(items)
    new = [
        NewCodes(p.item_id, tuple(vq), tuple(rq), engine.catalog_entry(p.item_id))
        for p, vq, rq in zip(items, encoded.vq.tolist(), encoded.rq.tolist(), strict=True)
    ]
    return encoded, new
