"""Output writers: prediction frames appended to a temporary file, renamed into place at the end.

A failed run leaves no partial output (``abort`` removes the temporary file); without a path
the predictions go to stdout. CSV and Parquet are written by pyarrow with the first chunk's
schema imposed on later chunks, JSON lines by pandas.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa


class Writer:
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
