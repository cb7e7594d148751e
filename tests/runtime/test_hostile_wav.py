"""WAV headers that lie: more frames than the file holds, a nonsensical sample rate."""

from __future__ import annotations

import base64
import io
import struct
import wave

import pytest

from runtime.decode import DecodeError, decode_wav
from tests.service.conftest import wav_b64


def lying_wav(frames: int, rate: int, data: bytes, channels: int = 1, width: int = 2) -> bytes:
    """A PCM WAV whose header declares `frames` frames at `rate` Hz, followed by `data`."""
    block = channels * width
    declared = frames * block
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 8 * width)
    riff = 4 + (8 + len(fmt)) + 8 + declared
    header = b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVE"
    header += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    return header + b"data" + struct.pack("<I", declared & 0xFFFFFFFF) + data


def test_a_wav_shorter_than_its_header_is_refused_naming_the_sizes() -> None:
    raw = lying_wav(frames=1000, rate=8000, data=b"\x01\x00" * 50)
    with pytest.raises(DecodeError, match="truncated WAV") as err:
        decode_wav(raw, 8000, 1600, 10.0)
    assert err.value.field == "audio"
    assert "1000 frames (2000 bytes of samples)" in err.value.message
    assert "holds 100 bytes" in err.value.message


def test_the_hostile_header_2_31_frames_at_2_31_hz_is_refused() -> None:
    """The review's reproduction: 1 s by its header (under the limit), 100 bytes of data."""
    raw = lying_wav(frames=2**31 // 2, rate=2**31 - 1, data=b"\x00" * 100, width=1)
    with pytest.raises(DecodeError, match="2147483647 Hz; the sample rate must be 1000 to 384000"):
        decode_wav(raw, 8000, 1600, 10.0)


@pytest.mark.parametrize("rate", [999, 384_001])
def test_a_sample_rate_out_of_range_is_refused(rate: int) -> None:
    raw = lying_wav(frames=100, rate=rate, data=b"\x00\x00" * 100)
    with pytest.raises(DecodeError, match=f"{rate} Hz; the sample rate must be 1000 to 384000 Hz"):
        decode_wav(raw, 8000, 1600, 10.0)


@pytest.mark.parametrize("rate", [1000, 384_000])
def test_the_sample_rate_bounds_are_taken(rate: int) -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * 100)
    audio, seconds = decode_wav(buf.getvalue(), 8000, 1600, 10.0)
    assert seconds == pytest.approx(100 / rate)
    assert audio.shape == (1600,)


def test_a_whole_wav_still_decodes() -> None:
    audio, seconds = decode_wav(base64.b64decode(wav_b64(1, 0.1, 16000)), 16000, 1600, 10.0)
    assert seconds == pytest.approx(0.1)
    assert abs(audio).max() > 0
