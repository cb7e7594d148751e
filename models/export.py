"""ONNX export of the encoder, following THE ENCODER CONTRACT of docs/bundle.md exactly.

`export_onnx` writes `encoder.onnx` with a dynamic batch axis (and a dynamic token axis);
`quantize_int8` writes a dynamically quantised variant that the pipeline keeps only when it
agrees with fp32 (`int8_agreement`); `encoder_spec` is the manifest's `encoder` section (a
`codebooks.encoder_spec.EncoderSpec`) and `write_tokenizer` the tokenizer.json the service
loads. The service needs no torch: everything it must do to an item before the graph is stated
in that section.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tokenizers import Tokenizer
from torch import Tensor

from codebooks.encoder_spec import BackboneRecord, EncoderSpec, TensorSpec
from codebooks.rq import ResidualCodebooks, rq_encode
from models.backbone import file_sha256
from models.encoder import (
    FEATURE_INPUT,
    INPUT_NAMES,
    OUTPUT_NAME,
    EncoderConfig,
    FeatureEncoder,
    MultimodalEncoder,
)

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
INT8_FILE = "encoder.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 18

# Acceptance thresholds of the int8 variant: agreement with fp32 on the catalog.
INT8_MIN_COSINE = 0.99
INT8_MIN_SAME_CODE = 0.95


def export_onnx(
    model: MultimodalEncoder | FeatureEncoder,
    path: Path,
    example: dict[str, Tensor],
) -> Path:
    """Export `model` to `path`: the contract's input names, `embedding` out, batch dynamic.

    `example` maps input names to example tensors (batch >= 2, so the exporter cannot
    specialise the batch to 1). The text axis `tokens` is dynamic too.
    """
    model = model.eval()
    names = (FEATURE_INPUT,) if isinstance(model, FeatureEncoder) else INPUT_NAMES
    args = tuple(example[name] for name in names)
    batch = torch.export.Dim("batch", min=1, max=65536)
    tokens = torch.export.Dim("tokens", min=1, max=512)
    shapes: dict[str, dict[int, Any]] = {name: {0: batch} for name in names}
    if not isinstance(model, FeatureEncoder):
        shapes["input_ids"] = {0: batch, 1: tokens}
        shapes["attention_mask"] = {0: batch, 1: tokens}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is chatty about its own internals
        program = torch.onnx.export(
            model,
            args,
            input_names=list(names),
            output_names=[_TMP_OUTPUT],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))
    _name_output(path)
    return path


_TMP_OUTPUT = "qarm_output"


def _name_output(path: Path) -> None:
    """Rename the graph output to the contract's `embedding`.

    The exporter names internal values after the aten op that makes them, and aten.embedding
    (the token lookup) makes values called `embedding`; those are renamed first, so the one
    value with the contract's name is the output.
    """
    import onnx

    proto = onnx.load(str(path))
    renames = {OUTPUT_NAME: f"{OUTPUT_NAME}_internal", _TMP_OUTPUT: OUTPUT_NAME}

    def rename(name: str) -> str:
        return renames.get(name, name)

    for node in proto.graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in [*proto.graph.output, *proto.graph.value_info]:
        value.name = rename(value.name)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul/Gemm weights (activations quantised per batch
    at run time): the transformer gets faster on CPU, convolutions stay in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )
    return dst


def session(path: Path, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session (`threads` 0: ORT's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(sess: Any, inputs: dict[str, Tensor]) -> npt.NDArray[np.float32]:
    """Feed named torch inputs to an ORT session; (B, d) float32 embeddings."""
    feed = {i.name: inputs[i.name].numpy() for i in sess.get_inputs()}
    out: npt.NDArray[np.float32] = sess.run([OUTPUT_NAME], feed)[0]
    return out


@torch.no_grad()
def max_abs_diff(
    model: MultimodalEncoder | FeatureEncoder, sess: Any, inputs: dict[str, Tensor]
) -> float:
    """Largest |torch - onnx| over a batch: the parity the contract promises (<= 1e-4)."""
    model.eval()
    names = (FEATURE_INPUT,) if isinstance(model, FeatureEncoder) else INPUT_NAMES
    expected = model(*(inputs[n] for n in names)).numpy()
    return float(np.abs(expected - run_onnx(sess, inputs)).max())


@dataclass(frozen=True)
class Int8Agreement:
    items: int  # catalog items compared
    mean_cosine: float  # mean cosine(fp32, int8) over the items
    min_cosine: float
    same_first_code: float  # share of items whose level-1 RQ code is unchanged
    same_code: float  # share of items whose whole L-level RQ code is unchanged
    same_prefix: list[float]  # [l]: share of items whose first l + 1 RQ codes are unchanged

    @property
    def kept(self) -> bool:
        return self.mean_cosine >= INT8_MIN_COSINE and self.same_code >= INT8_MIN_SAME_CODE


def int8_agreement(
    fp32: npt.NDArray[np.float32], int8: npt.NDArray[np.float32], books: ResidualCodebooks
) -> Int8Agreement:
    """Compare catalog embeddings of the fp32 and int8 encoders, and their RQ codes."""
    a = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
    b = int8 / np.linalg.norm(int8, axis=1, keepdims=True)
    cos = np.einsum("nd,nd->n", a, b)
    ca = rq_encode(a.astype(np.float32), books).codes
    cb = rq_encode(b.astype(np.float32), books).codes
    return Int8Agreement(
        items=len(a),
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        same_first_code=float((ca[:, 0] == cb[:, 0]).mean()),
        same_code=float((ca == cb).all(axis=1).mean()),
        same_prefix=[float(v) for v in np.cumprod(ca == cb, axis=1).mean(axis=0)],
    )


def write_tokenizer(tokenizer: Tokenizer, path: Path) -> Path:
    """The tokenizer exactly as training used it (truncation and padding included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tokenizer.to_str())
    return path


def encoder_spec(
    config: EncoderConfig, *, int8: bool, mode: str = "multimodal", n_features: int | None = None
) -> EncoderSpec:
    """The manifest's `encoder` section (docs/bundle.md, "The encoder section"). The keys set
    here are the keys written: features mode sets no multimodal ones, and a backbone record
    only when that tower started from a file."""
    if mode == "features":
        if n_features is None:
            raise ValueError("features mode needs n_features")
        return EncoderSpec(
            file=ENCODER_FILE,
            int8_file=INT8_FILE if int8 else None,
            mode="features",
            inputs={FEATURE_INPUT: TensorSpec("float32", ["batch", n_features])},
            output=OUTPUT_NAME,
        )
    if mode != "multimodal":
        raise ValueError(f"mode {mode!r}: multimodal or features")
    s = config.image_size
    backbones: dict[str, Any] = {  # only the towers that started from a file: unset, unwritten
        key: BackboneRecord(name=path.name, sha256=file_sha256(path))
        for key, path in (
            ("image_backbone", config.image_backbone),
            ("audio_backbone", config.audio_backbone),
        )
        if path is not None
    }
    return EncoderSpec(
        file=ENCODER_FILE,
        int8_file=INT8_FILE if int8 else None,
        mode="multimodal",
        tokenizer=TOKENIZER_FILE,
        max_text_tokens=config.max_text_tokens,
        image_size=s,
        audio_sample_rate=config.sample_rate,
        audio_samples=config.audio_samples,
        inputs={
            "input_ids": TensorSpec("int64", ["batch", "tokens"]),
            "attention_mask": TensorSpec("int64", ["batch", "tokens"]),
            "image": TensorSpec("float32", ["batch", 3, s, s]),
            "image_mask": TensorSpec("float32", ["batch"]),
            "audio": TensorSpec("float32", ["batch", config.audio_samples]),
            "audio_mask": TensorSpec("float32", ["batch"]),
        },
        output=OUTPUT_NAME,
        **backbones,
    )


def random_inputs(
    config: EncoderConfig, batch: int, tokens: int, seed: int = 0
) -> dict[str, Tensor]:
    """Random contract inputs (some rows with padding and with missing image or audio)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, tokens), generator=g)
    ids[:, 0] = 101  # [CLS]
    lengths = torch.randint(2, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens)[None] < lengths[:, None]).long()
    s = config.image_size
    return {
        "input_ids": ids * mask,
        "attention_mask": mask,
        "image": torch.rand((batch, 3, s, s), generator=g),
        "image_mask": (torch.rand(batch, generator=g) > 0.3).float(),
        "audio": 0.3 * torch.randn((batch, config.audio_samples), generator=g),
        "audio_mask": (torch.rand(batch, generator=g) > 0.3).float(),
    }
