"""Where the store is: the settings every process that opens it shares (env prefix `QARM_`).

The service's and the backfill's settings classes inherit these fields, so one environment
(`QARM_REDIS_URL`, ...) points every process at the same store.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    """The store's settings; each is also the env variable `QARM_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="QARM_", extra="forbid", frozen=True)

    redis_url: SecretStr | None = Field(
        None, description="redis://host:port/db; unset: the embedded SQLite store"
    )
    redis_cluster: bool = Field(
        False,
        description="QARM_REDIS_URL names one node of a Redis Cluster; the client finds the rest",
    )
    redis_prefix: str = Field("qarm", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="key prefix")
    redis_pool_size: int = Field(64, ge=1, description="connections in the Redis pool")
    redis_timeout_s: float = Field(1.0, gt=0, description="Redis connect and socket timeout")
    sqlite_path: Path = Field(
        Path("data/qarm-store.sqlite3"), description="the embedded store's file (WAL mode)"
    )
