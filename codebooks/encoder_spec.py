"""The manifest's `encoder` section: how to feed the bundle's encoder.onnx, typed.

docs/bundle.md ("The encoder section of the manifest") defines it; `models/export` writes it,
`runtime/encoder` runs the graph by it, and `load_bundle` validates it with the rest of the
manifest, so a malformed section is refused when the bundle loads, naming the field, not when
the service first runs the encoder. The JSON on disk is the documented one: a section keeps
exactly the keys it was given (a `features` section gains no multimodal defaults).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)

# The graph's inputs by mode (docs/bundle.md): six for multimodal, one for features.
MULTIMODAL_INPUTS = ("input_ids", "attention_mask", "image", "image_mask", "audio", "audio_mask")
FEATURES_INPUT = "features"


class TensorSpec(NamedTuple):
    """One graph input, written `[dtype, shape]`; a shape entry is a size or the name of a
    dynamic axis (`batch`, `tokens`)."""

    dtype: Literal["int64", "float32"]
    shape: list[int | str]


class BackboneRecord(BaseModel):
    """Provenance of a pretrained tower: the file its weights started from. The trained
    weights are inside encoder.onnx, so this names no bundle file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sha256: str


class EncoderSpec(BaseModel):
    """`manifest["encoder"]` as docs/bundle.md defines it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str  # the fp32 graph, a bundle file
    int8_file: str | None = None  # a quantised copy of `file`, same inputs and output
    mode: Literal["multimodal", "features"]
    tokenizer: str | None = Field(None, validate_default=True)  # multimodal: tokenizer.json
    max_text_tokens: PositiveInt = 32
    image_size: PositiveInt = 64
    audio_sample_rate: PositiveInt = 16000
    audio_samples: PositiveInt = 16000
    inputs: dict[str, TensorSpec]  # graph input name -> [dtype, shape]
    output: str = "embedding"
    image_backbone: BackboneRecord | None = None
    audio_backbone: BackboneRecord | None = None

    @field_validator("tokenizer")
    @classmethod
    def _multimodal_has_a_tokenizer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "multimodal":
            raise ValueError("a multimodal encoder needs a tokenizer file (missing or null)")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs_follow_the_mode(
        cls, value: dict[str, TensorSpec], info: ValidationInfo
    ) -> dict[str, TensorSpec]:
        mode = info.data.get("mode")
        if mode is None:  # `mode` itself was refused
            return value
        wanted = MULTIMODAL_INPUTS if mode == "multimodal" else (FEATURES_INPUT,)
        if set(value) != set(wanted):
            raise ValueError(f"mode {mode!r} takes inputs {list(wanted)}, not {list(value)}")
        return value

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the keys the section was given, in the documented order."""
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if key in self.model_fields_set}

    def named_files(self) -> dict[str, str]:
        """The bundle files the section names, by field (`file`, `int8_file`, `tokenizer`)."""
        named = {"file": self.file, "int8_file": self.int8_file, "tokenizer": self.tokenizer}
        return {field: name for field, name in named.items() if name is not None}
