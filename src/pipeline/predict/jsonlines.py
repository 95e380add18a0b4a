"""JSON-lines input for `pipeline predict`: a file of one JSON object per line as frames of at
most ``chunk_rows`` rows, its cells read as the CSV reader reads them, and the one-line error
that names the first line that cannot be read."""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import pandas as pd

from pipeline.data import cells, read
from pipeline.errors import DataError

if TYPE_CHECKING:
    from pipeline.predict.predictor import Predictor, Stats


def _row(line: str, number: int, label: str, exact: str | None = None) -> dict[str, Any]:
    """One line of a JSON-lines file as its object; a ``DataError`` naming the line when it is
    not one JSON object of plain values. An integer beyond int64 is a float, as the server
    reads it, but in the ``exact`` column (the id column), whose values are written back as
    they are: refused there."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"input {label} line {number} is not valid JSON ({exc.msg}, column "
            f"{exc.colno}): fix the line; every line must be one JSON object"
        ) from None
    except (RecursionError, ValueError) as exc:  # nesting; a 5,000-digit number
        why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        if "digits" in why:  # Python's advice (set_int_max_str_digits) is not ours
            why = "a number of over 4,300 digits"
        raise DataError(
            f"input {label} line {number} cannot be read as JSON ({why[:120]}): fix "
            "the line; every line must be one JSON object of column names to values"
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"input {label} line {number} is a JSON {type(value).__name__}, not an "
            "object: fix the line; every line must be one JSON object of column "
            "names to values"
        )
    for key, v in value.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise DataError(
                f"input {label} line {number} column '{key}' holds a number beyond float64 "
                "(1e999, Infinity, NaN): fix the line; a missing value is null"
            )
        if isinstance(v, int) and not isinstance(v, bool) and not -(1 << 63) <= v < 1 << 63:
            if key == exact:
                raise DataError(
                    f"input {label} line {number} id column '{key}' holds {v}, an integer "
                    "outside int64 (-2^63 to 2^63-1), which the output cannot hold exactly: "
                    "write such ids as JSON strings"
                )
            try:
                value[key] = float(v)
            except OverflowError:  # 310 digits and more: beyond float64 too
                raise DataError(
                    f"input {label} line {number} column '{key}' holds an integer of "
                    f"{len(str(abs(v)))} digits, beyond float64: fix the line"
                ) from None
    return value


def _open(path: Path, mode: str) -> IO[Any]:
    """``path`` for reading, through gzip when its name ends in ``.gz``; text as UTF-8 with a
    byte order mark stripped."""
    encoding = "utf-8-sig" if "t" in mode else None
    if path.name.lower().endswith(".gz"):
        return cast(IO[Any], gzip.open(path, mode, encoding=encoding))
    return path.open(mode, encoding=encoding)


def refuse_json_array(path: Path, label: str) -> None:
    """A ``DataError`` for a file that holds one JSON array rather than JSON lines, or blank
    lines only: read as lines, either was rows of unnamed columns or of none, reported as every
    model column missing."""
    read.sniff(path, f"input {label}", "the input path")  # gzip not named .gz, zip, ...
    with _open(path, "rb") as fh:
        raw = fh.read(4096)
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head and len(raw) < 4096:  # blank lines only: read as rows of no columns
        raise DataError(
            f"input {label} has no rows: nothing to predict; check that the file is complete"
        )
    if head.startswith(b"["):
        raise DataError(
            f"input {label} holds a JSON array; predict reads JSON lines, one object per line "
            f"(streamed in chunks): convert it, e.g. "
            + (
                "pipe it through jq -c '.[]'"
                if label == "stdin"
                else f"jq -c '.[]' {label} > rows.jsonl"
            )
        )


def frames(
    path: Path,
    label: str,
    chunk_rows: int,
    predictor: Predictor,
    wanted: list[str],
    stats: Stats,
    id_column: str | None = None,
) -> Iterator[pd.DataFrame]:
    """A JSON-lines file as frames of ``chunk_rows`` rows, its cells read as the CSV reader
    reads them: values as JSON has them (no column becomes numbers or dates by its looks or
    name), decimals exact, a missing marker's spelling missing.

    Every row is read alone, so nothing depends on the chunks (PIPELINE_RUN__CHUNK_ROWS): a
    key a line leaves out is a missing value there (as Spark writes nulls), a column the
    model reads that no line holds is an error before any row is predicted (``_look_ahead``);
    the id column keeps each line's own value (``100``, ``3.5``, ``"A-3"``, exact beyond
    2^53). pandas' chunked reader decided per chunk: a chunk whose one line lacked a key was
    refused, the same line in a larger chunk read as missing, and ids were ``100`` or
    ``100.0`` by their neighbours.
    """
    refuse_json_array(path, label)
    seen: set[str] = set()
    start = 0
    try:
        with _open(path, "rt") as fh:  # a byte order mark stripped, as in CSV
            rows: list[dict[str, Any]] = []
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    rows.append(_row(line, number, label, id_column))
                if len(rows) == chunk_rows:
                    frame = _chunk(rows, start, predictor, wanted, stats, id_column, seen)
                    if not start:
                        _look_ahead(path, label, predictor, wanted, id_column, seen, number)
                    yield frame
                    start, rows = start + len(rows), []
            if rows:  # the file is read: what no line holds is known before this is written
                frame = _chunk(rows, start, predictor, wanted, stats, id_column, seen)
                _check(label, predictor, wanted, id_column, seen)
                yield frame
    except UnicodeDecodeError:
        raise DataError(f"input {label} is not valid UTF-8 text: re-encode it as UTF-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"input {label} is damaged gzip data ({exc}): check the file") from exc


def _check(
    label: str, predictor: Predictor, wanted: list[str], id_column: str | None, seen: set[str]
) -> None:
    """A ``DataError`` if no line holds a column the model reads, or the id column."""
    predictor.check_columns([c for c in wanted if c in seen], label)
    if id_column is not None and id_column not in seen:
        raise DataError(
            f"{label} has no id column '{id_column}' (PIPELINE_RUN__ID_COLUMN): no line holds "
            "it; set it to an existing column or unset it"
        )


def _look_ahead(
    path: Path,
    label: str,
    predictor: Predictor,
    wanted: list[str],
    id_column: str | None,
    seen: set[str],
    after: int,
) -> None:
    """Before the first chunk's predictions are written: the columns that its lines leave out
    are looked for in the lines after line ``after``, so that a file that no line of which
    holds one is refused before any output (on stdout, rows already written cannot be taken
    back). Only a line that holds such a name in quotes, or a JSON escape, is parsed: a key
    spelled without escapes is that text. Nothing to do for a file whose first chunk
    holds every column (the usual case)."""
    names = [c for c in wanted if c not in seen and (c in predictor.required or c == id_column)]
    if id_column is not None and id_column not in seen and id_column not in names:
        names.append(id_column)
    if not names:
        return
    needles = {json.dumps(n, ensure_ascii=False) for n in names} | {"\\"}
    with _open(path, "rt") as fh:  # the lines as ``frames`` numbers them
        for number, line in enumerate(fh, start=1):
            if number <= after or not any(n in line for n in needles):
                continue
            keys = _row(line, number, label, id_column).keys()
            seen.update(k for k in keys if k in names)
            if all(n in seen for n in names):
                return
    _check(label, predictor, wanted, id_column, seen)


def _chunk(
    rows: list[dict[str, Any]],
    start: int,
    predictor: Predictor,
    wanted: list[str],
    stats: Stats,
    id_column: str | None,
    seen: set[str],
) -> pd.DataFrame:
    """One chunk's rows as a frame indexed by data row: every column the model reads (a line
    without the key: missing), the id column's values as the lines hold them."""
    if not start:  # the first line's keys the model does not read: reported once
        stats.extra_columns = [k for k in rows[0] if k not in wanted]
    for row in rows:
        seen.update(row)
    frame = records_frame(rows, predictor, id_column)
    frame.index = pd.RangeIndex(start, start + len(rows))
    return frame


def records_frame(
    rows: list[dict[str, Any]], predictor: Predictor, id_column: str | None
) -> pd.DataFrame:
    """JSON objects as the frame the predictor reads: numbers, texts and booleans as pandas
    types them (an absent key: missing), read as a CSV file's cells; the id column as each
    object holds it, unless the model reads it too (then typed as the feature it is). Also
    serve's reading of a JSON body under PIPELINE_RUN__ON_ERROR=column."""
    ids = id_column if id_column is not None and id_column not in predictor.required else None
    features = predictor.required
    frame = pd.DataFrame.from_records(rows, columns=features)
    for name in features:
        frame[name] = cells.without_markers(frame[name], predictor.missing_values)
    if ids is not None:
        frame[ids] = pd.Series([row.get(ids) for row in rows], dtype=object)
    return frame
