"""Every setting of the backfill: one pydantic-settings class, env prefix `QARM_`, read once.

It inherits the store's fields (`QARM_REDIS_URL`, `QARM_REDIS_PREFIX`, `QARM_SQLITE_PATH`), so
the environment that points the service at its store points the backfill at the same one. The
input limits carry the service's names too: one environment makes both accept the same items.
`python -m backfill` builds it from the environment, then its flags override single fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime import EngineOptions, InputLimits
from store import StoreSettings

_LIMITS = InputLimits()


class BackfillSettings(StoreSettings):
    """The backfill's settings; each is also the env variable `QARM_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="QARM_", extra="forbid", frozen=True)

    # --- the Ray cluster
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (`auto`, `host:port`, `ray://...`); unset: start a "
        "local Ray for this command and stop it at the end",
    )
    ray_num_cpus: int | None = Field(
        None, ge=1, description="CPUs of the local Ray this command starts (unset: all)"
    )
    actors: int | None = Field(
        None,
        ge=1,
        description="encoder actors, each holding one engine (unset: one per GPU share when "
        "actors get GPUs, else the cluster's CPUs less one, at least one)",
    )
    cpus_per_actor: float = Field(
        1.0, gt=0, description="CPUs each actor reserves; also its ONNX Runtime threads"
    )
    gpus_per_actor: float | None = Field(
        None,
        ge=0,
        description="GPUs each actor reserves (0: CPU only; unset: 1 when the cluster has GPUs)",
    )
    execution_provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="ONNX Runtime provider of the actors; auto: cuda when they get GPUs"
    )
    encoder_int8: bool = Field(
        False, description="run the manifest's int8_file instead of its float encoder"
    )

    # --- batches
    batch_size: int = Field(256, ge=1, description="items per encoder call in an actor")
    write_batch: int = Field(
        500, ge=1, description="items per store write (one transaction) by the driver"
    )
    max_writes_per_s: float = Field(
        0.0,
        ge=0,
        description="most items written per second, to spare a store that serves production "
        "reads (0: no limit)",
    )

    # --- lifecycle
    wait_pods_s: float = Field(
        30.0,
        ge=0,
        description="how long `run` waits for every live service pod to write uploads to the "
        "staged version, and `activate` for every pod to serve the new one (then it warns)",
    )
    sample: int = Field(
        64, ge=0, description="stored values `activate` computes again and compares"
    )
    retire_batch: int = Field(1000, ge=1, description="keys deleted per step by `retire`")
    retire_grace_s: float = Field(
        10.0,
        ge=0,
        description="`retire` sweeps the version's keys again this long after every pod "
        "dropped it (a write in flight may land meanwhile; the service's request deadline)",
    )
    max_keys_per_s: float = Field(
        50_000.0, gt=0, description="most keys `retire` deletes per second"
    )

    # --- what one item may hold (the service's settings of the same names)
    max_text_chars: int = Field(_LIMITS.max_text_chars, ge=1, description="longest text")
    max_image_bytes: int = Field(_LIMITS.max_image_bytes, ge=1, description="largest image file")
    max_image_pixels: int = Field(
        _LIMITS.max_image_pixels, ge=1, description="most pixels of a decoded image"
    )
    max_audio_bytes: int = Field(_LIMITS.max_audio_bytes, ge=1, description="largest WAV file")
    max_audio_s: float = Field(_LIMITS.max_audio_s, gt=0, description="longest audio, seconds")

    def engine_options(self, gpus_per_actor: float) -> EngineOptions:
        """The actors' engine options: with `auto`, CUDA exactly when an actor holds a GPU."""
        provider = self.execution_provider
        if provider == "auto":
            provider = "cuda" if gpus_per_actor > 0 else "cpu"
        threads = max(1, int(self.cpus_per_actor))
        return EngineOptions(
            execution_provider=provider, encoder_threads=threads, encoder_int8=self.encoder_int8
        )

    def input_limits(self) -> InputLimits:
        return InputLimits.of(self)
