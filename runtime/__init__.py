"""The encoding runtime: a verified bundle behind ONNX Runtime and faiss, items in, codes out.

No web framework and no torch: the service (one item at a time, micro-batched) and the
backfill (the whole catalog, on Ray Data) both stand on it. `decode` turns raw fields into
encoder inputs, `encoder` runs the bundle's encoder.onnx, `engine` ties them to the quantizer.
"""

from runtime.decode import DecodeError
from runtime.encoder import Content, Encoder
from runtime.engine import (
    Cost,
    Encoded,
    Engine,
    EngineOptions,
    InputLimits,
    Prepared,
    RawItem,
)

__all__ = [
    "Content",
    "Cost",
    "DecodeError",
    "Encoded",
    "Encoder",
    "Engine",
    "EngineOptions",
    "InputLimits",
    "Prepared",
    "RawItem",
]
