"""The network: a plain ``nn.Module`` configured by one frozen dataclass, and its inference form.

Numeric features [B, F] and categorical indices [B, C] go in; each categorical index is embedded,
everything is concatenated and passed through an MLP to one head:
regression -> [B, 1] standardised target; binary -> [B, 1] logit; multiclass -> [B, K] logits.

The network is an ensemble of ``members`` independent MLPs (each with its own embeddings and
layers, drawn from the one init generator) computed side by side as batched matrix products
(TabM's "packed" ensemble: k members cost one set of kernel launches, not k). Training gives
each member its own loss on the same batches; the prediction is the members' mean output.

``load_model`` rebuilds a trained network from its stored files (``model.json`` and the
weights); ``FoldedNetwork`` is the same network for inference, with the embeddings folded into
the first layer.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from pipeline.linear import FLOOR
from pipeline.products import member_product, threads_at_most

# Rows gathered at a time when scoring many rows without autograd (evaluation, prediction).
EVAL_BATCH = 65536
# Rows per forward call without autograd, always exactly this many (the last block is padded
# with zeros): matrix kernels pick their code path by row count, so a row's output would
# otherwise depend on how many rows share its call. Training's scoring (``tensors.forward_all``)
# uses BLOCK_ROWS; the folded network of predict and serve FOLDED_BLOCK_ROWS. On 2 cores, one
# thread, house prices' 4 members, folded: 64-row blocks score about 80k rows/s and a one-row
# request in 0.55 ms, 128-row blocks 105k rows/s and 0.78 ms, 256-row blocks 125k rows/s and
# 1.35 ms (2026-12-07): 128 buys a third more rows/s for a quarter of a millisecond.
BLOCK_ROWS = 64
FOLDED_BLOCK_ROWS = 128
# Rows of one task when ``FoldedNetwork`` scores in several threads: 8 blocks (a few ms).
SPAN_ROWS = 8 * FOLDED_BLOCK_ROWS


def in_blocks(
    forward: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    block: int = BLOCK_ROWS,
) -> torch.Tensor:
    """``forward(x, c, rows)`` over exactly ``block`` rows at a time, of which the first
    ``rows`` are real, padded rows dropped: every row's output bytes are the same whatever
    batch, chunk or position it arrives in."""
    n = numeric.shape[0]
    outs = []
    for i in range(0, n, block):
        x, c = numeric[i : i + block], categorical[i : i + block]
        rows = x.shape[0]
        if rows < block:  # zeros are a valid input: numbers at the centre, code 0 unknown
            x = torch.cat([x, x.new_zeros((block - rows, x.shape[1]))])
            c = torch.cat([c, c.new_zeros((block - rows, c.shape[1]))])
        outs.append(forward(x, c, rows)[:rows])
    return torch.cat(outs) if outs else numeric.new_zeros((0, 0))


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored next to its weights)."""

    n_numeric: int
    cardinalities: tuple[int, ...]
    embedding_dims: tuple[int, ...]
    hidden: tuple[int, ...]
    dropout: float
    n_outputs: int
    members: int = 1
    # The network's share of the output; below 1 the rest is a linear model's (``linear``).
    blend: float = 1.0
    # Each numeric input's range for the network (``numeric.network_bounds``; None: no bound
    # on that side of that input). The linear model sees the inputs unclipped. None: no bounds
    # (models whose preprocessing clipped every input to the network's range).
    input_low: tuple[float | None, ...] | None = None
    input_high: tuple[float | None, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (``model.json``); a model without input bounds is written as before."""
        data = asdict(self)
        if self.input_low is None:
            del data["input_low"], data["input_high"]
        return data

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
            members=data.get("members", 1),
            blend=data.get("blend", 1.0),
            input_low=_bounds(data.get("input_low")),
            input_high=_bounds(data.get("input_high")),
        )


def _bounds(values: list[float | None] | None) -> tuple[float | None, ...] | None:
    return None if values is None else tuple(values)


def input_range(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The network's input bounds as float32 [F] tensors (infinite where there is none)."""
    if cfg.input_low is None or cfg.input_high is None:
        return None
    inf = float("inf")
    low = [-inf if v is None else v for v in cfg.input_low]
    high = [inf if v is None else v for v in cfg.input_high]
    return (torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32))


def clipped(x: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """``x`` [..., F] clipped to ``bounds`` (``input_range``), as the network sees it."""
    if bounds is None:
        return x
    return torch.clamp(x, bounds[0].to(x.device), bounds[1].to(x.device))


def embedding_dim(cardinality: int, cap: int) -> int:
    """Width of a categorical embedding: grows sub-linearly with the vocabulary (fast.ai rule)."""
    return max(1, min(cap, round(1.6 * cardinality**0.56)))


class MemberLinear(nn.Module):
    """``members`` independent linear layers applied side by side: [k, B, in] -> [k, B, out]."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """torch's ``nn.Linear`` initialisation for each member in turn, from ``generator``."""
        bound = 1 / math.sqrt(self.in_features)
        for w, b in zip(self.weight, self.bias, strict=True):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
            nn.init.uniform_(b, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return member_product(x, self.weight, self.bias)


class TabularMLP(nn.Module):
    """Embeddings + MLP with one output head, ``cfg.members`` times side by side."""

    def __init__(self, cfg: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        k = cfg.members
        # Columns whose embeddings have the same width share one table, indexed through
        # per-column offsets: a few lookups per batch instead of one per column. Each member
        # has its own rows of the table, ``member * rows_per_member`` further on.
        self.groups = nn.ModuleList()
        self._columns: list[torch.Tensor] = []
        self._offsets: list[torch.Tensor] = []
        for dim in sorted(set(cfg.embedding_dims)):
            cols = [j for j, d in enumerate(cfg.embedding_dims) if d == dim]
            cards = [cfg.cardinalities[j] for j in cols]
            self.groups.append(nn.Embedding(k * sum(cards), dim))
            self._columns.append(torch.tensor(cols, dtype=torch.long))
            starts = [0]
            for card in cards[:-1]:
                starts.append(starts[-1] + card)
            per_member = torch.arange(k, dtype=torch.long) * sum(cards)
            self._offsets.append(per_member[:, None, None] + torch.tensor(starts)[None, None, :])
        width = cfg.n_numeric + sum(cfg.embedding_dims)
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers += [MemberLinear(k, width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = MemberLinear(k, width, cfg.n_outputs)
        self.reset_parameters(generator)
        # Each categorical column's first row in the linear model's table (not a buffer: data
        # parallel training would broadcast it every step).
        firsts = np.cumsum([0, *cfg.cardinalities])[:-1].astype(np.int64)
        self.linear_offsets = torch.from_numpy(firsts)[None, :]
        self.input_range = input_range(cfg)  # fixed by the config (not a buffer either)
        if cfg.blend < 1:
            self._linear_buffers()

    def _linear_buffers(self) -> None:
        """The linear model's weights (``linear``): numeric [F, K], one row per category, bias."""
        cfg = self.cfg
        for name, shape in (
            ("linear_unclip", (cfg.n_numeric,)),
            ("linear_numeric", (cfg.n_numeric, cfg.n_outputs)),
            ("linear_categorical", (sum(cfg.cardinalities), cfg.n_outputs)),
            ("linear_bias", (cfg.n_outputs,)),
        ):
            self.register_buffer(name, torch.zeros(shape, device=self.head.weight.device))

    @torch.no_grad()
    def attach_linear(
        self,
        weight: float,
        unclip: np.ndarray,
        numeric: np.ndarray,
        categorical: np.ndarray,
        bias: np.ndarray,
    ) -> None:
        """Blend a fitted linear model in: the output becomes ``weight * network + (1 -
        weight) * linear``. ``unclip`` is 1 / each numeric input's smooth-clipping radius (0:
        none; see ``linear_output``). The float64 weights are rounded to float32 here, once."""
        self.cfg = replace(self.cfg, blend=weight)
        self._linear_buffers()
        for name, value in (
            ("linear_unclip", unclip),
            ("linear_numeric", numeric),
            ("linear_categorical", categorical),
            ("linear_bias", bias),
        ):
            getattr(self, name).copy_(torch.from_numpy(value.astype(np.float32)))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """torch's default initialisation, drawn from ``generator`` instead of the global RNG."""
        for module in self.modules():
            if isinstance(module, MemberLinear):
                module.reset_parameters(generator)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 1.0, generator=generator)

    def members_forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, F] float32, categorical [B, C] int64 -> every member's [k, B, n_outputs]."""
        k = self.cfg.members
        numeric = clipped(numeric, self.input_range)
        parts = [numeric.expand(k, *numeric.shape)]
        for table, cols, offsets in zip(self.groups, self._columns, self._offsets, strict=True):
            # [B, n_cols] indices -> [k, B, n_cols] -> [k, B, n_cols, dim] -> [k, B, n_cols * dim]
            idx = categorical[:, cols.to(categorical.device)] + offsets.to(categorical.device)
            parts.append(table(idx).flatten(2))
        return self.head(self.body(torch.cat(parts, dim=2)))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, F] float32, categorical [B, C] int64 -> the members' mean [B, n_outputs]
        (blended with the linear model's output when there is one)."""
        out = self.members_forward(numeric, categorical).mean(dim=0)
        if self.cfg.blend < 1:
            linear = linear_output(
                numeric, categorical, self.linear_offsets, *self.linear_weights(), len(numeric)
            )
            out = blended(out, linear, self.cfg.blend)
        return out

    def linear_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The linear model's inverse clipping radii, numeric weights, category table, bias."""
        unclip, numeric, table, bias = (
            cast(torch.Tensor, getattr(self, name))
            for name in ("linear_unclip", "linear_numeric", "linear_categorical", "linear_bias")
        )
        return unclip, numeric, table, bias


def linear_output(
    x: torch.Tensor,
    categorical: torch.Tensor,
    offsets: torch.Tensor,
    unclip: torch.Tensor,
    numeric: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor,
    rows: int,
) -> torch.Tensor:
    """The linear model on a block: one matmul over all its rows (the kernel's path depends on
    the row count) and, for the first ``rows``, each row's categories summed in index order.

    The network's numeric inputs are smoothly clipped (``s = x / sqrt(1 + (x / r)^2)``): a
    linear model wants them straight, so it sees ``x = s / sqrt(1 - (s / r)^2)`` again
    (``unclip`` is 1 / r, 0 where there is no clipping; ``linear.unclip`` in float64)."""
    x = x / torch.sqrt(torch.clamp(1.0 - (x * unclip) ** 2, min=FLOOR))
    # One matrix, on one thread: MKL may cut it between threads, or not, call by call (a
    # 2-thread build once scored its test rows in other last bits than a 1-thread one).
    with threads_at_most(1):
        out = torch.addmm(bias, x, numeric)
    if offsets.shape[1]:
        idx = categorical[:rows] + offsets.to(categorical.device)
        out[:rows] += nn.functional.embedding_bag(idx, table, mode="sum")
    return out


def blended(network: torch.Tensor, linear: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * network + (1 - weight) * linear``, in float32, the same way everywhere."""
    return network * weight + linear * (1.0 - weight)


def load_model(config: dict[str, Any], weights: bytes) -> TabularMLP:
    """A trained network from ``model.json``'s content and ``weights.pt``'s bytes, in eval mode.

    The weights load with ``weights_only=True``: tensors only, nothing unpickled. Builds made
    before ensembles (no ``members`` in ``model.json``) stored each layer as a plain
    ``nn.Linear``: their weights gain the member axis.
    """
    cfg = ModelConfig.from_json(config)
    model = TabularMLP(cfg)
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    if "members" not in config:
        state = {
            k: v.unsqueeze(0) if k.startswith(("body.", "head.")) else v for k, v in state.items()
        }
    model.load_state_dict(state)
    return model.eval()


class FoldedNetwork:
    """A trained ``TabularMLP`` for inference, with its embeddings folded into the first layer.

    The first layer sees ``[numeric, E_1[c_1], ..., E_C[c_C]]``; its weight splits into
    ``W_num`` and one slice ``W_j`` per categorical column, so its pre-activation is
    ``W_num x + b + sum_j (E_j W_j^T)[c_j]``. ``E_j W_j^T`` [card_j, H] is computed once here
    for each member (in float64, rounded once), and a batch costs one narrow matmul plus one
    ``embedding_bag`` sum instead of C lookups, a concatenation and a matmul over every
    embedding width. Outputs match ``model(...)`` to float32 rounding (the sums are ordered
    differently), and every row's result is independent of the batch it is in, so chunked and
    single runs stay byte-identical.
    """

    def __init__(self, model: TabularMLP) -> None:
        cfg = model.cfg
        k = cfg.members
        layers = [*model.body, model.head]
        first = cast(MemberLinear, layers[0])
        weight = first.weight.detach().to(torch.float64)  # [k, H, n_numeric + sum(dims)]
        cards = list(cfg.cardinalities)
        total = sum(cards)
        starts = np.cumsum([0, *cards])[:-1].astype(np.int64)  # each column's first row
        folded = torch.zeros((k, total, weight.shape[1]), dtype=torch.float64)
        at = cfg.n_numeric  # the concatenation's order: numeric, then each group's columns
        for group, cols in zip(model.groups, model._columns, strict=True):
            table = cast(nn.Embedding, group)
            width = table.embedding_dim
            group_rows = table.weight.shape[0] // k
            for col, offset in zip(cols.tolist(), _starts(cards, cols.tolist()), strict=True):
                start = int(starts[col])
                for m in range(k):
                    first_row = m * group_rows + offset
                    rows = table.weight.detach()[first_row : first_row + cards[col]]
                    folded[m, start : start + cards[col]] = (
                        rows.to(torch.float64) @ weight[m, :, at : at + width].T
                    )
                at += width
        self.members = k
        self.numeric_weight = first.weight.detach()[:, :, : cfg.n_numeric].transpose(1, 2)
        self.numeric_weight = self.numeric_weight.contiguous()  # [k, F, H]
        self.bias = first.bias.detach().unsqueeze(1)  # [k, 1, H]
        self.folded = folded.reshape(k * total, weight.shape[1]).to(torch.float32)
        # [k, 1, C]: column offsets within a member, plus the member's block
        self.offsets = (
            torch.from_numpy(starts)[None, None, :]
            + (torch.arange(k, dtype=torch.long) * total)[:, None, None]
        )
        self.rest = nn.Sequential(*layers[1:]).eval()
        self.n_outputs = cfg.n_outputs
        self.input_range = model.input_range
        self.blend = cfg.blend
        self.linear = model.linear_weights() if cfg.blend < 1 else None
        self.linear_offsets = model.linear_offsets
        # Threads scoring spans of blocks at once (torch's kernels let go of the GIL): `pipeline
        # predict` sets one per core; a served request and a Ray actor use their one thread.
        self.threads = 1

    @torch.inference_mode()
    def __call__(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, F] float32, categorical [B, C] int64 -> [B, n_outputs], in fixed blocks."""
        if numeric.shape[0] == 0:
            return torch.zeros((0, self.n_outputs))
        # The padding rows' categorical codes are never read (``_block`` sums the real rows'
        # embeddings only): empty bags would do as well as zeros, which in_blocks adds.
        n = numeric.shape[0]
        if self.threads <= 1 or n <= SPAN_ROWS:
            return in_blocks(self._block, numeric, categorical, FOLDED_BLOCK_ROWS)
        # Spans of whole blocks, one per task: every block holds the rows it would hold in one
        # pass, so the bytes are the same whatever the thread count.
        from concurrent.futures import ThreadPoolExecutor

        def span(start: int) -> torch.Tensor:
            with torch.inference_mode():  # per thread
                rows = slice(start, start + SPAN_ROWS)
                return in_blocks(self._block, numeric[rows], categorical[rows], FOLDED_BLOCK_ROWS)

        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="forward")
        try:
            return torch.cat(list(pool.map(span, range(0, n, SPAN_ROWS))))
        finally:  # a signal's exception does not wait for the spans not yet started
            pool.shutdown(wait=True, cancel_futures=True)

    def _block(
        self, x: torch.Tensor, categorical: torch.Tensor, rows: int = FOLDED_BLOCK_ROWS
    ) -> torch.Tensor:
        """One block of ``FOLDED_BLOCK_ROWS`` rows, of which the first ``rows`` are real.

        The matrix products run on the whole block (their code path depends on the row count);
        the embedding sums run on the real rows only: each bag is summed on its own, in index
        order, so its bytes do not depend on how many bags there are, and a one-row request
        does not sum 127 padding rows' embeddings.
        """
        k = self.members
        seen = clipped(x, self.input_range)  # the network's inputs; the linear model's are x
        with threads_at_most(k):  # serve may run several threads: one member must not split
            h = torch.baddbmm(self.bias, seen.expand(k, *x.shape), self.numeric_weight)
        if self.offsets.shape[2]:
            # 2-D input: each row of each member is one bag of C indices, summed.
            idx = (categorical[:rows] + self.offsets).reshape(-1, self.offsets.shape[2])
            sums = nn.functional.embedding_bag(idx, self.folded, mode="sum")
            h[:, :rows] += sums.view(k, rows, h.shape[2])
        out: torch.Tensor = self.rest(h).mean(dim=0)
        if self.linear is not None:
            linear = linear_output(x, categorical, self.linear_offsets, *self.linear, rows)
            out = blended(out, linear, self.blend)
        return out


def _starts(cards: list[int], cols: list[int]) -> list[int]:
    """Offsets of ``cols`` within their group's table (each column after the previous ones)."""
    out, at = [], 0
    for col in cols:
        out.append(at)
        at += cards[col]
    return out
