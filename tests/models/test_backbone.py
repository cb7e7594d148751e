"""Pretrained backbones as towers: loaded from torch.export files, used, frozen or fine-tuned by
prefix, exported to ONNX with parity, and refused with a clear error when the file is wrong."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from catalogs.synthetic import SyntheticCatalog
from codebooks.encoder_spec import BackboneRecord
from models.backbone import Backbone, load_backbone
from models.encoder import INPUT_NAMES, EncoderConfig, MultimodalEncoder, encode_inputs
from models.export import encoder_spec, export_onnx, max_abs_diff, random_inputs, session

TOLERANCE = 1e-4
CONFIG = EncoderConfig(dim=16, hidden=32)  # the contract's image size and clip length


class TinyImageNet(nn.Module):
    """A torchvision-like classifier: ImageNet normalisation inside, convs, BatchNorm, `fc`."""

    def __init__(self) -> None:
        super().__init__()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1((x - self.mean) / self.std)))
        x = torch.relu(self.bn2(self.conv2(x)))
        out: Tensor = self.fc(x.mean(dim=(2, 3)))
        return out


class TinyAudioNet(nn.Module):
    """Waveform (B, samples) -> (B, 12, frames): a strided Conv1d front end, as in wav2vec."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 64, stride=32)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 12, 8, stride=4)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv2(torch.relu(self.bn1(self.conv1(x[:, None]))))
        return out


def _image_example(batch: int = 2) -> Tensor:
    return torch.rand(batch, 3, CONFIG.image_size, CONFIG.image_size)


def _audio_example(batch: int = 2) -> Tensor:
    return 0.3 * torch.randn(batch, CONFIG.audio_samples)


def _pretend_pretrained(model: nn.Module, example: Tensor) -> nn.Module:
    """Random weights, and BatchNorm statistics away from their 0/1 defaults, in eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(example)
    return model.eval()


def _save(model: nn.Module, example: Tensor, path: Path, *, dynamic: bool = True) -> Path:
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=shapes), path)
    return path


@dataclass(frozen=True)
class Backbones:
    image: Path
    audio: Path
    image_model: nn.Module  # the eager model image was exported from
    audio_model: nn.Module


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> Backbones:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("backbones")
    image_model = _pretend_pretrained(TinyImageNet(), _image_example(8))
    audio_model = _pretend_pretrained(TinyAudioNet(), _audio_example(8))
    return Backbones(
        image=_save(image_model, _image_example(), root / "image.pt2"),
        audio=_save(audio_model, _audio_example(), root / "audio.pt2"),
        image_model=image_model,
        audio_model=audio_model,
    )


def _encoder(backbones: Backbones, image_train: tuple[str, ...] = ()) -> MultimodalEncoder:
    torch.manual_seed(0)
    config = EncoderConfig(
        dim=CONFIG.dim,
        hidden=CONFIG.hidden,
        image_backbone=backbones.image,
        image_backbone_train=image_train,
        audio_backbone=backbones.audio,
    )
    return MultimodalEncoder(config, pretrained=False)


def _embed(model: MultimodalEncoder, inputs: dict[str, Tensor]) -> Tensor:
    out: Tensor = model(*(inputs[n] for n in INPUT_NAMES))
    return out


@torch.no_grad()
def test_backbones_are_the_towers(backbones: Backbones) -> None:
    model = _encoder(backbones).eval()
    assert isinstance(model.image, Backbone)
    assert isinstance(model.audio, Backbone)
    assert (model.image_proj.in_features, model.audio_proj.in_features) == (10, 12)
    image, audio = _image_example(5), _audio_example(5)
    # The towers compute what the pretrained models compute ((B, F, T) averaged over T)...
    torch.testing.assert_close(model.image(image), backbones.image_model(image))
    torch.testing.assert_close(model.audio(audio), backbones.audio_model(audio).mean(2))
    # ...and the embedding of an item with an image depends on the backbone's weights.
    inputs = random_inputs(model.config, 6, 8, seed=1)
    before = _embed(model, inputs)
    dict(model.image.net.named_parameters())["conv1.weight"].mul_(-1.0)
    moved = (_embed(model, inputs) - before).abs().amax(dim=1)
    has_image = inputs["image_mask"].bool()
    assert has_image.any()
    assert (moved[has_image] > 1e-3).all()
    assert (moved[~has_image] == 0).all()


def test_only_the_train_prefixes_are_fine_tuned(backbones: Backbones) -> None:
    model = _encoder(backbones, image_train=("fc",))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(3):
        emb = _embed(model, random_inputs(model.config, 8, 8, seed=step))
        loss = -(emb[:4] * emb[4:]).sum()  # any loss that reaches both towers
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    backbone_changed = {k for k in changed if k.startswith(("image.net.", "audio.net."))}
    assert backbone_changed == {"image.net.fc.weight", "image.net.fc.bias"}
    assert {"image_proj.weight", "audio_proj.weight", "head.3.weight"} <= changed


@torch.no_grad()
def test_train_and_eval_leave_the_exported_graph_as_it_is(backbones: Backbones) -> None:
    model = _encoder(backbones)
    inputs = random_inputs(model.config, 4, 8)
    assert model.train() is model
    assert model.image.training
    in_train = _embed(model, inputs)  # BatchNorm uses its running statistics here too
    assert not model.eval().image.training
    torch.testing.assert_close(_embed(model, inputs), in_train, atol=0.0, rtol=0.0)


@pytest.fixture(scope="module")
def exported(
    backbones: Backbones, tmp_path_factory: pytest.TempPathFactory
) -> tuple[MultimodalEncoder, Path]:
    model = _encoder(backbones, image_train=("fc",)).eval()
    path = tmp_path_factory.mktemp("onnx") / "encoder.onnx"
    return model, export_onnx(model, path, random_inputs(model.config, 3, 9))


def test_onnx_parity_on_real_items(
    exported: tuple[MultimodalEncoder, Path], catalog: SyntheticCatalog, tokenizer: Tokenizer
) -> None:
    model, path = exported
    sess = session(path)
    for rows in (np.arange(1), np.arange(40)):  # the batch axis stays dynamic
        inputs = encode_inputs(catalog.content(rows), tokenizer)
        assert inputs["image"].shape[1:] == (3, CONFIG.image_size, CONFIG.image_size)
        assert max_abs_diff(model, sess, inputs) <= TOLERANCE


def test_manifest_records_the_backbone_files(backbones: Backbones) -> None:
    config = EncoderConfig(image_backbone=backbones.image, audio_backbone=backbones.audio)
    spec = encoder_spec(config, int8=False)
    assert spec.image_backbone == BackboneRecord(
        name="image.pt2", sha256=hashlib.sha256(backbones.image.read_bytes()).hexdigest()
    )
    assert spec.audio_backbone is not None
    assert spec.audio_backbone.name == "audio.pt2"
    assert spec.file == "encoder.onnx"  # the bundle files are unchanged
    assert "image_backbone" not in encoder_spec(EncoderConfig(), int8=False).model_dump()


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt2"
    with pytest.raises(FileNotFoundError, match=r"resnet\.pt2: no such backbone file"):
        load_backbone(path, "image", _image_example())


def test_files_that_are_not_exported_programs_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt2"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.pt2: not a torch\.export archive"):
        load_backbone(text, "image", _image_example())
    weights = tmp_path / "weights.pt2"
    torch.save(TinyImageNet().state_dict(), weights)
    with pytest.raises(ValueError, match=r"weights\.pt2: a torch\.save checkpoint, not a torch"):
        load_backbone(weights, "image", _image_example())


def test_unknown_train_prefix_is_refused(backbones: Backbones) -> None:
    # Prefixes are module paths: "conv" is a string prefix of "conv1" but names no module.
    with pytest.raises(ValueError, match=r"'conv' names no parameter.*\['conv1', 'bn1', "):
        load_backbone(backbones.image, "image", _image_example(), train=("fc", "conv"))


def test_static_batch_is_refused(tmp_path: Path) -> None:
    model = TinyImageNet().eval()
    path = _save(model, _image_example(2), tmp_path / "static.pt2", dynamic=False)
    with pytest.raises(ValueError, match=r"static\.pt2: the image backbone fails on a batch of 3"):
        load_backbone(path, "image", _image_example(2))


def test_program_exported_in_train_mode_is_refused(tmp_path: Path) -> None:
    # BatchNorm in training mode normalises with the batch's statistics: an item's features
    # would depend on the other items of its batch.
    path = _save(TinyImageNet().train(), _image_example(), tmp_path / "train_mode.pt2")
    with pytest.raises(ValueError, match=r"train_mode\.pt2: .*export it from the model in eval"):
        load_backbone(path, "image", _image_example())
