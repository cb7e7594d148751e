"""Every setting of the service: one pydantic-settings class, env prefix `QARM_`, read once.

`python -m service` builds it from the environment (and its flags) and hands it to
`create_app(settings)`; nothing else reads the environment. Secrets (tokens, the Redis URL,
which may carry a password) are `SecretStr`, so they never appear in a repr or a log line.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict, SettingsError

from codebooks import latest_bundle
from runtime import EngineOptions, InputLimits
from store import StoreSettings

Scope = Literal["write", "read", "admin"]

# A bearer token shorter than this is guessable; the settings refuse it.
MIN_TOKEN_CHARS = 16


class TokenSetting(BaseModel):
    """One bearer token and what it may do; `name` is what logs and metrics show."""

    name: str = Field(description="label for logs; the token itself is never logged")
    token: SecretStr = Field(description=f"the bearer token, at least {MIN_TOKEN_CHARS} chars")
    scopes: list[Scope] = Field(description="write (POST/PUT), read (GET, batchGet), admin")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"a token must be at least {MIN_TOKEN_CHARS} characters")
        return value


class Settings(StoreSettings):
    """The service's settings; each is also the env variable `QARM_<NAME>` (JSON for lists).
    The store's (`redis_url`, `redis_prefix`, ...) come from `StoreSettings`."""

    model_config = SettingsConfigDict(env_prefix="QARM_", extra="forbid", frozen=True)

    # --- where to listen and what to serve
    host: str = Field("127.0.0.1", description="interface uvicorn binds")
    port: int = Field(8000, ge=1, le=65535, description="port uvicorn binds")
    bundle: str = Field("latest", description="bundle folder, or `latest` under `artifacts`")
    artifacts: Path = Field(Path("artifacts"), description="where `latest` bundles are found")
    execution_provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="ONNX Runtime provider: auto takes CUDA when onnxruntime-gpu sees one"
    )
    follow: bool = Field(
        True,
        description="serve the store's active version and follow every activation (stage, "
        "activate, rollback) by itself; the `bundle` setting is used only while the store has "
        "no active version. false: serve `bundle`, switched only by POST /admin/reload",
    )
    follow_poll_s: float = Field(
        5.0,
        gt=0,
        description="how often the lifecycle is read again without an announcement (Redis "
        "pub/sub wakes it at once; SQLite has none, so this is its delay)",
    )
    pod_name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        min_length=1,
        max_length=253,
        description="this process's name in the store's heartbeats (default: host name and pid; "
        "the host name is the pod name on Kubernetes)",
    )
    seed_catalog: bool = Field(
        True,
        description="on activation also write the catalog's semantic-ID entries (reverse and "
        "prefix lookups of catalog items before the backfill writes their records)",
    )
    encoder_int8: bool = Field(
        False, description="run the manifest's int8_file instead of its float encoder"
    )
    warmup: bool = Field(True, description="run the encoder once before /readyz says ready")

    # --- the micro-batcher
    max_batch: int = Field(64, ge=1, description="items in one encoder batch")
    max_wait_ms: float = Field(5.0, ge=0, description="longest wait for a batch to fill")
    batch_wait: Literal["while_decoding", "always"] = Field(
        "while_decoding",
        description="wait max_wait_ms for more items only while requests are decoding theirs "
        "(a lone request goes at once), or always",
    )
    max_queue: int = Field(2048, ge=1, description="items waiting; beyond it: 503 + Retry-After")
    max_batch_tokens: int = Field(16384, ge=1, description="text tokens in one batch")
    max_batch_pixels: int = Field(
        64 * 3 * 224 * 224, ge=1, description="image values (3 x size^2 per image) in one batch"
    )
    max_batch_audio_s: float = Field(640.0, gt=0, description="seconds of audio in one batch")
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="deadline of a write, from its validated body: decoding, queueing and "
        "storing; work still waiting past it is dropped (503 `deadline_exceeded`)",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After on 503")
    decode_threads: int = Field(
        2, ge=1, description="threads decoding requests that hold an image or audio"
    )
    light_threads: int = Field(
        2,
        ge=1,
        description="threads preparing requests without image or audio (text, embeddings, "
        "features): apart from the decode threads, so they never queue behind images",
    )
    encoder_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: auto)")

    # --- limits on input
    max_items_per_request: int = Field(256, ge=1, description="items in one POST /v1/items")
    max_batch_get: int = Field(1000, ge=1, description="ids in one POST /v1/codes:batchGet")
    max_text_chars: int = Field(10_000, ge=1, description="characters of an item's text")
    max_image_bytes: int = Field(10 << 20, ge=1, description="bytes of an encoded image")
    max_image_pixels: int = Field(25_000_000, ge=1, description="width x height of an image")
    max_request_pixels: int = Field(
        100_000_000,
        ge=1,
        description="width x height summed over one request's images, read from their headers "
        "before any is decoded (decoding takes about 16 ms per million pixels on one core)",
    )
    max_audio_bytes: int = Field(20 << 20, ge=1, description="bytes of a WAV file")
    max_audio_s: float = Field(60.0, gt=0, description="seconds of an item's audio")
    max_body_bytes: int = Field(64 << 20, ge=1, description="bytes of a request body")
    max_prefix_items: int = Field(1000, ge=1, description="most items one prefix lookup answers")
    parse_inline_bytes: int = Field(
        64 << 10,
        ge=0,
        description="bodies up to this size are parsed on the event loop; larger ones in a "
        "worker process, so that the loop keeps serving meanwhile",
    )

    # --- slow clients
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a connection must send a request's headers within this time (from the "
        "connection, or from a kept-alive request's first byte), else it is closed unanswered",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request's body must arrive within this time from its headers, else 408 "
        "and the connection is closed; raise it for large bodies over slow links",
    )

    # --- auth and logs
    tokens: list[TokenSetting] = Field(
        default_factory=list, description="bearer tokens (JSON); none: the API is open (warned)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Settings:
        secrets = [t.token.get_secret_value() for t in self.tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("tokens: the same token is configured twice")
        return self

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            execution_provider=self.execution_provider,
            encoder_threads=self.encoder_threads,
            encoder_int8=self.encoder_int8,
        )

    def input_limits(self) -> InputLimits:
        return InputLimits.of(self)

    def version_path(self, version: str, registered: str) -> Path:
        """Where this process finds the bundle of `version`: `artifacts/<version>`, else the
        path the registry keeps for it (as the process that staged it saw it)."""
        here = self.artifacts / version
        if here.is_dir() or not registered:
            return here
        return Path(registered)

    def bundle_path(self, bundle: str | None = None) -> Path:
        """The folder of `bundle` (default: the `bundle` setting); `latest` is resolved now."""
        choice = bundle or self.bundle
        return latest_bundle(self.artifacts) if choice == "latest" else Path(choice)


class SettingsInvalidError(ValueError):
    """The settings cannot be built; the message names each setting and its problem, never a
    value (a value may be a token or a URL with a password)."""


def load_settings(**overrides: Any) -> Settings:
    """`Settings` from the environment and `overrides`, or SettingsInvalidError saying why not."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsInvalidError(settings_problems(err)) from None
    except SettingsError as err:  # a value that is not JSON where JSON is expected (lists)
        raise SettingsInvalidError(_source_problem(err)) from None


def settings_problems(err: ValidationError) -> str:
    """pydantic's complaints as `QARM_NAME (path): problem; ...`, without pydantic's
    `input_value=...`, which would print a refused token."""
    problems = []
    for e in err.errors(include_input=False, include_url=False):
        loc = [str(part) for part in e["loc"]]
        name = f"{_env_name(loc[0])} ({'.'.join(loc)})" if loc else "settings"
        problems.append(f"{name}: {e['msg']}")
    return "; ".join(problems)


def _source_problem(err: SettingsError) -> str:
    found = re.search(r'field "([^"]+)"', str(err))
    name = _env_name(found.group(1)) if found else "a setting"
    cause = err.__cause__
    if cause is None:
        why = "its value cannot be parsed"
    elif isinstance(cause, ValueError) and type(cause).__name__ == "JSONDecodeError":
        # The message says where (line, column), not what: `str(cause)` holds no value.
        why = f"not valid JSON ({cause})"
    else:
        why = f"its value cannot be parsed ({type(cause).__name__})"
    return f"{name}: {why}"


def _env_name(field: str) -> str:
    """A field's environment variable (`tokens` -> QARM_TOKENS); a flag sets the same field."""
    return f"QARM_{field.upper()}"
