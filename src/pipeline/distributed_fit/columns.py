"""The input columns read, typed, fitted and encoded on Ray: `pipeline train --workers N`'s
preparation, so that no process holds the whole table.

The driver has read the file's header and its target column alone (``prepare``'s
``target_only``: the split needs the target's classes and the rows that have one), and split
the rows. The input columns are cut into groups in file order, one Ray task per group. A task
reads its columns alone from the file (a Parquet file's column chunks; a CSV file parsed whole
with its other columns skipped), keeps the rows that have a target, types each column
(``schema.infer_column``), fits its statistics on the training rows in the split's order
(``fit_numeric`` / ``fit_categorical``: the in-process fit's own functions on the same values,
so ``preprocessing.json`` is the same bytes), encodes every row as ``Preprocessor.transform``
does (value by value: the same bits), and returns each destination's rows of its columns as an
object of its own. Those objects belong to the driver (they are the task's return values):
one task per worker lays worker k's rows of every group side by side into one object
(``shards.Parts``), which the worker maps as it is.

Memory: a task holds its columns, every row (a column of 1e9 rows is 8 GB: that, not the
table, bounds a task); a worker its shard; a worker's layout task its shard twice, briefly
(the pieces and their copy); the driver the target column and the split, and every row only
when a ridge is fitted beside the network (``linear.MAX_CELLS``: 32 MB at most). The
validation and test rows are scored in chunks by Ray tasks (``Elsewhere``), which send back
outputs only. A mistake in a column is the error the in-process read gives: the first one in
file order, naming the same file row.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data import read
from pipeline.data import schema as schema_mod
from pipeline.errors import DataError, PipelineError
from pipeline.features import Consumed, Preprocessor
from pipeline.features.numeric import NumericState, as_numbers
from pipeline.features.preprocessor import (
    CategoricalState,
    TargetState,
    fit_categorical,
    fit_numeric,
)
from pipeline.settings import DataSettings, FeatureSettings

if TYPE_CHECKING:  # shards imports torch, which a column task does without
    from pipeline.distributed_fit.shards import Piece, Rows

STAGES = ("read", "infer", "fit", "encode")


@dataclass(frozen=True)
class Reading:
    """What every task is told: the file, how to read and type it, how to fit."""

    path: str
    size: int
    label: str
    data: DataSettings
    features: FeatureSettings
    max_cardinality: int


@dataclass
class Found:
    """One task's result besides its pieces: each of its columns in file order (name, the
    column or None when dropped, a warning), the fitted states, or the error it met."""

    columns: list[tuple[str, schema_mod.Column | None, str | None]] = field(default_factory=list)
    numeric: list[NumericState] = field(default_factory=list)
    categorical: list[CategoricalState] = field(default_factory=list)
    error: PipelineError | None = None
    stage: int = 0  # where ``error`` was met: an index of ``STAGES``
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def widths(self) -> tuple[int, int, int]:
        """The columns of its pieces: values, missing indicators, categorical codes."""
        indicators = sum(s.indicator for s in self.numeric)
        return len(self.numeric), indicators, len(self.categorical)


def groups(columns: list[tuple[int, str]], count: int) -> list[list[tuple[int, str]]]:
    """``columns`` cut into ``count`` runs in order, as even as they go (none empty)."""
    count = max(1, min(count, len(columns)))
    bounds = np.linspace(0, len(columns), count + 1).round().astype(int)
    return [columns[a:b] for a, b in itertools.pairwise(bounds)]


def read_group(
    reading: Reading,
    columns: list[tuple[int, str]],
    kept: np.ndarray | None,
    train: np.ndarray,
    destinations: list[np.ndarray],
) -> list[Any]:
    """The Ray task: ``Found``, then one ``Piece`` per destination (row positions among the
    rows that have a target). ``kept``: the file rows that have a target (None: every row)."""
    t0 = time.perf_counter()
    found = Found()
    try:
        frame = _read(reading, columns, kept)
        found.stage = STAGES.index("infer")
        _infer(found, frame, reading, columns)
        found.stage = STAGES.index("fit")
        _fit(found, frame, reading, train)
        found.stage = STAGES.index("encode")
        placeholder = TargetState("", "regression", "none")  # no target is encoded here
        pre = Preprocessor(tuple(found.numeric), tuple(found.categorical), placeholder)
        rows = 0 if frame is None else len(frame)
        # Each column let go once encoded, as the in-process ``_encode`` does.
        source = {} if frame is None else Consumed(frame)
        del frame
        encoded = pre.transform(source, reading.label, with_target=False, rows=rows)
        del source
    except PipelineError as exc:
        found.error = exc
        return [found, *([None] * len(destinations))]
    f = len(found.numeric)
    numeric, codes = encoded.numeric, encoded.categorical
    pieces: list[Piece] = [
        (
            np.ascontiguousarray(numeric[rows, :f]),
            np.ascontiguousarray(numeric[rows, f:]),
            np.ascontiguousarray(codes[rows]),
        )
        for rows in destinations
    ]
    found.figures = {
        "columns": [name for _, name in columns],
        "rows": int(numeric.shape[0]),
        "pid": os.getpid(),
        "node": _node(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return [found, *pieces]


def first_error(found: list[Found]) -> PipelineError | None:
    """The error the in-process path meets first: it reads the file, types every column, fits
    every column, then encodes every column, each in file order."""
    failed = [(one.stage, k, one.error) for k, one in enumerate(found) if one.error is not None]
    return min(failed, key=lambda f: f[:2])[2] if failed else None


def _read(reading: Reading, columns: list[tuple[int, str]], kept: np.ndarray | None) -> Any:
    """The group's columns of the rows that have a target (None: no column has a name)."""
    path, label = Path(reading.path), reading.label
    if not path.is_file() or path.stat().st_size != reading.size:
        raise DataError(
            f"dataset {label} is not at {path} on Ray node {_node()}: with --workers every "
            "node reads its columns from the file, at the path the driver read it from; put it "
            "on storage every node mounts there, or train without --workers"
        )
    named = [name for _, name in columns if name.strip()]
    if not named:
        return None
    frame = read.read_table(path, reading.data, label=label, columns=named)
    return frame if kept is None else frame.iloc[kept]  # as prepare_target leaves it


def _infer(found: Found, frame: Any, reading: Reading, columns: list[tuple[int, str]]) -> None:
    import pandas as pd

    for position, name in columns:
        series = frame[name] if frame is not None and name.strip() else pd.Series([], dtype=object)
        column, warning = schema_mod.infer_column(
            series, name, position, reading.data, reading.label, reading.max_cardinality
        )
        found.columns.append((name, column, warning))


def _fit(found: Found, frame: Any, reading: Reading, train: np.ndarray) -> None:
    """Each kept column's statistics from the training rows, in the split's order (the
    in-process fit's inputs)."""
    for _, column, _ in found.columns:
        if column is None:
            continue
        training = frame[column.name].take(train)
        if column.kind == "numeric":
            x = as_numbers(training, column.name, reading.label)
            found.numeric.append(fit_numeric(column.name, x, reading.features))
        else:
            found.categorical.append(fit_categorical(column.name, training, reading.features))


def _node() -> str:
    import ray

    try:
        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    except Exception:  # outside a Ray worker (a test calling the task directly)
        return "local"


@dataclass
class Laid:
    """The rows laid out for training on Ray: the data with its schema, the preprocessing,
    each worker's ``shards.Shard`` (in Ray's object store), and ``part``: the driver's rows of
    a part of the split (positions among the rows that have a target). Those are tensors of
    every row when the ridge is fitted (a small table), else the validation or the test rows
    as ``Elsewhere``, scored where they are."""

    data: Any  # prepare.Prepared
    pre: Preprocessor
    parts: list[Any]
    part: Callable[[np.ndarray], Any]  # some rows: fit.Tensors, or ``Elsewhere``


def lay_out(settings: Any, data: Any, connection: Any, device: str, log: Any) -> Laid:
    """Read, type, fit and encode ``data``'s input columns on Ray (``data`` was prepared with
    ``target_only``; ``connection`` is the open session's); tensors the driver holds go on
    ``device``."""
    import ray

    from pipeline import fit, prepare
    from pipeline.distributed_fit.shards import Parts, fetched, gathered

    d, split = settings.data, data.split
    workers, cpus = connection.workers, connection.cluster_cpus
    todo = [
        (position, name)
        for position, name in enumerate(data.header, start=1)
        if name != d.target and name not in d.drop
    ]
    if not todo:  # the error the in-process read gives
        prepare.with_columns(data, [], [], settings, log)
    blocks = [
        np.sort(np.concatenate([split.train[k::workers], split.val[k::workers]]))
        for k in range(workers)
    ]
    # The validation and test rows in chunks, in the split's order: scored where they are.
    chunks = {"val": _cut(split.val), "test": _cut(split.test)}
    destinations = [*blocks, *chunks["val"], *chunks["test"]]
    index = data.frame.index
    kept = None if _every_row(index) else index.to_numpy()
    reading = Reading(
        str(data.fetched.path), data.fetched.path.stat().st_size, data.label, d,
        settings.features, settings.features.max_categorical_cardinality,
    )  # fmt: skip
    shared = [ray.put(x) for x in (reading, kept, split.train, destinations)]
    task: Any = ray.remote(num_cpus=1, max_retries=0)(read_group)
    runs: list[Any] = [
        task.options(num_returns=1 + len(destinations)).remote(shared[0], group, *shared[1:])
        for group in groups(todo, cpus)
    ]
    found: list[Found] = ray.get([r[0] for r in runs])
    data, pre = _merged(found, settings, data, log)
    y = pre.encode_target(data.frame, data.label)
    widths = [one.widths for one in found]
    # Each worker's pieces laid side by side by a task of their own, into one object the worker
    # maps as it is (a worker laying them out itself would hold its shard twice: the pieces it
    # fetched, mapped from the object store, and their copy).
    assemble: Any = ray.remote(num_cpus=1, max_retries=0)(_assembled)
    shards = [
        assemble.remote(
            Parts(
                [r[1 + k] for r in runs], widths, y[blocks[k]],
                np.searchsorted(blocks[k], split.train[k::workers]),
                np.searchsorted(blocks[k], split.val[k::workers]),
            )
        )
        for k in range(workers)
    ]  # fmt: skip
    # The ridge beside the network needs every row; it is only fitted on a small table.
    everything = fit.ridge_fitted(settings, pre, split)
    results = [[r[1 + d] for r in runs] for d in range(len(destinations))]  # per destination
    if everything:  # train and validation rows from the workers' blocks, and the test rows
        kept_rows = [*blocks, *chunks["test"]]
        at = [*range(workers), *range(len(destinations) - len(chunks["test"]), len(destinations))]
        laid = [
            gathered(fetched(results[d]), widths, y[rows])
            for d, rows in zip(at, kept_rows, strict=True)
        ]
        part = _part(laid, kept_rows, data.rows, device)
    else:
        first = {"val": workers, "test": workers + len(chunks["val"])}
        held = {
            name: Elsewhere(
                results[first[name] : first[name] + len(cut)], [len(c) for c in cut], widths,
                y[getattr(split, name)],
            )
            for name, cut in chunks.items()
        }  # fmt: skip
        part = _scored_part(held, split)
    ray.wait(shards, num_returns=len(shards))  # the pieces can go once laid out
    return Laid(data, pre, shards, part)


# Rows of a validation or test chunk: a multiple of ``model.EVAL_BATCH`` (each chunk is scored in
# the blocks one pass over every row would use; a row's output does not depend on them anyway).
CHUNK_ROWS = 4 * 65536


def _cut(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in chunks of ``CHUNK_ROWS``, in order (one, empty, for no rows)."""
    return [rows[i : i + CHUNK_ROWS] for i in range(0, max(1, len(rows)), CHUNK_ROWS)]


@dataclass
class Elsewhere:
    """Rows the driver does not hold (the validation or the test rows of a large table): their
    chunks stay in Ray's object store, one piece per group of columns each, and are scored
    there (``outputs``); the driver holds their encoded targets, in order."""

    chunks: list[list[Any]]  # per chunk: its pieces' refs, one per group
    sizes: list[int]
    widths: list[tuple[int, int, int]]
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def targets(self) -> Any:
        """The rows' encoded targets (a tensor), in order."""
        import torch

        return torch.from_numpy(self.target)

    def outputs(self, network: Any) -> np.ndarray:
        """``network``'s (a ``model.FoldedNetwork``) raw outputs for the rows, in order: one
        Ray task per chunk lays its pieces out and scores them, so the driver holds outputs
        only."""
        import ray

        task: Any = ray.remote(num_cpus=1, max_retries=0)(_scored)
        shared = ray.put(network)
        done = ray.get([task.remote(shared, refs, self.widths, n)
                        for refs, n in zip(self.chunks, self.sizes, strict=True)])  # fmt: skip
        return np.concatenate([np.empty((0, network.n_outputs), np.float32), *done])


def _scored(network: Any, refs: list[Any], widths: list[tuple[int, int, int]], n: int) -> Any:
    """The Ray task that scores one chunk of rows (``Elsewhere.outputs``)."""
    import torch

    from pipeline.distributed_fit.shards import fetched, gathered
    from pipeline.model import EVAL_BATCH

    rows = gathered(fetched(refs), widths, np.zeros(n, np.float32))
    numeric, categorical = torch.from_numpy(rows.numeric), torch.from_numpy(rows.categorical)
    outs = [torch.zeros((0, network.n_outputs))]
    for i in range(0, n, EVAL_BATCH):
        outs.append(network(numeric[i : i + EVAL_BATCH], categorical[i : i + EVAL_BATCH]))
    return torch.cat(outs).numpy()


def _scored_part(held: dict[str, Elsewhere], split: Any) -> Callable[[np.ndarray], Any]:
    """The driver's ``part`` of a large table: the validation or the test rows, scored where
    they are (``Elsewhere``); the driver never asks for others (no ridge is fitted)."""

    def part(wanted: np.ndarray) -> Any:
        for name, rows in held.items():
            mine = getattr(split, name)
            if wanted is mine or np.array_equal(wanted, mine):
                return rows
        raise RuntimeError("the driver holds no encoded copy of the rows asked for")  # a bug

    return part


def _part(
    laid: list[Rows], destinations: list[np.ndarray], rows: int, device: str
) -> Callable[[np.ndarray], Any]:
    """The driver's ``part``: the tensors of some rows (positions among the rows that have a
    target), from the destinations it gathered (a row in two is the same bytes in each)."""
    from pipeline.distributed_fit.shards import Rows

    numeric, categorical, target = (
        np.concatenate([getattr(r, name) for r in laid])
        for name in ("numeric", "categorical", "target")
    )
    tensors = Rows(numeric, categorical, target).tensors(device)
    at = np.full(rows, -1, dtype=np.int64)
    at[np.concatenate(destinations)] = np.arange(len(target))

    def part(wanted: np.ndarray) -> Any:
        where = at[wanted]
        if (where < 0).any():  # a bug: the driver was asked for rows it did not keep
            raise RuntimeError("the driver holds no encoded copy of some of the rows asked for")
        return tensors.select(where)

    return part


def _assembled(parts: Any) -> Any:
    """The Ray task that makes a worker's ``Shard`` from its ``shards.Parts``."""
    return parts.shard()


def _merged(found: list[Found], settings: Any, data: Any, log: Any) -> tuple[Any, Preprocessor]:
    """The tasks' results as one schema (``data`` with its columns) and one preprocessing with
    the target's state; the first error the in-process path would meet is raised, and the
    warnings are logged in file order."""
    from pipeline import prepare
    from pipeline.features.preprocessor import fit_target

    error = first_error(found)
    if error is not None:
        raise error
    columns, dropped, numeric, categorical = [], [], [], []
    for one in found:
        for name, column, warning in one.columns:
            if warning is not None:
                log.warning("data.warning", message=warning)
            if column is None:
                dropped.append(name)
            else:
                columns.append(column)
        numeric += one.numeric
        categorical += one.categorical
    log.info("train.columns", tasks=[one.figures for one in found])
    data = prepare.with_columns(data, columns, dropped, settings, log)
    target = fit_target(
        data.frame[settings.data.target].take(data.split.train), data.schema, data.label,
        settings.features.bound_rows,
    )  # fmt: skip
    return data, Preprocessor(tuple(numeric), tuple(categorical), target)


def _every_row(index: Any) -> bool:
    """Whether ``index`` (the target's frame's) is every file row: no row lacked a target."""
    import pandas as pd

    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
