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

`side` adds the side features (`ranking.features`) to any variant: each item field as a
learnable table (a multi-hot mean-pooled) beside the item ID, for the target and the history
alike, and each user field beside the user ID. The cold path has two options: `cold_pool`
gives an item without a trained ID the similarity-weighted mean of the ID embeddings of the
trained items its VQ code names, instead of the zero vector; `id_dropout` sends a share of the
training samples' target items down that same cold path, so the model learns to rank an item
from what a cold item has (its codes, its side features, its pooled neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ranking.codes import ItemCodes
from ranking.data import PAD, Samples
from ranking.features import PAD as FIELD_PAD
from ranking.features import Field, SideFeatures

Variant = Literal["base", "ia", "vq", "rq", "vqrq", "lr", "dcn", "lrcodes"]
VARIANTS: tuple[Variant, ...] = ("base", "ia", "vq", "rq", "vqrq")  # the DIN ranker's
# ranking.references: LR and DCN over IDs + side, and the LR with the codes as more columns
REFERENCES: tuple[Variant, ...] = ("lr", "dcn", "lrcodes")
M = TypeVar("M", bound=nn.Module)


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
    side: bool = False  # side features (ranking.features) beside the IDs
    cold_pool: bool = False  # an untrained item's ID: its VQ neighbours' IDs, by similarity
    pool_temperature: float = 0.05  # softmax temperature over the neighbours' inner products
    id_dropout: float = 0.0  # share of training targets sent down the cold path


class FieldTable(nn.Module):
    """One side field as a learnable table: row r -> the mean embedding of its categories."""

    values: torch.Tensor  # (R [+ 1], M) category ids; the padding id is `vocab`

    def __init__(self, field: Field, dim: int, pad_row: bool) -> None:
        """`pad_row`: append an all-padding row (the item tables' padding item), zero out."""
        super().__init__()
        values = np.where(field.values == FIELD_PAD, field.vocab, field.values)
        if pad_row:
            values = np.vstack([values, np.full((1, values.shape[1]), field.vocab)])
        self.register_buffer("values", torch.from_numpy(values.astype(np.int64)))
        self.table = nn.EmbeddingBag(field.vocab + 1, dim, mode="mean", padding_idx=field.vocab)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(...) rows -> (..., dim)."""
        v = self.values[rows]  # (..., M)
        out: torch.Tensor = self.table(v.reshape(-1, v.shape[-1])).view(*rows.shape, -1)
        return out


def field_tables(fields: tuple[Field, ...], dim: int, pad_row: bool) -> nn.ModuleList:
    return nn.ModuleList(FieldTable(f, dim, pad_row) for f in fields)


def neighbour_pool(
    codes: ItemCodes, k: int, trained: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) item rows and (N, k) float32 weights of each item's cold-path ID: the trained
    items among its first k VQ neighbours, never itself, weighted by softmax(inner product /
    temperature); rows whose weight is 0 point at the padding item N (no trained neighbour:
    the zero vector, as without pooling)."""
    n = len(codes.vq)
    if codes.vq_rows is None:
        raise ValueError("cold_pool needs codes that name their VQ entries' catalog rows")
    rows = codes.vq_rows[codes.vq[:, :k]]  # (N, k)
    sim = codes.vq_similarity()[:, :k].astype(np.float64)
    ok = (rows >= 0) & (rows != np.arange(n)[:, None])
    ok[ok] = trained[rows[ok]]
    logits = np.where(ok, sim / temperature, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    weights = np.where(ok, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-30)
    return np.where(ok, rows, n), weights.astype(np.float32)


class Ranker(nn.Module):
    vq: torch.Tensor  # (N + 1, k) VQ code of every item row; the last row is the padding item
    rq: torch.Tensor  # (N + 1, L) RQ code of every item row
    ia: torch.Tensor  # (N + 1, d) frozen aligned embedding of every item row
    id_row: torch.Tensor  # (N + 1,) item row -> its ID-embedding row; untrained items -> pad
    known: torch.Tensor  # (N + 1,) bool: the item has a trained ID
    pool_rows: torch.Tensor  # (N + 1, k) with cold_pool: the neighbours whose IDs it pools
    pool_weights: torch.Tensor  # (N + 1, k) float32, summing to 1 (or 0: no trained neighbour)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        codes: ItemCodes,
        config: RankConfig,
        trained: np.ndarray | None = None,
        features: SideFeatures | None = None,
    ) -> None:
        """`trained`: (n_items,) bool, the items with training samples; None: all of them.
        `features`: the side features, required with `config.side`."""
        super().__init__()
        self.config = c = config
        v = c.variant
        if v not in VARIANTS:
            raise ValueError(f"variant {v!r} is not the DIN ranker's (one of {VARIANTS})")
        if c.side and features is None:
            raise ValueError(f"variant {v!r} with side=True needs the side features")
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
        self.register_buffer("known", torch.from_numpy(np.append(known, False)))
        self.use_pool = c.cold_pool
        if c.cold_pool:
            rows, weights = neighbour_pool(codes, k, known, c.pool_temperature)
            rows = np.vstack([rows, np.full((1, k), n_items)])
            weights = np.vstack([weights, np.zeros((1, k), dtype=np.float32)])
            self.register_buffer("pool_rows", torch.from_numpy(rows.astype(np.int64)))
            self.register_buffer("pool_weights", torch.from_numpy(weights))

        self.user_emb = nn.Embedding(n_users, c.dim)
        self.item_emb = nn.Embedding(n_items + 1, c.dim, padding_idx=n_items)
        item_width = c.dim
        user_width = c.dim
        self.item_side = nn.ModuleList()
        self.user_side = nn.ModuleList()
        if c.side and features is not None:
            features.check(n_items, n_users)
            self.item_side = field_tables(features.item, c.dim, pad_row=True)
            self.user_side = field_tables(features.user, c.dim, pad_row=False)
            item_width += len(features.item) * c.dim
            user_width += len(features.user) * c.dim
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
        width = user_width + 3 * item_width + (levels * (c.dim + 1) if self.use_cross else 0)
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

    def id_embedding(self, items: torch.Tensor, cold: bool = False) -> torch.Tensor:
        """(...) item rows -> (..., dim) their ID embeddings. An item without a trained ID, or
        any item with `cold` (ID dropout), takes the cold path: its pooled VQ neighbours' IDs
        with `cold_pool`, else the padding row's zeros."""
        if not self.use_pool:
            rows = torch.full_like(items, self.pad) if cold else self.id_row[items]
            out: torch.Tensor = self.item_emb(rows)
            return out
        w = self.pool_weights[items]  # (..., k)
        pooled: torch.Tensor = (w[..., None] * self.item_emb(self.pool_rows[items])).sum(-2)
        if cold:
            return pooled
        return torch.where(self.known[items][..., None], self.item_emb(self.id_row[items]), pooled)

    def user_repr(self, user: torch.Tensor) -> torch.Tensor:
        """(B,) users -> (B, user_width): the user ID and the user side fields."""
        return torch.cat([self.user_emb(user), *(t(user) for t in self.user_side)], dim=-1)

    def item_repr(self, items: torch.Tensor, cold: bool = False) -> torch.Tensor:
        """(...) item rows (pad = n_items) -> (..., item_width) concatenated item features;
        `cold`: as if the item had no trained ID (see `id_embedding`)."""
        parts = [self.id_embedding(items, cold)]
        parts += [table(items) for table in self.item_side]
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
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        history: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """user, item: (B,), history: (B, H) with PAD -> (B,) logits. drop: (B,) bool, targets
        sent down the cold path (ID dropout, in training only)."""
        history = torch.where(history == PAD, self.pad, history)
        valid = history != self.pad  # (B, H)
        target, hist = self.item_reprs(item, history, drop)  # (B, D), (B, H, D)
        logits = self.attention_out(self.attention_hidden(target, hist)).squeeze(-1)
        # DIN weights each history item by its relevance to the target; padded slots get none,
        # and a user without history gets a zero vector rather than NaN from an empty softmax.
        weights = torch.softmax(logits.masked_fill(~valid, -1e9), dim=-1) * valid
        pooled = (weights[..., None] * hist).sum(1)  # (B, D)
        feats = [self.user_repr(user), target, pooled, target * pooled]
        if self.use_cross:
            feats.append(self.cross_features(item, history, valid))
        out: torch.Tensor = self.mlp(torch.cat(feats, dim=-1)).squeeze(-1)
        return out

    def item_reprs(
        self, item: torch.Tensor, history: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """item_repr of the targets (the cold path's where `drop`) and of the history slots.
        When the catalog is smaller than the batch's slots, every item's features are built
        once and gathered (the same values and gradients; the VQ bags alone are K lookups per
        slot otherwise)."""
        if self.pad + 1 < item.numel() + history.numel():
            every = torch.arange(self.pad + 1, device=item.device)
            table = self.item_repr(every)  # (N+1, D)
            target, hist = table[item], table[history]
            if drop is not None and bool(drop.any()):
                target = torch.where(drop[:, None], self.item_repr(every, cold=True)[item], target)
            return target, hist
        target = self.item_repr(item)
        if drop is not None and bool(drop.any()):
            target = torch.where(drop[:, None], self.item_repr(item, cold=True), target)
        return target, self.item_repr(history)

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


def trained_items(train: Samples, n_items: int) -> np.ndarray:
    """(n_items,) bool: the items with a training sample, the only ones with an ID of their own."""
    return np.bincount(train.item, minlength=n_items)[:n_items] > 0


def train_ranker(
    train: Samples,
    n_users: int,
    n_items: int,
    codes: ItemCodes,
    config: RankConfig,
    features: SideFeatures | None = None,
) -> Ranker:
    """Train one variant with BCE for `config.epochs` passes over `train` (shuffled, seeded).
    Items without a training sample keep no ID of their own (see the module's docstring)."""
    torch.manual_seed(config.seed)
    model = Ranker(n_users, n_items, codes, config, trained_items(train, n_items), features)
    return fit(model, train, config)


def fit(model: M, train: Samples, config: RankConfig) -> M:
    """The one training loop of every torch model here (the ranker, the DCN reference): BCE,
    Adam, `config.epochs` seeded shuffles in batches of `config.batch_size`. The model is
    called as model(user, item, history, drop), drop being the ID-dropout draw (or None)."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    user, item, history, label = _tensors(train)
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        for idx in torch.split(torch.randperm(len(label), generator=gen), config.batch_size):
            drop = None
            if config.id_dropout > 0:
                drop = torch.rand(len(idx), generator=gen) < config.id_dropout
            loss = F.binary_cross_entropy_with_logits(
                model(user[idx], item[idx], history[idx], drop), label[idx]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return model


@torch.no_grad()
def predict(model: nn.Module, samples: Samples, batch_size: int = 4096) -> np.ndarray:
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
