"""The bundle's encoder.onnx behind ONNX Runtime, driven by `manifest.encoder` alone.

docs/bundle.md (the encoder contract) says what goes in: token ids and attention mask from
`tokenizer.json`, truncated to `max_text_tokens`; an RGB image in [0, 1] resized to
`image_size` square with an `image_mask`; a mono waveform at `audio_sample_rate`, cropped or
padded to `audio_samples`, with an `audio_mask`; or, `mode: "features"`, one `features`
float32 (batch, F) input. The output is an L2-normalised float32 (batch, d). Whatever encoder
the models room exports to that contract drops in unchanged; `int8_file` is used when
`encoder_int8` asks for it and the manifest has one (null: `file`). The section's type,
`EncoderSpec`, lives with the bundle (codebooks/encoder_spec.py), which validates it on load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from codebooks import BundleError
from codebooks.encoder_spec import FEATURES_INPUT, MULTIMODAL_INPUTS, EncoderSpec

log = logging.getLogger(__name__)

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Content:
    """One item's encoder inputs after decoding; None where the item has no such field."""

    tokens: Int64Array | None = None  # (T,) token ids, T <= max_text_tokens
    image: Float32Array | None = None  # (3, S, S) RGB in [0, 1]
    audio: Float32Array | None = None  # (audio_samples,) mono
    features: Float32Array | None = None  # (F,) upstream features, mode "features" only


def providers(choice: Literal["auto", "cpu", "cuda"]) -> list[str]:
    """ONNX Runtime execution providers for `choice`, CUDA first when asked or available."""
    available = ort.get_available_providers()
    if choice == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            "execution_provider=cuda, but ONNX Runtime has no CUDAExecutionProvider "
            f"(available: {available}); install onnxruntime-gpu (the `gpu` extra)"
        )
    if choice != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Encoder:
    """An ONNX Runtime session (and, multimodal, the tokenizer) of one bundle; `run` is
    thread-safe. `mode` is the manifest's: `multimodal` (text, image, audio) or `features`
    (F upstream floats per item)."""

    def __init__(
        self,
        bundle_path: Path,
        spec: EncoderSpec,
        *,
        provider: Literal["auto", "cpu", "cuda"],
        threads: int,
        int8: bool = False,
    ) -> None:
        self.spec = spec
        self.tokenizer: Tokenizer | None = None
        if self.spec.mode == "multimodal":
            if self.spec.tokenizer is None:  # refused by EncoderSpec; kept for the type checker
                raise BundleError(
                    f"{bundle_path / 'manifest.json'}: the multimodal encoder names no tokenizer"
                )
            # Padding is ours (to the batch's longest, id 0, mask 0); truncation is the spec's.
            self.tokenizer = Tokenizer.from_file(str(bundle_path / self.spec.tokenizer))
            self.tokenizer.no_padding()
            self.tokenizer.enable_truncation(self.spec.max_text_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = self.spec.file
        if int8 and self.spec.int8_file is None:
            log.warning(
                "encoder_int8: %s has no int8 encoder (int8_file null); using %s",
                bundle_path,
                model,
            )
        elif int8 and self.spec.int8_file is not None:
            model = self.spec.int8_file
        self.file = bundle_path / model
        self.session = ort.InferenceSession(str(self.file), options, providers=providers(provider))
        self.provider = self.session.get_providers()[0]
        inputs = {i.name: i for i in self.session.get_inputs()}
        wanted = MULTIMODAL_INPUTS if self.spec.mode == "multimodal" else (FEATURES_INPUT,)
        missing = [n for n in wanted if n not in inputs]
        if missing:
            raise BundleError(f"{self.file}: lacks inputs {missing} (mode {self.spec.mode})")
        self.n_features = 0
        if self.spec.mode == "features":
            width = inputs[FEATURES_INPUT].shape[1]
            if not isinstance(width, int):
                raise BundleError(f"{self.file}: input `features` has no fixed width ({width})")
            self.n_features = width
        log.info("encoder %s (%s) on %s", self.file, self.spec.mode, self.provider)

    def tokenize(self, text: str) -> Int64Array:
        if self.tokenizer is None:
            raise RuntimeError("a features encoder has no tokenizer")
        ids: Int64Array = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
        return ids

    def run(self, items: list[Content]) -> Float32Array:
        """len(items) contents -> (len(items), d) float32 embeddings."""
        b = len(items)
        if self.spec.mode == "features":
            rows = [c.features for c in items if c.features is not None]
            if len(rows) != b:
                raise RuntimeError("a features encoder got an item without features")
            (out,) = self.session.run([self.spec.output], {FEATURES_INPUT: np.stack(rows)})
            return self._checked(out, b)
        s = self.spec.image_size
        longest = max([len(c.tokens) for c in items if c.tokens is not None] + [1])
        input_ids = np.zeros((b, longest), dtype=np.int64)
        attention = np.zeros((b, longest), dtype=np.int64)
        image = np.zeros((b, 3, s, s), dtype=np.float32)
        image_mask = np.zeros(b, dtype=np.float32)
        audio = np.zeros((b, self.spec.audio_samples), dtype=np.float32)
        audio_mask = np.zeros(b, dtype=np.float32)
        for row, c in enumerate(items):
            if c.tokens is not None:
                input_ids[row, : len(c.tokens)] = c.tokens
                attention[row, : len(c.tokens)] = 1
            if c.image is not None:
                image[row], image_mask[row] = c.image, 1.0
            if c.audio is not None:
                audio[row], audio_mask[row] = c.audio, 1.0
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "image": image,
            "image_mask": image_mask,
            "audio": audio,
            "audio_mask": audio_mask,
        }
        (out,) = self.session.run([self.spec.output], feeds)
        return self._checked(out, b)

    def _checked(self, out: Any, b: int) -> Float32Array:
        result = np.asarray(out, dtype=np.float32)
        if result.ndim != 2 or result.shape[0] != b:
            raise RuntimeError(f"encoder answered shape {result.shape} for {b} items")
        return result
