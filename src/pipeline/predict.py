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
import io
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline import features, train
from pipeline.data.schema import Schema
from pipeline.errors import ConfigError, DataError, IntegrityError, NotFoundError
from pipeline.model import ModelConfig, TabularMLP
from pipeline.package import OpenedPackage, open_package
from pipeline.settings import RunSettings

FORMATS = ("csv", "parquet", "jsonl")
# pyarrow's default true/false spellings, which decided a boolean column at training time.
_BOOLEAN_TEXT = {v: True for v in ("1", "True", "TRUE", "true")} | {
    v: False for v in ("0", "False", "FALSE", "false")
}


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
        )

    @classmethod
    def from_package(cls, path: Path) -> Predictor:
        """Open, verify and load a package archive."""
        return cls.from_opened(open_package(path))

    @property
    def required(self) -> list[str]:
        """The input columns the model needs."""
        return [c.name for c in self.schema.columns]

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
        missing = [c for c in self.required if c not in frame.columns]
        if missing:
            raise DataError(
                f"{label} lacks required column(s) {missing}: the model was trained on "
                f"{len(self.required)} columns; add them (empty cells are allowed)"
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
                # Text read as text: spell booleans the way pyarrow parsed them at training.
                clean[column.name] = series.map(_BOOLEAN_TEXT.get, na_action="ignore")
            else:
                clean[column.name] = series
        enc = self.pre.transform(clean, label, with_target=False)
        stats.add_unknown(enc.unknown_counts)
        with torch.inference_mode():
            out = train.forward_all(
                self.model, torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical)
            )
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


def _numbers(
    series: pd.Series, name: str, label: str, on_error: str, errors: np.ndarray
) -> np.ndarray:
    """float64 values; a bad cell fails the batch or is recorded in ``errors`` and imputed."""
    import pyarrow.compute as pc

    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isinf(values)
    else:
        try:  # the fast path: one C++ cast for the whole column
            values = pc.cast(pa.array(series, from_pandas=True), pa.float64()).to_numpy(
                zero_copy_only=False
            )
            bad = np.isinf(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            values = pd.to_numeric(series, errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
            bad = (np.isnan(values) & series.notna().to_numpy()) | np.isinf(values)
    if bad.any():
        rows = bad.nonzero()[0]
        if on_error == "fail":
            pos = int(rows[0])
            raise DataError(
                f"column '{name}' in {label} has {series.iloc[pos]!r} at data row "
                f"{int(series.index[pos]) + 1}: expected a finite number; fix the row, or set "
                "PIPELINE_RUN__ON_ERROR=column to report bad rows in an error column"
            )
        for pos in rows:
            note = f"column '{name}': {series.iloc[pos]!r} is not a finite number"
            errors[pos] = f"{errors[pos]}; {note}" if errors[pos] else note
        values = np.where(bad, np.nan, values)
    return values


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
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh, delimiter=delimiter), [])
    except UnicodeDecodeError as exc:
        raise DataError(f"{label} is not valid UTF-8 text: re-encode it as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"{label} cannot be read: {exc.strerror}; check the path") from exc


def iter_chunks(
    path: Path, fmt: str, chunk_rows: int, predictor: Predictor, run: RunSettings, stats: Stats
) -> Iterator[pd.DataFrame]:
    """The input as frames of at most ``chunk_rows`` rows, indexed by 0-based data row."""
    label = str(path)
    if not path.is_file():
        raise DataError(f"input {path} does not exist or is not a file: check the path")
    wanted = [*predictor.required, *([run.id_column] if run.id_column else [])]
    start = 0
    if fmt == "csv":
        import pyarrow.csv as pacsv

        header = _header(path, predictor.delimiter, label)
        if not header or header == [""]:
            raise DataError(f"input {label} is empty: expected a header line and rows")
        stats.extra_columns = [c for c in header if c not in wanted]
        present = [c for c in wanted if c in header]
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=predictor.delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=present,
                # Text everywhere: types are decided per column from the schema, not guessed
                # per block, and a bad cell is reported with its row instead of failing a block.
                column_types={c: pa.string() for c in present},
                null_values=predictor.missing_values,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        batches: Iterator[pa.RecordBatch] = _reader_batches(reader, label)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"input {label} is not a readable Parquet file: {exc}") from exc
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
        except ValueError as exc:
            raise DataError(f"input {label} is not valid JSON lines: {exc}") from exc
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


def _reader_batches(reader: Any, label: str) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise DataError(
                f"input {label} cannot be parsed as CSV: {first}; check the file"
            ) from exc
        yield batch


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
    try:
        for chunk in iter_chunks(
            source, in_fmt, run_settings.chunk_rows, predictor, run_settings, stats
        ):
            if stats.chunks == 0 and stats.extra_columns:
                log.warning(
                    "predict.extra_columns",
                    columns=stats.extra_columns,
                    message="columns the model does not use are ignored",
                )
            writer.write(
                predictor.predict_frame(chunk, run_settings, label=str(source), stats=stats)
            )
        writer.commit()
    except BaseException:
        writer.abort()
        raise
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
        extra_columns=stats.extra_columns,
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
