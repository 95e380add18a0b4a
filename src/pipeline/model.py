"""The network: a plain ``nn.Module`` configured by one frozen dataclass, and its inference form.

Numeric features [B, F] and categorical indices [B, C] go in; each categorical index is embedded,
everything is concatenated and passed through an MLP to one head:
regression -> [B, 1] standardised target; binary -> [B, 1] logit; multiclass -> [B, K] logits.

``load_model`` rebuilds a trained network from its stored files (``model.json`` and the
weights); ``FoldedNetwork`` is the same network for inference, with the embeddings folded into
the first layer.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

# Rows per forward call when scoring many rows without autograd (evaluation, prediction).
EVAL_BATCH = 65536


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored next to its weights)."""

    n_numeric: int
    cardinalities: tuple[int, ...]
    embedding_dims: tuple[int, ...]
    hidden: tuple[int, ...]
    dropout: float
    n_outputs: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (``model.json``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        """The inverse of ``to_json``."""
        return cls(
            n_numeric=data["n_numeric"],
            cardinalities=tuple(data["cardinalities"]),
            embedding_dims=tuple(data["embedding_dims"]),
            hidden=tuple(data["hidden"]),
            dropout=data["dropout"],
            n_outputs=data["n_outputs"],
        )


def embedding_dim(cardinality: int, cap: int) -> int:
    """Width of a categorical embedding: grows sub-linearly with the vocabulary (fast.ai rule)."""
    return max(1, min(cap, round(1.6 * cardinality**0.56)))


class TabularMLP(nn.Module):
    """Embeddings + MLP with one output head."""

    def __init__(self, cfg: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        # Columns whose embeddings have the same width share one table, indexed through
        # per-column offsets: a few lookups per batch instead of one per column.
        self.groups = nn.ModuleList()
        self._columns: list[torch.Tensor] = []
        self._offsets: list[torch.Tensor] = []
        for dim in sorted(set(cfg.embedding_dims)):
            cols = [j for j, d in enumerate(cfg.embedding_dims) if d == dim]
            cards = [cfg.cardinalities[j] for j in cols]
            self.groups.append(nn.Embedding(sum(cards), dim))
            self._columns.append(torch.tensor(cols, dtype=torch.long))
            starts = [0]
            for card in cards[:-1]:
                starts.append(starts[-1] + card)
            self._offsets.append(torch.tensor(starts, dtype=torch.long))
        width = cfg.n_numeric + sum(cfg.embedding_dims)
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, cfg.n_outputs)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """torch's default initialisation, drawn from ``generator`` instead of the global RNG."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 1.0, generator=generator)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, F] float32, categorical [B, C] int64 -> [B, n_outputs]."""
        parts = [numeric]
        for table, cols, offsets in zip(self.groups, self._columns, self._offsets, strict=True):
            # [B, n_cols] indices -> [B, n_cols, dim] -> [B, n_cols * dim]
            idx = categorical[:, cols.to(categorical.device)] + offsets.to(categorical.device)
            parts.append(table(idx).flatten(1))
        return self.head(self.body(torch.cat(parts, dim=1)))


def load_model(config: dict[str, Any], weights: bytes) -> TabularMLP:
    """A trained network from ``model.json``'s content and ``weights.pt``'s bytes, in eval mode.

    The weights load with ``weights_only=True``: tensors only, nothing unpickled.
    """
    model = TabularMLP(ModelConfig.from_json(config))
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


class FoldedNetwork:
    """A trained ``TabularMLP`` for inference, with its embeddings folded into the first layer.

    The first layer sees ``[numeric, E_1[c_1], ..., E_C[c_C]]``; its weight splits into
    ``W_num`` and one slice ``W_j`` per categorical column, so its pre-activation is
    ``W_num x + b + sum_j (E_j W_j^T)[c_j]``. ``E_j W_j^T`` [card_j, H] is computed once here
    (in float64, rounded once), and a batch costs one narrow matmul plus one ``embedding_bag``
    sum instead of C lookups, a concatenation and a matmul over every embedding width: about
    half the arithmetic of the house-prices network. Outputs match ``model(...)`` to float32
    rounding (the sums are ordered differently), and every row's result is independent of the
    batch it is in, so chunked and single runs stay byte-identical.
    """

    def __init__(self, model: TabularMLP) -> None:
        cfg = model.cfg
        layers = [*model.body, model.head]
        first = cast(nn.Linear, layers[0])
        weight = first.weight.detach().to(torch.float64)  # [H, n_numeric + sum(dims)]
        cards = list(cfg.cardinalities)
        starts = np.cumsum([0, *cards])[:-1].astype(np.int64)  # each column's first row
        folded = torch.zeros((sum(cards), weight.shape[0]), dtype=torch.float64)
        at = cfg.n_numeric  # the concatenation's order: numeric, then each group's columns
        for group, cols, offsets in zip(model.groups, model._columns, model._offsets, strict=True):
            table = cast(nn.Embedding, group)
            width = table.embedding_dim
            for col, offset in zip(cols.tolist(), offsets.tolist(), strict=True):
                rows = table.weight.detach()[offset : offset + cards[col]].to(torch.float64)
                start = int(starts[col])
                folded[start : start + cards[col]] = rows @ weight[:, at : at + width].T
                at += width
        self.numeric_weight = first.weight.detach()[:, : cfg.n_numeric].contiguous()
        self.bias = first.bias.detach()
        self.folded = folded.to(torch.float32)
        self.offsets = torch.from_numpy(starts)
        self.rest = nn.Sequential(*layers[1:]).eval()
        self.n_outputs = cfg.n_outputs

    @torch.inference_mode()
    def __call__(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, F] float32, categorical [B, C] int64 -> [B, n_outputs], in batches."""
        outs = []
        for i in range(0, numeric.shape[0], EVAL_BATCH):
            h = nn.functional.linear(numeric[i : i + EVAL_BATCH], self.numeric_weight, self.bias)
            if len(self.offsets):
                # 2-D input: each row is one bag of C indices, summed.
                idx = categorical[i : i + EVAL_BATCH] + self.offsets
                h += nn.functional.embedding_bag(idx, self.folded, mode="sum")
            outs.append(self.rest(h))
        if not outs:
            return torch.zeros((0, self.n_outputs))
        return torch.cat(outs)
