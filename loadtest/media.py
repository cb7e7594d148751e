"""Realistic new items for the load test: a title, a small JPEG cover, a short WAV clip.

Plain functions (no locust), so the payloads can be checked against the service in tests.
"""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import numpy as np
from PIL import Image

from loadtest.tiny_encoder import WORDS  # texts in the demo encoder's vocabulary


def jpeg_cover(rng: np.random.Generator, width: int = 160, height: int = 120) -> str:
    """A base64 JPEG: a colour gradient with noise and a block, ~5-10 KB like a thumbnail."""
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, 3)
    slope = rng.uniform(-1.0, 1.0, (2, 3))
    pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    pixels = pixels + rng.normal(0, 12, (height, width, 3))
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    pixels[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def wav_clip(rng: np.random.Generator, seconds: float = 1.0, rate: int = 16000) -> str:
    """A base64 16-bit mono WAV: a few tones with an envelope and noise."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(
        rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(110, 1760) * t) for _ in range(3)
    )
    signal = tone * np.exp(-t * rng.uniform(0.5, 3.0)) + rng.normal(0, 0.01, len(t))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype(np.int16).tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def title(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


class MediaPool:
    """Pre-made covers and clips (making a JPEG per request would load the client, not the
    service); items mix them with fresh titles. Every item has text; most have a cover,
    about half a clip, like uploads of short videos."""

    def __init__(self, seed: int, covers: int = 64, clips: int = 16) -> None:
        self.rng = np.random.default_rng(seed)
        self.covers = [jpeg_cover(self.rng) for _ in range(covers)]
        self.clips = [wav_clip(self.rng) for _ in range(clips)]

    def item(self, item_id: str) -> dict[str, Any]:
        item: dict[str, Any] = {"id": item_id, "text": title(self.rng)}
        if self.rng.random() < 0.9:
            item["image"] = self.covers[int(self.rng.integers(len(self.covers)))]
        if self.rng.random() < 0.5:
            item["audio"] = self.clips[int(self.rng.integers(len(self.clips)))]
        return item
