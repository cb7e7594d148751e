"""Timing a job stage by stage: each stage's seconds go into one dict the job reports."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stage(name: str, seconds: dict[str, float], log: logging.Logger) -> Iterator[None]:
    """Time the block as `seconds[name]` (rounded to ms) and log its start and end."""
    log.info("%s ...", name)
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 3)
    log.info("%s done in %.2fs", name, seconds[name])
