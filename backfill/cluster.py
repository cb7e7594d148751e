"""The Ray cluster a run works on, and the actor pool it asks of it.

By default a run starts a local Ray of its own (no dashboard, no usage statistics) and stops
it at the end; `--address` joins a cluster instead (left running). A process that initialised
Ray itself (the tests, a notebook) has its Ray used as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray
import ray.data

from backfill.settings import BackfillSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pool:
    """The encoder actors of every stage of a run."""

    actors: int
    cpus: float  # per actor
    gpus: float  # per actor; 0: CPU only


@contextmanager
def ray_session(settings: BackfillSettings) -> Iterator[None]:
    """Ray for the duration of a run: the process's own if initialised, else a cluster joined
    (`ray_address`) or a local one started (`ray_num_cpus`); shut down at the end in both of
    the latter cases (a joined cluster keeps running)."""
    if ray.is_initialized():
        _quiet_data()
        yield
        return
    # Read when Ray starts; the environment still wins if it says otherwise.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if settings.ray_address is not None:
        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
        log.info("joined the Ray cluster at %s", settings.ray_address)
    else:
        ray.init(
            address="local",
            num_cpus=settings.ray_num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    _quiet_data()
    try:
        yield
    finally:
        ray.shutdown()


def _quiet_data() -> None:
    """The driver draws its own progress bar and summary; Ray Data's would repeat them."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # ... and need not be told, at every run, that Ray Data's are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def actor_pool(settings: BackfillSettings) -> Pool:
    """The pool to ask for, from the settings and what the cluster has: GPUs per actor as
    set, else one when the cluster has GPUs; actors as set, else one per GPU share (GPU
    actors) or the cluster's CPUs less one, left for reading Parquet (CPU actors)."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cluster_gpus = float(resources.get("GPU", 0.0))
    cluster_cpus = float(resources.get("CPU", 1.0))
    gpus = settings.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster_gpus > 0 else 0.0
    if settings.actors is not None:
        actors = settings.actors
    elif gpus > 0:
        actors = max(1, int(cluster_gpus // gpus))
    else:
        actors = max(1, int((cluster_cpus - 1) // settings.cpus_per_actor))
    if gpus > 0 and cluster_gpus < gpus:
        log.warning("actors ask for %s GPUs each; the cluster has %s now", gpus, cluster_gpus)
    return Pool(actors=actors, cpus=settings.cpus_per_actor, gpus=gpus)
