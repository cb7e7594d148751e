"""The ground floor: VQ and RQ semantic-ID codebooks, the runtime quantizer, the bundle.

numpy + faiss only (no torch); every other room reads or writes bundles through here.
"""

from codebooks.build import BuildConfig, build
from codebooks.bundle import Bundle, BundleError, latest_bundle, load_bundle
from codebooks.embeddings import EmbeddingError
from codebooks.encoder_spec import EncoderSpec
from codebooks.quantizer import Quantizer

__all__ = [
    "BuildConfig",
    "Bundle",
    "BundleError",
    "EmbeddingError",
    "EncoderSpec",
    "Quantizer",
    "build",
    "latest_bundle",
    "load_bundle",
]
