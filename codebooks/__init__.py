"""The ground floor: VQ and RQ semantic-ID codebooks, the runtime quantizer, the bundle.

The build (`build.py`, `rq.py`, `rq_train.py`, `balance.py`, `vq.py`), the bundle and its
typed encoder spec (`bundle.py`, `encoder_spec.py`), semantic IDs and the item-id rule
(`sid.py`), the quantizer (`quantizer.py`), and what a person or a batch job reads of a build
(`metrics.py`, `summary.py`, `report.py`, `export.py`); `clustered.py` makes test embeddings.
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
