"""The offline pipeline (torch): encoder towers and pretrained backbones, item-pair mining,
item alignment, embedding quality, ONNX export; `pipeline.py` runs them into one bundle."""
