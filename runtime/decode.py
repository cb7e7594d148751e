"""Turning one item's raw fields into the encoder's inputs: plain functions, no server.

Each function checks its limit before the expensive step (an image's pixel count is read from
its header before any pixel is decoded; a WAV's duration from its header before its frames) and
raises `DecodeError(field, message)`, which the caller turns into a 422 naming the item.
They run in the decode thread pool, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

Float32Array = npt.NDArray[np.float32]

IMAGE_FORMATS = ("JPEG", "PNG")

# The sample rates a WAV may declare: beyond them the header is nonsense (or hostile), and its
# duration (frames / rate), which the audio limit is checked on, means nothing.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000


class DecodeError(ValueError):
    """An item field that cannot be decoded; `field` names it (image, audio, text, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def decode_base64(data: str, field: str, max_bytes: int) -> bytes:
    """Strict standard base64 -> bytes, refusing more than `max_bytes` decoded bytes."""
    # 4 base64 characters carry 3 bytes: refuse an oversized field before decoding it.
    if len(data) // 4 * 3 > max_bytes + 2:
        raise DecodeError(field, f"more than the limit of {max_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DecodeError(field, f"not valid base64 ({err})") from err
    if len(raw) > max_bytes:
        raise DecodeError(field, f"{len(raw)} bytes, more than the limit of {max_bytes}")
    if not raw:
        raise DecodeError(field, "empty")
    return raw


def image_size(raw: bytes, max_pixels: int) -> tuple[int, int]:
    """A JPEG's or PNG's (width, height), read from its header without decoding a pixel;
    refuses more than `max_pixels` (width x height). Microseconds, whatever the image's size."""
    with _opened(raw, max_pixels) as img:
        width, height = img.size
    return width, height


def decode_image(raw: bytes, size: int, max_pixels: int) -> Float32Array:
    """JPEG/PNG bytes -> (3, size, size) float32 RGB in [0, 1] (bilinear resize to a square)."""
    with _opened(raw, max_pixels) as img:
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)  # (size, size, 3)
    out: Float32Array = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return out


@contextmanager
def _opened(raw: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """The image opened (its header read, no pixel decoded) and its pixel count checked; any
    failure inside, opening or decoding, is a DecodeError on `image`."""
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeError(
                    "image", f"{width}x{height} pixels, more than the limit of {max_pixels}"
                )
            yield img
    except Image.DecompressionBombError as err:  # Pillow refuses it before our own check
        raise DecodeError("image", f"too many pixels, more than the limit of {max_pixels}") from err
    except UnidentifiedImageError as err:
        raise DecodeError("image", "not a JPEG or PNG image") from err
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise DecodeError("image", f"cannot be decoded ({err})") from err


def decode_wav(
    raw: bytes, sample_rate: int, samples: int, max_seconds: float
) -> tuple[Float32Array, float]:
    """PCM WAV bytes -> ((samples,) float32 mono at `sample_rate`, cropped or zero-padded;
    the clip's duration in seconds). 8/16/32-bit PCM, any channel count, a rate of 1 to 384 kHz;
    a file with fewer frames than its header declares is refused."""
    try:
        with wave.open(io.BytesIO(raw), "rb") as wav:
            channels, width, rate, frames = (
                wav.getnchannels(),
                wav.getsampwidth(),
                wav.getframerate(),
                wav.getnframes(),
            )
            if channels <= 0:
                raise DecodeError("audio", f"WAV header says {channels} channels at {rate} Hz")
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise DecodeError(
                    "audio",
                    f"WAV header says {rate} Hz; the sample rate must be "
                    f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
                )
            seconds = frames / rate
            if seconds > max_seconds:
                raise DecodeError(
                    "audio", f"{seconds:.2f} s of audio, more than the limit of {max_seconds:g} s"
                )
            data = wav.readframes(frames)
    except (wave.Error, EOFError) as err:
        raise DecodeError("audio", f"not a PCM WAV file ({err})") from err
    declared = frames * channels * width
    if len(data) < declared:
        raise DecodeError(
            "audio",
            f"truncated WAV: its header declares {frames} frames ({declared} bytes of samples), "
            f"the file holds {len(data)} bytes of them",
        )
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise DecodeError("audio", f"{8 * width}-bit samples; 8, 16 or 32-bit PCM expected")
    pcm = np.frombuffer(data, dtype=dtypes[width])
    pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels)
    if width == 1:
        wave_f = (pcm.astype(np.float32) - 128.0) / 128.0
    else:
        wave_f = pcm.astype(np.float32) / float(2 ** (8 * width - 1))
    mono = wave_f.mean(axis=1)
    if rate != sample_rate and len(mono) > 1:
        # Linear interpolation: enough for an encoder whose front end is a log-mel filterbank.
        n_out = round(len(mono) * sample_rate / rate)
        mono = np.interp(np.linspace(0, len(mono) - 1, n_out), np.arange(len(mono)), mono).astype(
            np.float32
        )
    out = np.zeros(samples, dtype=np.float32)
    n = min(samples, len(mono))
    out[:n] = mono[:n]
    return out, seconds


def check_text(text: str, max_chars: int) -> str:
    """The item's text, refused past `max_chars` characters or when it is not Unicode text
    (JSON's `"\\ud800"` escapes make a lone surrogate, which no tokenizer takes)."""
    if len(text) > max_chars:
        raise DecodeError("text", f"{len(text)} characters, more than the limit of {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DecodeError(
            "text", f"character {err.start} is a lone surrogate (U+{ord(text[err.start]):04X})"
        ) from None
    return text


def check_embedding(values: Sequence[float] | Float32Array, dim: int) -> Float32Array:
    """d floats -> (d,) float32; refuses another length, NaN or inf, and a zero vector."""
    if len(values) != dim:
        raise DecodeError("embedding", f"{len(values)} values, the bundle's d is {dim}")
    with np.errstate(over="ignore"):  # a float beyond float32's range becomes inf: refused
        x: Float32Array = np.asarray(values, dtype=np.float64).astype(np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise DecodeError("embedding", f"value {bad} is NaN or infinite (as float32)")
    if float(np.linalg.norm(x.astype(np.float64))) < 1e-6:
        raise DecodeError("embedding", "a zero vector has no direction")
    return x


def check_floats(values: Sequence[float] | Float32Array, width: int, field: str) -> Float32Array:
    """`width` floats -> (width,) float32; refuses another length, NaN or inf."""
    if len(values) != width:
        raise DecodeError(field, f"{len(values)} values, the encoder takes {width}")
    with np.errstate(over="ignore"):
        x: Float32Array = np.asarray(values, dtype=np.float64).astype(np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise DecodeError(field, f"value {bad} is NaN or infinite (as float32)")
    return x
