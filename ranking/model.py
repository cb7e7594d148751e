"""A compact DIN-style ranking model with the paper's code features, and its training loop.

Every variant shares the same skeleton: user ID, item ID, and the user's last positive items
pooled by target attention, fed to an MLP that predicts the click (BCE). Variants only add item
features; the optimiser, epochs, batch size and seeds are the same for all, so differences in
AUC come from the inputs. An item that training never saw (a cold item) has no learnt ID: like a
production ranker meeting a new ID, it gets the shared all-zero out-of-vocabulary vector, and
only its content features (embedding or codes) tell it apart.

  base   item ID only
  ia     + the aligned embedding, frozen (`+IA Rep`)
  vq     + learnable embeddings of the K VQ codes, mean-pooled (target and history items)
  rq     + one learnable table per RQ level, levels concatenated (target and history items)
  vqrq   vq + rq + cross features: for l = 1..L the history items that share the target's first
         l RQ codes, mean-pooled, and their count
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ranking.codes import ItemCodes
from ranking.data import PAD, Samples

Variant = Literal["base", "ia", "vq", "rq", "vqrq"]
VARIANTS: tuple[Variant, ...] = ("base", "ia", "vq", "rq", "vqrq")


@dataclass(frozen=True)
class RankConfig:
    variant: Variant = "base"
    dim: int = 16  # width of every learnable embedding (IDs and codes alike)
    code_dim: int | None = None  # width of the code embeddings; None = dim (Table 8 ablation)
    k: int | None = None  # VQ codes used per item, nearest first; None = all K (Table 7)
    hidden: tuple[int, ...] = (128, 64)  # prediction MLP
    attention_hidden: int = 32  # DIN attention unit
    epochs: int = 3
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-6
    init_std: float | None = 0.01  # N(0, std) for every embedding table; None: torch's N(0, 1)
    seed: int = 0


class Ranker(nn.Module):
    vq: torch.Tensor  # (N + 1, k) VQ code of every item row; the last row is the padding item
    rq: torch.Tensor  # (N + 1, L) RQ code of every item row
    ia: torch.Tensor  # (N + 1, d) frozen aligned embedding of every item row
    id_row: torch.Tensor  # (N + 1,) item row -> its ID-embedding row; untrained items -> pad

    def __init__(
        self,
        n_users: int,
        n_items: int,
        codes: ItemCodes,
        config: RankConfig,
        trained: np.ndarray | None = None,
    ) -> None:
        """`trained`: (n_items,) bool, the items with training samples; None: all of them."""
        super().__init__()
        self.config = c = config
        v = c.variant
        self.use_ia = v == "ia"
        self.use_vq = v in ("vq", "vqrq")
        self.use_rq = v in ("rq", "vqrq")
        self.use_cross = v == "vqrq"
        cd = c.code_dim or c.dim
        k = c.k or codes.vq.shape[1]
        levels = codes.rq.shape[1]
        self.pad = n_items  # PAD history slots index this all-zero row
        # Code tables as buffers: row n_items is the padding item (codes point to padding rows).
        vq = np.concatenate([codes.vq[:, :k], np.full((1, k), codes.n_vq)]).astype(np.int64)
        rq = np.concatenate([codes.rq, np.full((1, levels), codes.n_rq)]).astype(np.int64)
        emb = np.concatenate([codes.embedding, np.zeros((1, codes.embedding.shape[1]))])
        self.register_buffer("vq", torch.from_numpy(vq))  # (N+1, k)
        self.register_buffer("rq", torch.from_numpy(rq))  # (N+1, L)
        self.register_buffer("ia", torch.from_numpy(emb.astype(np.float32)))  # (N+1, d_ia)
        known = np.ones(n_items, dtype=bool) if trained is None else trained
        id_row = np.where(np.append(known, False), np.arange(n_items + 1), n_items)
        self.register_buffer("id_row", torch.from_numpy(id_row.astype(np.int64)))

        self.user_emb = nn.Embedding(n_users, c.dim)
        self.item_emb = nn.Embedding(n_items + 1, c.dim, padding_idx=n_items)
        item_width = c.dim
        if self.use_ia:
            item_width += emb.shape[1]
        if self.use_vq:
            self.vq_emb = nn.EmbeddingBag(codes.n_vq + 1, cd, mode="mean", padding_idx=codes.n_vq)
            item_width += cd
        if self.use_rq:
            self.rq_emb = nn.ModuleList(
                nn.Embedding(codes.n_rq + 1, cd, padding_idx=codes.n_rq) for _ in range(levels)
            )
            item_width += levels * cd
        # DIN's attention unit: an MLP over [target, item, target - item, target * item]
        self.attention_in = nn.Linear(4 * item_width, c.attention_hidden)
        self.attention_out = nn.Sequential(nn.PReLU(), nn.Linear(c.attention_hidden, 1))
        # MLP input: user, target, attended history, target * history, cross features
        width = c.dim + 3 * item_width + (levels * (c.dim + 1) if self.use_cross else 0)
        layers: list[nn.Module] = []
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.PReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        if c.init_std is not None:
            self._init_embeddings(c.init_std)

    def _init_embeddings(self, std: float) -> None:
        """Small random rows, so a row training never touches (a code no warm item has, which a
        cold item may bring) stays near zero instead of adding N(0, 1) noise at test time."""
        for module in self.modules():
            if isinstance(module, nn.Embedding | nn.EmbeddingBag):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item rows (pad = n_items) -> (..., item_width) concatenated item features."""
        parts = [self.item_emb(self.id_row[items])]
        if self.use_ia:
            parts.append(self.ia[items])
        if self.use_vq:
            vq = self.vq[items]  # (..., k): one bag of codes per item, mean-pooled
            parts.append(self.vq_emb(vq.reshape(-1, vq.shape[-1])).view(*items.shape, -1))
        if self.use_rq:
            rq = self.rq[items]  # (..., L)
            parts += [table(rq[..., level]) for level, table in enumerate(self.rq_emb)]
        return torch.cat(parts, dim=-1)

    def forward(
        self, user: torch.Tensor, item: torch.Tensor, history: torch.Tensor
    ) -> torch.Tensor:
        """user, item: (B,), history: (B, H) with PAD -> (B,) logits."""
        history = torch.where(history == PAD, self.pad, history)
        valid = history != self.pad  # (B, H)
        target, hist = self.item_reprs(item, history)  # (B, D), (B, H, D)
        logits = self.attention_out(self.attention_hidden(target, hist)).squeeze(-1)
        # DIN weights each history item by its relevance to the target; padded slots get none,
        # and a user without history gets a zero vector rather than NaN from an empty softmax.
        weights = torch.softmax(logits.masked_fill(~valid, -1e9), dim=-1) * valid
        pooled = (weights[..., None] * hist).sum(1)  # (B, D)
        feats = [self.user_emb(user), target, pooled, target * pooled]
        if self.use_cross:
            feats.append(self.cross_features(item, history, valid))
        out: torch.Tensor = self.mlp(torch.cat(feats, dim=-1)).squeeze(-1)
        return out

    def item_reprs(
        self, item: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """item_repr of the targets and of the history slots. When the catalog is smaller than
        the batch's slots, every item's features are built once and gathered (the same values
        and gradients; the VQ bags alone are K lookups per slot otherwise)."""
        if self.pad + 1 < item.numel() + history.numel():
            table = self.item_repr(torch.arange(self.pad + 1, device=item.device))  # (N+1, D)
            return table[item], table[history]
        return self.item_repr(item), self.item_repr(history)

    def attention_hidden(self, target: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """attention_in([q, h, q - h, q * h]) for every history item h, without building the
        (B, H, 4D) input: its first and third blocks act on q alone, so they are applied once
        per sample instead of once per history slot (the same function, half the work)."""
        wq, wh, wd, wp = self.attention_in.weight.chunk(4, dim=1)
        per_target = F.linear(target, wq + wd, self.attention_in.bias)  # (B, A)
        per_item = F.linear(hist, wh - wd) + F.linear(target[:, None, :] * hist, wp)  # (B, H, A)
        return per_target[:, None, :] + per_item

    def cross_features(
        self, item: torch.Tensor, history: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """(B, L * (dim + 1)): for l = 1..L, the mean ID embedding of the history items whose
        first l RQ codes equal the target's, and log(1 + how many there are)."""
        t, h = self.rq[item], self.rq[history]  # (B, L), (B, H, L)
        same_prefix = (h == t[:, None, :]).int().cumprod(-1).bool() & valid[..., None]  # (B,H,L)
        ids = self.item_emb(self.id_row[history])  # (B, H, dim)
        m = same_prefix.float()
        count = m.sum(1)  # (B, L)
        pooled = torch.einsum("bhl,bhd->bld", m, ids) / count.clamp(min=1)[..., None]
        out = torch.cat([pooled, torch.log1p(count)[..., None]], dim=-1)  # (B, L, dim + 1)
        return out.flatten(1)


def _tensors(samples: Samples) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(samples.user),
        torch.from_numpy(samples.item),
        torch.from_numpy(samples.history),
        torch.from_numpy(samples.label.astype(np.float32)),
    )


def train_ranker(
    train: Samples, n_users: int, n_items: int, codes: ItemCodes, config: RankConfig
) -> Ranker:
    """Train one variant with BCE for `config.epochs` passes over `train` (shuffled, seeded).
    Items without a training sample keep no ID of their own (see the module's docstring)."""
    torch.manual_seed(config.seed)
    trained = np.bincount(train.item, minlength=n_items)[:n_items] > 0
    model = Ranker(n_users, n_items, codes, config, trained)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    user, item, history, label = _tensors(train)
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        for idx in torch.split(torch.randperm(len(label), generator=gen), config.batch_size):
            loss = F.binary_cross_entropy_with_logits(
                model(user[idx], item[idx], history[idx]), label[idx]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return model


@torch.no_grad()
def predict(model: Ranker, samples: Samples, batch_size: int = 4096) -> np.ndarray:
    """(S,) click probabilities."""
    model.eval()
    user, item, history, _ = _tensors(samples)
    out = [
        torch.sigmoid(
            model(user[i : i + batch_size], item[i : i + batch_size], history[i : i + batch_size])
        )
        for i in range(0, len(user), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
