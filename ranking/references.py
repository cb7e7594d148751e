"""The models a practitioner tries first, on the ranker's own samples: the bar qarm must clear.

- `lr`: logistic regression (scikit-learn) over one-hot user and item IDs and the side fields
  (multi-hot). An item without a training sample has no ID column, like the ranker's
  out-of-vocabulary item: only its side features score it.
- `lrcodes`: the same LR with the item's codes as more columns: its VQ code as a multi-hot over
  the VQ codebook (1/K each), and each RQ prefix (the first l codes, l = 1..L) one-hot. It asks
  whether the codes carry anything a linear model on the side features lacks.
- `dcn`: a DCN-v2-style feature-crossing network (Wang et al., 2021): one embedding per field
  (user ID, item ID, each side field), stacked cross layers x_{l+1} = x0 * (W_l x_l + b_l) + x_l
  beside an MLP on x0, then a logistic output. It trains with the ranker's loop and budget
  (`ranking.model.fit`: epochs, batch, Adam, seeds, embedding width and init).

None sees the history feature; `lr` and `dcn` see no codes: they are what the side features
alone buy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from ranking.codes import ItemCodes
from ranking.data import Samples
from ranking.features import PAD, Field, SideFeatures
from ranking.model import RankConfig, field_tables, fit, predict, trained_items

Predict = Callable[[Samples], np.ndarray]  # samples -> (S,) click probabilities
LR_C = 1.0  # scikit-learn's default inverse regularisation, untuned
CROSS_LAYERS = 2


def one_hot(rows: np.ndarray, n: int) -> sp.csr_matrix:
    """(S,) rows in [0, n) or -1 -> (S, n) sparse one-hot; -1 is an all-zero row."""
    keep = rows >= 0
    data = np.ones(int(keep.sum()))
    return sp.csr_matrix((data, (np.flatnonzero(keep), rows[keep])), shape=(len(rows), n))


def multi_hot(field: Field, rows: np.ndarray) -> sp.csr_matrix:
    """(S,) rows of `field` -> (S, vocab) sparse multi-hot of their categories."""
    values = field.values[rows]  # (S, M)
    sample, slot = np.nonzero(values != PAD)
    data = np.ones(len(sample))
    return sp.csr_matrix(
        (data, (sample, values[sample, slot])), shape=(len(rows), field.vocab)
    ).tocsr()


def code_columns(codes: ItemCodes) -> sp.csr_matrix:
    """(N, n_vq + L prefixes) per catalog row: its VQ code as a multi-hot over the VQ codebook,
    weighted 1/K, then one-hots of its RQ prefixes (c1), (c1, c2), ..., (c1..cL), each prefix
    a category of its level."""
    n, k = codes.vq.shape
    rows = np.repeat(np.arange(n), k)
    blocks = [
        sp.csr_matrix(
            (np.full(n * k, 1.0 / k), (rows, codes.vq.reshape(-1))), shape=(n, codes.n_vq)
        )
    ]
    for level in range(1, codes.rq.shape[1] + 1):
        _, prefix = np.unique(codes.rq[:, :level], axis=0, return_inverse=True)
        blocks.append(one_hot(prefix.reshape(-1).astype(np.int64), int(prefix.max()) + 1))
    return sp.hstack(blocks, format="csr")


def design_matrix(
    samples: Samples,
    n_users: int,
    known: np.ndarray,
    features: SideFeatures,
    codes: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """(S, columns) the LR's inputs: user one-hot, item one-hot (trained items only: `known`),
    then every user and item side field's multi-hot, then the item's `code_columns` if given."""
    item_rows = np.where(known[samples.item], samples.item, -1)
    blocks = [one_hot(samples.user, n_users), one_hot(item_rows, len(known))]
    blocks += [multi_hot(f, samples.user) for f in features.user]
    blocks += [multi_hot(f, samples.item) for f in features.item]
    if codes is not None:
        blocks.append(codes[samples.item])
    return sp.hstack(blocks, format="csr")


def train_lr(
    train: Samples,
    n_users: int,
    n_items: int,
    features: SideFeatures,
    seed: int,
    codes: ItemCodes | None = None,
) -> Predict:
    """Fit the LR reference on `train` (with `codes`: `lrcodes`); the returned function scores
    any samples."""
    known = trained_items(train, n_items)
    columns = code_columns(codes) if codes is not None else None
    x = design_matrix(train, n_users, known, features, columns)
    model = LogisticRegression(C=LR_C, max_iter=2000, random_state=seed)
    model.fit(x, train.label)

    def score(samples: Samples) -> np.ndarray:
        x = design_matrix(samples, n_users, known, features, columns)
        probs: np.ndarray = model.predict_proba(x)
        return probs[:, 1]

    return score


class CrossNetwork(nn.Module):
    """DCN-v2 over user ID, item ID and the side fields; called as the ranker is (history and
    drop are accepted and ignored, so `ranking.model.fit` and `predict` drive it)."""

    id_row: torch.Tensor  # (N,) item row -> its ID row; untrained items -> the padding row N

    def __init__(
        self,
        n_users: int,
        known: np.ndarray,
        features: SideFeatures,
        config: RankConfig,
    ) -> None:
        super().__init__()
        n_items, dim = len(known), config.dim
        id_row = np.where(known, np.arange(n_items), n_items)
        self.register_buffer("id_row", torch.from_numpy(id_row.astype(np.int64)))
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.user_side = field_tables(features.user, dim, pad_row=False)
        self.item_side = field_tables(features.item, dim, pad_row=False)
        width = dim * (2 + len(features.user) + len(features.item))
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(CROSS_LAYERS))
        layers: list[nn.Module] = []
        deep = width
        for h in config.hidden:
            layers += [nn.Linear(deep, h), nn.PReLU()]
            deep = h
        self.deep = nn.Sequential(*layers)
        self.out = nn.Linear(width + deep, 1)
        if config.init_std is not None:
            for module in self.modules():
                if isinstance(module, nn.Embedding | nn.EmbeddingBag):
                    nn.init.normal_(module.weight, std=config.init_std)
                    if module.padding_idx is not None:
                        with torch.no_grad():
                            module.weight[module.padding_idx].zero_()

    def forward(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        history: torch.Tensor | None = None,  # noqa: ARG002 (the ranker's signature)
        drop: torch.Tensor | None = None,  # noqa: ARG002
    ) -> torch.Tensor:
        """user, item: (B,) -> (B,) logits."""
        fields = [self.user_emb(user), self.item_emb(self.id_row[item])]
        fields += [t(user) for t in self.user_side] + [t(item) for t in self.item_side]
        x0 = torch.cat(fields, dim=-1)  # (B, F * dim)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        out: torch.Tensor = self.out(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)
        return out


def train_dcn(
    train: Samples, n_users: int, n_items: int, features: SideFeatures, config: RankConfig
) -> Predict:
    """Train the DCN reference with the ranker's loop and budget; returns its scorer."""
    torch.manual_seed(config.seed)
    model = CrossNetwork(n_users, trained_items(train, n_items), features, config)
    fit(model, train, config)
    return lambda samples: predict(model, samples)
