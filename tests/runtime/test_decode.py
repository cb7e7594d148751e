"""Decoding item fields: plain functions, each refusal names its field and limit."""

from __future__ import annotations

import base64
import io
import struct
import wave
import zlib

import numpy as np
import pytest

from runtime.decode import DecodeError, check_embedding, decode_base64, decode_image, decode_wav
from tests.service.conftest import png_b64, wav_b64


def test_base64() -> None:
    assert decode_base64(base64.b64encode(b"abc").decode(), "image", 10) == b"abc"
    with pytest.raises(DecodeError, match="not valid base64") as err:
        decode_base64("not base64!!", "image", 10)
    assert err.value.field == "image"
    with pytest.raises(DecodeError, match="limit of 10"):
        decode_base64(base64.b64encode(b"x" * 30).decode(), "audio", 10)
    with pytest.raises(DecodeError, match="empty"):
        decode_base64("", "audio", 10)


def test_image_png_and_jpeg() -> None:
    for fmt in ("PNG", "JPEG"):
        raw = base64.b64decode(png_b64(1, size=(50, 20), fmt=fmt))
        image = decode_image(raw, 16, 10_000)
        assert image.shape == (3, 16, 16)
        assert image.dtype == np.float32
        assert 0.0 <= image.min() <= image.max() <= 1.0


def test_image_refusals() -> None:
    raw = base64.b64decode(png_b64(1, size=(50, 20)))
    with pytest.raises(DecodeError, match="50x20 pixels, more than the limit of 999"):
        decode_image(raw, 16, 999)
    with pytest.raises(DecodeError, match="not a JPEG or PNG"):
        decode_image(b"GIF89a" + b"\0" * 100, 16, 10_000)
    with pytest.raises(DecodeError, match=r"cannot be decoded|not a JPEG or PNG"):
        decode_image(raw[: len(raw) // 2], 16, 10_000)


def test_wav_resampled_mono_and_padded() -> None:
    raw = base64.b64decode(wav_b64(1, seconds=0.05, rate=16000, channels=2))
    audio, seconds = decode_wav(raw, 8000, 1600, 10.0)
    assert audio.shape == (1600,)
    assert seconds == pytest.approx(0.05)
    assert np.abs(audio[:400]).max() > 0  # 0.05 s at 8 kHz: 400 samples of signal
    assert not audio[401:].any()  # then zero padding


def test_wav_cropped() -> None:
    raw = base64.b64decode(wav_b64(2, seconds=1.0, rate=8000))
    audio, _ = decode_wav(raw, 8000, 1600, 10.0)
    assert audio.shape == (1600,)


def test_wav_refusals() -> None:
    with pytest.raises(DecodeError, match="not a PCM WAV"):
        decode_wav(b"RIFF....not a wav at all", 8000, 1600, 10.0)
    raw = base64.b64decode(wav_b64(3, seconds=0.5, rate=8000))
    with pytest.raises(DecodeError, match=r"more than the limit of 0\.25 s"):
        decode_wav(raw, 8000, 1600, 0.25)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b"\0" * 30)
    with pytest.raises(DecodeError, match="24-bit"):
        decode_wav(buf.getvalue(), 8000, 1600, 10.0)


def test_embedding() -> None:
    assert check_embedding([1.0, 2.0], 2).dtype == np.float32
    with pytest.raises(DecodeError, match="3 values, the bundle's d is 2"):
        check_embedding([1.0, 2.0, 3.0], 2)
    with pytest.raises(DecodeError, match="value 1 is NaN"):
        check_embedding([1.0, float("nan")], 2)
    with pytest.raises(DecodeError, match="value 0 is NaN or infinite"):
        check_embedding([1e300, 1.0], 2)
    with pytest.raises(DecodeError, match="zero vector"):
        check_embedding([0.0, 0.0], 2)


def test_an_image_whose_header_claims_billions_of_pixels_is_refused_by_field() -> None:
    """Pillow refuses such a "decompression bomb" itself, before our own pixel check."""
    raw = bytearray(base64.b64decode(png_b64(1, size=(2, 2))))
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", 60_000, 60_000)
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr : ihdr + 17])))
    with pytest.raises(DecodeError, match="too many pixels") as err:
        decode_image(bytes(raw), 16, 10_000)
    assert err.value.field == "image"
