"""Cell-level parsing: how one cell becomes a number, a boolean, a category or part of a message.

Reading, schema inference, features, prediction and serving all ask the same questions of a
cell; the answers live here so that a file is judged the same way wherever it goes. A bad cell
becomes a ``DataError`` whose ``column``, ``row`` (the 1-based data row, header excluded) and
``value`` (the cell as the message shows it) are fields, so every caller renders it alike.

Two number rules exist (``parse_numbers``'s ``parser``), because their verdicts differ on a few
spellings and each is relied on: training parses with pandas, whose verdicts decide which files
train and so every build id; prediction casts with pyarrow's C++ kernel (5x faster per chunk),
falling back to the pandas or Python rule only when the cast fails.
"""

from __future__ import annotations

import datetime
import math
import numbers as _abc
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pipeline.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# pyarrow's default true/false spellings, which decided a boolean column at training time.
BOOLEAN_TEXT: dict[str, bool] = {v: True for v in ("1", "True", "TRUE", "true")} | {
    v: False for v in ("0", "False", "FALSE", "false")
}
# The same spellings without "1" and "0": a column of only 1/0 reads as numbers, so schema
# inference counts only these words when it asks whether a text column is mostly true/false.
BOOLEAN_WORDS = frozenset(t for t in BOOLEAN_TEXT if t not in ("1", "0"))
# How a boolean is written as text: a category's value, and a JSON boolean sent to the model.
BOOLEAN_NAMES = {True: "true", False: "false"}
# How many characters of a cell a prediction-time message shows (see ``shown``).
SHOWN_CHARS = 80
# How many column names a prediction-time message or event lists (the count is always given).
SHOWN_COLUMNS = 20
# What prediction-time messages ask the user to do (PIPELINE_RUN__ON_ERROR picks the mode).
_PREDICT_ADVICE = (
    "fix the row, or set PIPELINE_RUN__ON_ERROR=column to report bad rows in an error column"
)

Parser = Literal["pandas", "arrow"]
# A hex integer as pyarrow's CSV reader (and its int64 cast) reads one: 0x1F is 31.
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}")


# -- messages -------------------------------------------------------------------------------


def printable(text: str, limit: int | None = 120) -> str:
    """``text`` cut to ``limit`` characters (None: whole) with unprintable characters escaped."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if limit is None or len(out) <= limit else out[: limit - 3] + "..."


def shown(value: Any, limit: int | None = SHOWN_CHARS) -> str:
    """A cell as an error message shows it: its repr, printable, cut to ``limit`` characters.

    Prediction cuts to ``SHOWN_CHARS`` (a run over a file of long texts); training messages
    have always shown the whole value (``limit=None``): both texts are kept as they are.
    """
    if isinstance(value, bool):  # a JSON or Parquet true/false, spelt as the file has it
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta):  # pandas' too
        return printable(repr(str(value)), limit)  # 2020-01-01, not datetime.date(2020, 1, 1)
    return printable(repr(value), limit)


def plain(value: Any) -> Any:
    """A value as the user wrote it: numpy scalars unwrapped for messages."""
    return value.item() if hasattr(value, "item") else value


def data_row(series: pd.Series, position: int) -> int:
    """The 1-based data row in the file (header excluded) of ``series``'s ``position``-th value.

    Frames keep the file's 0-based row numbers as their index, even after rows are filtered
    out; a caller's frame with another index counts by position.
    """
    try:
        return int(series.index[position]) + 1
    except (TypeError, ValueError, OverflowError):
        return position + 1


def cell_error(
    column: str, label: str, row: int, value: str, tail: str, *, subject: str = "column"
) -> DataError:
    """The error for one bad cell, with its fields set.

    Its message reads "<subject> '<column>' in <label> has <value> at data row <row><tail>";
    ``value`` is the cell as shown (``shown``), ``tail`` what was expected and what to do.
    """
    return DataError(
        f"{subject} '{column}' in {label} has {value} at data row {row}{tail}",
        column=column,
        row=row,
        value=value,
    )


# -- numbers --------------------------------------------------------------------------------


def hex_value(value: Any) -> float:
    """A hex integer literal's value (``0x1F`` is 31), as pyarrow reads a CSV column of them;
    NaN for anything else, a sign, spaces or a value beyond int64 included."""
    if isinstance(value, str) and _HEX.fullmatch(value):
        number = int(value, 16)
        return float(number) if number < 2**63 else math.nan
    return math.nan


def _to_numeric(series: pd.Series) -> np.ndarray:
    """``pd.to_numeric``'s float64 verdict (NaN where not a number), hex integers read too."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    maybe = np.isnan(values) & series.notna().to_numpy()
    if maybe.any():
        positions = maybe.nonzero()[0]
        if _is_text(series):  # only texts that look like hex are looked at in Python
            import pyarrow as pa
            import pyarrow.compute as pc

            found = pc.match_substring_regex(pa.array(series.iloc[positions].array), r"^0[xX]")
            positions = positions[pc.fill_null(found, False).to_numpy(zero_copy_only=False)]
        if len(positions):
            values = values.copy()  # pandas' array may be read-only
            values[positions] = [hex_value(v) for v in series.iloc[positions]]
    return values


def to_float(value: Any) -> float:
    """One cell as a float: NaN for anything that is not a real number (booleans included)."""
    if isinstance(value, bool) or value is None:  # numpy's bool is not a Real: NaN below
        return math.nan
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        return hex_value(value)
    if isinstance(value, str | bytes):
        if (isinstance(value, str) and "_" in value) or (
            isinstance(value, bytes) and b"_" in value
        ):
            return math.nan  # Python's digit grouping (1_000): pandas and pyarrow refuse it
        try:
            return float(value)
        except ValueError:
            return math.nan
    if isinstance(value, _abc.Real):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            return math.inf
    return math.nan


def _is_text(series: pd.Series) -> bool:
    """True for a column of a text dtype (pandas' ``str``/``string``), not Python objects."""
    import pandas as pd

    return pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series)


def parse_numbers(series: pd.Series, parser: Parser = "pandas") -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where missing or not a number), and where a present cell is not one.

    Infinities are numbers here; each caller decides what they mean. ``parser`` is the rule:

    - ``pandas`` (training, schema inference, the serve contract): ``pd.to_numeric``. Booleans
      are 1/0 and the text "nan" is not a number. A hex integer (``0x1F``) is a number, as
      pyarrow's CSV reader reads a column of them.
    - ``arrow`` (prediction): one pyarrow cast for the whole column, 5x faster per chunk; the
      text "nan" is a missing value there. When the cast fails, text falls back to
      ``pd.to_numeric`` and Python objects (JSON lines, a caller's frame) to ``to_float``.
    """
    import numpy as np
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(series)
    if parser == "pandas":
        if numeric:  # booleans included: 1/0
            # Already numbers: to_numeric would return them unchanged, at 5x the cost of this.
            return series.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(series), bool)
        values = _to_numeric(series)
        return values, np.isnan(values) & series.notna().to_numpy()
    if numeric and not (
        pd.api.types.is_bool_dtype(series) or pd.api.types.is_complex_dtype(series)
    ):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        return values, np.zeros(len(values), bool)
    import pyarrow as pa
    import pyarrow.compute as pc

    try:  # the fast path: one C++ cast for the whole column
        arrow = pa.array(series, from_pandas=True)
        if not pa.types.is_boolean(arrow.type):  # true is no number (JSON lines, Parquet)
            values = pc.cast(arrow, pa.float64()).to_numpy(zero_copy_only=False)
            return values, np.zeros(len(values), bool)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    if _is_text(series):
        values = _to_numeric(series)
    else:  # Python objects: one cell at a time
        values = np.fromiter(map(to_float, series), dtype="float64", count=len(series))
    return values, np.isnan(values) & series.notna().to_numpy()


def are_numbers(series: pd.Series) -> np.ndarray:
    """Where a present cell is a number by the ``pandas`` rule (one parse per distinct text)."""
    import numpy as np
    import pandas as pd

    present = series.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(series):
        return present
    if _is_text(series):
        # Parse each distinct text once: pd.to_numeric costs ~1.5 s per million cells, and a
        # text column repeats its values (code -1 is a missing cell, already not present).
        codes, uniques = pd.factorize(series)
        parsed = ~np.isnan(_to_numeric(pd.Series(uniques, dtype=object)))
        return np.append(parsed, False)[codes] & present
    return ~np.isnan(_to_numeric(series)) & present


def first_non_number(series: pd.Series) -> tuple[int, Any] | None:
    """(1-based data row, value) of the first present value that is not a number, else None."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    _, bad = parse_numbers(series)
    if not bad.any():
        return None
    pos = int(bad.nonzero()[0][0])
    return data_row(series, pos), plain(series.iloc[pos])


# -- booleans -------------------------------------------------------------------------------


def to_bool(value: Any) -> bool | None:
    """One cell as a boolean, spelt as pyarrow parsed them at training; None when it is not one."""
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        return BOOLEAN_TEXT.get(value)
    if isinstance(value, _abc.Real) and value in (0, 1):
        return bool(value)
    return None


def parse_booleans(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """True/False/None values, and where a present cell is not a boolean.

    A column already read as booleans is returned as it is.
    """
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return series, np.zeros(len(series), bool)
    if _is_text(series):
        mapped = series.map(BOOLEAN_TEXT.get, na_action="ignore")  # text read as text
    else:
        mapped = series.map(to_bool, na_action="ignore")
    return mapped, (mapped.isna() & series.notna()).to_numpy()


def are_boolean_words(series: pd.Series) -> np.ndarray:
    """Where a present cell is spelt as one of ``BOOLEAN_WORDS`` (schema inference's rule)."""
    return series.isin(sorted(BOOLEAN_WORDS)).to_numpy() & series.notna().to_numpy()


# -- prediction: a bad cell fails the run or is noted in its row ----------------------------


def bad_cells(
    series: pd.Series, bad: np.ndarray, name: str, label: str, expected: str
) -> Iterator[DataError]:
    """One error per bad cell of ``series`` (where ``bad``), in row order, worded for predict."""
    from pipeline.data.spellings import number_hint

    for pos in bad.nonzero()[0].tolist():
        value = plain(series.iloc[pos])
        why = number_hint(value) if expected == "a finite number" else ""
        tail = f": expected {expected}{why}; {_PREDICT_ADVICE}"
        yield cell_error(name, label, data_row(series, pos), shown(value), tail)


def reject(
    series: pd.Series,
    bad: np.ndarray,
    name: str,
    label: str,
    expected: str,
    on_error: str,
    errors: np.ndarray,
) -> None:
    """Fail on the first bad cell, or note each one in ``errors`` (PIPELINE_RUN__ON_ERROR).

    ``errors`` holds one note per row of ``series`` ("" for none); notes are joined by "; ".
    """
    if on_error == "fail":
        raise next(bad_cells(series, bad, name, label, expected))
    for pos in bad.nonzero()[0].tolist():
        note = f"column '{name}': {shown(plain(series.iloc[pos]))} is not {expected}"
        errors[pos] = f"{errors[pos]}; {note}" if errors[pos] else note


def numbers(
    series: pd.Series, name: str, label: str, on_error: str, errors: np.ndarray
) -> np.ndarray:
    """float64 values by the ``arrow`` rule; a cell that is not a finite number fails the run or
    is noted in ``errors`` and becomes NaN (imputed like a missing value)."""
    import numpy as np

    values, bad = parse_numbers(series, "arrow")
    bad = bad | np.isinf(values)
    if bad.any():
        reject(series, bad, name, label, "a finite number", on_error, errors)
        values = np.where(bad, np.nan, values)
    return values


def booleans(
    series: pd.Series, name: str, label: str, on_error: str, errors: np.ndarray
) -> pd.Series:
    """True/False/None values; a cell that is not a boolean fails the run or is noted in
    ``errors`` and becomes None (missing)."""
    mapped, bad = parse_booleans(series)
    if bad.any():
        reject(series, bad, name, label, "true or false", on_error, errors)
        mapped = mapped.where(~bad, None)
    return mapped


def _is_container(value: Any) -> bool:
    """True for a JSON object or array (or a Parquet list or struct) in a cell."""
    import numpy as np

    return isinstance(value, dict | list | tuple | set | np.ndarray)


def single_values(
    series: pd.Series, name: str, label: str, on_error: str, errors: np.ndarray
) -> pd.Series:
    """``series`` with every cell that is a JSON object or array failing the run, or noted in
    ``errors`` and made missing: a cell holds one number, text or true/false."""
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_object_dtype(series):
        return series
    nested = np.fromiter(map(_is_container, series), dtype=bool, count=len(series))
    if not nested.any():
        return series
    expected = "one value (a number, text or true/false), not a JSON object or array"
    reject(series, nested, name, label, expected, on_error, errors)
    return series.where(~nested, None)


def without_markers(series: pd.Series, markers: Iterable[str]) -> pd.Series:
    """``series`` with its text cells spelt as one of ``markers`` missing, as in a CSV file."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series
    wanted = set(markers)
    marked = series.map(lambda v: isinstance(v, str) and v in wanted).to_numpy(dtype=bool)
    return series.where(~marked, None) if marked.any() else series


# -- categories -----------------------------------------------------------------------------


def category_text(value: Any) -> str | None:
    """One Python object as a category's canonical text: None for missing, ``3.0`` as "3",
    booleans as "true"/"false"."""
    import numpy as np

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return BOOLEAN_NAMES[bool(value)]
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def float_category_texts(x: np.ndarray) -> np.ndarray:
    """float64 values as canonical texts (object array): integral values without ".0".

    Missing values are left as "nan": the caller knows which cells were missing.
    """
    import numpy as np

    finite = np.isfinite(x)
    integral = finite & (np.mod(np.where(finite, x, 0.0), 1.0) == 0)
    small = integral & (np.abs(x) < 2**63)
    out = x.astype(str).astype(object)
    out[small] = x[small].astype(np.int64).astype(str)
    for k in np.flatnonzero(integral & ~small):  # beyond int64: Python's exact int
        out[k] = str(int(x[k]))
    return out


# -- reading CSV ----------------------------------------------------------------------------


def csv_options(
    delimiter: str,
    missing_values: Iterable[str],
    *,
    text_columns: list[str] | None = None,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``pyarrow.csv.read_csv`` / ``open_csv``: every reader of CSV.

    Cells spelt as one of ``missing_values`` are missing, quoted or not. ``text_columns``: read
    only these columns, all as text (prediction and serving: types are decided per column from
    the schema, not guessed per block, and a bad cell is reported with its row instead of
    failing a block). ``block_size``: the parser's block in bytes (pyarrow's default, 1 MiB,
    when None); a line longer than a block cannot be parsed.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    convert: dict[str, Any] = {}
    if text_columns is not None:
        convert["include_columns"] = text_columns
        convert["column_types"] = {c: pa.string() for c in text_columns}
    read = pacsv.ReadOptions() if block_size is None else pacsv.ReadOptions(block_size=block_size)
    return {
        "read_options": read,
        "parse_options": pacsv.ParseOptions(delimiter=delimiter),
        "convert_options": pacsv.ConvertOptions(
            null_values=list(missing_values),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            **convert,
        ),
    }
