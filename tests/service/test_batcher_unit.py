"""`collate`, the batcher's pure core, with a plain deque and no server."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from runtime.engine import Cost, Prepared
from service.batcher import Limits, Work, collate

LIMITS = Limits(max_batch=4, max_tokens=100, max_pixels=1000, max_audio_s=10.0)


@pytest.fixture
def loop() -> Any:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def work(
    loop: Any, name: str, engine: object = "e1", *, deadline: float = 100.0, **cost: Any
) -> Work:
    prepared = Prepared(name, None, None, Cost(**cost))
    return Work(prepared, engine, loop.create_future(), enqueued=0.0, deadline=deadline)  # type: ignore[arg-type]


def names(works: list[Work]) -> list[str]:
    return [w.prepared.item_id for w in works]


def test_takes_up_to_max_batch_in_order(loop: Any) -> None:
    queue = deque(work(loop, f"i{i}") for i in range(6))
    batch = collate(queue, LIMITS, now=0.0)
    assert names(batch.items) == ["i0", "i1", "i2", "i3"]
    assert names(list(queue)) == ["i4", "i5"]
    assert names(collate(queue, LIMITS, now=0.0).items) == ["i4", "i5"]
    assert not queue


def test_caps_by_tokens_pixels_and_audio(loop: Any) -> None:
    queue = deque([work(loop, "a", tokens=60), work(loop, "b", tokens=60), work(loop, "c")])
    assert names(collate(queue, LIMITS, now=0.0).items) == ["a"]
    assert names(collate(queue, LIMITS, now=0.0).items) == ["b", "c"]
    queue = deque([work(loop, "p", pixels=600), work(loop, "q", pixels=600)])
    assert names(collate(queue, LIMITS, now=0.0).items) == ["p"]
    queue = deque(
        [work(loop, "x", audio_s=6.0), work(loop, "y", audio_s=4.0), work(loop, "z", audio_s=0.5)]
    )
    assert names(collate(queue, LIMITS, now=0.0).items) == ["x", "y"]


def test_an_item_over_a_cap_runs_alone(loop: Any) -> None:
    queue = deque([work(loop, "huge", tokens=500), work(loop, "next")])
    assert names(collate(queue, LIMITS, now=0.0).items) == ["huge"]
    assert names(list(queue)) == ["next"]


def test_one_engine_per_batch(loop: Any) -> None:
    queue = deque([work(loop, "a"), work(loop, "b", engine="e2"), work(loop, "c")])
    assert names(collate(queue, LIMITS, now=0.0).items) == ["a"]
    assert names(collate(queue, LIMITS, now=0.0).items) == ["b"]
    assert names(collate(queue, LIMITS, now=0.0).items) == ["c"]


def test_drops_expired_and_abandoned_items(loop: Any) -> None:
    gone = work(loop, "gone")
    gone.future.cancel()
    queue = deque([work(loop, "late", deadline=5.0), gone, work(loop, "ok", deadline=50.0)])
    batch = collate(queue, LIMITS, now=10.0)
    assert names(batch.items) == ["ok"]
    assert names(batch.dropped_deadline) == ["late"]
    assert names(batch.dropped_gone) == ["gone"]
    assert not queue


def test_empty_queue() -> None:
    batch = collate(deque(), LIMITS, now=0.0)
    assert batch.items == []
    assert batch.dropped_deadline == []
