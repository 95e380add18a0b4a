"""Verdicts on text columns: where schema inference refuses to guess, and what it says.

A text column (or target) that is mostly numbers, mostly true/false, dates or formatted
numbers is a decision for the user, not for inference: each check here raises a ``DataError``
naming the first cell that settles it and saying what to do. ``text_target`` applies them to a
target that may be a number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.data import cells, spellings
from pipeline.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# A text column whose present values are at least this share numbers (or true/false) is a
# numeric (boolean) column with a few bad cells, not a categorical one: it is refused, naming
# the first bad cell, rather than silently turned into categories.
MOSTLY = 0.9


def mostly(
    series: pd.Series, matches: np.ndarray, *, placeholder: bool = False
) -> tuple[int, Any, int, int] | None:
    """(data row, value) of the first present cell where ``matches`` is False, and how many
    present cells match, out of how many, when at least ``MOSTLY`` (but not all) do; else None.

    With ``placeholder``, also when every other cell is one value spelt again and again and
    at least half match, or at least a tenth with 10 or more distinct values (a scale, where
    a few numbers beside a word, "0, 1, 2, many", are categories): Titanic's ages
    with ``?`` for the 263 unknown ones (20%) became a category per age, where ``?`` is a
    missing marker the settings do not know; so did a column of 83 numbers and 117 ``-``.
    Also when at least half are numbers of 10 or more distinct values and the rest are words:
    lot areas with every 4th cell "big", "small" or "n/k" became a category per area seen
    three times (two), every other area unknown."""
    present = series.notna().to_numpy()
    total = int(present.sum())
    count = int(matches.sum())
    if total == 0 or count == total:
        return None
    if count < MOSTLY * total:
        if not placeholder or count < total / 10:  # too few to be a column of numbers
            return None
        others = series[present & ~matches]
        scale = series[matches].nunique() >= 10
        if len(others) >= 2 and others.nunique() == 1:  # one placeholder, again and again
            if count < total / 2 and not scale:
                return None
        elif count < total / 2 or not scale:  # a few words among a scale of numbers
            return None
    pos = int((present & ~matches).nonzero()[0][0])
    return cells.data_row(series, pos), cells.plain(series.iloc[pos]), count, total


def mostly_booleans(
    series: pd.Series, profile: spellings.Profile
) -> tuple[int, Any, int, int] | None:
    """``mostly`` for the cells spelt as true/false words (``cells.BOOLEAN_WORDS``), asked
    once per distinct value of the column's ``profile``."""
    import pandas as pd

    words = cells.are_boolean_words(pd.Series(profile.uniques, dtype=object))
    return mostly(series, profile.spread(words))


def bad_cell(name: str, label: str, row: int, value: Any, tail: str, subject: str) -> DataError:
    """A cell's error as training words it: the whole value's repr (``cells.shown``)."""
    return cells.cell_error(name, label, row, cells.shown(value, None), tail, subject=subject)


def refuse_spellings(
    series: pd.Series, profile: spellings.Profile, name: str, label: str, *, target: bool = False
) -> None:
    """A ``DataError`` for a text column (or target) of dates or of formatted numbers.

    Dates: ``MOSTLY`` of its present values are dates or times, in any spelling. Formatted
    numbers: ``MOSTLY`` of them are numbers, plain or formatted, and some are formatted
    (``208,500``, ``$5``, ``12%``): a separator's meaning is not guessed, the cell is named.
    """
    subject = "target column" if target else "column"
    if profile.share(profile.dates) >= MOSTLY:
        pos = int(profile.dates.nonzero()[0][0])
        value = cells.shown(cells.plain(series.iloc[pos]), None)
        where = f"{value} at data row {cells.data_row(series, pos)}"
        advice = (
            "choose another PIPELINE_DATA__TARGET, or set PIPELINE_DATA__TASK=multiclass if each "
            "date is a class label"
            if target
            else "add it to PIPELINE_DATA__DROP, or declare it categorical in "
            "PIPELINE_DATA__COLUMN_KINDS to use each value as a category"
        )
        raise DataError(
            f"{subject} '{name}' in {label} holds dates or times ({where}), which are not "
            f"supported as {'a target' if target else 'features'}: {advice}",
            column=name,
            row=cells.data_row(series, pos),
            value=value,
        )
    if not profile.formatted.any() or profile.share(profile.numbers | profile.formatted) < MOSTLY:
        return
    pos = int(profile.formatted.nonzero()[0][0])
    value = cells.plain(series.iloc[pos])
    advice = (
        "set PIPELINE_DATA__TASK=multiclass if the target is a class label"
        if target
        else "declare the column categorical in PIPELINE_DATA__COLUMN_KINDS"
    )
    raise bad_cell(
        name,
        label,
        cells.data_row(series, pos),
        value,
        f", a number written with {spellings.formatting(value)}: expected plain numbers "
        "(digits, '.' for decimals, no separators, currency or percent signs); write the "
        f"values as plain numbers, or {advice}",
        subject,
    )


def text_target(frame: pd.DataFrame, name: str, task_hint: str, label: str) -> pd.DataFrame:
    """``frame`` with a text target of plain numbers made numbers; a ``DataError`` for a target
    that is dates, formatted numbers, mostly numbers or true/false, or one class spelt twice.

    Only for a target that may be a number (PIPELINE_DATA__TASK auto or regression): a declared
    classification takes its values as labels, whatever they look like.
    """
    import pandas as pd

    target = frame[name]
    if spellings.is_temporal(target):
        first = target.first_valid_index()
        raise DataError(
            f"target column '{name}' in {label} holds dates, times or durations "
            f"({cells.printable(str(target[first]), 40)!r} ...), which are not supported as a "
            "target: choose another PIPELINE_DATA__TARGET, or set PIPELINE_DATA__TASK=multiclass "
            "if each value is a class label"
        )
    if pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return frame
    profile = spellings.profile(target)
    refuse_spellings(target, profile, name, label, target=True)
    if profile.numbers.sum() == profile.present.sum():  # text numbers (a Parquet string column)
        return frame.assign(**{name: cells.parse_numbers(target)[0]})
    if task_hint != "auto":
        return frame  # regression: the first cell that is not a number is refused below
    tail = (
        "fix the row, leave it empty to drop it, or set PIPELINE_DATA__TASK=multiclass if the "
        "target is a class label"
    )
    for found, what in (
        (mostly(target, profile.numbers, placeholder=True), "numbers"),
        (mostly_booleans(target, profile), "true/false"),
    ):
        if found is not None:
            row, value, count, total = found
            raise bad_cell(
                name,
                label,
                row,
                value,
                f", but {count} of its {total} values are {what}: {tail}",
                "target column",
            )
    refuse_spelt_twice(target, name, label)
    return frame


# One-letter spellings of yes/no and true/false: Y and yes are one class spelt two ways.
_ABBREVIATED = {"y": "yes", "n": "no", "t": "true", "f": "false"}


def refuse_spelt_twice(target: pd.Series, name: str, label: str) -> None:
    """A ``DataError`` when two of a text target's classes differ only in case or spaces
    (``yes`` and ``Yes ``), or are a yes/no (true/false) and its one letter (``Y`` and ``yes``):
    one class split in two, silently, otherwise (a Y/N and yes/no target trained 4 classes)."""
    seen: dict[str, Any] = {}
    for value in target.dropna().unique().tolist():
        key = " ".join(str(value).split()).casefold()
        key = _ABBREVIATED.get(key, key)
        if key in seen and seen[key] != value:
            first, rows = seen[key], target.to_numpy(dtype=object)
            row_a = cells.data_row(target, int((rows == first).nonzero()[0][0]))
            row_b = cells.data_row(target, int((rows == value).nonzero()[0][0]))
            raise DataError(
                f"target column '{name}' in {label} has {first!r} at data row {row_a} and "
                f"{value!r} at data row {row_b}, one class spelt two ways (case, spaces or a "
                "one-letter yes/no): "
                "write each class one way, or set PIPELINE_DATA__TASK=multiclass to keep them "
                "apart"
            )
        seen[key] = value


# A regression target value farther from the median than this many interquartile ranges
# drowns every other row: standardised by a spread it alone sets, the other targets collapse
# onto one float32 value, the network learns a constant and the metrics, computed on those
# values, read perfect (a placeholder 99999999999 among values near 5: RMSE 0, evaluate's
# gates passed).
EXTREME_SPREADS = 1e6


def refuse_extreme(
    y: np.ndarray, series: pd.Series, name: str, label: str, advice: str = ""
) -> None:
    """A ``DataError`` naming the regression target's most extreme value when it lies beyond
    ``EXTREME_SPREADS`` interquartile ranges of the median (``y``: the target as fitted, after
    its transform, or as read where inference is to choose the transform; ``series``: the same
    rows as read, for the row and the value; ``advice``: added to the message's end)."""
    import numpy as np

    if len(y) < 4:
        return
    q1, median, q3 = np.quantile(y, [0.25, 0.5, 0.75])
    with np.errstate(over="ignore"):  # values near 1.8e308: an infinite spread refuses nothing
        spread = float(q3 - q1)
        far = np.abs(y - median)
    worst = int(np.argmax(far))
    if spread > 0.0 and float(far[worst]) > EXTREME_SPREADS * spread:
        raise cells.cell_error(
            name,
            label,
            cells.data_row(series, worst),
            cells.shown(cells.plain(series.iloc[worst]), None),
            f", {min(float(far[worst]) / spread, 1e308):.0e} times the spread of the other "
            f"values from their median (interquartile range {spread:.3g}): a placeholder or a "
            "unit error would drown every other row; fix the row, or leave the cell empty to "
            f"drop it{advice}",
            subject="target column",
        )


# One value, or at most this share, of a skewed, otherwise positive target <= 0 is taken for
# stray values (a typo, a placeholder) rather than the data's nature (a count's zeros, losses).
_STRAY_NON_POSITIVE = 0.01


def refuse_stray_non_positive(
    values: pd.Series, target: pd.Series, name: str, label: str, skewed: float
) -> None:
    """A ``DataError`` when a few values <= 0 (one, or ``_STRAY_NON_POSITIVE`` of them) are all
    that keeps a right-skewed target (skew above ``skewed``) from its log: one -1 among house
    prices turned the transform off without a word, and the model trained on raw dollars."""
    import numpy as np

    bad = (values <= 0).to_numpy()
    count = int(bad.sum())
    positive = values[~bad]
    if count > max(1.0, _STRAY_NON_POSITIVE * len(values)) or len(positive) < 4:
        return
    if not float(positive.skew()) > skewed:
        return
    first = int(np.flatnonzero(bad)[0])
    where = target.index.get_loc(values.index[first])
    raise cells.cell_error(
        name,
        label,
        cells.data_row(target, int(where)),
        cells.shown(cells.plain(target.iloc[int(where)]), None),
        f" ({count} of {len(values)} values <= 0), and the rest are right-skewed, which "
        "trains on their log: fix the row or leave the cell empty to drop it, or set "
        "PIPELINE_TRAIN__TARGET_TRANSFORM to none (no log) or log1p (for values >= 0)",
        subject="target column",
    )


def counts_rows(series: pd.Series, min_rows: int) -> bool:
    """Whether a numeric column is n, n + 1, n + 2, ... in file order for a whole n, ``min_rows``
    or more: a row number (pandas' index, R's rownames, customer ids 1001, 1002, ...). Its
    ends are looked at first, so another column costs next to nothing."""
    import numpy as np
    import pandas as pd

    n = len(series)
    if n < min_rows or not pd.api.types.is_numeric_dtype(series.dtype):
        return False
    # The file's row numbers (the frame's index; rows without a target were left out).
    rows = series.index.to_numpy() if series.index.dtype.kind in "iu" else np.arange(n)
    # As floats: a missing end (pandas' NA in an Int64 column was "ambiguous", a traceback)
    # is NaN, and an unsigned column's last - first cannot wrap around.
    first, last = series.iloc[[0, -1]].to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(first) or first != int(first) or last - first != rows[-1] - rows[0]:
        return False
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return bool(np.all(np.diff(values) == np.diff(rows)))


# Integers beyond this magnitude are not all exactly a float64 (2^53 + 1 is not one).
EXACT_INTEGERS = 2**53


def beyond_float(series: pd.Series, name: str) -> str | None:
    """The warning for an integer column holding values a float64 (what the network takes)
    cannot hold exactly: 2^63 + 1 and 2^63 + 2 become one number, and a column of distinct ids
    near 2^63 read as "one value in every row"."""
    import pandas as pd

    dtype = series.dtype
    if not pd.api.types.is_integer_dtype(dtype):
        return None
    unsigned = getattr(dtype, "numpy_dtype", dtype).kind == "u"
    values = series.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype), na_value=0)
    beyond = values > EXACT_INTEGERS
    if not unsigned:
        beyond |= values < -EXACT_INTEGERS
    if not beyond.any():
        return None
    pos = int(beyond.nonzero()[0][0])
    return (
        f"column '{name}' holds integers beyond 2^53 ({values[pos]} at data row "
        f"{cells.data_row(series, pos)}), which the model's float64 numbers cannot hold "
        "exactly: nearby values become one number; if they are ids or codes, add the column "
        "to PIPELINE_DATA__DROP or declare it categorical in PIPELINE_DATA__COLUMN_KINDS"
    )


def twin_spellings(uniques: np.ndarray, name: str) -> str | None:
    """The warning for a categorical column whose values include one category spelt two ways
    but for case and surrounding spaces (``red``, ``RED``, ``red ``): each is a category of its
    own, which `predict` would call a misspelling (its rule: ``predict.spelling.key``)."""
    spelt: dict[str, list[str]] = {}
    for value in sorted(v for v in uniques if isinstance(v, str)):
        spelt.setdefault(value.strip().casefold(), []).append(value)
    twins = [values for values in spelt.values() if len(values) > 1]
    if not twins:
        return None
    shown = "; ".join(
        " / ".join(cells.printable(repr(v), 40) for v in values) for values in twins[:3]
    )
    more = f"; and {len(twins) - 3} more" if len(twins) > 3 else ""
    return (
        f"column '{name}' holds categories that differ only by case or surrounding spaces "
        f"({shown}{more}): each is a category of its own; if they mean one, fix their spelling "
        "in the data"
    )


# A number written with a leading zero before another digit ("02134", "007"): a code's
# spelling (a zip code, an account), which reading it as a number loses.
ZERO_PADDED = r"^\s*[+-]?0[0-9]"


def zero_padded(uniques: np.ndarray, name: str) -> str | None:
    """The warning for a text column read as numbers whose values include one written with
    leading zeros: ``02134`` becomes 2134 (and ``2134`` the same number), and a zip code's
    neighbours count as close. Said rather than refused: ``007`` may be a count."""
    import re

    pattern = re.compile(ZERO_PADDED)
    example = next((v for v in uniques if isinstance(v, str) and pattern.match(v)), None)
    if example is None:
        return None
    return (
        f"column '{name}' holds numbers written with leading zeros ({example!r}): they are "
        "read as numbers, so the zeros are lost and nearby values count as close; if they are "
        "codes (zip codes, account numbers), declare the column categorical in "
        "PIPELINE_DATA__COLUMN_KINDS (numeric, if they are amounts, says so without this word)"
    )


# A spreadsheet's summary row: its label cell's first word ("Total:", "Grand total", "Summe").
SUMMARY_WORDS = frozenset(
    {"total", "totals", "grand", "subtotal", "sum", "summe", "gesamt", "gesamtsumme", "somme",
     "totaal", "totale", "suma", "σ"}
)  # fmt: skip
# How many rows at the end are looked at: a summary row may be followed by an empty row or a
# note ("Source: ..."), as exports end.
_SUMMARY_TAIL = 3


def refuse_summary_row(frame: pd.DataFrame, label: str) -> None:
    """A ``DataError`` when one of the last rows is a spreadsheet's summary: a text cell whose
    first word is "Total" (``SUMMARY_WORDS``) in a row whose numbers are the sums of the rows
    above it (half its numeric cells or more, within 0.5%). Such a row trained as a house (its
    target the sum of all targets, which switched the target to logs) or as a class of its
    own, without a word; a product named "Total" with its own numbers is data."""
    import pandas as pd

    # The cells of the columns that may hold text, each read alone: a row read whole
    # (``frame.iloc[at]``) merged every column's type, and an Arrow int64 column beyond 2^53
    # beside a float one failed to merge (a traceback).
    texts = [n for n in frame.columns if not pd.api.types.is_numeric_dtype(frame[n].dtype)]
    for at in range(len(frame) - 1, max(len(frame) - 1 - _SUMMARY_TAIL, 1), -1):
        for name in texts:
            value = frame[name].iloc[at]
            if not isinstance(value, str) or not value.strip():
                continue
            first = value.strip().casefold().split()[0].rstrip(":")
            if first in SUMMARY_WORDS and _sums_above(frame, at):
                raise DataError(
                    f"dataset {label}: data row {cells.data_row(frame[name], at)} is a "
                    f"summary row ({value!r} in column '{name}'): its numbers are the sums of "
                    "the rows above, not a row to learn from; delete it from the file and "
                    "train again",
                    column=str(name),
                )


def _sums_above(frame: pd.DataFrame, at: int) -> bool:
    """Whether half or more of row ``at``'s present numeric cells (not 0) are the sums of
    their column's rows above it, within 0.5%."""
    import numpy as np
    import pandas as pd

    sums = checked = 0
    for name in frame.columns:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column):
            continue
        value = column.iloc[at]
        if pd.isna(value) or value == 0:
            continue
        checked += 1
        above = float(np.nansum(column.iloc[:at].to_numpy(dtype=np.float64, na_value=np.nan)))
        sums += abs(float(value) - above) <= 0.005 * abs(above)
    return checked > 0 and 2 * sums >= checked
