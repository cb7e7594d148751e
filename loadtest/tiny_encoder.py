"""A deterministic, tiny encoder.onnx that obeys docs/bundle.md's encoder contract, and its
tokenizer.json: what the load test and the API tests serve, so they run in seconds without
the real model (and without torch).

Graph (opset 18): text = sum of token embeddings under the attention mask; image = 8x8
average-pooled RGB through a linear map, times image_mask; audio = 100 frame energies through
a linear map, times audio_mask; their sum plus a bias, L2-normalised, is `embedding`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from codebooks.encoder_spec import EncoderSpec, TensorSpec

WORDS = [
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "cat",
    "dog",
    "bird",
    "fish",
    "song",
    "dance",
    "movie",
    "game",
    "cook",
    "travel",
    "sport",
    "music",
    "news",
    "funny",
    "cute",
    "big",
    "small",
    "fast",
    "slow",
    "night",
    "day",
    "summer",
    "winter",
    "city",
    "beach",
]

IMAGE_SIZE = 32
AUDIO_RATE = 8000
AUDIO_SAMPLES = 1600  # 0.2 s
MAX_TOKENS = 8


def build_tokenizer(path: Path) -> Path:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def build_encoder(path: Path, dim: int, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vocab = len(WORDS) + 2
    frames = 100
    pool = IMAGE_SIZE // 8

    def const(name: str, array: np.ndarray) -> Any:
        return numpy_helper.from_array(array, name)

    inits = [
        const("tok_emb", rng.standard_normal((vocab, dim)).astype(np.float32)),
        const("w_img", rng.standard_normal((3 * 8 * 8, dim)).astype(np.float32)),
        const("w_aud", (10 * rng.standard_normal((frames, dim))).astype(np.float32)),
        const("bias", (0.1 * rng.standard_normal(dim)).astype(np.float32)),
        const("ax1", np.array([1], dtype=np.int64)),
        const("ax2", np.array([2], dtype=np.int64)),
        const("frame_shape", np.array([0, frames, -1], dtype=np.int64)),
        const("eps", np.array(1e-6, dtype=np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["tok_emb", "input_ids"], ["tok"]),  # (B, T, d)
        n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["mask_f", "ax2"], ["mask3"]),  # (B, T, 1)
        n("Mul", ["tok", "mask3"], ["tok_m"]),
        n("ReduceSum", ["tok_m", "ax1"], ["text"], keepdims=0),  # (B, d)
        n("AveragePool", ["image"], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]),
        n("Flatten", ["pooled"], ["img_flat"], axis=1),  # (B, 192)
        n("MatMul", ["img_flat", "w_img"], ["img_raw"]),
        n("Unsqueeze", ["image_mask", "ax1"], ["img_m"]),
        n("Mul", ["img_raw", "img_m"], ["img"]),
        n("Reshape", ["audio", "frame_shape"], ["framed"]),  # (B, 100, A/100)
        n("Mul", ["framed", "framed"], ["power"]),
        n("ReduceMean", ["power", "ax2"], ["energy"], keepdims=0),  # (B, 100)
        n("MatMul", ["energy", "w_aud"], ["aud_raw"]),
        n("Unsqueeze", ["audio_mask", "ax1"], ["aud_m"]),
        n("Mul", ["aud_raw", "aud_m"], ["aud"]),
        n("Add", ["text", "img"], ["s1"]),
        n("Add", ["s1", "aud"], ["s2"]),
        n("Add", ["s2", "bias"], ["x"]),
        n("Mul", ["x", "x"], ["sq"]),
        n("ReduceSum", ["sq", "ax1"], ["sumsq"], keepdims=1),
        n("Sqrt", ["sumsq"], ["norm"]),
        n("Max", ["norm", "eps"], ["norm_c"]),
        n("Div", ["x", "norm_c"], ["embedding"]),
    ]
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch", "tokens"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "tokens"]),
        helper.make_tensor_value_info("image", f, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]),
        helper.make_tensor_value_info("image_mask", f, ["batch"]),
        helper.make_tensor_value_info("audio", f, ["batch", AUDIO_SAMPLES]),
        helper.make_tensor_value_info("audio_mask", f, ["batch"]),
    ]
    outputs = [helper.make_tensor_value_info("embedding", f, ["batch", dim])]
    graph = helper.make_graph(nodes, "tiny_qarm_encoder", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def encoder_spec() -> EncoderSpec:
    """manifest["encoder"] for the tiny encoder, in docs/bundle.md's format (no int8)."""
    return EncoderSpec(
        file="encoder.onnx",
        mode="multimodal",
        tokenizer="tokenizer.json",
        max_text_tokens=MAX_TOKENS,
        image_size=IMAGE_SIZE,
        audio_sample_rate=AUDIO_RATE,
        audio_samples=AUDIO_SAMPLES,
        inputs={
            "input_ids": TensorSpec("int64", ["batch", "tokens"]),
            "attention_mask": TensorSpec("int64", ["batch", "tokens"]),
            "image": TensorSpec("float32", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]),
            "image_mask": TensorSpec("float32", ["batch"]),
            "audio": TensorSpec("float32", ["batch", AUDIO_SAMPLES]),
            "audio_mask": TensorSpec("float32", ["batch"]),
        },
        output="embedding",
    )


FEATURES = 12


def build_features_encoder(path: Path, dim: int, *, seed: int = 0) -> Path:
    """`mode: "features"`: (batch, FEATURES) float32 -> L2-normalised linear map to d."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((FEATURES, dim)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
        numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "eps"),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["features", "w"], ["x"]),
        n("Mul", ["x", "x"], ["sq"]),
        n("ReduceSum", ["sq", "ax1"], ["sumsq"], keepdims=1),
        n("Sqrt", ["sumsq"], ["norm"]),
        n("Max", ["norm", "eps"], ["norm_c"]),
        n("Div", ["x", "norm_c"], ["embedding"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "tiny_qarm_features_encoder",
        [helper.make_tensor_value_info("features", f, ["batch", FEATURES])],
        [helper.make_tensor_value_info("embedding", f, ["batch", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def features_spec() -> EncoderSpec:
    """manifest["encoder"] of a features encoder, as models/export writes it (no int8)."""
    return EncoderSpec(
        file="encoder.onnx",
        int8_file=None,
        mode="features",
        inputs={"features": TensorSpec("float32", ["batch", FEATURES])},
        output="embedding",
    )
