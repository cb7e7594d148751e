"""The encoder: MiniLM as the reference implementation computes it, the log-mel front end,
masking of missing modalities, and batch independence."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import numpy as np
import torch
from tokenizers import Tokenizer

from catalogs.synthetic import SyntheticCatalog
from models.encoder import (
    INPUT_NAMES,
    EncoderConfig,
    FeatureEncoder,
    LogMel,
    MiniLM,
    MultimodalEncoder,
    encode_inputs,
    minilm_dir,
    tokenize,
)


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)
def test_minilm_matches_transformers_bert(tokenizer: Tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertModel.from_pretrained(str(minilm_dir())).eval()
    ours = MiniLM().load_pretrained().eval()
    ids, mask = tokenize(tokenizer, ["a cat on the mat", "premium pasta sauce, garlic model nq13"])
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        got = ours(ids, mask)
    assert mask[0].sum() < mask.shape[1]  # the batch has padding, which must not count
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_tokenizer_truncates_and_pads(tokenizer: Tokenizer) -> None:
    ids, mask = tokenize(tokenizer, ["short", "word " * 100])
    assert ids.shape == (2, 32)
    assert ids.dtype == torch.int64
    assert mask.dtype == torch.int64
    assert mask[0].sum() == 3
    assert mask[1].sum() == 32
    assert ids[0, 0] == 101
    assert ids[1, -1] == 102


def test_logmel_matches_torch_stft() -> None:
    config = EncoderConfig()
    logmel = LogMel(config.n_fft, config.hop, config.n_mels, config.sample_rate)
    audio = torch.randn(2, 4000)
    window = torch.hann_window(config.n_fft)
    spec = torch.stft(
        audio, config.n_fft, config.hop, window=window, center=False, return_complex=True
    )
    expected = torch.log(logmel.mel @ spec.abs().pow(2) + 1e-6)
    torch.testing.assert_close(logmel(audio), expected, atol=2e-3, rtol=1e-4)


def test_logmel_finds_a_tone() -> None:
    config = EncoderConfig()
    logmel = LogMel(config.n_fft, config.hop, config.n_mels, config.sample_rate)
    t = torch.arange(16000) / 16000
    low, high = (
        logmel(torch.sin(2 * torch.pi * f * t)[None])[0].mean(1).argmax() for f in (300, 3000)
    )
    assert low < high


def _inputs(
    catalog: SyntheticCatalog, tokenizer: Tokenizer, rows: list[int]
) -> dict[str, torch.Tensor]:
    return encode_inputs(catalog.content(np.array(rows)), tokenizer)


@torch.no_grad()
def test_output_is_unit_and_batch_independent(
    pretrained: MultimodalEncoder, catalog: SyntheticCatalog, tokenizer: Tokenizer
) -> None:
    batch = _inputs(catalog, tokenizer, list(range(8)))
    out = pretrained(*(batch[n] for n in INPUT_NAMES))
    assert out.shape == (8, 64)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(8))
    alone = _inputs(catalog, tokenizer, [3])
    torch.testing.assert_close(
        pretrained(*(alone[n] for n in INPUT_NAMES))[0], out[3], atol=1e-5, rtol=0
    )


@torch.no_grad()
def test_missing_modalities_are_masked_out(
    pretrained: MultimodalEncoder, catalog: SyntheticCatalog, tokenizer: Tokenizer
) -> None:
    batch = _inputs(catalog, tokenizer, [0, 1])
    base = pretrained(*(batch[n] for n in INPUT_NAMES))
    masked = dict(batch, image_mask=torch.zeros(2), audio_mask=torch.zeros(2))
    text_only = pretrained(*(masked[n] for n in INPUT_NAMES))
    garbage = dict(
        masked, image=torch.rand_like(batch["image"]), audio=torch.randn_like(batch["audio"])
    )
    # Whatever the tensors hold, a masked modality changes nothing...
    torch.testing.assert_close(pretrained(*(garbage[n] for n in INPUT_NAMES)), text_only)
    # ...while a present one does.
    assert (base - text_only).abs().max() > 1e-3


def test_only_the_chosen_text_layers_train() -> None:
    model = MultimodalEncoder(EncoderConfig(train_text_layers=2), pretrained=False)
    trainable = {n.split(".")[1] for n, p in model.text.named_parameters() if p.requires_grad}
    assert trainable == {"4", "5"}
    assert not model.text.word.weight.requires_grad
    assert not model.text_frozen
    assert MultimodalEncoder(EncoderConfig(), pretrained=False).text_frozen
    assert model.image_proj.weight.requires_grad


def test_feature_encoder_contract() -> None:
    model = FeatureEncoder(48, EncoderConfig(dim=16))
    out = model(torch.randn(5, 48))
    assert out.shape == (5, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
