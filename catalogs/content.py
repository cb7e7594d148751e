"""What the offline pipeline reads of a catalog: a batch of raw content, and the `Catalog`
protocol every source (synthetic, MovieLens, a user's Parquet files) meets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

IMAGE_SIZE = 64  # square RGB covers, the encoder contract's default
SAMPLE_RATE = 16_000  # audio sample rate (Hz)
AUDIO_SAMPLES = 16_000  # one second of mono audio


@dataclass(frozen=True)
class ItemContent:
    """A batch of raw item content, before tokenisation.

    texts: B strings, None for an item without text (its tokens are then masked out).
    image: (B, 3, S, S) float32 RGB in [0, 1]. audio: (B, T) float32 mono waveform. The
    masks are (B,) float32: 1 where the item has that modality, 0 where it has none (its
    tensor is then zeros and the encoder ignores it).
    """

    texts: list[str | None]
    image: FloatArray
    image_mask: FloatArray
    audio: FloatArray
    audio_mask: FloatArray

    def __len__(self) -> int:
        return len(self.texts)


class Catalog(Protocol):
    """What the pipeline needs of a catalog, synthetic or real."""

    @property
    def ids(self) -> npt.NDArray[np.str_]: ...  # (N,) item ids; row i is item ids[i]

    @property
    def groups(self) -> IntArray: ...  # (N,) a grouping to colour maps by (business, genre)

    def __len__(self) -> int: ...

    def texts(self, rows: IntArray) -> list[str | None]: ...  # each row's text, cheaply

    def content(self, rows: IntArray) -> ItemContent: ...
