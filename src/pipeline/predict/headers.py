"""What predict checks of an input file before its first row: a CSV file's header, a Parquet
file's schema, and in both the model's columns, each named once. ``readers.iter_chunks`` runs
them as it opens a file; `pipeline predict --workers` runs them on every input in the driver."""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.data import columns, csv_errors, read
from pipeline.errors import DataError, SourceError
from pipeline.settings import RunSettings

if TYPE_CHECKING:
    from pipeline.predict.predictor import Predictor

# What typer leaves of a URI given as the input path (it collapses "//" into "/"): predict
# reads local files only.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")

# The header is read on its own before pyarrow streams the rows; a first line longer than
# this is not a CSV header (a minified JSON document, a binary blob).
MAX_HEADER_BYTES = 1 << 20


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
            raise csv_errors.not_utf8(path, label, delimiter) from exc
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


def check_input(path: Path, fmt: str, predictor: Predictor, run: RunSettings) -> None:
    """What ``readers.iter_chunks`` checks of a file before its first row (that it exists; a
    header or schema, the model's columns named once each, Parquet's types), and that it has
    a row, with the same messages. `predict --workers` checks every input so in the driver:
    an empty file, one that lacks a column, a header without rows or a path that does not
    exist was said by a worker after Ray's start-up (12-19 s)."""
    from pipeline.predict import jsonlines

    label = str(path)
    check_exists(path, label)
    if not path.is_file():
        return  # the reader says so, as without --workers
    if fmt == "csv":
        checked_header(path, predictor, wanted(predictor, run), label)
        rows = _a_row_after_the_header(path, predictor.delimiter)
    elif fmt == "parquet":
        rows = checked_parquet(path, predictor, wanted(predictor, run), label)[0].metadata.num_rows
    else:
        jsonlines.refuse_json_array(path, label)  # blank lines only: no rows
        return
    if not rows:
        raise DataError(
            f"input {label} has no rows: nothing to predict; check that the file is complete"
        )


def check_exists(path: Path, label: str) -> None:
    """The error for an input that is not there: a URI (predict reads local files), a quoted
    glob without --workers, or a path that does not exist."""
    if path.exists():
        return
    if _URI.match(label):
        raise SourceError(
            f"input {label} looks like a URI, but predict reads local files only: download it "
            "and pass its path"
        )
    pattern = set("*?[") & set(str(path))  # a quoted glob, read only with --workers
    hint = "; a pattern is read with --workers N -o FOLDER" if pattern else ""
    raise DataError(f"input {path} does not exist: check the path{hint}")


def _a_row_after_the_header(path: Path, delimiter: str) -> bool:
    """Whether a CSV file holds a record after its header (blank lines are not rows, as for
    pyarrow's reader), judged from its first ``MAX_HEADER_BYTES``: a file longer than that is
    taken to have one (its reader says otherwise)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    if len(head) == MAX_HEADER_BYTES:
        return True
    text = head.decode("utf-8-sig", errors="replace")
    records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        next(records, None)  # the header
        return any(record for record in records)
    except csv.Error:
        return True  # the reader says what is wrong with it


def wanted(predictor: Predictor, run: RunSettings) -> list[str]:
    """The columns predict reads: the model's, and the id column (read once if both)."""
    return list(dict.fromkeys([*predictor.required, *([run.id_column] if run.id_column else [])]))


def checked_header(path: Path, predictor: Predictor, wanted: list[str], label: str) -> list[str]:
    """A CSV file's header: not empty, the model's columns in it, each named once."""
    header = _header(path, predictor.delimiter, f"input {label}")
    if not [c for c in header if c.strip()]:
        raise DataError(f"input {label} is empty: expected a header line and rows; check the file")
    _no_duplicates(header, wanted, label)
    predictor.check_columns(header, label)
    return header


def checked_parquet(
    path: Path, predictor: Predictor, wanted: list[str], label: str
) -> tuple[Any, list[str]]:
    """A Parquet file opened, and its columns (a pandas index's included): the model's columns
    in it (a rename is suggested from every column, not only those read), each named once, and
    of one value per cell."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"input {label} is not a readable Parquet file ({read.printable(str(exc), 160)}): "
            "it may be truncated or not Parquet at all; write it again"
        ) from exc
    names = read.index_names(parquet.schema_arrow)  # a pandas index as in training
    _no_duplicates(names, wanted, label)
    predictor.check_columns(names, label)
    stored = [c for c in wanted if c in parquet.schema_arrow.names]  # not a range index
    _check_parquet_types(parquet.schema_arrow, stored, label)
    return parquet, names


def _no_duplicates(names: list[str], wanted: list[str], label: str) -> None:
    """DataError when a column the model reads is named twice (a Parquet file's raised
    KeyError deep in pyarrow: a traceback)."""
    dupes = sorted({c for c in wanted if names.count(c) > 1})
    if dupes:
        raise DataError(
            f"input {label} has more than one column named {dupes}: give every column a unique name"
        )


def _check_parquet_types(schema: pa.Schema, present: list[str], label: str) -> None:
    """A ``DataError`` for a column the model reads that holds lists, structs, maps or bytes."""
    for name in present:
        kind = schema.field(name).type
        what = columns.unsupported(kind)
        if what is not None:
            raise DataError(
                f"input {label} column '{name}' holds {what} (Parquet type "
                f"{read.printable(str(kind), 80)}), not one value per cell: the model reads one "
                "number, text or true/false per cell; write the column as plain values"
            )
