"""Arrow columns as the pipeline takes them: one rule for every reader of typed files.

A Parquet file brings types a CSV file never has, and each is decided here, for training's
reader and prediction's alike:

- decimals (decimal32/64/128/256) are numbers: read as float64, as a CSV's ``208500.00`` is;
- half-precision floats are read as float32 (numpy and pandas compute poorly in float16);
- dictionary-encoded columns are their values (a dictionary of text is text);
- text cells spelt as one of the missing markers (``PIPELINE_DATA__MISSING_VALUES``) are
  missing, as they are in a CSV file;
- lists, structs, maps, unions and binary values are not one value per cell: ``unsupported``
  names them, and the caller refuses the column (a traceback or a silent category otherwise).

Dates, times and durations are left as they are: schema inference refuses them as features.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def unsupported(kind: pa.DataType) -> str | None:
    """What a column of type ``kind`` holds when it is not one plain value per cell, else None."""
    import pyarrow as pa

    t = pa.types
    if isinstance(kind, pa.DictionaryType):
        return unsupported(kind.value_type)
    if t.is_map(kind):  # a map is also a list: ask first
        return "maps"
    if (
        t.is_list(kind)
        or t.is_large_list(kind)
        or t.is_fixed_size_list(kind)
        or t.is_list_view(kind)
        or t.is_large_list_view(kind)
    ):
        return "lists"
    if t.is_struct(kind):
        return "structs"
    if t.is_union(kind):
        return "unions"
    if (
        t.is_binary(kind)
        or t.is_large_binary(kind)
        or t.is_fixed_size_binary(kind)
        or t.is_binary_view(kind)
    ):
        return "binary values"
    return None


def _plain(column: pa.ChunkedArray, missing_values: list[str]) -> pa.ChunkedArray:
    """One column with decimals, float16 and dictionaries made plain, missing markers null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = pa.types
    if isinstance(column.type, pa.DictionaryType):
        if missing_values and _is_text(column.type.value_type):
            column = _marked_in_dictionary(column, missing_values)
        column = column.cast(column.type.value_type)
        missing_values = []  # looked for among the distinct values
    if t.is_decimal(column.type):
        column = column.cast(pa.float64())
    elif t.is_float16(column.type):
        column = column.cast(pa.float32())
    elif _is_text(column.type):
        if t.is_string_view(column.type):
            column = column.cast(pa.string())
        if missing_values:
            marked = pc.is_in(column, value_set=pa.array(missing_values, column.type))
            column = pc.if_else(marked, pa.scalar(None, column.type), column)
    return column


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    t = pa.types
    return bool(t.is_string(kind) or t.is_large_string(kind) or t.is_string_view(kind))


def _marked_in_dictionary(column: pa.ChunkedArray, missing_values: list[str]) -> pa.ChunkedArray:
    """A dictionary-encoded text column whose cells spelt as a missing marker are null: the
    markers are looked for once per distinct value of each chunk, not once per cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    value_type = column.type.value_type
    markers = pa.array(missing_values, pa.string()).cast(value_type)
    chunks = []
    for chunk in column.chunks:
        marked = pc.is_in(chunk.dictionary, value_set=markers)
        if pc.any(marked).as_py():
            hit = pc.fill_null(pc.take(marked, chunk.indices), False)
            indices = pc.if_else(hit, pa.scalar(None, chunk.indices.type), chunk.indices)
            chunk = pa.DictionaryArray.from_arrays(indices, chunk.dictionary)
        chunks.append(chunk)
    return pa.chunked_array(chunks, column.type)


# What ``plain`` says a text column holds whose bytes are not UTF-8 (a Parquet writer that
# took bytes for text): pyarrow reads it, and turning it into Python text was a traceback.
NOT_UTF8 = "text that is not valid UTF-8"


def _valid_utf8(column: pa.ChunkedArray) -> bool:
    """Whether every value of a text column (or of a dictionary's values) is valid UTF-8."""
    import pyarrow as pa

    try:
        for chunk in column.chunks:
            values = chunk.dictionary if isinstance(chunk, pa.DictionaryArray) else chunk
            values.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def plain(
    table: pa.Table, missing_values: list[str], skip: Iterable[str] = ()
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """``table`` with every column made plain, and (name, what it holds) of unsupported ones
    (``unsupported``, or ``NOT_UTF8``).

    Columns named in ``skip`` (to be dropped) and unsupported ones are left as they are.
    """
    import pyarrow as pa

    skipped = set(skip)
    bad: list[tuple[str, str]] = []
    for position, name in enumerate(table.column_names):
        column = table.column(position)
        what = unsupported(column.type)
        kind = column.type.value_type if isinstance(column.type, pa.DictionaryType) else column.type
        if what is None and _is_text(kind) and not _valid_utf8(column):
            what = NOT_UTF8
        if what is not None or name in skipped:
            if what is not None and name not in skipped:
                bad.append((name, what))
            continue
        plainer = _plain(column, missing_values)
        if plainer is not column:  # set_column keeps the schema's metadata (a pandas index)
            table = table.set_column(position, pa.field(name, plainer.type), plainer)
    return table, bad
