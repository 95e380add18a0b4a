"""Output writers: prediction frames appended to a temporary file, renamed into place at the end.

A failed run leaves no partial output (``abort`` removes the temporary file); without a path
the predictions go to stdout. CSV and Parquet are written by pyarrow with one schema for the
whole file: each column's type is that of the first chunk where it holds a value (a chunk whose
id column is all missing waits for one that is not), imposed on every chunk; a value of
another type is a ``DataError``. Parquet row groups hold ``ROW_GROUP`` rows whatever the
chunks, so the bytes do not follow PIPELINE_RUN__CHUNK_ROWS. JSON lines are written by
``json_lines`` (floats in their shortest exact spelling, as `pipeline serve` writes them).

A run killed with SIGKILL cannot remove its temporary file, so the file is held under an
exclusive ``flock`` for as long as it exists: the kernel drops the lock when its process dies,
however it dies. The next run writing the same output removes that output's temporary files
whose lock it can take (``sweep``); a locked one belongs to a run at work and is left alone.
A lock, unlike a PID in the name, cannot be mistaken across containers sharing a volume or
after the PID is reused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa

from pipeline.errors import DataError, OutputClosed, PipelineError
from pipeline.store import fsync_dir, open_stream, output_target, store_error

ROW_GROUP = 65_536  # rows per Parquet row group
HOLD_ROWS = 1_000_000  # rows held while a column is still all missing; then it is text


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` that ``sweep`` recognises as ``path``'s."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _temp_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{32}}\.tmp")


def sweep(path: Path) -> list[Path]:
    """Remove the temporary files of output ``path`` that killed runs left; return them."""
    pattern = _temp_pattern(path)
    try:
        found = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []  # no folder yet: nothing was left there
    return [p for p in found if _abandoned(p)]


def _abandoned(tmp: Path) -> bool:
    """Remove ``tmp`` (a file, or the staging folder of a distributed run) if no live process
    holds its lock; whether it was removed."""
    import fcntl
    import shutil

    folder = tmp.is_dir() and not tmp.is_symlink()
    try:
        fd = os.open(tmp, (os.O_RDONLY | os.O_DIRECTORY if folder else os.O_RDWR) | os.O_NOFOLLOW)
    except OSError:
        return False  # gone already, or not ours to open
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if folder:
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
        return True
    except OSError:
        return False  # locked: a run at work writes it
    finally:
        os.close(fd)


class Writer:
    """Appends prediction chunks to a temporary file, renamed into place on ``commit``."""

    def __init__(self, path: Path | None, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        # A device or stream (``-o /dev/stdout``) is written straight through; a link to a
        # file is followed, its target replaced (``output_target``).
        self.stream = False
        if path is not None:
            self.path, self.stream = output_target(path)
        self.tmp: Path | None = None
        self._lock: int | None = None  # holds the temporary file's flock until it is renamed
        self._handle: BinaryIO | None = None
        self._arrow: Any = None
        self._schema: pa.Schema | None = None  # the file's (see the module docstring)
        self._held: list[pa.Table] = []  # chunks before the schema is known
        self._made: list[Path] = []  # folders made for the output (``_open_temp``)
        self._group: list[pa.Table] = []  # Parquet rows not yet in a row group
        self._kinds: dict[str, type] = {}  # a mixed column's kind, from its first value

    def _error(self, exc: OSError) -> PipelineError:
        if exc.errno == errno.EPIPE and self.path is None:
            return OutputClosed(
                "stdout was closed before every prediction was written (its reader, such as "
                "`head`, stopped reading): the output is cut short"
            )
        fix = "free space or choose" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "choose"
        return store_error(exc, self.path or "stdout", f"{fix} another -o path")

    def _open_temp(self, path: Path) -> BinaryIO:
        """A new temporary file beside ``path``, locked; stale ones of ``path`` are swept."""
        import fcntl

        # The folders made for it, deepest first: a failed run removes them again.
        self._made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where a folder should be
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path.parent)) from None
        sweep(path)
        while True:
            tmp = temp_name(path)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while another run's sweep looks at it
            if os.fstat(fd).st_nlink:
                self.tmp, self._lock = tmp, fd
                return os.fdopen(os.dup(fd), "wb")
            os.close(fd)  # swept between its creation and the lock: take another name

    @property
    def streamed_to(self) -> str | None:
        """Where predictions have gone already that cannot be taken back: stdout, or a device or
        pipe written straight through (``-o /dev/stdout``); None if nowhere such."""
        if self._handle is None or not (self.path is None or self.stream):
            return None
        return "stdout" if self.path is None else str(self.path)

    def _sink(self) -> BinaryIO:
        if self._handle is None:
            if self.path is None:
                self._handle = sys.stdout.buffer
            elif self.stream:
                self._handle = open_stream(self.path)
            else:
                self._handle = self._open_temp(self.path)
        return self._handle

    def write(self, frame: pd.DataFrame) -> None:
        try:
            self._write(frame)
        except OSError as exc:
            raise self._error(exc) from exc

    def _write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "jsonl":
            self._sink().write(json_lines(frame))
            return
        table = _arrow_table(self._one_kind(frame))
        if self._schema is not None:
            return self._emit(table)
        self._held.append(table)
        held = sum(t.num_rows for t in self._held)
        if held < HOLD_ROWS and any(pa.types.is_null(f.type) for f in table.schema):
            return None  # a column all missing so far: its type comes with a later chunk
        self._settle(text=True)
        return None

    def _one_kind(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with each column of Python values (an id column read from JSON lines)
        of one kind, the kind of the column's first value in the file: all text if that was
        text (a number written as JSON spells it), all numbers if it was a number (whole
        ones while every id so far was whole). Decided by the values, never by the chunk: a
        chunk of ids ``1461, 3.5`` was written as floats, the same ids in chunks of one
        failed (PIPELINE_RUN__CHUNK_ROWS). A value of another kind is a ``DataError`` naming
        its row."""
        out = frame
        for name in frame.columns:
            typed = _typed_kind(frame[name].dtype)
            if typed is not None:  # a typed chunk (pandas' own str, int64, float64, bool)
                if name not in self._kinds and frame[name].notna().any():
                    self._kinds[name] = typed  # the first value's kind, as for Python values
                known = self._kinds.get(name, typed)
                if known is typed or (known is float and typed is int):
                    continue  # else: values in a column of another kind, judged below
            inferred = pd.api.types.infer_dtype(frame[name], skipna=True)
            if inferred == "string" and self._kinds.setdefault(name, str) is str:
                continue  # text throughout (class labels, errors): as it is, at C speed
            values = [_plain(v) for v in frame[name].tolist()]
            first = next((v for v in values if v is not None), None)
            if first is None and name not in self._kinds:
                continue
            kind = self._kinds.setdefault(name, _kind(first))
            fixed = [None if v is None else _as_kind(v, kind) for v in values]
            bad = next((i for i, v in enumerate(fixed) if v is _WRONG), None)
            if bad is not None:
                raise DataError(
                    f"output column '{name}' holds {values[bad]!r} at data row "
                    f"{int(frame.index[bad]) + 1}, where earlier rows held {kind.__name__} "
                    f"values: {self.fmt} needs one kind per column; write JSON lines (-o "
                    "x.jsonl), which keeps each value as it is"
                )
            if out is frame:
                out = frame.copy()
            out[name] = pd.Series(fixed, index=frame.index, dtype=object)
        return out

    def follow(self, frame: pd.DataFrame, column: str | None) -> None:
        """Take the kind ``frame``'s ``column`` gives, as writing it would, without writing:
        the chunks of one file that other workers write (`predict --workers`), so that each
        part's writer starts from the file's kinds (``kinds_of``). A value of another kind is
        left to the chunk's own writer to refuse."""
        if column is not None and column in frame.columns:
            with contextlib.suppress(DataError):
                self._one_kind(frame[[column]])

    def kinds_of(self, other: Writer) -> Writer:
        """This writer, starting from ``other``'s kinds (the chunks before its first)."""
        self._kinds = dict(other._kinds)
        return self

    def _settle(self, text: bool) -> None:
        """Fix the schema from the held chunks and write them: each column's first type
        that is not null; a column missing throughout is text (``text``) or stays null."""
        fields = []
        for i, field in enumerate(self._held[0].schema):
            found = (t.schema.field(i).type for t in self._held)
            kind = next((k for k in found if not pa.types.is_null(k)), None)
            fields.append(field.with_type(kind or (pa.large_string() if text else pa.null())))
        self._schema = pa.schema(fields)
        held, self._held = self._held, []
        for table in held:
            self._emit(table)

    def _emit(self, table: pa.Table) -> None:
        assert self._schema is not None
        if self._arrow is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._arrow = pq.ParquetWriter(self._sink(), self._schema)
            else:
                import pyarrow.csv as pacsv

                options = pacsv.WriteOptions(quoting_style="needed")
                self._arrow = pacsv.CSVWriter(self._sink(), self._schema, write_options=options)
        table = _cast(table, self._schema)
        if self.fmt != "parquet":
            self._arrow.write_table(table)
            return
        self._group.append(table)
        while sum(t.num_rows for t in self._group) >= ROW_GROUP:
            rows = pa.concat_tables(self._group)
            self._arrow.write_table(rows.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
            self._group = [rows.slice(ROW_GROUP)]

    def commit(self) -> None:
        try:
            if self._held:  # every chunk held: the columns still missing stay so
                self._settle(text=False)
            rest = [t for t in self._group if t.num_rows]
            if rest:
                self._arrow.write_table(pa.concat_tables(rest), row_group_size=ROW_GROUP)
            handle = self._sink()  # no rows at all: still produce an (empty) file
            if self._arrow is not None:
                self._arrow.close()
            handle.flush()
            if self.stream:
                handle.close()
            if self.tmp is not None and self.path is not None:
                os.fsync(handle.fileno())
                handle.close()
                self.tmp.replace(self.path)
                fsync_dir(self.path.parent)
                self._unlock()
        except OSError as exc:
            raise self._error(exc) from exc

    def abort(self) -> None:
        if self._arrow is not None and hasattr(self._arrow, "is_open"):
            # A ParquetWriter left open writes its footer when collected, into the closed
            # file: "Exception ignored in ParquetWriter.__del__" and a traceback after the error.
            self._arrow.is_open = False
        if self.stream and self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
        if self.tmp is not None:
            if self._handle is not None and not self._handle.closed:
                with contextlib.suppress(OSError):  # a full disk fails the last flush too
                    self._handle.close()
            self.tmp.unlink(missing_ok=True)
        for folder in self._made:  # `-o new/sub/x.csv`: no empty new/sub left by a failure
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table; a column mixing kinds (an id column of strings and
    numbers, read from JSON lines) is written as text. Text is always ``large_string``:
    pandas' own string columns convert to it and columns of Python strings to ``string``, so
    the first chunk's kind of column chose the file's type (chunks of one row, another file)."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        mixed = frame.copy()
        for name in [c for c in mixed.columns if mixed[c].dtype.kind == "O"]:
            mixed[name] = [None if _plain(v) is None else _text(v) for v in mixed[name]]
        table = pa.Table.from_pandas(mixed, preserve_index=False)
    if not any(pa.types.is_string(f.type) for f in table.schema):
        return table
    large = [
        f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(large, metadata=table.schema.metadata))


_WRONG = object()  # a value that is not of its column's kind (``Writer._one_kind``)


def _kind(value: Any) -> type:
    """The kind a column of Python values takes from its first value."""
    if isinstance(value, bool):
        return bool
    return int if isinstance(value, int) else float if isinstance(value, float) else str


def _typed_kind(dtype: Any) -> type | None:
    """The kind of a column of a typed dtype; None for object (Python values) and others."""
    if pd.api.types.is_object_dtype(dtype):
        return None
    for test, kind in (
        (pd.api.types.is_bool_dtype, bool),
        (pd.api.types.is_integer_dtype, int),
        (pd.api.types.is_float_dtype, float),
        (pd.api.types.is_string_dtype, str),
    ):
        if test(dtype):
            return kind
    return None


def _as_kind(value: Any, kind: type) -> Any:
    """``value`` as ``kind``, or ``_WRONG``: text takes anything (a number as JSON spells it),
    a float column takes whole numbers as floats, other kinds only their own values."""
    if kind is str:
        return value if isinstance(value, str) else _text(value)
    if isinstance(value, bool | str):
        return value if kind is bool and isinstance(value, bool) else _WRONG
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value if isinstance(value, kind) else _WRONG


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in the file's ``schema``; DataError naming a column whose values changed type
    (the first chunk's ids numbers, a later chunk's text)."""
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        for field, before in zip(table.schema, schema, strict=True):
            if field.type != before.type:
                raise DataError(
                    f"output column '{field.name}' held {before.type} values in earlier rows "
                    f"and {field.type} values later: give the column values of one kind (an "
                    "id column all text or all numbers), or write JSON lines"
                ) from None
        raise


def json_lines(frame: pd.DataFrame) -> bytes:
    """``frame`` as JSON lines, one object per row in column order. A float is written as
    Python (and `pipeline serve`) spell it, the shortest text that reads back to the same
    bits: ``pandas.to_json`` kept 10 significant digits. Missing values and non-finite floats
    are ``null``."""
    keys = [json.dumps(str(name)) + ":" for name in frame.columns]
    columns = [_json_cells(frame.iloc[:, j]) for j in range(frame.shape[1])]
    rows = (
        "{" + ",".join(map(str.__add__, keys, cells)) + "}\n"
        for cells in zip(*columns, strict=True)
    )
    return "".join(rows).encode()


def _json_cells(series: pd.Series) -> list[str]:
    import numpy as np

    if isinstance(series.dtype, pd.Int64Dtype):  # whole ids with missing ones: no "100.0"
        return ["null" if v is pd.NA else str(v) for v in series.astype(object).tolist()]
    values = series.to_numpy()
    if values.dtype.kind == "f":
        cells = list(map(repr, values.astype(np.float64).tolist()))
        for i in np.flatnonzero(~np.isfinite(values)):
            cells[i] = "null"
        return cells
    if values.dtype.kind in "iu":
        return list(map(str, values.tolist()))
    return [
        json.dumps(v if isinstance(v, dict | list) else _plain(v), separators=(",", ":"))
        for v in series.astype(object).tolist()
    ]  # an id that is a JSON object or array (echoed under on_error=column) as it was


def _plain(value: Any) -> Any:
    """A cell as a JSON-able Python value: missing as ``None``, numpy scalars as Python's, a
    JSON object or array as its JSON text (it was Python's repr: ``{'a': [1, 2]}``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value if isinstance(value, str | int | float | bool) else str(value)
