"""Column at a time: views that hand a frame over one column at a time, a row-major array
written from columns, an ordered thread map over columns, and a float column read a block at
a time (``Floats``).

``fit`` reads the training rows through ``RowsOf`` and ``transform`` reads a frame through
``Consumed``, so only one column's copy is alive at a time; ``in_threads`` works on several
columns at once where the memory allows (``threads_for``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from pipeline.features.numeric import as_numbers

_T = TypeVar("_T")
_R = TypeVar("_R")

# Staging for write_columns: at most this many bytes, copied out this many rows at a time.
_STAGE_BYTES = 64 << 20
_BLOCK_ROWS = 16384


def write_columns(out: np.ndarray, first: int, columns: Iterator[np.ndarray]) -> None:
    """Write ``columns`` (each [N]) into ``out[:, first:]`` in order, cast to ``out``'s dtype.

    Writing one column of a row-major array touches a cache line per value; a few columns
    staged side by side and copied out in row blocks fill each line at once (5x faster at 1M
    rows). The stage holds as many columns as fit in ``_STAGE_BYTES``, at least one.
    """
    n, width = out.shape
    if width == 0:
        return
    stage = np.empty((max(1, min(width, _STAGE_BYTES // max(1, n * out.itemsize))), n), out.dtype)
    used = 0

    def flush() -> None:
        for start in range(0, n, _BLOCK_ROWS):
            block = slice(start, start + _BLOCK_ROWS)
            out[block, first : first + used] = stage[:used, block].T

    for column in columns:
        stage[used] = column
        used += 1
        if used == len(stage):
            flush()
            first, used = first + used, 0
    if used:
        flush()


class RowsOf(Mapping[str, "pd.Series"]):
    """Some rows of a frame, a column at a time: ``fit`` reads each column of the training rows
    once, so a copy of one column is made at a time rather than of the whole frame."""

    def __init__(self, frame: pd.DataFrame, rows: np.ndarray) -> None:
        self.frame, self.rows = frame, rows
        self._index: pd.Index | None = None

    def __getitem__(self, name: str) -> pd.Series:
        column = self.frame[name]
        if not (isinstance(column.dtype, np.dtype) and column.dtype.kind in "biuf"):
            return column.take(self.rows)
        # A numpy column: its values taken with numpy and one index for every column (the
        # rows' labels name a bad row in errors), 4x faster than ``Series.take``.
        if self._index is None:
            self._index = self.frame.index.take(self.rows)
        values = column.to_numpy()[self.rows]
        return pd.Series(values, index=self._index, name=column.name, copy=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame.columns)


class Consumed(Mapping[str, "pd.Series"]):
    """A frame's columns, each let go as it is read: ``transform`` reads each column once, so
    the data's memory goes back column by column while the arrays fill up. The caller drops
    its own references to the frame (the columns here keep the data alive until read).

    A column read from Parquet may live in Arrow's memory pool, which keeps freed pages for
    reuse: it is told to hand them back to the system at each read (the previous column is
    gone by then) and at ``release``."""

    def __init__(self, frame: pd.DataFrame) -> None:
        # A dict, not the frame: taking a column out of a frame of C columns costs O(C).
        self.columns = {name: frame[name] for name in frame.columns}

    def __getitem__(self, name: str) -> pd.Series:
        self.release()
        return self.columns.pop(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    @staticmethod
    def release() -> None:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()


# Column work in flight at once holds at most about this many bytes of float64 temporaries
# (a column's arithmetic makes about 6 of them): at 10M rows one column at a time, as before.
_THREAD_BYTES = 256 << 20


def threads_for(rows: int) -> int:
    """Columns worked on at once: one per available core, fewer for long columns."""
    by_memory = _THREAD_BYTES // max(1, rows * 8 * 6)
    return max(1, min(len(os.sched_getaffinity(0)), by_memory))


def in_threads(fn: Callable[[_T], _R], items: Iterable[_T], threads: int) -> Iterator[_R]:
    """``map(fn, items)`` in order, with up to ``threads`` calls running at once in threads
    (numpy's array operations let go of the GIL). ``items`` is drawn in the calling thread, one
    ahead of each call started (pandas is read from one thread only), and an error is raised
    where ``map`` would raise it: the first item's in order, so a bad cell is reported as
    before."""
    if threads <= 1:
        yield from map(fn, items)
        return
    import collections
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: collections.deque[Future[_R]] = collections.deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="columns") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@dataclass(frozen=True)
class Floats:
    """A numeric column's values as ``as_numbers`` gives them, a block at a time: a column
    that holds floats already is read where it lies, each block made float64 (and its
    infinities refused) as it is encoded, where ``as_numbers`` copied the whole column first
    (8 MB a column at 1M rows, 80 MB at 10M, all of it memory the process had to fault in)."""

    values: np.ndarray  # float64 from ``as_numbers``, or the column's own float32/float64
    series: pd.Series
    name: str
    label: str
    checked: bool  # ``values`` come from ``as_numbers``, which has refused infinities

    def block(self, rows: slice) -> np.ndarray:
        """Rows ``rows`` as a float64 [rows, 1] array (not to be written to)."""
        x = self.values[rows].astype(np.float64, copy=False)
        if not self.checked and np.isinf(x).any():
            as_numbers(self.series, self.name, self.label)  # its error, naming the first row
        return x[:, None]

    def __len__(self) -> int:
        return len(self.values)


def floats_of(series: pd.Series, name: str, label: str) -> Floats:
    """``series``' values, read where they lie when it holds floats."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype in (np.float32, np.float64):
        return Floats(series.to_numpy(), series, name, label, checked=False)
    return Floats(as_numbers(series, name, label), series, name, label, checked=True)
