"""Waiting for the service's pods to follow a lifecycle step, from their heartbeats.

After `stage`, every live pod must write uploads to the new version too, or an item posted
during the backfill could be missing from it; after `promote`, every pod should serve it.
Pods follow on their own schedule; this polls their heartbeats until all have, or time is
up (the caller warns then: a pod that lags is not a reason to undo the step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from store import PodInfo, Store

POLL_S = 0.5


@dataclass(frozen=True)
class Followed:
    seconds: float  # until every pod had followed, or until the wait gave up
    pods: int  # live pods seen at the last poll
    lagging: list[str]  # pods that had not followed when the wait gave up


async def wait_for_pods(
    store: Store, followed: Callable[[PodInfo], bool], timeout_s: float
) -> Followed:
    """Poll the live pods until `followed` holds for each (no pods: at once)."""
    start = time.monotonic()
    while True:
        pods = await store.pods()
        lagging = [p.pod for p in pods if not followed(p)]
        elapsed = time.monotonic() - start
        if not lagging or elapsed >= timeout_s:
            return Followed(elapsed, len(pods), lagging)
        await asyncio.sleep(min(POLL_S, timeout_s - elapsed))


def writes_to(version: str) -> Callable[[PodInfo], bool]:
    """A pod writes uploads to `version` (staged) as well as to its active one."""
    return lambda pod: version in pod.written or pod.active == version


def serves(version: str) -> Callable[[PodInfo], bool]:
    return lambda pod: pod.active == version
