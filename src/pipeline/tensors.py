"""The data as tensors and what is computed from them outside the fitting loop.

``Tensors`` holds the encoded rows on the training device; ``network_config`` sizes the network
from the fitted preprocessing; ``loss_fn`` is the task's loss per row and ``summed`` its sum,
the same on any thread count; ``forward_all``, ``predict_rows``, ``evaluate_rows`` and
``score`` run a model over rows in fixed blocks and score it; ``blend_linear`` puts a linear
model beside a trained network. ``fit`` (the loop) and the stages use them; ``fit`` re-exports
them under its own name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline import linear, metrics, outputs
from pipeline.features import Encoded, Preprocessor, TargetState
from pipeline.model import (
    EVAL_BATCH,
    FoldedNetwork,
    ModelConfig,
    TabularMLP,
    embedding_dim,
    in_blocks,
)
from pipeline.products import threads_at_most
from pipeline.settings import Settings
from pipeline.split import Split

if TYPE_CHECKING:
    from pipeline.prepare import Prepared


@dataclass
class Tensors:
    """Some rows of the encoded data: the whole tensors, shared by every part, and the rows.

    Parts are index sets into one copy of the data, never copies of their own (at 10M rows a
    copy per part would double the memory): a batch gathers its rows, exactly the rows and the
    order a per-part copy would give, so results are the same.
    """

    numeric: torch.Tensor  # [N, F] float32, every row
    categorical: torch.Tensor  # [N, C] int64, every row
    target: torch.Tensor  # [N], every row
    rows: torch.Tensor  # [n] int64 positions of this part's rows

    @classmethod
    def all(cls, enc: Encoded, device: str) -> Tensors:
        """Every row, on ``device`` (on CPU the numpy arrays are shared, not copied)."""
        if enc.target is None:
            raise ValueError("training tensors need an encoded target")
        return cls(
            torch.from_numpy(enc.numeric).to(device),
            torch.from_numpy(enc.categorical).to(device),
            torch.from_numpy(enc.target).to(device),
            torch.arange(len(enc.target), device=device),
        )

    def select(self, rows: np.ndarray) -> Tensors:
        """The part made of ``rows`` (positions into the whole data), sharing its tensors."""
        index = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
        return Tensors(self.numeric, self.categorical, self.target, index.to(self.rows.device))

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(numeric, categorical, target) of the part's rows at positions ``idx``."""
        at = self.rows[idx]
        return self.numeric[at], self.categorical[at], self.target[at]

    def targets(self) -> torch.Tensor:
        """The part's targets, in its row order."""
        return self.target[self.rows]

    def __len__(self) -> int:
        return int(self.rows.shape[0])


# From this size of numeric array on, training encodes it column-major (``encode_all``).
COLUMN_MAJOR_BYTES = 256 << 20


def encode_all(data: Prepared, pre: Preprocessor, device: str) -> Tensors:
    """Every row encoded as tensors; each column of the frame is dropped once encoded.

    A large numeric array is laid out column by column, so that the frame's memory goes back
    as the array fills (the data is held about once, not twice, at its peak). A batch then
    gathers each row from as many places as there are columns: at 1M x 50 columns, 25 us more
    per batch of 64 rows, about 2% of a step; below ``COLUMN_MAJOR_BYTES`` the array stays
    row-major. The values, and so the weights, are the same either way."""
    from pipeline import features

    rows, columns = len(data.frame), features.Consumed(data.frame)
    data.frame = data.frame.iloc[:0].copy()  # holds no view of the data: it can go
    big = rows * pre.n_numeric_features * 4 >= COLUMN_MAJOR_BYTES
    enc = pre.transform(columns, data.label, with_target=True, rows=rows, by_column=big)
    columns.release()
    return Tensors.all(enc, device)


def network_config(pre: Preprocessor, settings: Settings) -> ModelConfig:
    """The network shape for a fitted preprocessor and the model settings."""
    from pipeline.features.numeric import network_bounds

    cards = tuple(s.cardinality for s in pre.categorical)
    task = pre.target.task
    low, high = network_bounds(pre.numeric)
    indicators: list[float | None] = [None] * (pre.n_numeric_features - len(pre.numeric))
    bounded = any(v is not None for v in low)
    return ModelConfig(
        n_numeric=pre.n_numeric_features,
        cardinalities=cards,
        embedding_dims=tuple(embedding_dim(c, settings.features.max_embedding_dim) for c in cards),
        hidden=tuple(settings.model.hidden),
        dropout=settings.model.dropout,
        n_outputs=len(pre.target.classes) if task == "multiclass" else 1,
        members=settings.model.members,
        input_low=tuple(low + indicators) if bounded else None,
        input_high=tuple(high + indicators) if bounded else None,
    )


def loss_fn(
    task: str, smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Each row's loss for a task ([B]; outputs are [B, n_outputs]): ``.mean()`` is the loss a
    step minimises, ``summed`` the sum that is recorded.

    ``smoothing`` (classification only) moves that share of each target's probability mass
    evenly onto every class: the training loss uses it, early stopping the plain loss.
    """
    if task == "regression":
        return lambda out, y: nn.functional.mse_loss(out.squeeze(1), y, reduction="none")
    if task == "binary":
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(
            out.squeeze(1), y.float() * (1.0 - smoothing) + smoothing / 2, reduction="none"
        )
    return lambda out, y: nn.functional.cross_entropy(
        out, y, label_smoothing=smoothing, reduction="none"
    )


def summed(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` as a float64 scalar tensor, with the same bits on any number of
    threads. torch splits a CPU reduction of more than 32,768 values between its threads and
    adds their partial sums, so its last bits follow the thread count (the gradients do not:
    they are element-wise); numpy's pairwise sum runs in one fixed order. On a GPU torch's own
    sum is used: its order follows the device, not the host's threads, and it needs no sync."""
    if values.device.type != "cpu":
        return values.double().sum()
    return torch.tensor(np.sum(values.detach().numpy(), dtype=np.float64), dtype=torch.float64)


@torch.inference_mode()
def forward_all(
    model: TabularMLP,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Model outputs for every row (or for ``rows``) without autograd, in the fixed blocks of
    ``model.in_blocks``: a row's output does not depend on the rows scored with it."""
    model.eval()
    n = numeric.shape[0] if rows is None else rows.shape[0]
    outs = []
    for i in range(0, n, EVAL_BATCH):  # gather at most EVAL_BATCH rows at a time
        if rows is None:
            x, c = numeric[i : i + EVAL_BATCH], categorical[i : i + EVAL_BATCH]
        else:
            at = rows[i : i + EVAL_BATCH]
            x, c = numeric[at], categorical[at]
        outs.append(in_blocks(lambda xs, cs, _: model(xs, cs), x, c))  # all of a block's rows
    return torch.cat(outs) if outs else torch.zeros((0, model.cfg.n_outputs))


def score(
    pred: np.ndarray, y_encoded: np.ndarray, target: TargetState, threshold: float | None = None
) -> dict[str, Any]:
    """Metrics in target units for predictions against encoded targets (a binary task's
    classes at ``threshold``, else the likelier class)."""
    if target.task == "regression":
        y = target.decode(y_encoded)
        return metrics.regression(y, pred, log_scale=target.transform == "log")
    classes = list(target.classes)
    return metrics.classification(y_encoded.astype(np.int64), pred, classes, threshold)


class Elsewhere(Protocol):
    """Rows held in another process, scored there (`pipeline train --workers`: a large table's
    validation and test rows stay in Ray's object store); their targets are here."""

    def outputs(self, network: FoldedNetwork) -> np.ndarray: ...

    def targets(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...


def predict_rows(model: TabularMLP, part: Tensors | Elsewhere, target: TargetState) -> np.ndarray:
    """``outputs.to_values`` of ``model`` on one part of the data: the outputs `pipeline
    predict` and `pipeline serve` give for those rows (the same folded network, built from a
    CPU copy of the weights, the same fixed blocks), so recorded metrics and curves match the
    served predictions bit for bit. Rows held elsewhere are scored where they are."""
    network = FoldedNetwork(copy.deepcopy(model).cpu().eval())
    if not isinstance(part, Tensors):
        return outputs.to_values(part.outputs(network), target)
    # As `pipeline predict` scores: one torch thread per kernel, spans of blocks side by side
    # in as many threads as training has, so no kernel is cut between threads.
    network.threads = torch.get_num_threads()
    at = part.rows.cpu()
    parts = [torch.zeros((0, model.cfg.n_outputs))]
    with threads_at_most(1):
        for i in range(0, len(at), EVAL_BATCH):  # gather at most EVAL_BATCH rows at a time
            rows = at[i : i + EVAL_BATCH]
            parts.append(network(part.numeric[rows].cpu(), part.categorical[rows].cpu()))
    return outputs.to_values(torch.cat(parts).numpy(), target)


def evaluate_rows(
    model: TabularMLP,
    part: Tensors | Elsewhere,
    target: TargetState,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on one part of the data (``predict_rows`` scored; ``score``)."""
    y = part.targets().cpu().numpy()
    return score(predict_rows(model, part, target), y, target, threshold)


def blends(pre: Preprocessor, rows: int) -> bool:
    """Whether ``blend_linear`` fits a ridge for ``pre`` on ``rows`` rows: regression, and a
    design small enough for ``linear`` (``linear.fits``)."""
    cards = tuple(s.cardinality for s in pre.categorical)
    return pre.target.task == "regression" and linear.fits(rows, pre.n_numeric_features, cards)


def ridge_fitted(settings: Settings, pre: Preprocessor, split: Split) -> bool:
    """Whether `pipeline train` fits a ridge beside the network: asked for
    (``model.linear_blend``), and ``blends`` on the rows it is fitted on (the training rows,
    and the validation rows too after a refit)."""
    rows = len(split.train) + (len(split.val) if settings.train.refit else 0)
    return settings.model.linear_blend and blends(pre, rows)


def ridge_too_large(settings: Settings, pre: Preprocessor, rows: int) -> str | None:
    """What `train` says when the ridge is asked for (``model.linear_blend``) on a regression
    table too large for ``linear`` (``linear.fits``); None otherwise. The build is the network
    alone, which ``"linear": null`` in metrics.json alone said (the README named the limit)."""
    if not settings.model.linear_blend or pre.target.task != "regression":
        return None
    cards = tuple(s.cardinality for s in pre.categorical)
    if linear.fits(rows, pre.n_numeric_features, cards):
        return None
    inputs = pre.n_numeric_features + sum(cards)
    return (
        f"no ridge beside the network: {inputs:,} inputs (numeric columns plus categories) x "
        f"{rows:,} rows is over the ridge's limit ({linear.MAX_INPUTS:,} inputs, "
        f"{linear.MAX_CELLS:,} rows x inputs); the build is the network alone. Set "
        "PIPELINE_MODEL__LINEAR_BLEND=false to say so and silence this"
    )


def blend_linear(
    model: TabularMLP,
    train: Tensors,
    val: Tensors,
    pre: Preprocessor,
    refit: tuple[TabularMLP, Tensors] | None = None,
) -> linear.Blend | None:
    """Fit a ridge regression on ``train`` beside ``model`` and blend it in when the validation
    rows say so (``linear.choose``); with ``refit`` (the network refitted on train and
    validation rows, and those rows), that network gets the same blend, its ridge refitted on
    those rows at the chosen penalty. None for classification, or when the design is too large
    for ``linear`` (the network is kept alone); a blend with weight 1 attaches nothing."""
    cfg = model.cfg
    if not blends(pre, max(len(train), len(refit[1]) if refit is not None else 0)):
        return None
    inverse = unclip_radii(pre)
    cards = cfg.cardinalities
    x, c, y = ridge_arrays(train, inverse)
    vx, vc, vy = ridge_arrays(val, inverse)
    network = forward_all(model, val.numeric, val.categorical, val.rows).cpu().numpy()
    models, loo = linear.path(x, c, y, cards)
    candidates = [m(vx, vc, cards) for m in models]
    blend = linear.choose(network.astype(np.float64), candidates, vy, loo)
    if blend.weight == 1.0:
        return blend
    chosen = models[linear.L2_PATH.index(blend.l2)]
    model.attach_linear(blend.weight, inverse, chosen.numeric, chosen.categorical, chosen.bias)
    if refit is not None and refit[0] is not model:
        rx, rc, ry = ridge_arrays(refit[1], inverse)
        again = linear.fit(rx, rc, ry, cards, blend.l2)
        refit[0].attach_linear(blend.weight, inverse, again.numeric, again.categorical, again.bias)
    return blend


def unclip_radii(pre: Preprocessor) -> np.ndarray:
    """1 / each numeric input's smooth-clipping radius (0: not clipped, as the missing
    indicators): what ``linear.unclip`` takes to give the ridge its inputs straight."""
    radii = [s.smooth_clip for s in pre.numeric]
    radii += [0.0] * (pre.n_numeric_features - len(radii))  # missing indicators: not clipped
    return np.array([1.0 / r if r > 0 else 0.0 for r in radii])


def ridge_arrays(part: Tensors, inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A part's rows as the ridge reads them: numeric inputs unclipped (float64), category
    codes, targets."""
    at = part.rows
    return (
        linear.unclip(part.numeric[at].cpu().numpy(), inverse),
        part.categorical[at].cpu().numpy(),
        part.targets().cpu().numpy(),
    )
