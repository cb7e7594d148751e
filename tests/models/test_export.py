"""ONNX export: parity with torch, the dynamic batch, and the contract as docs/bundle.md says."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import json
import re
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from catalogs.synthetic import SyntheticCatalog
from codebooks.encoder_spec import EncoderSpec, TensorSpec
from codebooks.rq_train import train_residual_kmeans
from models.encoder import EncoderConfig, FeatureEncoder, MultimodalEncoder, encode_inputs
from models.export import (
    encoder_spec,
    export_onnx,
    int8_agreement,
    max_abs_diff,
    quantize_int8,
    random_inputs,
    run_onnx,
    session,
    write_tokenizer,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "bundle.md"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def onnx_path(
    tmp_path_factory: pytest.TempPathFactory,
    pretrained: MultimodalEncoder,
    encoder_config: EncoderConfig,
) -> Path:
    return export_onnx(
        pretrained,
        tmp_path_factory.mktemp("onnx") / "encoder.onnx",
        random_inputs(encoder_config, 3, 9),
    )


def test_parity_on_random_inputs(
    onnx_path: Path, pretrained: MultimodalEncoder, encoder_config: EncoderConfig
) -> None:
    sess = session(onnx_path)
    for batch, tokens in ((1, 4), (5, 32), (40, 17)):  # batch and token axes are dynamic
        assert (
            max_abs_diff(pretrained, sess, random_inputs(encoder_config, batch, tokens, seed=batch))
            <= TOLERANCE
        )


def test_parity_on_real_items(
    onnx_path: Path, pretrained: MultimodalEncoder, catalog: SyntheticCatalog, tokenizer: Tokenizer
) -> None:
    inputs = encode_inputs(catalog.content(np.arange(48)), tokenizer)
    assert inputs["image_mask"].min() == 0
    assert inputs["audio_mask"].min() == 0
    assert max_abs_diff(pretrained, session(onnx_path), inputs) <= TOLERANCE


def _documented_spec() -> dict[str, object]:
    block = re.search(r'```json\n"encoder": (\{.*?\n\})\n```', DOC.read_text(), re.S)
    assert block, f"{DOC}: no encoder section example"
    spec: dict[str, object] = json.loads(block.group(1))
    return spec


def test_graph_and_spec_follow_the_documented_contract(
    onnx_path: Path, encoder_config: EncoderConfig
) -> None:
    documented = _documented_spec()
    spec = encoder_spec(encoder_config, int8=True)
    assert spec.model_dump(mode="json") == documented  # the JSON written, key for key
    assert list(spec.model_dump(mode="json")) == list(documented)  # in the documented order
    assert spec == EncoderSpec.model_validate(documented)
    sess = session(onnx_path)
    types = {"int64": "tensor(int64)", "float32": "tensor(float)"}
    inputs = documented["inputs"]
    assert isinstance(inputs, dict)
    assert [i.name for i in sess.get_inputs()] == list(inputs)
    for i in sess.get_inputs():
        dtype, shape = inputs[i.name]
        assert i.type == types[dtype], i.name
        assert i.shape == shape, i.name
    (out,) = sess.get_outputs()
    assert out.name == documented["output"]
    assert out.shape == ["batch", encoder_config.dim]


def test_tokenizer_file_reproduces_training_tokenisation(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    path = write_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(str(path))
    texts = ["short", "word " * 100]
    assert [e.ids for e in loaded.encode_batch(texts)] == [
        e.ids for e in tokenizer.encode_batch(texts)
    ]
    assert len(loaded.encode_batch(texts)[1].ids) == 32


def test_int8_variant_is_measured(
    tmp_path: Path, onnx_path: Path, catalog: SyntheticCatalog, tokenizer: Tokenizer
) -> None:
    int8_path = quantize_int8(onnx_path, tmp_path / "encoder.int8.onnx")
    # MatMul weights shrink 4x; the token embedding table (a Gather) stays fp32.
    assert int8_path.stat().st_size < 0.8 * onnx_path.stat().st_size
    inputs = encode_inputs(catalog.content(np.arange(64)), tokenizer)
    fp32, int8 = run_onnx(session(onnx_path), inputs), run_onnx(session(int8_path), inputs)
    books = train_residual_kmeans(fp32, 2, 4, seed=0)
    agreement = int8_agreement(fp32, int8, books)
    assert 0.9 < agreement.mean_cosine < 1.0
    assert agreement.min_cosine <= agreement.mean_cosine
    assert agreement.same_prefix[0] >= agreement.same_prefix[1] == agreement.same_code
    same = int8_agreement(fp32, fp32, books)
    assert same.mean_cosine == pytest.approx(1.0)
    assert same.same_code == 1.0
    assert same.kept


def test_feature_mode_export(tmp_path: Path) -> None:
    model = FeatureEncoder(24, EncoderConfig(dim=8)).eval()
    path = export_onnx(model, tmp_path / "encoder.onnx", {"features": torch.randn(2, 24)})
    sess = session(path)
    assert max_abs_diff(model, sess, {"features": torch.randn(13, 24)}) <= TOLERANCE
    spec = encoder_spec(EncoderConfig(dim=8), int8=False, mode="features", n_features=24)
    assert spec.inputs == {"features": TensorSpec("float32", ["batch", 24])}
    assert spec.int8_file is None
    assert spec.model_dump(mode="json") == {  # no multimodal key is written in features mode
        "file": "encoder.onnx",
        "int8_file": None,
        "mode": "features",
        "inputs": {"features": ["float32", ["batch", 24]]},
        "output": "embedding",
    }
    assert [i.name for i in sess.get_inputs()] == ["features"]
