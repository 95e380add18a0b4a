"""Reading a dataset file (CSV or Parquet) into a pandas frame through pyarrow.

Every failure becomes a ``DataError`` naming the file and, where it applies, the column and line.
Files that are plainly not a table (compressed, zipped, binary, UTF-16, an HTML page) are told
apart by their first bytes before any parser sees them, so the message says what the file is
instead of repeating a parser's complaint about its bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# ``printable`` is re-exported: predict shows values through ``read.printable``.
from pipeline.data import verdicts
from pipeline.data.cells import csv_options
from pipeline.data.cells import printable as printable
from pipeline.data.csv_errors import first_line, is_blank, last_row_swallowed, not_utf8, parse_error
from pipeline.errors import DataError
from pipeline.settings import DataSettings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_GZIP = b"\x1f\x8b"
_PARQUET = b"PAR1"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_UTF16 = (b"\xff\xfe", b"\xfe\xff")
_HTML = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")
_BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 4096
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


def sniff(path: Path, label: str, setting: str = "PIPELINE_DATA__SOURCE") -> bytes:
    """The first bytes of ``path``; a ``DataError`` when they show it is not a table's text.

    Parquet files pass (their magic is checked by the caller); gzip passes when the name ends in
    ``.gz`` (pyarrow decompresses it by its suffix). ``setting`` is what the user changes to
    point at another file.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except IsADirectoryError:
        raise DataError(
            f"{label} is a directory, not a file: point {setting} at a CSV or Parquet file"
        ) from None
    except OSError as exc:
        raise DataError(
            f"{label} cannot be read: {exc.strerror or exc}; check the file and its permissions"
        ) from exc
    if head.startswith(_PARQUET):
        return head
    if head.startswith(_GZIP):
        if path.name.lower().endswith(".gz"):
            return head
        raise DataError(
            f"{label} is gzip-compressed but not named .gz: decompress it, or rename it to "
            f"{path.name}.gz"
        )
    if head.startswith(_ZIP):
        raise DataError(
            f"{label} is a zip archive (an Excel workbook or a zipped CSV?), not CSV text: "
            "unzip it, or export the sheet as CSV"
        )
    if head.startswith(_UTF16):
        raise DataError(f"{label} is UTF-16 text: re-encode it as UTF-8 (save as 'CSV UTF-8')")
    if b"\x00" in head:
        raise DataError(
            f"{label} holds binary data (NUL bytes in its first {len(head)} bytes), not CSV "
            f"text: check {setting} and that the file is CSV or Parquet"
        )
    text = head.removeprefix(_BOM).lstrip().lower()
    if text.startswith(_HTML):
        raise DataError(
            f"{label} is an HTML or XML page, not CSV (a login or error page saved under a data "
            "file's name?): download the data file itself"
        )
    return head


def detect_format(path: Path, declared: str = "auto", label: str | None = None) -> str:
    """``csv`` or ``parquet``: the declared format, else the magic bytes, else the suffix."""
    shown = label or str(path)
    head = sniff(path, f"dataset {shown}")
    if declared == "csv" and head.startswith(_PARQUET):  # parsed as text, it was binary noise
        raise DataError(
            f"dataset {shown} is a Parquet file, but PIPELINE_DATA__FORMAT=csv: set it to "
            "parquet, or to auto (the file's first bytes decide)"
        )
    if declared != "auto":
        return declared
    if head.startswith(_PARQUET):
        return "parquet"
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        raise DataError(
            f"dataset {shown} is named {suffix} but is not Parquet (no PAR1 header): convert it "
            "to Parquet, or rename it to .csv if it is CSV"
        )
    if suffix in JSON_SUFFIXES:
        raise DataError(
            f"dataset {shown} is JSON; training reads CSV or Parquet: convert it (pandas: "
            "read_json(lines=True).to_parquet(...)) and point PIPELINE_DATA__SOURCE at the result"
        )
    return "csv"


def _read_csv(
    path: Path, data: DataSettings, shown: str, columns: list[str] | None = None
) -> pa.Table:
    """The CSV file as a table; columns declared categorical (``declared_text``) are read as
    text, and columns pyarrow read as dates or times are read again as text.

    A date is kept as the file spells it (``01/15/2003`` and ``2003-01-15`` alike): schema
    inference judges both by one rule, and a column declared categorical then holds the text
    that `pipeline predict` reads from a CSV file, not pyarrow's rendering of a timestamp.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    options = csv_options(data.delimiter, data.missing_values)
    if columns is not None:
        options["convert_options"].include_columns = columns
    text = {name: pa.string() for name in declared_text(data)}
    options["convert_options"].column_types = text
    try:
        table = pacsv.read_csv(path, **options)
        dropped = set(data.drop)
        dates = [
            f.name for f in table.schema if pa.types.is_temporal(f.type) and f.name not in dropped
        ]
        again = dates + _zero_padded(path, table, data, dropped)
        if again:
            text |= {name: pa.string() for name in again}
            options["convert_options"].column_types = text
            table = pacsv.read_csv(path, **options)
        return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise parse_error(exc, path, f"dataset {shown}", data.delimiter) from exc


# Bytes of a CSV file's start that ``_zero_padded`` looks at.
_SAMPLE_BYTES = 1 << 20


def _zero_padded(path: Path, table: pa.Table, data: DataSettings, dropped: set[str]) -> list[str]:
    """Integer columns that the file's first MiB writes with a leading zero (``02134``): read
    as text, schema inference sees the zeros and says so (``verdicts.zero_padded``); pyarrow
    read them as numbers, the zeros gone. A start that does not parse is no evidence."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    skip = dropped | set(data.column_kinds)  # a declared kind is the user's word already
    ints = [f.name for f in table.schema if pa.types.is_integer(f.type) and f.name not in skip]
    if not ints or len(set(table.column_names)) < table.num_columns:  # duplicates: refused later
        return []
    with pa.input_stream(str(path), compression="detect") as stream:
        head = stream.read(_SAMPLE_BYTES)
    if len(head) == _SAMPLE_BYTES:  # whole lines only
        head = head[: head.rfind(b"\n") + 1]
    options = csv_options(data.delimiter, data.missing_values, text_columns=ints)
    try:
        sample = pacsv.read_csv(pa.BufferReader(head), **options)
    except (pa.ArrowException, ValueError):
        return []
    pattern = verdicts.ZERO_PADDED
    return [n for n in ints if pc.any(pc.match_substring_regex(sample[n], pattern)).as_py()]


def declared_text(data: DataSettings) -> list[str]:
    """The columns a CSV file's text is kept for, as `pipeline predict` reads them: those
    declared categorical, and the target of a declared classification task. Inferred as
    numbers, ``00501`` was the category ``501`` (predict's ``00501`` then unknown) and ``1.10``
    the class ``1.1``."""
    text = [name for name, kind in data.column_kinds.items() if kind == "categorical"]
    return text + ([data.target] if data.task in ("binary", "multiclass") else [])


def _read_parquet(
    path: Path, shown: str, columns: list[str] | None = None, drop: Sequence[str] = ()
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer reads every column chunk's bytes before decoding (a win on object stores,
        # nothing on a local disk) and holds them all at once: 2x the table at the peak.
        table = pq.read_table(
            path, columns=columns, pre_buffer=False, read_dictionary=_dictionary_text(path, drop)
        )
        return without_pandas_index(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        try:  # a sound file whose columns share a name: "Multiple matches for FieldRef"
            names = list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
            names = []
        _unique(names, shown)
        raise DataError(
            f"dataset {shown} is not a readable Parquet file ({first_line(exc)}): it may be "
            "truncated or damaged; write it again"
        ) from exc


def _dictionary_text(path: Path, drop: Sequence[str] = ()) -> list[str]:
    """The text columns of a Parquet file that every row group stores dictionary-encoded,
    but those to be dropped (left as the file holds them: a dictionary would become a
    pandas categorical, its values Python text, which bytes that are not UTF-8 cannot be).

    Read as Arrow dictionaries, their values are decoded once per distinct value instead of
    once per cell (1M rows x 5 such columns: 20 ms against 100), and missing markers are
    looked for among the distinct values (``columns.plain``, which then decodes them). A
    column written without a dictionary is read as text: encoding it would hash every cell.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return []  # not a readable file: read_table says so, in its own words
    schema = meta.schema
    text = [  # top-level text columns (a struct's fields are refused later anyway)
        j for j in range(meta.num_columns)
        if schema.column(j).logical_type.type == "STRING"
        and schema.column(j).path == schema.column(j).name
    ]  # fmt: skip
    return [
        schema.column(j).path
        for j in text
        if schema.column(j).path not in drop
        and all(meta.row_group(g).column(j).has_dictionary_page for g in range(meta.num_row_groups))
    ]


_UNNAMED_INDEX = re.compile(r"__index_level_\d+__")


def pandas_index(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` that hold a pandas index without a name (``df.to_parquet()``
    of a frame whose index is not 0, 1, 2...): row labels, not data, as pandas reads them."""
    meta = schema.pandas_metadata or {}
    index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    return [c for c in index if _UNNAMED_INDEX.fullmatch(c) and c in schema.names]


def without_pandas_index(table: pa.Table, offset: int = 0) -> pa.Table:
    """``table`` whose pandas metadata no longer makes the frame's index of anything: a named
    index (``df.set_index("x2").to_parquet()``) is a column like any other, as the file holds
    it (``to_pandas`` made it the index, and training lost it without a word), a named range
    index (consecutive ids: only in the metadata) too, its values from row ``offset`` of the
    file on; an unnamed one is left out, as pandas leaves it out of the columns. Without the
    metadata's index, ``to_pandas`` numbers the rows from 0 (a range index from 5 had shifted
    predict's ids by 5 rows)."""
    import numpy as np
    import pyarrow as pa

    meta = table.schema.pandas_metadata or {}
    index = meta.get("index_columns", [])
    default = len(index) == 1 and isinstance(index[0], dict) and index[0].items() >= _DEFAULT_RANGE
    if not index or default:
        return table
    table = table.drop_columns(pandas_index(table.schema)).replace_schema_metadata(None)
    for named in _named_ranges(index, table.column_names):
        rows = offset + np.arange(table.num_rows, dtype=np.int64)
        values = named["start"] + named["step"] * rows
        table = table.append_column(named["name"], pa.array(values, type=pa.int64()))
    return table


# pandas' metadata for a frame's default index: 0, 1, 2, ... without a name.
_DEFAULT_RANGE = {"kind": "range", "name": None, "start": 0, "step": 1}.items()


def _named_ranges(index: list[Any], names: list[str]) -> list[dict[str, Any]]:
    """The named range indexes of pandas metadata ``index`` that ``names`` lacks."""
    return [
        c for c in index if isinstance(c, dict) and c.get("kind") == "range"
        and isinstance(c.get("name"), str) and c["name"] not in names
    ]  # fmt: skip


def index_names(schema: pa.Schema) -> list[str]:
    """The columns ``without_pandas_index`` gives a Parquet file of ``schema``, in order."""
    meta = schema.pandas_metadata or {}
    unnamed = pandas_index(schema)
    names = [n for n in schema.names if n not in unnamed]
    return names + [c["name"] for c in _named_ranges(meta.get("index_columns", []), names)]


def header(path: Path, data: DataSettings, *, label: str | None = None) -> list[str]:
    """Every column name of the dataset file, in order: a CSV file's first block, a Parquet
    file's schema. A ``DataError`` as ``read_table`` would give for a file that is not a table,
    or has duplicate column names."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    shown = label or str(path)
    fmt = detect_format(path, data.format, shown)
    try:
        if fmt == "parquet":
            names = index_names(pq.read_schema(path))
        else:
            options = csv_options(data.delimiter, data.missing_values)
            with pacsv.open_csv(path, **options) as reader:
                names = list(reader.schema.names)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError):
        read_table(path, data, label=label)  # the same file read whole says what is wrong
        raise
    _unique(names, shown)
    return names


def _unique(names: list[str], shown: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    nameless = [k for k, n in enumerate(names, start=1) if not n.strip()]
    if len(nameless) > 1:  # a spreadsheet's empty trailing columns (x,name,y,,): said so
        where = ", ".join(str(k) for k in nameless[:5]) + (", ..." if len(nameless) > 5 else "")
        raise DataError(
            f"dataset {shown} has {len(nameless)} columns without a name (columns {where}: a "
            "spreadsheet's extra columns, or a saved index?): name them, or delete them"
        )
    if dupes:
        raise DataError(
            f"dataset {shown} has duplicate column names {dupes}: give every column a unique name"
        )


def read_table(
    path: Path, data: DataSettings, *, label: str | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read ``path`` with ``data``'s format, delimiter and missing markers.

    ``label`` is how the file is named in errors (the URI the user gave). Raises ``DataError``
    for empty, unreadable or malformed files, duplicate or missing column names, or no rows.
    ``columns`` reads only those (names that ``header`` gave): a CSV file is still parsed
    whole, so its malformed lines are found as in a full read.
    """
    import pandas as pd
    import pyarrow as pa

    shown = label or str(path)
    fmt = detect_format(path, data.format, shown)
    if path.stat().st_size == 0 or (fmt == "csv" and is_blank(path)):
        raise DataError(
            f"dataset {shown} is empty: expected a header line and at least one row; check "
            "PIPELINE_DATA__SOURCE"
        )
    try:
        if fmt == "parquet":
            table = _read_parquet(path, shown, columns, data.drop)
        else:
            table = _read_csv(path, data, shown, columns)
        names = [str(n) for n in table.column_names]  # pyarrow decodes the header here
    except UnicodeDecodeError as exc:
        if fmt == "csv":  # a header of Windows-1252 (an Excel export): its line named
            raise not_utf8(path, f"dataset {shown}", data.delimiter) from exc
        raise DataError(f"dataset {shown} is not valid UTF-8 text: re-encode it as UTF-8") from exc
    except OSError as exc:
        raise DataError(
            f"dataset {shown} cannot be read: {first_line(exc)}; check the file and its permissions"
        ) from exc

    _unique(names, shown)
    if table.num_rows == 0:
        raise DataError(
            f"dataset {shown} has a header but no rows: expected at least one row; check "
            "PIPELINE_DATA__SOURCE"
        )
    if fmt == "csv":
        swallowed = last_row_swallowed(table, path)
        if swallowed is not None:
            raise DataError(
                f"dataset {shown} has an unterminated quote in column '{swallowed}' at data row "
                f"{table.num_rows}: the quoted field runs on to the end of the file; close the "
                "quote, or escape a literal quote by doubling it"
            )
    if fmt == "csv":
        for field in table.schema:
            # pyarrow reads text that is not valid UTF-8 as raw bytes rather than failing.
            if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                # Its line too, as predict names it (a second pass, on this failure only).
                raise not_utf8(path, f"dataset {shown}", data.delimiter)
    else:
        table = _plain_parquet(table, data, shown)
    # One block per column, each column's Arrow memory released as soon as it is converted
    # (the table is not used afterwards); then Arrow's allocator hands the freed pages back to
    # the system, where it would keep them cached: numpy cannot reuse them (10M rows x 20
    # float32 columns: 0.8 GB held twice otherwise).
    wide = _wide_integers(table)
    frame = table.to_pandas(split_blocks=True, self_destruct=True, types_mapper=wide)
    del table
    pa.default_memory_pool().release_unused()
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0:
        # A pandas index saved in the Parquet file: messages count rows by the frame's index.
        frame = frame.reset_index(drop=True)
    return frame


def _wide_integers(table: pa.Table) -> Any:
    """pandas' Int64 types for 64-bit integers when a column with gaps holds values beyond 2^53
    (else None): made float64 by ``to_pandas``, they were lost before inference said so."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.data.verdicts import EXACT_INTEGERS

    for column in table.columns:
        wide = pa.types.is_integer(column.type) and column.type.bit_width == 64
        if not wide or column.null_count in (0, len(column)):
            continue
        low, high = pc.min_max(column).values()
        if high.as_py() > EXACT_INTEGERS or low.as_py() < -EXACT_INTEGERS:
            return {pa.int64(): pd.Int64Dtype(), pa.uint64(): pd.UInt64Dtype()}.get
    return None


def _plain_parquet(table: pa.Table, data: DataSettings, shown: str) -> pa.Table:
    """A Parquet table by ``columns.plain``'s rules; a column that holds lists, structs, maps or
    binary values (and is not dropped) is a ``DataError`` naming it."""
    from pipeline.data import columns

    table, bad = columns.plain(table, data.missing_values, skip=data.drop)
    if not bad:
        return table
    name, what = next(((n, w) for n, w in bad if n == data.target), bad[0])
    if what == columns.NOT_UTF8:  # as a CSV file's bytes that are not UTF-8 are told
        raise DataError(
            f"dataset {shown} is not valid UTF-8 text (column '{name}'): re-encode the "
            "column's text as UTF-8"
        )
    kind = printable(str(table.schema.field(name).type), 80)
    if name == data.target:
        raise DataError(
            f"target column '{name}' in dataset {shown} holds {what} (Parquet type {kind}): "
            "expected one number or class label per row; write the target as plain values or "
            "choose another PIPELINE_DATA__TARGET"
        )
    others = f" (and {len(bad) - 1} more such column(s))" if len(bad) > 1 else ""
    raise DataError(
        f"column '{name}' in dataset {shown} holds {what} (Parquet type {kind}){others}, not one "
        "value per cell: add it to PIPELINE_DATA__DROP, or write its values as plain columns"
    )
