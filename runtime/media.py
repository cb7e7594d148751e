"""Encoding content the way uploads arrive, PNG covers and 16-bit PCM WAV clips: the inverse
of `decode.py`, for the demo client, the synthetic catalog's files and tests."""

from __future__ import annotations

import io
import wave

import numpy as np

from runtime.decode import Float32Array


def png_bytes(image: Float32Array) -> bytes:
    """(3, S, S) float RGB in [0, 1] -> PNG bytes (8 bits per channel)."""
    from PIL import Image

    pixels = np.clip(np.round(image.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(samples: Float32Array, rate: int) -> bytes:
    """(T,) float mono in [-1, 1] -> 16-bit PCM WAV bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
