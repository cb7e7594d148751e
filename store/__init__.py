"""The store: codes per bundle version, the version lifecycle, suffixes and reverse lookups.

Redis when `QARM_REDIS_URL` is set, else the embedded SQLite file. No web framework and no
torch: the service and the backfill both stand on it. The key schema and value encoding are
docs/store.md.
"""

from __future__ import annotations

from store.base import (
    CatalogSeed,
    Lifecycle,
    LifecycleError,
    NewCodes,
    PodInfo,
    Store,
    StoredCodes,
    StoreError,
    VersionInfo,
    Watch,
)
from store.redis_store import RedisStore
from store.settings import StoreSettings
from store.sqlite_store import SqliteStore

__all__ = [
    "CatalogSeed",
    "Lifecycle",
    "LifecycleError",
    "NewCodes",
    "PodInfo",
    "RedisStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreSettings",
    "StoredCodes",
    "VersionInfo",
    "Watch",
    "open_store",
]


def open_store(settings: StoreSettings) -> Store:
    if settings.redis_url is not None:
        return RedisStore(
            settings.redis_url.get_secret_value(),
            prefix=settings.redis_prefix,
            pool_size=settings.redis_pool_size,
            timeout_s=settings.redis_timeout_s,
            cluster=settings.redis_cluster,
            tls=settings.redis_tls(),
        )
    return SqliteStore(settings.sqlite_path)
