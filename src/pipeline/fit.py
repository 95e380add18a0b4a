"""The fitting loop: a network trained on rows in memory, callable on its own in any process.

Data stays in memory as tensors; an epoch is a permutation of row indices sliced into batches
(no per-row ``Dataset.__getitem__``). ``fit`` takes the network's config, the rows, the target
(the task and how it is encoded), the training settings and the seeds: nothing else, so a Ray
worker can call it as the ``train`` stage does. Its whole state between two batches is a
``FitState``; a SIGTERM/SIGINT stops the loop at a batch boundary with that state, and ``fit``
given it back continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import metrics, outputs
from pipeline.errors import ConfigError
from pipeline.features import Encoded, Preprocessor, TargetState
from pipeline.model import (
    EVAL_BATCH,
    FoldedNetwork,
    ModelConfig,
    TabularMLP,
    embedding_dim,
    in_blocks,
)
from pipeline.settings import Settings, TrainSettings
from pipeline.split import Seeds


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


def network_config(pre: Preprocessor, settings: Settings) -> ModelConfig:
    """The network shape for a fitted preprocessor and the model settings."""
    cards = tuple(s.cardinality for s in pre.categorical)
    task = pre.target.task
    return ModelConfig(
        n_numeric=pre.n_numeric_features,
        cardinalities=cards,
        embedding_dims=tuple(embedding_dim(c, settings.features.max_embedding_dim) for c in cards),
        hidden=tuple(settings.model.hidden),
        dropout=settings.model.dropout,
        n_outputs=len(pre.target.classes) if task == "multiclass" else 1,
        members=settings.model.members,
    )


def loss_fn(
    task: str, smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss for a task; outputs are [B, n_outputs].

    ``smoothing`` (classification only) moves that share of each target's probability mass
    evenly onto every class: the training loss uses it, early stopping the plain loss.
    """
    if task == "regression":
        return lambda out, y: nn.functional.mse_loss(out.squeeze(1), y)
    if task == "binary":
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(
            out.squeeze(1), y.float() * (1.0 - smoothing) + smoothing / 2
        )
    return lambda out, y: nn.functional.cross_entropy(out, y, label_smoothing=smoothing)


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
        outs.append(in_blocks(model, x, c))
    return torch.cat(outs) if outs else torch.zeros((0, model.cfg.n_outputs))


def score(pred: np.ndarray, y_encoded: np.ndarray, target: TargetState) -> dict[str, Any]:
    """Metrics in target units for predictions against encoded targets."""
    if target.task == "regression":
        y = target.decode(y_encoded)
        return metrics.regression(y, pred, log_scale=target.transform == "log")
    return metrics.classification(y_encoded.astype(np.int64), pred, list(target.classes))


def predict_rows(model: TabularMLP, part: Tensors, target: TargetState) -> np.ndarray:
    """``outputs.to_values`` of ``model`` on one part of the data: the outputs `pipeline
    predict` and `pipeline serve` give for those rows (the same folded network, built from a
    CPU copy of the weights, the same fixed blocks), so recorded metrics and curves match the
    served predictions bit for bit."""
    network = FoldedNetwork(copy.deepcopy(model).cpu().eval())
    at = part.rows.cpu()
    parts = [torch.zeros((0, model.cfg.n_outputs))]
    for i in range(0, len(at), EVAL_BATCH):  # gather at most EVAL_BATCH rows at a time
        rows = at[i : i + EVAL_BATCH]
        parts.append(network(part.numeric[rows].cpu(), part.categorical[rows].cpu()))
    return outputs.to_values(torch.cat(parts).numpy(), target)


def evaluate_rows(model: TabularMLP, part: Tensors, target: TargetState) -> dict[str, Any]:
    """Metrics of ``model`` on one part of the data (``predict_rows`` scored)."""
    return score(predict_rows(model, part, target), part.targets().cpu().numpy(), target)


@dataclass
class FitState:
    """Everything the loop needs to continue from a batch boundary (what a checkpoint holds).

    ``epoch`` and ``position`` say where the next batch starts in ``order`` (the epoch's row
    permutation; None at an epoch boundary); ``total`` is the epoch's running loss sum.
    """

    epoch: int
    position: int
    order: torch.Tensor | None
    total: torch.Tensor
    model: dict[str, torch.Tensor]
    optimiser: dict[str, Any]
    shuffle_rng: torch.Tensor
    dropout_rng: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and data, for ``torch.save`` (loaded back with ``weights_only``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitState:
        """The inverse of ``to_dict``."""
        return cls(**data)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between batches and stops cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.signal = signum


class Stopped(Exception):
    """Raised by ``fit`` when a signal stopped it; carries the loop's full state."""

    def __init__(self, signum: int, state: FitState) -> None:
        super().__init__(signum)
        self.signum = signum
        self.state = state


@dataclass
class Fitted:
    """A trained network with its learning curve."""

    model: TabularMLP
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool


class _Loop:
    """The network, its optimiser and generators, and where the loop is (``FitState`` fields)."""

    def __init__(
        self, cfg: ModelConfig, target: TargetState, t: TrainSettings, seeds: Seeds, device: str
    ) -> None:
        self.t, self.target, self.device = t, target, device
        self.model = TabularMLP(cfg, torch.Generator().manual_seed(seeds.init)).to(device)
        # fused: one kernel for all parameters, about 2x faster per step on CPU than the default.
        self.optimiser = torch.optim.AdamW(
            self.model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay, fused=True
        )
        self.loss_of = loss_fn(target.task)
        self.train_loss_of = loss_fn(target.task, t.label_smoothing)
        self.shuffle_gen = torch.Generator().manual_seed(seeds.shuffle)
        self.history: list[dict[str, Any]] = []
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch, self.position = 1, 0
        self.order: torch.Tensor | None = None
        self.total = torch.zeros((), device=device)

    def state(self) -> FitState:
        """A snapshot of the loop, on the CPU, unaffected by the training that follows."""
        return FitState(
            epoch=self.epoch,
            position=self.position,
            order=None if self.order is None else self.order.cpu(),
            total=self.total.detach().cpu(),
            model={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            # state_dict() hands out the live moment tensors: copy them, or the snapshot would
            # keep changing as training goes on.
            optimiser=copy.deepcopy(self.optimiser.state_dict()),
            shuffle_rng=self.shuffle_gen.get_state(),
            dropout_rng=torch.get_rng_state(),
            history=list(self.history),
            best_loss=self.best_loss,
            best_epoch=self.best_epoch,
            best_state=self.best_state,
        )

    def restore(self, s: FitState) -> None:
        """Continue from a snapshot (the dropout generator is torch's global one)."""
        self.model.load_state_dict(s.model)
        self.optimiser.load_state_dict(s.optimiser)
        self.shuffle_gen.set_state(s.shuffle_rng)
        torch.set_rng_state(s.dropout_rng)
        self.history = list(s.history)
        self.best_loss, self.best_epoch = float(s.best_loss), int(s.best_epoch)
        self.best_state = s.best_state
        self.epoch, self.position = int(s.epoch), int(s.position)
        self.order = None if s.order is None else s.order.to(self.device)
        self.total = s.total.to(self.device)

    def train_epoch(self, rows: Tensors, stop: StopFlag) -> None:
        """One pass over ``rows`` in shuffled batches, from ``position`` on; a signal stops it."""
        self.model.train()
        if self.order is None:
            self.order = torch.randperm(len(rows), generator=self.shuffle_gen).to(self.device)
            self.total, self.position = torch.zeros((), device=self.device), 0
        size = self.t.batch_size
        for i in range(self.position, len(rows), size):
            numeric, categorical, target = rows.batch(self.order[i : i + size])
            # Every member's loss on the same batch: their mean is the sum each member minimises.
            out = self.model.members_forward(numeric, categorical)
            k = out.shape[0]
            loss = self.train_loss_of(out.reshape(k * len(target), -1), target.repeat(k))
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimiser.step()
            self.total += loss.detach() * len(target)
            if stop.signal is not None:
                self.position = i + size
                raise Stopped(stop.signal, self.state())
        self.order = None

    def validate(self, val: Tensors) -> tuple[float, dict[str, Any]]:
        """Validation loss and the float metrics (``val_`` prefixed) of the current weights."""
        out = forward_all(self.model, val.numeric, val.categorical, val.rows)
        val_target = val.targets()
        loss = float(self.loss_of(out, val_target))
        scores = score(
            outputs.to_values(out.cpu().numpy(), self.target), val_target.cpu().numpy(), self.target
        )
        row = {"val_loss": loss} | {
            f"val_{k}": v for k, v in scores.items() if isinstance(v, float)
        }
        return loss, row

    def end_epoch(self, val_loss: float, fixed_epochs: bool) -> bool:
        """Record the best weights; True when early stopping ends the loop."""
        if fixed_epochs:
            self.best_epoch, self.best_state = self.epoch, None
        elif val_loss < self.best_loss:
            self.best_loss, self.best_epoch = val_loss, self.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif self.epoch - self.best_epoch >= self.t.patience:
            return True
        return False


def _diverged(epoch: int, loss: float, settings: TrainSettings) -> ConfigError:
    """The loss left the finite numbers: the step size is too large for this data."""
    return ConfigError(
        f"training diverged at epoch {epoch} (the training loss is {loss}): learning rate "
        f"{settings.learning_rate:g} is too high for this data; lower "
        "PIPELINE_TRAIN__LEARNING_RATE (the default is 0.001)"
    )


def fit(
    cfg: ModelConfig,
    train: Tensors,
    val: Tensors | None,
    target: TargetState,
    settings: TrainSettings,
    seeds: Seeds,
    device: str,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    epochs: int | None = None,
    resume: FitState | None = None,
    on_checkpoint: Callable[[FitState], None] | None = None,
) -> Fitted:
    """AdamW on shuffled index batches; early stopping on validation loss, best weights kept.

    With ``epochs`` set, train exactly that many epochs and keep the last weights (the refit on
    train+validation rows, where there is no held-out part left to stop on).

    A SIGTERM/SIGINT stops the loop after the current batch and raises ``Stopped`` with the
    loop's state; ``resume`` takes such a state and continues exactly where it stopped, so an
    interrupted and resumed run produces the same weights as an uninterrupted one.
    ``on_checkpoint`` receives the state at the end of every ``checkpoint_every``-th epoch.
    """
    loop = _Loop(cfg, target, settings, seeds, device)
    last_epoch = epochs or settings.max_epochs
    stop = StopFlag()
    # Only the main thread may install handlers (a Ray trial may run in another thread; there
    # the worker's own shutdown applies).
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        # Dropout draws from torch's global RNG (it takes no generator): seed it, and restore the
        # caller's RNG state afterwards so nothing else is affected.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.dropout)
            if resume is not None:
                loop.restore(resume)
            while loop.epoch <= last_epoch:
                started = time.perf_counter()
                loop.train_epoch(train, stop)
                row: dict[str, Any] = {
                    "epoch": loop.epoch,
                    "train_loss": float(loop.total) / len(train),
                }
                if not math.isfinite(row["train_loss"]):
                    raise _diverged(loop.epoch, row["train_loss"], settings)
                val_loss = math.inf
                if val is not None:
                    val_loss, val_row = loop.validate(val)
                    row.update(val_row)
                loop.history.append(row)
                if on_epoch is not None:
                    on_epoch({**row, "seconds": round(time.perf_counter() - started, 4)})
                if loop.end_epoch(val_loss, fixed_epochs=epochs is not None):
                    break
                every = settings.checkpoint_every
                loop.epoch, loop.position = loop.epoch + 1, 0
                if (
                    on_checkpoint is not None
                    and every
                    and (loop.epoch - 1) % every == 0
                    and loop.epoch <= last_epoch
                ):
                    on_checkpoint(loop.state())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if loop.best_state is not None:
        loop.model.load_state_dict(loop.best_state)
    stopped_early = len(loop.history) < settings.max_epochs
    return Fitted(loop.model, loop.history, loop.best_epoch, stopped_early)
