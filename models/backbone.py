"""Pretrained image and audio backbones, brought as torch.export programs, as encoder towers.

A backbone is a `.pt2` file written by `torch.export.save` from an ExportedProgram whose batch
axis is dynamic. Users make it in their own environment from any architecture (torchvision,
torchaudio, timm, ...); nothing is ever downloaded here, and the program needs no Python code
of its own to run. For example, ResNet-18's pooled features with ImageNet normalisation::

    class Covers(torch.nn.Module):  # RGB in [0, 1] in, as the encoder contract gives it
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    m = torchvision.models.resnet18(weights="DEFAULT")
    m.fc = torch.nn.Identity()  # the 512 pooled features, not the 1000 ImageNet logits
    ep = torch.export.export(
        Covers(m).eval(),
        (torch.rand(2, 3, 64, 64),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )
    torch.export.save(ep, "resnet18.pt2")  # its parameters: net.conv1.weight, net.layer4...

The export's example input has the contract's shape at the encoder's config (64 x 64 covers and
16000-sample clips by default); only the batch axis is dynamic.

The input contracts (what the encoder feeds the program, the bundle's encoder inputs unchanged):

- image backbone: (B, 3, S, S) float32 RGB in [0, 1], S = `EncoderConfig.image_size`. Any
  normalisation the weights expect (ImageNet mean and std, say) must be inside the exported
  program: wrap the model in a module that applies it before calling `torch.export.export`.
- audio backbone: (B, samples) float32 mono waveform in [-1, 1] at `EncoderConfig.sample_rate`
  (16 kHz), samples = `EncoderConfig.audio_samples`. A spectrogram front end, if the model
  needs one, must be inside the exported program too.

The output is one float tensor: (B, F) is used as is; (B, F, T) and (B, F, H, W) (channels
first, as convolutional nets give them) are averaged over their trailing axes to (B, F). A
transformer's (B, T, F) sequence must be pooled inside the program, since it cannot be told
apart from (B, F, T) by its shape.

The program is used as exported: export it from a model in eval mode, so that BatchNorm uses
its running statistics and dropout is off. Its `train()` and `eval()` do not change it (an
exported graph has no modes); gradients still flow, so the parameters named by `train`
prefixes are fine-tuned with the rest of the encoder, and all others are frozen.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

BackboneKind = Literal["image", "audio"]

# Row agreement between a batch and a larger one holding the same rows: an item's features
# must not depend on the other items of its batch (serving micro-batches arbitrary items).
# Loose enough for float32 kernels that block a batch differently; BatchNorm on batch
# statistics or dropout miss it by orders of magnitude.
_BATCH_ATOL, _BATCH_RTOL = 1e-4, 1e-3
_OUTPUT_RANKS = (2, 3, 4)


class Backbone(nn.Module):
    """An exported program as a tower: its input contract -> (B, out_features) features."""

    def __init__(self, net: nn.Module, out_features: int) -> None:
        super().__init__()
        self.net = net  # the program's GraphModule: parameter names as in the exported model
        self.out_features = out_features

    def train(self, mode: bool = True) -> Backbone:
        """Record the mode without recursing: an exported graph's semantics are fixed as it
        was exported (and its GraphModule refuses `train()`)."""
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        return pool(self.net(x))


def pool(out: Tensor) -> Tensor:
    """(B, F) as is; (B, F, T) and (B, F, H, W) averaged over the trailing axes to (B, F)."""
    return out if out.dim() == 2 else out.mean(dim=tuple(range(2, out.dim())))


def load_backbone(
    path: Path, kind: BackboneKind, example: Tensor, train: tuple[str, ...] = ()
) -> Backbone:
    """Load the `.pt2` program at `path` as the `kind` tower and check it on `example`.

    `example` is a batch of at least one input of the kind's contract (module docstring); the
    program must run on it and on a batch one larger, giving finite (B, F[, ...]) features
    with the same rows for the same items. Every parameter is frozen except those under one
    of the `train` prefixes: dotted module paths such as `fc`, `layer4` or `layer4.1.conv2`
    (`features.1` does not select `features.10`). Anything wrong raises FileNotFoundError or
    ValueError naming `path`.
    """
    path = Path(path)
    net = _load_program(path)
    out_features = _probe(net, path, kind, example)
    _freeze(net, path, train)
    return Backbone(net, out_features)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a backbone file, recorded in the manifest's encoder section."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _load_program(path: Path) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such backbone file (a torch.export .pt2 program)")
    how = "export the model with torch.export.export and save it with torch.export.save"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch.export archive (not a zip file); {how}")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any(n == "archive_format" or n.endswith("/archive_format") for n in names):
        what = "a torch.save checkpoint" if any(n.endswith("data.pkl") for n in names) else "a zip"
        raise ValueError(f"{path}: {what}, not a torch.export archive; {how}")
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)  # torch.export.load logs each failed attempt as well
    try:
        program = torch.export.load(path)
    except Exception as err:
        raise ValueError(f"{path}: torch.export.load failed: {err}") from err
    finally:
        export_log.setLevel(level)
    module: nn.Module = program.module()
    return module


@torch.no_grad()
def _probe(net: nn.Module, path: Path, kind: BackboneKind, example: Tensor) -> int:
    """Run the program on `example` and on a batch one row larger; the output width F."""
    contract = "(B, 3, S, S) RGB in [0, 1]" if kind == "image" else "(B, samples) waveform"
    larger = torch.cat([example, example[:1]])
    outs = []
    for batch in (example, larger):
        try:
            out = net(batch)
        except Exception as err:
            raise ValueError(
                f"{path}: the {kind} backbone fails on a batch of {len(batch)} "
                f"{contract} of shape {tuple(batch.shape)}: {_first_line(err)}; export it "
                "on an input of this shape with a dynamic batch axis "
                "(dynamic_shapes={'x': {0: Dim('batch')}})"
            ) from err
        outs.append(_check_output(out, path, len(batch)))
    small, big = outs
    if not torch.allclose(small, big[: len(small)], atol=_BATCH_ATOL, rtol=_BATCH_RTOL):
        raise ValueError(
            f"{path}: the {kind} backbone gives an item different features in a batch of "
            f"{len(big)} than in a batch of {len(small)} (max difference "
            f"{(small - big[: len(small)]).abs().max():.3g}); export it from "
            "the model in eval mode (BatchNorm running statistics, no dropout)"
        )
    return int(small.shape[1])


def _check_output(out: object, path: Path, batch: int) -> Tensor:
    if not isinstance(out, Tensor):
        raise ValueError(
            f"{path}: the backbone returns {type(out).__name__}, not one tensor; export a "
            "module whose forward returns the features tensor only"
        )
    if out.dim() not in _OUTPUT_RANKS or out.shape[0] != batch or not out.is_floating_point():
        raise ValueError(
            f"{path}: the backbone returns {out.dtype} of shape {tuple(out.shape)} for a batch "
            f"of {batch}; it must be floating point (B, F), (B, F, T) or (B, F, H, W)"
        )
    if not torch.isfinite(out).all():
        raise ValueError(f"{path}: the backbone's output is not finite (NaN or inf) on the probe")
    return pool(out)


def _freeze(net: nn.Module, path: Path, train: tuple[str, ...]) -> None:
    names = [name for name, _ in net.named_parameters()]
    for prefix in train:
        if not any(_under(name, prefix) for name in names):
            tops = list(dict.fromkeys(name.split(".")[0] for name in names))
            raise ValueError(
                f"{path}: train prefix {prefix!r} names no parameter of the backbone; "
                f"its top-level modules are {tops}"
            )
    for name, p in net.named_parameters():
        p.requires_grad_(any(_under(name, prefix) for prefix in train))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
