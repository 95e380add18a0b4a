"""The run stage: load a release (or a package) and predict, streaming the input in chunks.

A ``Predictor`` is built from a verified package and nothing else: preprocessing state, schema
and network config are JSON, weights load with ``weights_only=True``. Input rows are read in
chunks of ``chunk_rows`` (CSV through pyarrow's streaming reader, Parquet by row batches, JSON
lines through pandas), validated against the package's input schema, encoded and predicted; each
chunk's predictions are appended to a temporary file that is renamed into place at the end, so
memory is bounded by the chunk size and a failed run leaves no partial output.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import numbers
import os
import re
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline import features, train
from pipeline.data import read
from pipeline.data.schema import Schema
from pipeline.errors import ConfigError, DataError, IntegrityError, NotFoundError, SourceError
from pipeline.model import ModelConfig, TabularMLP
from pipeline.package import OpenedPackage, open_package
from pipeline.settings import RunSettings

FORMATS = ("csv", "parquet", "jsonl")
# pyarrow's default true/false spellings, which decided a boolean column at training time.
_BOOLEAN_TEXT = {v: True for v in ("1", "True", "TRUE", "true")} | {
    v: False for v in ("0", "False", "FALSE", "false")
}
# What typer leaves of a URI given as the input path (it collapses "//" into "/").
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
# The header is read on its own before pyarrow streams the rows; a first line longer than
# this is not a CSV header (a minified JSON document, a binary blob).
MAX_HEADER_BYTES = 1 << 20
# How many extra column names a log event lists (it also carries their count).
SHOWN_COLUMNS = 20


@dataclass
class Stats:
    """What a prediction run saw, for its summary event."""

    rows: int = 0
    chunks: int = 0
    errors: int = 0
    unknown_categories: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)

    def add_unknown(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.unknown_categories[name] = self.unknown_categories.get(name, 0) + n


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
        first = cast(torch.nn.Linear, layers[0])
        weight = first.weight.detach().to(torch.float64)  # [H, n_numeric + sum(dims)]
        cards = list(cfg.cardinalities)
        starts = np.cumsum([0, *cards])[:-1].astype(np.int64)  # each column's first row
        folded = torch.zeros((sum(cards), weight.shape[0]), dtype=torch.float64)
        at = cfg.n_numeric  # the concatenation's order: numeric, then each group's columns
        for group, cols, offsets in zip(model.groups, model._columns, model._offsets, strict=True):
            table = cast(torch.nn.Embedding, group)
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
        self.rest = torch.nn.Sequential(*layers[1:]).eval()
        self.n_outputs = cfg.n_outputs

    @torch.inference_mode()
    def __call__(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, F] float32, categorical [B, C] int64 -> [B, n_outputs], in batches."""
        outs = []
        for i in range(0, numeric.shape[0], train.EVAL_BATCH):
            h = torch.nn.functional.linear(
                numeric[i : i + train.EVAL_BATCH], self.numeric_weight, self.bias
            )
            if len(self.offsets):
                # 2-D input: each row is one bag of C indices, summed.
                idx = categorical[i : i + train.EVAL_BATCH] + self.offsets
                h += torch.nn.functional.embedding_bag(idx, self.folded, mode="sum")
            outs.append(self.rest(h))
        if not outs:
            return torch.zeros((0, self.n_outputs))
        return torch.cat(outs)


@dataclass
class Predictor:
    """A loaded, verified model ready to predict frames."""

    name: str
    version: str
    package_id: str
    build_id: str
    schema: Schema
    pre: features.Preprocessor
    model: TabularMLP
    missing_values: list[str]
    delimiter: str
    metrics: dict[str, Any] = field(default_factory=dict)  # what the build measured (metrics.json)
    network: FoldedNetwork = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.network = FoldedNetwork(self.model)

    @classmethod
    def from_opened(cls, opened: OpenedPackage) -> Predictor:
        """Build from a package whose files were verified by ``open_package``."""
        model = TabularMLP(ModelConfig.from_json(opened.json("model.json")))
        blob = io.BytesIO(opened.files["weights.pt"])
        weights = torch.load(blob, map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
        model.eval()
        data = opened.json("config.json")["data"]
        return cls(
            name=opened.name,
            version=opened.version,
            package_id=opened.package_id,
            build_id=opened.build_id,
            schema=Schema.from_json(opened.json("schema.json")),
            pre=features.Preprocessor.from_json(opened.json("preprocessing.json")),
            model=model,
            missing_values=list(data["missing_values"]),
            delimiter=data["delimiter"],
            metrics=opened.json("metrics.json"),
        )

    @classmethod
    def from_package(cls, path: Path) -> Predictor:
        """Open, verify and load a package archive."""
        return cls.from_opened(open_package(path))

    @property
    def required(self) -> list[str]:
        """The input columns the model needs."""
        return [c.name for c in self.schema.columns]

    def check_columns(self, columns: list[Any], label: str) -> None:
        """A ``DataError`` naming the required columns that ``columns`` lacks, if any."""
        missing = [c for c in self.required if c not in columns]
        if missing:
            hint = read.delimiter_hint([str(c) for c in columns])
            raise DataError(
                f"{label} lacks required column(s) {missing}: the model was trained on "
                f"{len(self.required)} columns; {hint}add them (empty cells are allowed)"
            )

    def predict_frame(
        self,
        frame: pd.DataFrame,
        run: RunSettings,
        *,
        label: str = "input",
        stats: Stats | None = None,
    ) -> pd.DataFrame:
        """Predictions for ``frame`` (one row per input row), validated against the schema.

        ``frame``'s index is the 0-based data row in the file, used in error messages.
        """
        stats = stats if stats is not None else Stats()
        self.check_columns(list(frame.columns), label)
        dupes = [c for c in self.required if int((frame.columns == c).sum()) > 1]
        if dupes:
            raise DataError(
                f"{label} has more than one column named {dupes}: give every column a unique name"
            )
        if run.id_column and run.id_column not in frame.columns:
            raise DataError(
                f"{label} has no id column '{run.id_column}' (PIPELINE_RUN__ID_COLUMN): set it to "
                "an existing column or unset it"
            )
        errors = np.full(len(frame), "", dtype=object)
        clean = pd.DataFrame(index=frame.index)
        for column in self.schema.columns:
            series = frame[column.name]
            if column.kind == "numeric":
                clean[column.name] = _numbers(series, column.name, label, run.on_error, errors)
            elif column.kind == "boolean" and not pd.api.types.is_bool_dtype(series):
                clean[column.name] = _booleans(series, column.name, label, run.on_error, errors)
            else:
                clean[column.name] = series
        enc = self.pre.transform(clean, label, with_target=False)
        stats.add_unknown(enc.unknown_counts)
        out = self.network(torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical))
        values = train.outputs_to_predictions(out.numpy(), self.pre)
        result = pd.DataFrame(index=frame.index)
        if run.id_column:
            result[run.id_column] = frame[run.id_column].to_numpy()
        bad = errors != ""
        target = self.pre.target
        if target.task == "regression":
            result["prediction"] = np.where(bad, np.nan, values)
        else:
            classes = np.array(target.classes, dtype=object)
            if target.task == "binary":
                picked = (values[:, 1] >= run.threshold).astype(np.int64)
            else:
                picked = values.argmax(axis=1)
            labels = classes[picked]
            labels[bad] = None
            result["prediction"] = labels
            for k, name in enumerate(target.classes):
                result[f"probability_{name}"] = np.where(bad, np.nan, values[:, k])
        if run.on_error == "column":
            result["error"] = errors
        stats.errors += int(bad.sum())
        stats.rows += len(frame)
        stats.chunks += 1
        return result


def _row(series: pd.Series, pos: int) -> int:
    """The 1-based data row of ``series``'s ``pos``-th value (its index is the 0-based row)."""
    try:
        return int(series.index[pos]) + 1
    except (TypeError, ValueError, OverflowError):
        return pos + 1


def _shown(value: Any) -> str:
    """A cell as an error message shows it: its repr, printable and short."""
    return read.printable(repr(value), 80)


def _to_float(value: Any) -> float:
    """One cell as a float: NaN for anything that is not a real number (booleans included)."""
    if isinstance(value, bool | np.bool_) or value is None:
        return math.nan
    if isinstance(value, str | bytes):
        try:
            return float(value)
        except ValueError:
            return math.nan
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            return math.inf
    return math.nan


def _reject(
    series: pd.Series,
    bad: np.ndarray,
    name: str,
    label: str,
    expected: str,
    on_error: str,
    errors: np.ndarray,
) -> None:
    """Fail on the first bad cell, or note each one in ``errors`` (PIPELINE_RUN__ON_ERROR)."""
    rows = [int(r) for r in bad.nonzero()[0]]
    if on_error == "fail":
        raise DataError(
            f"column '{name}' in {label} has {_shown(series.iloc[rows[0]])} at data row "
            f"{_row(series, rows[0])}: expected {expected}; fix the row, or set "
            "PIPELINE_RUN__ON_ERROR=column to report bad rows in an error column"
        )
    for pos in rows:
        note = f"column '{name}': {_shown(series.iloc[pos])} is not {expected}"
        errors[pos] = f"{errors[pos]}; {note}" if errors[pos] else note


def _numbers(
    series: pd.Series, name: str, label: str, on_error: str, errors: np.ndarray
) -> np.ndarray:
    """float64 values; a bad cell fails the batch or is recorded in ``errors`` and imputed."""
    import pyarrow.compute as pc

    numeric = pd.api.types.is_numeric_dtype(series)
    if numeric and not (
        pd.api.types.is_bool_dtype(series) or pd.api.types.is_complex_dtype(series)
    ):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isinf(values)
    else:
        try:  # the fast path: one C++ cast for the whole column
            values = pc.cast(pa.array(series, from_pandas=True), pa.float64()).to_numpy(
                zero_copy_only=False
            )
            bad = np.isinf(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
                values = pd.to_numeric(series, errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan
                )
            else:  # Python objects (JSON lines, a caller's frame): one cell at a time
                values = np.fromiter(map(_to_float, series), dtype="float64", count=len(series))
            bad = (np.isnan(values) & series.notna().to_numpy()) | np.isinf(values)
    if bad.any():
        _reject(series, bad, name, label, "a finite number", on_error, errors)
        values = np.where(bad, np.nan, values)
    return values


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        return _BOOLEAN_TEXT.get(value)
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    return None


def _booleans(
    series: pd.Series, name: str, label: str, on_error: str, errors: np.ndarray
) -> pd.Series:
    """True/False/None values, spelt as pyarrow parsed them at training; others are bad cells."""
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        mapped = series.map(_BOOLEAN_TEXT.get, na_action="ignore")  # text read as text
    else:
        mapped = series.map(_to_bool, na_action="ignore")
    bad = (mapped.isna() & series.notna()).to_numpy()
    if bad.any():
        _reject(series, bad, name, label, "true or false", on_error, errors)
        mapped = mapped.where(~bad, None)
    return mapped


def detect_format(path: Path | None, declared: str) -> str:
    """The file format from a declaration or a suffix (csv when writing to stdout)."""
    if declared != "auto":
        return declared
    if path is None:
        return "csv"
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def _header(path: Path, delimiter: str, label: str) -> list[str]:
    """The header's column names, read from at most ``MAX_HEADER_BYTES`` of the file."""
    read.sniff(path, label, "the input path")
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(MAX_HEADER_BYTES)
        text = head.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut in two by the read limit
            raise DataError(f"{label} is not valid UTF-8 text: re-encode it as UTF-8") from exc
        text = head[: exc.start].decode("utf-8-sig")
    except (OSError, EOFError) as exc:
        raise DataError(
            f"{label} cannot be read: {getattr(exc, 'strerror', None) or exc}; check the path"
        ) from exc
    if len(head) == MAX_HEADER_BYTES and "\n" not in text and "\r" not in text:
        raise DataError(
            f"{label} has a first line longer than {MAX_HEADER_BYTES >> 20} MiB: expected a CSV "
            "header line; check that the file is CSV (not JSON or a binary format)"
        )
    try:
        return next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
    except csv.Error as exc:
        raise DataError(f"{label} has a malformed header line ({exc}): fix the first line") from exc


def iter_chunks(
    path: Path, fmt: str, chunk_rows: int, predictor: Predictor, run: RunSettings, stats: Stats
) -> Iterator[pd.DataFrame]:
    """The input as frames of at most ``chunk_rows`` rows, indexed by 0-based data row."""
    label = str(path)
    if not path.exists() and _URI.match(label):
        raise SourceError(
            f"input {label} looks like a URI, but predict reads local files only: download it "
            "and pass its path"
        )
    if not path.exists():
        raise DataError(f"input {path} does not exist: check the path")
    if not path.is_file():
        raise DataError(
            f"input {path} is not a file: pass the path of a CSV, Parquet or JSON-lines file"
        )
    wanted = [*predictor.required, *([run.id_column] if run.id_column else [])]
    start = 0
    if fmt == "csv":
        header = _header(path, predictor.delimiter, f"input {label}")
        if not [c for c in header if c.strip()]:
            raise DataError(
                f"input {label} is empty: expected a header line and rows; check the file"
            )
        dupes = sorted({c for c in wanted if header.count(c) > 1})
        if dupes:
            raise DataError(
                f"input {label} has more than one column named {dupes}: give every column a "
                "unique name"
            )
        predictor.check_columns(header, label)
        stats.extra_columns = [c for c in header if c not in wanted]
        present = [c for c in wanted if c in header]
        batches: Iterator[pa.RecordBatch] = _csv_batches(
            path, label, predictor, present, header[-1]
        )
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(
                f"input {label} is not a readable Parquet file ({read.printable(str(exc), 160)}): "
                "it may be truncated or not Parquet at all; write it again"
            ) from exc
        names = parquet.schema_arrow.names
        stats.extra_columns = [c for c in names if c not in wanted]
        batches = parquet.iter_batches(
            batch_size=chunk_rows, columns=[c for c in wanted if c in names]
        )
    else:
        try:
            frames = pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False)
            for frame in frames:
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                if not stats.extra_columns:
                    stats.extra_columns = [c for c in frame.columns if c not in wanted]
                yield frame
        except (ValueError, TypeError, AttributeError) as exc:
            raise _jsonl_error(path, label) from exc
        return
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            head, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
            yield _frame(head, start)
            start += head.num_rows
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield _frame(pa.Table.from_batches(pending), start)


def _csv_batches(
    path: Path, label: str, predictor: Predictor, present: list[str], last: str
) -> Iterator[pa.RecordBatch]:
    """The ``present`` columns of a CSV file, streamed; every parse failure a ``DataError``.

    The header's ``last`` column is read too (and dropped again): an unterminated quote there
    would otherwise swallow the rest of the file into one value without any error.
    """
    import pyarrow.csv as pacsv

    columns = present if last in present else [*present, last]
    rows = 0
    delimiter = predictor.delimiter
    advice = f"the model reads {delimiter!r}-delimited files"
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            # No invalid_row_handler: a Python callback in the parser made pyarrow 26 abort the
            # process at exit ("terminate called"). read.parse_error finds the bad line itself.
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                # Text everywhere: types are decided per column from the schema, not guessed
                # per block, and a bad cell is reported with its row instead of failing a block.
                column_types={c: pa.string() for c in columns},
                null_values=predictor.missing_values,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            rows += batch.num_rows
            if batch.num_rows and read.last_row_swallowed(batch.select([last]), path):
                raise DataError(
                    f"input {label} has an unterminated quote in column '{last}' at data row "
                    f"{rows}: the quoted field runs on to the end of the file; close the quote, "
                    "or escape a literal quote by doubling it"
                )
            yield batch if last in present else batch.select(present)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise read.parse_error(exc, path, f"input {label}", delimiter, advice) from exc


def _jsonl_error(path: Path, label: str) -> DataError:
    """The first line of a JSON-lines file that is not one JSON object, as an error."""
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    return DataError(
                        f"input {label} line {number} is not valid JSON ({exc.msg}, column "
                        f"{exc.colno}): fix the line; every line must be one JSON object"
                    )
                if not isinstance(value, dict):
                    return DataError(
                        f"input {label} line {number} is a JSON {type(value).__name__}, not an "
                        "object: fix the line; every line must be one JSON object of column "
                        "names to values"
                    )
    except UnicodeDecodeError:
        return DataError(f"input {label} is not valid UTF-8 text: re-encode it as UTF-8")
    return DataError(
        f"input {label} cannot be read as JSON lines: check that every line is one JSON object "
        "with the same kind of value in each column"
    )


def _frame(table: pa.Table, start: int) -> pd.DataFrame:
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame


class _Writer:
    """Appends prediction chunks to a temporary file, renamed into place on ``commit``."""

    def __init__(self, path: Path | None, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.tmp = None if path is None else path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self._handle: BinaryIO | None = None
        self._arrow: Any = None
        self._schema: pa.Schema | None = None  # the first chunk's, imposed on later chunks

    def _sink(self) -> BinaryIO:
        if self._handle is None:
            if self.tmp is None:
                self._handle = sys.stdout.buffer
            else:
                self.tmp.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.tmp.open("wb")
        return self._handle

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.fmt == "jsonl":
            self._sink().write(frame.to_json(orient="records", lines=True).encode())
            return
        if self._arrow is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._arrow = pq.ParquetWriter(self._sink(), table.schema)
            else:
                import pyarrow.csv as pacsv

                options = pacsv.WriteOptions(quoting_style="needed")
                self._arrow = pacsv.CSVWriter(self._sink(), table.schema, write_options=options)
        self._arrow.write_table(table.cast(self._schema))

    def commit(self) -> None:
        if self._arrow is not None:
            self._arrow.close()
        if self._handle is not None and self.tmp is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        elif self._handle is not None:
            self._handle.flush()
        if self.tmp is not None and self.path is not None:
            if self._handle is None:  # no rows at all: still produce an (empty) file
                self.tmp.write_bytes(b"")
            self.tmp.replace(self.path)

    def abort(self) -> None:
        if self.tmp is not None:
            if self._handle is not None and not self._handle.closed:
                self._handle.close()
            self.tmp.unlink(missing_ok=True)


def _prefetched(chunks: Iterator[pd.DataFrame]) -> Generator[pd.DataFrame, None, None]:
    """``chunks`` in order, the next one read on a thread while the caller works on this one.

    Parsing (pyarrow) and the frame conversion release the GIL for most of their work, so on a
    machine whose cores the forward pass leaves idle part of the time, reading chunk k+1 hides
    behind predicting chunk k. One chunk ahead at most, so memory stays bounded by the chunk
    size. An exception in the reader reaches the caller at the chunk where it happened.
    """
    import queue
    import threading

    done = object()
    ready: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():  # the caller may have stopped taking chunks
            try:
                ready.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read_ahead() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as exc:  # handed to the caller, raised there
            put(None, exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # release the file if the caller stopped early
                close()

    worker = threading.Thread(target=read_ahead, name="predict-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


def run(
    predictor: Predictor,
    source: Path,
    output: Path | None,
    run_settings: RunSettings,
    log: Any,
) -> Stats:
    """Predict every row of ``source`` into ``output`` (stdout when None), chunk by chunk."""
    t0 = time.perf_counter()
    in_fmt = detect_format(source, "auto")
    out_fmt = detect_format(output, run_settings.output_format)
    if output is None and out_fmt == "parquet":
        raise ConfigError("Parquet output needs a file: pass -o PATH.parquet")
    stats = Stats()
    writer = _Writer(output, out_fmt)
    chunks = _prefetched(
        iter_chunks(source, in_fmt, run_settings.chunk_rows, predictor, run_settings, stats)
    )
    try:
        for chunk in chunks:
            if stats.chunks == 0 and stats.extra_columns:
                log.warning(
                    "predict.extra_columns",
                    # A wide file must not turn one event into a megabyte: the first names only.
                    columns=stats.extra_columns[:SHOWN_COLUMNS],
                    count=len(stats.extra_columns),
                    message="columns the model does not use are ignored",
                )
            writer.write(
                predictor.predict_frame(chunk, run_settings, label=str(source), stats=stats)
            )
        if stats.rows == 0:
            raise DataError(
                f"input {source} has no rows: nothing to predict; check that the file is complete"
            )
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        chunks.close()
    seconds = time.perf_counter() - t0
    log.info(
        "predict.summary",
        model=predictor.name,
        version=predictor.version,
        package_id=predictor.package_id,
        build_id=predictor.build_id,
        input=str(source),
        output=str(output) if output else "-",
        rows=stats.rows,
        chunks=stats.chunks,
        errors=stats.errors,
        unknown_categories=stats.unknown_categories,
        extra_columns=stats.extra_columns[:SHOWN_COLUMNS],
        seconds=round(seconds, 3),
        rows_per_second=round(stats.rows / seconds) if seconds > 0 else None,
    )
    return stats


def load(
    store: Any,
    release_ref: str | None,
    package: Path | None,
    default_name: str | None,
    run_settings: RunSettings,
) -> tuple[Predictor, RunSettings, str | None]:
    """The predictor and run settings for a release reference or a package path.

    A release carries the run-stage settings it was created with (threshold, id column, error
    handling, output format); they win over the environment's, because a release is immutable
    configuration. ``chunk_rows`` is the exception: it sizes memory for the machine the process
    runs on, so it always comes from the environment. With ``--package`` the environment's
    settings apply.
    """
    from pipeline import releases

    if package is not None:
        return Predictor.from_package(package), run_settings, None
    if not release_ref:
        raise ConfigError(
            "no model to run: pass --release name@vN (or name@current), set PIPELINE_RELEASE, "
            "or pass --package PATH"
        )
    release = releases.show(store, release_ref, default_name)
    sidecar = releases.find_package(store, release.package_id)
    key = f"packages/{sidecar['name']}/{sidecar['version']}.tar.gz"
    try:
        path = store.local_file(key)
    except KeyError:
        raise NotFoundError(
            f"release {release.ref} names package {release.package_id[:12]}, but {key} is not in "
            f"store {store.uri}: restore it or roll back"
        ) from None
    predictor = Predictor.from_package(path)
    if predictor.package_id != release.package_id:
        raise IntegrityError(
            f"package {path} has id {predictor.package_id[:12]} but release {release.ref} "
            f"names {release.package_id[:12]}: the archive was replaced; restore it"
        )
    bound = RunSettings.model_validate({**release.run, "chunk_rows": run_settings.chunk_rows})
    return predictor, bound, release.ref
