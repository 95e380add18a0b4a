"""Input readers: a CSV, Parquet or JSON-lines file as frames of at most ``chunk_rows`` rows.

CSV streams through pyarrow's reader with every column read as text (types are decided per
column from the package's schema, not guessed per block), Parquet by row batches, JSON lines
through pandas. Each frame is indexed by its 0-based data row in the file, which error messages
use. ``prefetched`` reads the next chunk on a thread while the caller predicts this one.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from pipeline.data import cells, columns, csv_errors, read
from pipeline.errors import ConfigError, DataError
from pipeline.predict import headers, jsonlines
from pipeline.settings import RunSettings

if TYPE_CHECKING:
    from pipeline.predict.predictor import Predictor, Stats


def detect_format(path: Path | None, declared: str) -> str:
    """The file format from a declaration or a suffix (csv when writing to stdout)."""
    if declared != "auto":
        return declared
    if path is None:
        return "csv"
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")):
        return "jsonl"
    return "csv"


# Suffixes of formats and compressions that predict does not write: under ``auto`` such a name
# would hold plain CSV while saying otherwise, so it is refused instead.
FOREIGN_OUTPUT = (
    ".xlsx", ".xls", ".xlsm", ".ods", ".feather", ".arrow", ".ipc", ".avro", ".orc", ".h5",
    ".hdf5", ".pkl", ".pickle", ".npy", ".npz", ".tsv", ".gz", ".bz2", ".xz", ".zst", ".zip",
)  # fmt: skip


# Suffixes that name a format predict writes, and the one to suggest for each format.
_OWN_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
_OWN_SUFFIXES_OF = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


def output_format(path: Path | None, declared: str) -> str:
    """``detect_format`` for the file predictions go to; a ``ConfigError`` for a name whose
    suffix says another format (``out.xlsx``, ``out.csv.gz``) when none is declared."""
    suffix = path.suffix.lower() if path is not None else ""
    named = detect_format(path, "auto") if suffix in _OWN_SUFFIXES else None
    if declared != "auto" and named is not None and named != declared:
        # A declared format wins over other names (out.tsv), but not over a name that says
        # another format this tool writes: CSV text in out.parquet fails whoever reads it.
        raise ConfigError(
            f"output {path} is named {suffix}, a {named} file, but PIPELINE_RUN__OUTPUT_FORMAT="
            f"{declared} writes {declared}: name it {_OWN_SUFFIXES_OF[declared]}, or predict "
            "with the format auto (a release fixes it when it is created)"
        )
    if declared == "auto" and suffix in FOREIGN_OUTPUT:
        raise ConfigError(
            f"output {path} is named {suffix}, a format predict does not write (it writes csv, "
            "parquet and jsonl, uncompressed): name it .csv, .parquet or .jsonl, or declare one "
            "of those with PIPELINE_RUN__OUTPUT_FORMAT (a release fixes it when it is created)"
        )
    return detect_format(path, declared)


def is_stream(source: Path) -> bool:
    """Whether ``source`` is stdin (``-``) or a pipe, FIFO or device (``<(zcat rows.csv.gz)``,
    ``/dev/stdin``): read once, front to back, where the readers reopen a file."""
    if str(source) == "-":
        return True
    try:
        return source.exists() and not source.is_file() and not source.is_dir()
    except OSError:
        return False


@contextlib.contextmanager
def spooled(source: Path) -> Iterator[tuple[Path, str, str]]:
    """``source`` as a file the readers can reopen, the name messages give it, and its format.

    A file is itself (its format from its suffix). Stdin or a pipe is copied to a temporary
    file first, in 1 MiB blocks (so predictions start once it ends), and its format comes from
    its name's suffix, else from its first bytes (``_sniffed``: Parquet's magic ``PAR1``, a
    ``{`` for JSON lines, else CSV; gzip read through). The copy goes however the run ends.
    """
    if not is_stream(source):
        yield source, str(source), named_format(source)
        return
    stdin = str(source) == "-"
    label = "stdin" if stdin else str(source)
    if stdin and sys.stdin is not None and sys.stdin.isatty():
        raise DataError(
            "input - is stdin, which is a terminal here: pipe the rows in (cat rows.csv | "
            "pipeline predict -) or pass a file"
        )
    from pipeline import scratch

    # Marked with this process: a copy left by a SIGKILL (an OOM kill, a CI timeout: a whole
    # input's bytes) is swept by the next run, as TemporaryDirectory's was not.
    with scratch.folder("pipeline-input-") as folder:
        copy = Path(folder) / "input"
        reading = open(0 if stdin else source, "rb", closefd=not stdin)  # noqa: SIM115
        try:
            with reading as src, copy.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except OSError as exc:
            raise DataError(f"input {label} cannot be read: {exc.strerror or exc}") from exc
        known = (copy, detect_format(source, "auto")) if source.suffix else None
        copy, fmt = known or _sniffed(copy, label)
        yield copy, label, fmt


def named_format(path: Path) -> str:
    """A file's format from its name; a DataError when its first bytes are another format's
    (Parquet bytes in rows.csv were "not valid UTF-8 text: re-encode it", JSON lines "lacks
    required column(s)" with every column listed)."""
    fmt = detect_format(path, "auto")
    if fmt == "parquet":
        return fmt
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return fmt  # the reader says what is wrong with it
    found = _format_of(head) if not head.startswith(b"\x1f\x8b") else fmt
    if found != fmt and (found == "parquet" or fmt == "csv"):
        what = "Parquet data (it starts with PAR1)" if found == "parquet" else "JSON lines"
        raise DataError(
            f"input {path} is read as {fmt.upper()} by its name, but holds {what}: rename it "
            f"{'.parquet' if found == 'parquet' else '.jsonl'}"
        )
    return fmt


def _sniffed(path: Path, label: str) -> tuple[Path, str]:
    """A nameless input (``spooled``'s copy) and its format, from its first bytes; gzip is
    read through (renamed ``.csv.gz`` / ``.jsonl.gz``, which the readers decompress)."""

    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head.startswith(b"\x1f\x8b"):
        return path, _format_of(head)
    try:
        with gzip.open(path, "rb") as fh:
            fmt = _format_of(fh.read(4096))
    except (OSError, EOFError) as exc:
        raise DataError(f"input {label} is damaged gzip data ({exc}): check the file") from exc
    if fmt == "parquet":
        raise DataError(f"input {label} is gzip-compressed Parquet: decompress it first")
    return path.rename(path.with_name(f"input.{fmt}.gz")), fmt


def _format_of(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    # "[": a JSON array, which the JSON-lines reader refuses saying so (as CSV: columns lacking)
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")) else "csv"


def iter_chunks(
    path: Path,
    fmt: str,
    chunk_rows: int,
    predictor: Predictor,
    run: RunSettings,
    stats: Stats,
    label: str | None = None,
) -> Iterator[pd.DataFrame]:
    """The input as frames of at most ``chunk_rows`` rows, indexed by 0-based data row;
    ``label`` names it in messages (default: its path)."""
    label = str(path) if label is None else label
    headers.check_exists(path, label)
    if not path.is_file():
        raise DataError(
            f"input {path} is not a file: pass the path of a CSV, Parquet or JSON-lines file"
            + (", or --workers N -o FOLDER to predict a folder's files" if path.is_dir() else "")
        )
    wanted = headers.wanted(predictor, run)
    start = 0
    if fmt == "csv":
        header = headers.checked_header(path, predictor, wanted, label)
        stats.extra_columns = [c for c in header if c not in wanted]
        present = [c for c in wanted if c in header]
        batches: Iterator[pa.RecordBatch] = _csv_batches(
            path, label, predictor, present, header[-1]
        )
    elif fmt == "parquet":
        parquet, names = headers.checked_parquet(path, predictor, wanted, label)
        stats.extra_columns = [c for c in names if c not in wanted]
        stored = [c for c in wanted if c in parquet.schema_arrow.names]  # not a range index
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=stored)
    else:
        yield from jsonlines.frames(
            path, label, chunk_rows, predictor, wanted, stats, run.id_column
        )
        return
    # Parquet's text cells get the missing markers a CSV reader applies while parsing.
    markers = predictor.missing_values if fmt == "parquet" else None
    # An id column of integers stays integers (an id the model also reads is read as such).
    ids = run.id_column if fmt == "parquet" and run.id_column not in predictor.required else None
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            head, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
            yield _frame(head, start, markers, ids, label)
            start += head.num_rows
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield _frame(pa.Table.from_batches(pending), start, markers, ids, label)


_BLOCK = 1 << 22  # the CSV parser's block: the longest line predict reads (4 MiB)


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
        # No invalid_row_handler: a Python callback in the parser made pyarrow 26 abort the
        # process at exit ("terminate called"). csv_errors.parse_error finds the bad line itself.
        options = cells.csv_options(
            delimiter, predictor.missing_values, text_columns=columns, block_size=_BLOCK
        )
        reader = pacsv.open_csv(path, **options)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            rows += batch.num_rows
            if batch.num_rows and csv_errors.last_row_swallowed(batch.select([last]), path):
                raise DataError(
                    f"input {label} has an unterminated quote in column '{last}' at data row "
                    f"{rows}: the quoted field runs on to the end of the file; close the quote, "
                    "or escape a literal quote by doubling it"
                )
            yield batch if last in present else batch.select(present)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise csv_errors.parse_error(
            exc, path, f"input {label}", delimiter, advice, _BLOCK
        ) from exc


def _frame(
    table: pa.Table,
    start: int,
    markers: list[str] | None = None,
    ids: str | None = None,
    label: str = "",
) -> pd.DataFrame:
    """One chunk as a frame indexed by data row; a Parquet chunk's columns made plain first
    (``columns.plain``: decimals as numbers, dictionaries decoded, missing markers null). An
    integer ``ids`` column becomes pandas' nullable integers: ``to_pandas`` made it float64
    in a chunk with a missing id, which rounded 9007199254740993 to 9007199254740992 (and the
    output's ids then depended on PIPELINE_RUN__CHUNK_ROWS)."""
    table = read.without_pandas_index(table, start)  # a named index: a column, as in training
    if markers is not None:
        table, bad = columns.plain(table, markers)
        for name, what in bad:
            if what == columns.NOT_UTF8:
                raise DataError(
                    f"input {label} is not valid UTF-8 text (column '{name}', rows {start + 1} "
                    f"to {start + table.num_rows}): re-encode the column's text as UTF-8"
                )
    frame = table.to_pandas()
    if ids is not None and ids in table.column_names and pa.types.is_integer(table[ids].type):
        frame[ids] = table[ids].to_pandas(types_mapper=_NULLABLE.get)
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame


# Arrow's integer types as pandas' nullable ones (exact, with a missing value).
_NULLABLE = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
}  # fmt: skip


def prefetched(chunks: Iterator[pd.DataFrame]) -> Generator[pd.DataFrame, None, None]:
    """``chunks`` in order, the next one read on a thread while the caller works on this one
    (parsing releases the GIL: reading chunk k+1 hides behind predicting chunk k). One chunk
    ahead at most; a reader's exception reaches the caller at the chunk where it happened."""
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
        # Wait for the chunk being read (at most one): a process that exits while this thread
        # is inside Arrow (``to_pandas``) can hang in Arrow's thread-pool shutdown for good
        # (5-15% of runs that stopped on a bad cell or a SIGTERM). A second signal (Ctrl-C
        # twice; `timeout` forwarding its TERM) must not cut the wait short for that reason:
        # the exception on its way out is the first one.
        while worker.is_alive():
            try:
                worker.join(0.1)
            except KeyboardInterrupt:
                continue
