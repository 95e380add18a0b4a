"""The training stage: split, fit preprocessing on training rows, fit the network, test it.

Data stays in memory as tensors; an epoch is a permutation of row indices sliced into batches
(no per-row ``Dataset.__getitem__``). One seed is split into independent streams for the split,
the initialisation, the shuffling and dropout, so each is reproducible on its own.
"""

from __future__ import annotations

import hashlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import __version__, features, metrics
from pipeline.data.schema import Schema
from pipeline.errors import DataError, IntegrityError, Interrupted, NotFoundError
from pipeline.model import ModelConfig, TabularMLP, embedding_dim
from pipeline.settings import Settings

EVAL_BATCH = 65536


@dataclass(frozen=True)
class Seeds:
    """Independent integer seeds derived from the one user seed."""

    split: int
    init: int
    shuffle: int
    dropout: int

    @classmethod
    def from_seed(cls, seed: int) -> Seeds:
        children = np.random.SeedSequence(seed).spawn(4)
        return cls(*(int(c.generate_state(1, dtype=np.uint64)[0] >> 1) for c in children))


@dataclass(frozen=True)
class Split:
    """Row positions of each part, sorted."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def digest(self) -> str:
        """sha256 of the three index arrays: a rerun must produce exactly these rows."""
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(np.int64(len(part)).tobytes())
            h.update(part.astype("<i8").tobytes())
        return h.hexdigest()


def split_rows(n: int, labels: np.ndarray | None, val: float, test: float, seed: int) -> Split:
    """Shuffle rows and cut train/val/test; stratified by class when ``labels`` is given."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    parts: list[list[np.ndarray]] = [[], [], []]
    for group in groups:
        shuffled = rng.permutation(group)
        n_test = round(len(group) * test)
        n_val = round(len(group) * val)
        parts[2].append(shuffled[:n_test])
        parts[1].append(shuffled[n_test : n_test + n_val])
        parts[0].append(shuffled[n_test + n_val :])
    train_i, val_i, test_i = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return Split(train_i, val_i, test_i)


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
    def all(cls, enc: features.Encoded, device: str) -> Tensors:
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


def model_config(pre: features.Preprocessor, settings: Settings) -> ModelConfig:
    """The network shape for a fitted preprocessor."""
    cards = tuple(s.cardinality for s in pre.categorical)
    task = pre.target.task
    return ModelConfig(
        n_numeric=pre.n_numeric_features,
        cardinalities=cards,
        embedding_dims=tuple(embedding_dim(c, settings.features.max_embedding_dim) for c in cards),
        hidden=tuple(settings.model.hidden),
        dropout=settings.model.dropout,
        n_outputs=len(pre.target.classes) if task == "multiclass" else 1,
    )


def loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss for a task; outputs are [B, n_outputs]."""
    if task == "regression":
        return lambda out, y: nn.functional.mse_loss(out.squeeze(1), y)
    if task == "binary":
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(
            out.squeeze(1), y.float()
        )
    return lambda out, y: nn.functional.cross_entropy(out, y)


@torch.inference_mode()
def forward_all(
    model: TabularMLP,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Model outputs for every row (or for ``rows``), in large batches, without autograd."""
    model.eval()
    n = numeric.shape[0] if rows is None else rows.shape[0]
    outs = []
    for i in range(0, n, EVAL_BATCH):
        if rows is None:
            outs.append(model(numeric[i : i + EVAL_BATCH], categorical[i : i + EVAL_BATCH]))
        else:
            at = rows[i : i + EVAL_BATCH]
            outs.append(model(numeric[at], categorical[at]))
    return torch.cat(outs) if outs else torch.zeros((0, model.cfg.n_outputs))


def outputs_to_predictions(out: np.ndarray, pre: features.Preprocessor) -> np.ndarray:
    """Raw outputs to target units (regression) or class probabilities [N, K]."""
    task = pre.target.task
    if task == "regression":
        return pre.decode_regression(out[:, 0])
    if task == "binary":
        p1 = 1.0 / (1.0 + np.exp(-out[:, 0].astype(np.float64)))
        return np.stack([1.0 - p1, p1], axis=1)
    z = out.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def score(pred: np.ndarray, y_encoded: np.ndarray, pre: features.Preprocessor) -> dict[str, Any]:
    """Metrics in target units for predictions against encoded targets."""
    t = pre.target
    if t.task == "regression":
        y = pre.decode_regression(y_encoded)
        return metrics.regression(y, pred, log_scale=t.transform == "log")
    return metrics.classification(y_encoded.astype(np.int64), pred, list(t.classes))


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between batches and stops cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.signal = signum


class Stopped(Exception):
    """Raised by ``fit_network`` when a signal stopped it; carries the loop's full state."""

    def __init__(self, signum: int, state: dict[str, Any]) -> None:
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


def fit_network(
    cfg: ModelConfig,
    train: Tensors,
    val: Tensors | None,
    pre: features.Preprocessor,
    settings: Settings,
    seeds: Seeds,
    device: str,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    epochs: int | None = None,
    *,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> Fitted:
    """AdamW on shuffled index batches; early stopping on validation loss, best weights kept.

    With ``epochs`` set, train exactly that many epochs and keep the last weights (the refit on
    train+validation rows, where there is no held-out part left to stop on).

    A SIGTERM/SIGINT stops the loop after the current batch and raises ``Stopped`` with the
    loop's state: weights, optimiser moments, both generators, the epoch's row order and where
    in it the loop was. ``resume`` takes such a state and continues exactly where it stopped, so
    an interrupted and resumed run produces the same weights as an uninterrupted one.
    ``on_checkpoint`` receives the state at the end of every ``train.checkpoint_every``-th epoch.
    """
    t = settings.train
    init_gen = torch.Generator().manual_seed(seeds.init)
    model = TabularMLP(cfg, init_gen).to(device)
    # fused: one kernel for all parameters, about 2x faster per step on CPU than the default.
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay, fused=True
    )
    loss_of = loss_fn(pre.target.task)
    shuffle_gen = torch.Generator().manual_seed(seeds.shuffle)
    history: list[dict[str, Any]] = []
    best_loss, best_epoch = math.inf, 0
    best_state: dict[str, torch.Tensor] | None = None
    first_epoch, position = 1, 0
    order: torch.Tensor | None = None
    total = torch.zeros((), device=device)
    last_epoch = epochs or t.max_epochs

    def state(
        epoch: int, at: int, order_: torch.Tensor | None, total_: torch.Tensor
    ) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "position": at,
            "order": None if order_ is None else order_.cpu(),
            "total": total_.detach().cpu(),
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimiser": optimiser.state_dict(),
            "shuffle_rng": shuffle_gen.get_state(),
            "dropout_rng": torch.get_rng_state(),
            "history": list(history),
            "best_loss": best_loss,
            "best_epoch": best_epoch,
            "best_state": best_state,
        }

    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Dropout draws from torch's global RNG (it takes no generator): seed it, and restore the
        # caller's RNG state afterwards so nothing else is affected.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.dropout)
            if resume is not None:
                model.load_state_dict(resume["model"])
                optimiser.load_state_dict(resume["optimiser"])
                shuffle_gen.set_state(resume["shuffle_rng"])
                torch.set_rng_state(resume["dropout_rng"])
                history = list(resume["history"])
                best_loss, best_epoch = float(resume["best_loss"]), int(resume["best_epoch"])
                best_state = resume["best_state"]
                first_epoch, position = int(resume["epoch"]), int(resume["position"])
                order = None if resume["order"] is None else resume["order"].to(device)
                total = resume["total"].to(device)
            for epoch in range(first_epoch, last_epoch + 1):
                started = time.perf_counter()
                model.train()
                if order is None:
                    order = torch.randperm(len(train), generator=shuffle_gen).to(device)
                    total, position = torch.zeros((), device=device), 0
                for i in range(position, len(train), t.batch_size):
                    numeric, categorical, target = train.batch(order[i : i + t.batch_size])
                    out = model(numeric, categorical)
                    loss = loss_of(out, target)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimiser.step()
                    total += loss.detach() * len(target)
                    if stop.signal is not None:
                        raise Stopped(stop.signal, state(epoch, i + t.batch_size, order, total))
                order = None
                row: dict[str, Any] = {"epoch": epoch, "train_loss": float(total) / len(train)}
                val_loss = math.inf
                if val is not None:
                    out_val = forward_all(model, val.numeric, val.categorical, val.rows)
                    val_target = val.targets()
                    val_loss = float(loss_of(out_val, val_target))
                    pred = outputs_to_predictions(out_val.cpu().numpy(), pre)
                    val_metrics = score(pred, val_target.cpu().numpy(), pre)
                    row["val_loss"] = val_loss
                    row.update(
                        {f"val_{k}": v for k, v in val_metrics.items() if isinstance(v, float)}
                    )
                history.append(row)
                if on_epoch is not None:
                    on_epoch({**row, "seconds": round(time.perf_counter() - started, 4)})
                if epochs is not None:
                    best_epoch = epoch
                    best_state = None
                elif val_loss < best_loss:
                    best_loss, best_epoch = val_loss, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                elif epoch - best_epoch >= t.patience:
                    break
                if (
                    on_checkpoint is not None
                    and t.checkpoint_every
                    and epoch % t.checkpoint_every == 0
                    and epoch < last_epoch
                ):
                    on_checkpoint(state(epoch + 1, 0, None, total))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if best_state is not None:
        model.load_state_dict(best_state)
    return Fitted(model, history, best_epoch, stopped_early=len(history) < t.max_epochs)


def evaluate_rows(model: TabularMLP, part: Tensors, pre: features.Preprocessor) -> dict[str, Any]:
    """Metrics of ``model`` on one part of the data."""
    out = forward_all(model, part.numeric, part.categorical, part.rows).cpu().numpy()
    return score(outputs_to_predictions(out, pre), part.targets().cpu().numpy(), pre)


def class_labels(frame: pd.DataFrame, schema: Schema) -> np.ndarray | None:
    """Labels to stratify the split by (classification), else None."""
    if schema.task == "regression":
        return None
    return np.asarray(features.as_categories(frame[schema.target]), dtype=object).astype(str)


class Checkpoints:
    """Where an interrupted run of these exact inputs keeps its state in the store.

    The key is a digest of everything the build id depends on except the weights (data, split,
    seed, code, build config), so a checkpoint can only resume the run it came from. Files are
    loaded with ``weights_only=True``: tensors and plain data, nothing unpickled.
    """

    FORMAT = 1

    def __init__(self, store: Any, inputs: dict[str, Any], config: dict[str, Any]) -> None:
        from pipeline.store import canonical_json

        self.store = store
        self.fingerprint = hashlib.sha256(
            canonical_json({"inputs": inputs, "config": config})
        ).hexdigest()
        self.key = f"checkpoints/{self.fingerprint[:32]}.pt"

    def save(
        self,
        log: Any,
        phase: str,
        loop: dict[str, Any],
        selection: dict[str, Any] | None,
    ) -> None:
        """Write the state atomically (a crash leaves the previous checkpoint or this one)."""
        import io

        buf = io.BytesIO()
        torch.save(
            {
                "format": self.FORMAT,
                "fingerprint": self.fingerprint,
                "phase": phase,
                "loop": loop,
                "selection": selection,
            },
            buf,
        )
        self.store.write(self.key, buf.getvalue())
        log.info(
            "train.checkpoint",
            key=self.key,
            phase=phase,
            epoch=loop["epoch"],
            position=loop["position"],
            bytes=buf.tell(),
        )

    def load(self, log: Any) -> dict[str, Any]:
        """The checkpoint of these inputs; NotFoundError when there is none."""
        import io

        try:
            blob = self.store.read_bytes(self.key)
        except KeyError:
            raise NotFoundError(
                f"no checkpoint {self.key} in store {self.store.uri} for this data, settings and "
                "seed: run `pipeline train` without --resume (a checkpoint exists only after a "
                "run was stopped, and it matches only the same inputs)"
            ) from None
        try:
            ck: dict[str, Any] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            valid = ck["format"] == self.FORMAT and ck["fingerprint"] == self.fingerprint
        except Exception as exc:  # a damaged file: any unpickling or shape error
            raise IntegrityError(
                f"checkpoint {self.key} in store {self.store.uri} is unreadable ({exc}); delete "
                "it and run `pipeline train` without --resume"
            ) from None
        if not valid:
            raise IntegrityError(
                f"checkpoint {self.key} in store {self.store.uri} belongs to other inputs; delete "
                "it and run `pipeline train` without --resume"
            )
        log.info(
            "train.resume",
            key=self.key,
            phase=ck["phase"],
            epoch=ck["loop"]["epoch"],
            position=ck["loop"]["position"],
        )
        return ck

    def discard(self) -> None:
        """Remove the checkpoint once the build it was for exists."""
        self.store.delete(self.key)


@dataclass(frozen=True)
class TrainResult:
    """What `pipeline train` produced."""

    build_id: str
    metrics: dict[str, Any]
    best_epoch: int
    epochs: int


def run(settings: Settings, store: Any, log: Any, *, resume: bool = False) -> TrainResult:
    """The whole build stage: fetch, read, infer, split, fit, test, write the build.

    With ``resume``, continue from the checkpoint an interrupted run with the same inputs left.
    """
    import sys
    from datetime import UTC, datetime

    from tqdm import tqdm

    from pipeline import artifacts, runtime
    from pipeline.data import read, sources
    from pipeline.data import schema as schema_mod
    from pipeline.store import canonical_json

    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    rt = runtime.configure(settings.train.threads, settings.train.device, settings.train.batch_size)
    fetched = sources.fetch(settings, store)
    log.info(
        "data.fetched",
        uri=fetched.uri,
        sha256=fetched.sha256,
        bytes=fetched.size,
        cached=fetched.cached,
    )
    frame = read.read_table(fetched.path, settings.data, label=fetched.uri)
    frame = schema_mod.prepare_target(frame, settings.data.target, settings.data.task, fetched.uri)
    schema, warnings = schema_mod.infer(
        frame,
        settings.data,
        settings.train.target_transform,
        fetched.uri,
        max_cardinality=settings.features.max_categorical_cardinality,
    )
    for message in warnings:
        log.warning("data.warning", message=message)
    log.info(
        "data.schema",
        rows=len(frame),
        task=schema.task,
        target=schema.target,
        target_transform=schema.target_transform,
        numeric=len(schema.names("numeric")),
        categorical=len(schema.columns) - len(schema.names("numeric")),
        dropped=list(schema.dropped),
    )
    seeds = Seeds.from_seed(settings.seed)
    split = split_rows(
        len(frame),
        class_labels(frame, schema),
        settings.train.val_fraction,
        settings.train.test_fraction,
        seeds.split,
    )
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        raise DataError(
            f"dataset {fetched.uri} has {len(frame)} rows, too few to split into train/validation/"
            "test with PIPELINE_TRAIN__VAL_FRACTION and PIPELINE_TRAIN__TEST_FRACTION"
        )
    log.info(
        "data.split",
        train=len(split.train),
        val=len(split.val),
        test=len(split.test),
        digest=split.digest(),
    )

    pre = features.fit(frame.iloc[split.train], schema, settings.features, fetched.uri)
    enc = pre.transform(frame, fetched.uri, with_target=True)
    device = rt["device"]
    n_rows = len(frame)
    del frame  # from here on the encoded copy is the data: keep one, not two
    data = Tensors.all(enc, device)
    parts = {
        name: data.select(rows)
        for name, rows in (("train", split.train), ("val", split.val), ("test", split.test))
    }
    cfg = model_config(pre, settings)
    inputs = {
        "dataset": {"uri": fetched.uri, "sha256": fetched.sha256, "rows": n_rows},
        "split": {
            "digest": split.digest(),
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
        },
        "seed": settings.seed,
        "code": {"version": __version__, "digest": artifacts.code_digest()},
    }
    checkpoints = Checkpoints(store, inputs, settings.build_config())
    ck = checkpoints.load(log) if resume else None

    bar = tqdm(
        total=settings.train.max_epochs,
        desc="train",
        unit="epoch",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )
    train_t0 = time.perf_counter()

    def on_epoch(row: dict[str, Any]) -> None:
        log.info("train.epoch", **row)
        bar.update(1)
        bar.set_postfix(val_loss=f"{row['val_loss']:.4f}")

    phase, selected = "selection", None
    try:
        if ck is not None and ck["phase"] == "refit":
            selected = ck["selection"]
            model = TabularMLP(cfg).to(device)
            model.load_state_dict(selected["model"])
            fitted = Fitted(
                model, selected["history"], selected["best_epoch"], selected["stopped_early"]
            )
        else:
            fitted = fit_network(
                cfg,
                parts["train"],
                parts["val"],
                pre,
                settings,
                seeds,
                device,
                on_epoch,
                resume=None if ck is None else ck["loop"],
                on_checkpoint=lambda loop: checkpoints.save(log, "selection", loop, None),
            )
        validation = evaluate_rows(fitted.model, parts["val"], pre)
        final, refit_history = fitted.model, []
        if settings.train.refit:
            # Chollet's recipe for small data: the validation rows chose the epoch count; now
            # they become training rows too. Preprocessing stays fitted on the training rows.
            phase = "refit"
            selected = {
                "model": {k: v.detach().cpu() for k, v in fitted.model.state_dict().items()},
                "history": fitted.history,
                "best_epoch": fitted.best_epoch,
                "stopped_early": fitted.stopped_early,
            }
            both = np.sort(np.concatenate([split.train, split.val]))
            bar.reset(total=fitted.best_epoch)

            def on_refit(row: dict[str, Any]) -> None:
                log.info("train.refit_epoch", **row)
                bar.update(1)

            refitted = fit_network(
                cfg,
                data.select(both),
                None,
                pre,
                settings,
                seeds,
                device,
                on_refit,
                epochs=fitted.best_epoch,
                resume=ck["loop"] if ck is not None and ck["phase"] == "refit" else None,
                on_checkpoint=lambda loop: checkpoints.save(log, "refit", loop, selected),
            )
            final, refit_history = refitted.model, refitted.history
    except Stopped as stopped:
        checkpoints.save(log, phase, stopped.state, selected)
        name = signal.Signals(stopped.signum).name
        log.warning(
            "train.interrupted",
            signal=name,
            phase=phase,
            epoch=stopped.state["epoch"],
            checkpoint=checkpoints.key,
            resume="pipeline train --resume",
        )
        raise Interrupted(
            f"training stopped by {name} in {phase} epoch {stopped.state['epoch']}; checkpoint "
            f"saved as {checkpoints.key} in store {store.uri}: run `pipeline train --resume` "
            "with the same data, settings and seed to continue"
        ) from None
    finally:
        bar.close()
    train_seconds = time.perf_counter() - train_t0
    result_metrics = {
        "task": schema.task,
        "best_epoch": fitted.best_epoch,
        "refit": settings.train.refit,
        "validation": validation,
        "test": evaluate_rows(final, parts["test"], pre),
    }
    state = {k: v.detach().cpu() for k, v in final.state_dict().items()}
    finished_at = datetime.now(UTC)
    files = {
        "weights.pt": artifacts.weights_bytes(state),
        "model.json": canonical_json(cfg.to_json()),
        "preprocessing.json": canonical_json(pre.to_json()),
        "schema.json": canonical_json(schema.to_json()),
        "history.json": canonical_json({"selection": fitted.history, "refit": refit_history}),
        "metrics.json": canonical_json(result_metrics),
        "config.json": canonical_json(settings.build_config()),
        "run.json": canonical_json(
            {
                "started_at": started_at.isoformat(),
                "finished_at": finished_at.isoformat(),
                "seconds": round(time.perf_counter() - t0, 3),
                "train_seconds": round(train_seconds, 3),
            }
        ),
        "environment": canonical_json(artifacts.environment(rt)),
    }
    bid = artifacts.write_build(store, files, inputs)
    checkpoints.discard()
    rows_seen = len(split.train) * len(fitted.history)
    rows_seen += (len(split.train) + len(split.val)) * len(refit_history)
    log.info(
        "train.summary",
        build_id=bid,
        task=schema.task,
        epochs=len(fitted.history),
        best_epoch=fitted.best_epoch,
        stopped_early=fitted.stopped_early,
        validation=result_metrics["validation"],
        test=result_metrics["test"],
        train_seconds=round(train_seconds, 3),
        rows_per_second=round(rows_seen / train_seconds) if train_seconds > 0 else None,
        seconds=round(time.perf_counter() - t0, 3),
        **rt,
    )
    return TrainResult(bid, result_metrics, fitted.best_epoch, len(fitted.history))
