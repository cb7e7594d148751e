"""Encoders, pair mining, item alignment and ONNX export (torch; see DESIGN.md; issue 3)."""
