"""JSON-lines input for `pipeline predict`: a file of one JSON object per line as frames of at
most ``chunk_rows`` rows, its cells read as the CSV reader reads them, and the one-line error
that names the first line that cannot be read."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.data import cells
from pipeline.errors import DataError

if TYPE_CHECKING:
    from pipeline.predict.predictor import Predictor, Stats


def _error(path: Path, label: str) -> DataError:
    """The first line of a JSON-lines file that is not one JSON object, as an error."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
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
                except (RecursionError, ValueError) as exc:  # nesting; a 5,000-digit number
                    why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
                    if "digits" in why:  # Python's advice (set_int_max_str_digits) is not ours
                        why = "a number of over 4,300 digits"
                    return DataError(
                        f"input {label} line {number} cannot be read as JSON ({why[:120]}): fix "
                        "the line; every line must be one JSON object of column names to values"
                    )
                if not isinstance(value, dict):
                    return DataError(
                        f"input {label} line {number} is a JSON {type(value).__name__}, not an "
                        "object: fix the line; every line must be one JSON object of column "
                        "names to values"
                    )
                huge = [k for k, v in value.items() if _beyond_64_bits(v)]
                if huge:  # pandas' reader refuses them whole: name the line and the column
                    return DataError(
                        f"input {label} line {number} column '{huge[0]}' holds a number beyond "
                        "64 bits (1e999, Infinity, or a 20-digit integer): fix the line"
                    )
    except UnicodeDecodeError:
        return DataError(f"input {label} is not valid UTF-8 text: re-encode it as UTF-8")
    return DataError(
        f"input {label} cannot be read as JSON lines: check that every line is one JSON object "
        "with the same kind of value in each column"
    )


def _beyond_64_bits(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63


def refuse_json_array(path: Path, label: str) -> None:
    """A ``DataError`` for a file that holds one JSON array rather than JSON lines, or blank
    lines only: read as lines, either was rows of unnamed columns or of none, reported as every
    model column missing."""
    with path.open("rb") as fh:
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
    """A JSON-lines file as frames, its cells read as the CSV reader reads them: values as
    JSON has them (``dtype=False``: no column becomes numbers or dates by its looks or name),
    decimals parsed exactly (``precise_float``), a missing marker's spelling missing. The id
    column's whole numbers stay whole (``whole_ids``)."""
    refuse_json_array(path, label)
    start = 0
    try:
        frames = pd.read_json(
            path,
            lines=True,
            chunksize=chunk_rows,
            encoding="utf-8-sig",  # a byte order mark is stripped, as a CSV file's
            dtype=False,  # pandas 3: no column becomes dates for its name either
            precise_float=True,
        )
        for frame in frames:
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            if not stats.extra_columns:
                stats.extra_columns = [c for c in frame.columns if c not in wanted]
            for name in [c for c in wanted if c in frame.columns]:
                frame[name] = cells.without_markers(frame[name], predictor.missing_values)
            if id_column is not None and id_column in frame.columns:
                frame[id_column] = whole_ids(frame[id_column])
            yield frame
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise _error(path, label) from exc


# Whole floats at most this large are exact integers (2^53).
_EXACT = 2.0**53


def whole_ids(ids: pd.Series) -> pd.Series:
    """An id column of whole numbers as integers (nullable ``Int64``), whatever else the chunk
    holds; other columns as they are.

    pandas reads a chunk of integer ids as int64, but as float64 (``100.0``) once one id in
    the chunk is missing, so the output's ids changed with ``PIPELINE_RUN__CHUNK_ROWS``
    (``100`` or ``100.0`` in JSON lines, another Parquet type). JSON has one kind of number:
    ``100.0`` is ``100``.
    """
    import numpy as np

    if ids.dtype != np.float64:
        return ids
    values = ids.to_numpy()
    present = values[~np.isnan(values)]
    if not len(present) or not (
        np.all(np.floor(present) == present) and np.all(np.abs(present) <= _EXACT)
    ):
        return ids
    return ids.astype("Int64")
