"""The network: a plain ``nn.Module`` configured by one frozen dataclass.

Numeric features [B, F] and categorical indices [B, C] go in; each categorical index is embedded,
everything is concatenated and passed through an MLP to one head:
regression -> [B, 1] standardised target; binary -> [B, 1] logit; multiclass -> [B, K] logits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


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
