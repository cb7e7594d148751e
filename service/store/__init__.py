"""The store: Redis when `QARM_REDIS_URL` is set, else the embedded SQLite file."""

from __future__ import annotations

from service.settings import Settings
from service.store.base import Catalog, NewCodes, Store, StoredCodes, StoreError
from service.store.redis_store import RedisStore
from service.store.sqlite_store import SqliteStore

__all__ = [
    "Catalog",
    "NewCodes",
    "RedisStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoredCodes",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    if settings.redis_url is not None:
        return RedisStore(
            settings.redis_url.get_secret_value(),
            prefix=settings.redis_prefix,
            pool_size=settings.redis_pool_size,
            timeout_s=settings.redis_timeout_s,
        )
    return SqliteStore(settings.sqlite_path)
