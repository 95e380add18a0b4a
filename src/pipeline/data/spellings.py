"""Text that is neither a plain number nor a word: formatted numbers and dates.

pyarrow and pandas read ``208,500``, ``$208,500``, ``12%``, ``1.234,5``, ``(5)``,
``2003-01-15`` (as text, in a Parquet file), ``01/15/2003`` or ``15 Jan 2003`` as text, and text
becomes a categorical column: a price or a year turned into hundreds of categories, a date into
one category per day, without a word. Schema inference asks of every text column whether its
values are such spellings (``profile``) and refuses the column, naming a cell, rather than guess
what a separator or a day-month order means. Plain numbers are the pandas rule's
(``cells.are_numbers``). The patterns run once per distinct value, in pyarrow's RE2 engine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.data import cells

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_CURRENCY = "[$€£¥₹₩₽₺₪₫₱฿¢₴₦₡₲₵₸]|usd|us\\$|eur|gbp|jpy|chf|cad|aud|cny|inr|r\\$|kr"
_SPACES = "\u00a0\u202f"  # no-break and narrow no-break spaces
_BODY = (
    r"\d{1,3}(?:[,'’ " + _SPACES + r"_]\d{3})+(?:\.\d+)?"  # 208,500 / 208 500 / 1'234.5
    r"|\d{1,3}(?:[.'’ " + _SPACES + r"]\d{3})+(?:,\d+)?"  # 1.234.567,5 (a decimal comma)
    r"|\d+,\d+"  # 3,5
    r"|(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"  # a plain number, decorated below
)
# A number with at most a sign, a currency sign or code before or after it, a percent sign and
# accounting parentheses around it. Plain numbers match too: ``profile`` leaves them out.
FORMATTED_NUMBER = (
    rf"^\s*\(?\s*[-+−]?\s*(?:{_CURRENCY})?\s*[-+−]?\s*(?:{_BODY})\s*(?:{_CURRENCY})?\s*[%‰]?"
    r"\s*\)?\s*$"
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s*[ap]\.?m\.?)?"
_ZONE = r"(?:\s*(?:z|utc|gmt|[-+]\d{2}(?::?\d{2})?))?"
_DATE = (
    r"\d{4}-\d{1,2}(?:-\d{1,2})?"  # ISO 2003-01-15, 2003-01
    r"|\d{4}[/.]\d{1,2}[/.]\d{1,2}"  # 2003/01/15, 2003.01.15
    r"|\d{1,2}[/.-]\d{1,2}[/.-]\d{2}(?:\d{2})?"  # 01/15/2003, 15.01.2003, 15-01-03
    rf"|\d{{1,2}}(?:st|nd|rd|th)?[ -]{_MONTH}[ ,-]*\d{{2,4}}"  # 15 Jan 2003, 15-Jan-03
    rf"|{_MONTH}[ -]\d{{1,2}}(?:st|nd|rd|th)?,?[ -]\d{{4}}"  # Jan 15, 2003
    rf"|{_MONTH}[ -]\d{{4}}"  # January 2003
)
# A date, a date and time, or a time of day, with an optional weekday and time zone.
DATE = rf"^\s*(?:{_DAY})?(?:(?:{_DATE})(?:(?:t|\s+|\s*,\s*){_TIME})?|{_TIME}){_ZONE}\s*$"


@dataclass(frozen=True)
class Profile:
    """Which present cells of a text column are plain numbers, formatted numbers or dates,
    and the column's distinct values (``uniques``) with each cell's code into them (-1 for a
    missing cell), so that other questions about its values are asked once per value."""

    present: np.ndarray
    numbers: np.ndarray
    formatted: np.ndarray
    dates: np.ndarray
    codes: np.ndarray
    uniques: np.ndarray

    def share(self, mask: np.ndarray) -> float:
        """The share of present cells where ``mask`` holds (0 for a column with none)."""
        total = int(self.present.sum())
        return int(mask.sum()) / total if total else 0.0

    def spread(self, per_value: np.ndarray) -> np.ndarray:
        """A mask over the distinct values made a mask over the cells (missing: False)."""
        return _spread(per_value, self.codes)


def _spread(per_value: np.ndarray, codes: np.ndarray) -> np.ndarray:
    import numpy as np

    out: np.ndarray = np.append(per_value, False)[codes]
    return out


def _matching(texts: Any, pattern: str) -> np.ndarray:
    """Where each of ``texts`` (a pyarrow string array) matches ``pattern``, ignoring case."""
    import pyarrow.compute as pc

    found = pc.match_substring_regex(texts, pattern, ignore_case=True)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(series)``: each cell's code (-1 for a missing cell) and the distinct
    present values (an object array) in order of first appearance. A pyarrow-backed text
    column (pandas' default) is encoded by pyarrow in one piece: pandas encodes each of its
    chunks and unifies them, 2x slower at 1M rows of Parquet."""
    import numpy as np
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa

        arr = pa.array(series.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        encoded = arr.dictionary_encode()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
        return codes, encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    codes, uniques = pd.factorize(series)
    return codes, np.asarray(uniques, dtype=object)


def profile(series: pd.Series) -> Profile:
    """The profile of a text column: one parse and two patterns per distinct value.

    Cells that are not text (numbers among Python objects) are judged by the number rule only.
    """
    import pandas as pd
    import pyarrow as pa

    codes, uniques = factorize(series)  # code -1: a missing cell
    values = pd.Series(uniques, dtype=object)
    numbers = cells.are_numbers(values)
    texts = pa.array([v if isinstance(v, str) else None for v in values], pa.string())
    formatted = _matching(texts, FORMATTED_NUMBER) & ~numbers
    dates = _matching(texts, DATE) & ~numbers
    return Profile(
        codes >= 0,
        _spread(numbers, codes),
        _spread(formatted, codes),
        _spread(dates, codes),
        codes,
        uniques,
    )


def is_temporal(series: pd.Series) -> bool:
    """True for a column of dates, times or durations as typed values (Parquet, a frame).

    pyarrow's date32 and time columns arrive as Python dates and times in an object column.
    """
    import datetime as dt

    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        return True
    first = series.first_valid_index()
    return first is not None and isinstance(series[first], dt.date | dt.time | dt.timedelta)


def formatting(value: Any) -> str:
    """What makes ``value`` (a formatted number) other than a plain number, for a message."""
    text = str(value).lower()
    if re.search(_CURRENCY, text):
        return "a currency sign"
    if "%" in text or "‰" in text:
        return "a percent sign"
    if "(" in text or ")" in text:
        return "accounting parentheses"
    if "−" in text:
        return "a typographic minus sign"
    return "a thousands separator or a decimal comma"


# Spellings of a missing value in other tools, which a model's own markers may not include.
_MARKERS = {"na", "n/a", "nan", "-nan", "null", "none", "#n/a", "?", "-", "--", "missing"}


def number_hint(value: Any) -> str:
    """Why a cell that is no number may be one to its writer: a formatted number (as training
    says, "thousands separator"), a date, or another tool's missing marker."""
    if not isinstance(value, str):
        return ""
    if value.strip().lower() in _MARKERS:
        return (
            f" ({value.strip()!r} is not one of this model's missing markers, those of its "
            "PIPELINE_DATA__MISSING_VALUES: leave the cell empty)"
        )
    try:  # 1e999: a plain number, beyond float64 (inf)
        beyond = (
            not math.isfinite(float(value)) and not value.strip().lower().lstrip("+-")[:1].isalpha()
        )
    except ValueError:
        beyond = False
    if beyond:
        return " (a number beyond float64, about 1.8e308)"
    if re.match(FORMATTED_NUMBER, value, re.IGNORECASE):
        return " (a formatted number: write it plainly, without separators, currency or %)"
    if re.match(DATE, value, re.IGNORECASE):
        return " (a date: the model takes numbers here)"
    return ""
