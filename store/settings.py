"""Where the store is: the settings every process that opens it shares (env prefix `QARM_`).

The service's and the backfill's settings classes inherit these fields, so one environment
(`QARM_REDIS_URL`, ...) points every process at the same store.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    """The store's settings; each is also the env variable `QARM_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="QARM_", extra="forbid", frozen=True)

    redis_url: SecretStr | None = Field(
        None,
        description="redis://[user:password@]host:port/db, or rediss:// for TLS; unset: the "
        "embedded SQLite store",
    )
    redis_cluster: bool = Field(
        False,
        description="QARM_REDIS_URL names one node of a Redis Cluster; the client finds the rest",
    )
    redis_prefix: str = Field("qarm", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="key prefix")
    redis_pool_size: int = Field(64, ge=1, description="connections in the Redis pool")
    redis_timeout_s: float = Field(1.0, gt=0, description="Redis connect and socket timeout")
    redis_ca_file: Path | None = Field(
        None, description="rediss:// only: the CA certificate(s) that signed Redis's (PEM)"
    )
    redis_cert_file: Path | None = Field(
        None, description="rediss:// only: this client's certificate (PEM), where Redis asks"
    )
    redis_key_file: Path | None = Field(
        None, description="rediss:// only: the private key of QARM_REDIS_CERT_FILE (PEM)"
    )
    sqlite_path: Path = Field(
        Path("data/qarm-store.sqlite3"), description="the embedded store's file (WAL mode)"
    )

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> StoreSettings:
        files = {
            "redis_ca_file": self.redis_ca_file,
            "redis_cert_file": self.redis_cert_file,
            "redis_key_file": self.redis_key_file,
        }
        named = [name for name, path in files.items() if path is not None]
        url = self.redis_url.get_secret_value() if self.redis_url is not None else ""
        if named and not url.startswith("rediss://"):
            raise ValueError(f"{', '.join(named)}: set only with a rediss:// QARM_REDIS_URL")
        if (self.redis_cert_file is None) != (self.redis_key_file is None):
            raise ValueError("redis_cert_file and redis_key_file: set both or neither")
        for name in named:
            path = files[name]
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    def redis_tls(self) -> dict[str, str]:
        """redis-py's TLS arguments for the files that are set."""
        names = {
            "ssl_ca_certs": self.redis_ca_file,
            "ssl_certfile": self.redis_cert_file,
            "ssl_keyfile": self.redis_key_file,
        }
        return {arg: str(path) for arg, path in names.items() if path is not None}
