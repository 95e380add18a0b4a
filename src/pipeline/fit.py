"""The fitting loop: a network trained on rows in memory, callable on its own in any process.

Data stays in memory as tensors; an epoch is a permutation of row indices sliced into batches
(no per-row ``Dataset.__getitem__``). ``fit`` takes the network's config, the rows, the target
(the task and how it is encoded), the training settings and the seeds: nothing else, so a Ray
worker can call it as the ``train`` stage does. Its whole state between two batches is a
``FitState``; a SIGTERM/SIGINT stops the loop at a batch boundary with that state, and ``fit``
given it back continues exactly where it stopped. Given a ``Parallel``, the same loop runs as one
of N data-parallel workers (``distributed_fit``): each holds its own rows, and every step's
gradients are averaged over the rows of all workers, and the stop comes from the driver
through ``Parallel.stop_signal`` (every worker stops after the same step).
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import torch

from pipeline import outputs
from pipeline.adamw import FusedAdamW
from pipeline.errors import ConfigError
from pipeline.features import TargetState
from pipeline.model import (
    ModelConfig,
    TabularMLP,
)
from pipeline.settings import TrainSettings
from pipeline.split import Seeds
from pipeline.tensors import (
    Tensors,
    blend_linear,
    blends,
    evaluate_rows,
    forward_all,
    loss_fn,
    network_config,
    predict_rows,
    ridge_fitted,
    ridge_too_large,
    score,
    summed,
)

__all__ = [
    "FitState",
    "Fitted",
    "Parallel",
    "StopFlag",
    "Stopped",
    "Tensors",
    "blend_linear",
    "blends",
    "evaluate_rows",
    "fit",
    "forward_all",
    "loss_fn",
    "network_config",
    "predict_rows",
    "ridge_fitted",
    "ridge_too_large",
    "score",
]


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


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag | None = None) -> Iterator[StopFlag]:
    """A ``StopFlag`` (``stop``, or a new one) that SIGTERM/SIGINT set while the block runs,
    instead of their usual handlers (restored after). Only the main thread may install
    handlers: elsewhere (a Ray trial may run in another thread) the flag stays unset and the
    caller's arrangements apply."""
    stop = stop if stop is not None else StopFlag()
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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

    def selection(self) -> dict[str, Any]:
        """The selection phase's result as plain data (CPU weights): what the refit phase's
        checkpoint carries, and a Ray worker hands back."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "history": self.history,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }


class Parallel(Protocol):
    """The loop as one of ``world`` data-parallel workers (``distributed_fit`` implements it).

    Each worker trains on its own rows; a step takes ``ceil(batch_size / world)`` rows from
    every worker, and each worker's loss is weighted so that the averaged gradient is the mean
    over all the step's rows (a worker whose rows ran out takes part with none). Early stopping
    uses rank 0's validation loss (over every worker's validation rows) on every worker, so all
    take the same decisions.
    """

    rank: int
    world: int

    def wrap(self, model: TabularMLP) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``model.members_forward``, or a DDP module whose backward averages the gradients."""
        ...

    def average_gradients(self, model: TabularMLP) -> None:
        """After each backward: every worker's gradients replaced by their mean over the
        workers (nothing to do where ``wrap``'s module already averaged them)."""
        ...

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the workers: the same result on every worker."""
        ...

    def from_first(self, value: float) -> float:
        """Rank 0's ``value``, on every worker."""
        ...

    def gather_dealt(self, value: torch.Tensor) -> torch.Tensor | None:
        """On rank 0, the rows of every worker's ``value`` put back in the order they were
        dealt in (worker k held rows ``k::world``); None on the other workers."""
        ...

    def stop_signal(self) -> int | None:
        """Called after every step on every worker: the signal that asks the run to stop, or
        None; every worker gets the same answer at the same step, so all stop alike."""
        ...


class _Loop:
    """The network, its optimiser and generators, and where the loop is (``FitState`` fields)."""

    def __init__(
        self,
        cfg: ModelConfig,
        target: TargetState,
        t: TrainSettings,
        seeds: Seeds,
        device: str,
        parallel: Parallel | None = None,
    ) -> None:
        self.t, self.target, self.device = t, target, device
        self.model = TabularMLP(cfg, torch.Generator().manual_seed(seeds.init)).to(device)
        self.parallel = parallel
        self.forward = self.model.members_forward if parallel is None else parallel.wrap(self.model)
        self.sizes: list[int] = []  # with ``parallel``: every worker's row count, by rank
        # fused: one kernel for all parameters, about 2x faster per step on CPU than the default.
        self.optimiser = FusedAdamW(self.model.parameters(), t.learning_rate, t.weight_decay)
        self.loss_of = loss_fn(target.task)
        self.train_loss_of = loss_fn(target.task, t.label_smoothing)
        self.shuffle_gen = torch.Generator().manual_seed(seeds.shuffle)
        self.history: list[dict[str, Any]] = []
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch, self.position = 1, 0
        self.order: torch.Tensor | None = None
        self.total = torch.zeros((), dtype=torch.float64, device=device)

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
            self.total = torch.zeros((), dtype=torch.float64, device=self.device)
            self.position = 0
        for start, end, weight in self._steps(len(rows)):
            numeric, categorical, target = rows.batch(self.order[start:end])
            # Every member's loss on the same batch: their mean is the sum each member minimises.
            out = self.forward(numeric, categorical)
            k = out.shape[0]
            self.optimiser.zero_grad(set_to_none=True)
            if len(target):
                each = self.train_loss_of(out.reshape(k * len(target), -1), target.repeat(k))
                loss = each.mean()
                (loss if weight is None else loss * weight).backward()  # type: ignore[no-untyped-call]
                self.total += summed(each.detach()) / k  # the members' mean loss x the rows
            else:  # this worker's rows ran out: zero gradients, but it joins the all-reduce
                (out.sum() * 0.0).backward()  # type: ignore[no-untyped-call]
            if self.parallel is not None:
                self.parallel.average_gradients(self.model)
            self.optimiser.step()
            signum = stop.signal if self.parallel is None else self.parallel.stop_signal()
            if signum is not None:
                self.position = end
                raise Stopped(signum, self.state())
        self.order = None

    def _steps(self, n: int) -> Iterator[tuple[int, int, float | None]]:
        """(start, end, loss weight) of each step's slice of the epoch's order, from ``position``.

        In one process: slices of ``batch_size`` rows, unweighted. As a worker: every worker
        takes the same number of steps, ``ceil(batch_size / world)`` of its rows each; its mean
        loss is weighted by its share of the step's rows times ``world`` (DDP divides the summed
        gradients by ``world``), so the gradient is the mean over all the step's rows.
        """
        if self.parallel is None:
            size = self.t.batch_size
            for start in range(self.position, n, size):
                yield start, start + size, None
            return
        world = self.parallel.world
        size = -(-self.t.batch_size // world)
        for start in range(self.position, max(self.sizes), size):
            step_rows = sum(min(size, max(0, m - start)) for m in self.sizes)
            mine = min(size, max(0, n - start))
            yield start, start + size, mine * world / step_rows

    def epoch_loss(self, n: int) -> float:
        """The epoch's mean training loss over every worker's rows (``n``: this worker's)."""
        if self.parallel is None:
            return float(self.total) / n
        return float(self.parallel.all_sum(self.total.double())) / sum(self.sizes)

    def validate(self, val: Tensors) -> tuple[float, dict[str, Any]]:
        """Validation loss and the float metrics (``val_`` prefixed) of the current weights.

        As a worker, ``val`` is its share of the validation rows: each scores its own, and rank
        0 gathers the outputs back in order and computes the loss and metrics (inf and none on
        the others). A row's output does not depend on the rows scored with it
        (``forward_all``), so these are the bits of one process scoring every row.
        """
        out = forward_all(self.model, val.numeric, val.categorical, val.rows)
        val_target = val.targets()
        if self.parallel is not None:
            outs = self.parallel.gather_dealt(out)
            targets = self.parallel.gather_dealt(val_target)
            if outs is None or targets is None:  # not rank 0
                return math.inf, {}
            out, val_target = outs, targets
        loss = float(summed(self.loss_of(out, val_target))) / len(val_target)
        scores = score(
            outputs.to_values(out.cpu().numpy(), self.target), val_target.cpu().numpy(), self.target
        )
        row = {"val_loss": loss} | {
            f"val_{k}": v for k, v in scores.items() if isinstance(v, float)
        }
        return loss, row

    def run_epoch(
        self, train: Tensors, val: Tensors | None, stop: StopFlag, fixed_epochs: bool
    ) -> tuple[dict[str, Any], float]:
        """Train one epoch and record it in ``history``: its row (losses and validation
        metrics) and the validation loss that early stopping compares (every worker's alike)."""
        self.train_epoch(train, stop)
        row: dict[str, Any] = {"epoch": self.epoch, "train_loss": self.epoch_loss(len(train))}
        if not math.isfinite(row["train_loss"]):
            raise _diverged(self.epoch, row["train_loss"], self.t)
        val_loss = math.inf
        if val is not None:
            val_loss, val_row = self.validate(val)
            row.update(val_row)
        if self.parallel is not None and not fixed_epochs:
            val_loss = self.parallel.from_first(val_loss)  # every worker stops alike
        self.history.append(row)
        return row, val_loss

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
    parallel: Parallel | None = None,
) -> Fitted:
    """AdamW on shuffled index batches; early stopping on validation loss, best weights kept.

    With ``epochs`` set, train exactly that many epochs and keep the last weights (the refit on
    train+validation rows, where there is no held-out part left to stop on).

    A SIGTERM/SIGINT stops the loop after the current batch and raises ``Stopped`` with the
    loop's state; ``resume`` takes such a state and continues exactly where it stopped, so an
    interrupted and resumed run produces the same weights as an uninterrupted one.
    ``on_checkpoint`` receives the state at the end of every ``checkpoint_every``-th epoch.

    With ``parallel``, this process is one worker of several (see ``Parallel``): ``train`` holds
    its rows only, ``val`` its share of the validation rows (``k::world``, as ``validate``
    says), and every worker ends with the same weights.
    """
    loop = _Loop(cfg, target, settings, seeds, device, parallel)
    if parallel is not None:
        counts = torch.zeros(parallel.world, dtype=torch.int64)
        counts[parallel.rank] = len(train)
        loop.sizes = [int(m) for m in parallel.all_sum(counts)]
    last_epoch = epochs or settings.max_epochs
    # Dropout draws from torch's global RNG (it takes no generator): seed it, and restore the
    # caller's RNG state afterwards so nothing else is affected.
    with stop_on_signals() as stop, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.dropout)
        if resume is not None:
            loop.restore(resume)
        while loop.epoch <= last_epoch:
            started = time.perf_counter()
            row, val_loss = loop.run_epoch(train, val, stop, fixed_epochs=epochs is not None)
            closed = False
            if on_epoch is not None:
                try:
                    on_epoch({**row, "seconds": round(time.perf_counter() - started, 4)})
                except BrokenPipeError:  # stdout's reader went away (`| head`): stop, as SIGPIPE
                    closed = True
            if loop.end_epoch(val_loss, fixed_epochs=epochs is not None):
                break
            every = settings.checkpoint_every
            loop.epoch, loop.position = loop.epoch + 1, 0
            if closed:  # at the next epoch's start: a resumed run goes on with the same weights
                raise Stopped(signal.SIGPIPE, loop.state())
            due = every and (loop.epoch - 1) % every == 0 and loop.epoch <= last_epoch
            if on_checkpoint is not None and due:
                on_checkpoint(loop.state())
    if loop.best_state is not None:
        loop.model.load_state_dict(loop.best_state)
    stopped_early = len(loop.history) < settings.max_epochs
    return Fitted(loop.model, loop.history, loop.best_epoch, stopped_early)
