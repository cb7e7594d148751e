"""The offline pipeline (torch): encoder towers, item-pair mining, item alignment, ONNX export."""
