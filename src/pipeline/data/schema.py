"""Column kinds, the task, and the target: inferred from a frame, overridable by settings.

The resolved ``Schema`` is stored with every build; it is the input contract predictions are
validated against.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.data import cells
from pipeline.errors import ConfigError, DataError
from pipeline.settings import DataSettings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# A regression target with a right tail longer than this is fitted on its log by default.
_TARGET_SKEW_FOR_LOG = 0.75
# A text column whose present values are at least this share numbers (or true/false) is a
# numeric (boolean) column with a few bad cells, not a categorical one: it is refused, naming
# the first bad cell, rather than silently turned into categories.
MOSTLY = 0.9
# A text column with a different value in every one of at least this many rows is an
# identifier: it cannot generalise, so it is dropped with a warning.
IDENTIFIER_MIN_ROWS = 20


@dataclass(frozen=True)
class Column:
    """One input column and how it is encoded."""

    name: str
    kind: str  # numeric | categorical | boolean


@dataclass(frozen=True)
class Schema:
    """What a model consumes and predicts."""

    columns: tuple[Column, ...]
    target: str
    task: str  # regression | binary | multiclass
    target_transform: str  # none | log | log1p
    dropped: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (what ``schema.json`` holds)."""
        out = asdict(self)
        out["columns"] = [asdict(c) for c in self.columns]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schema:
        """The inverse of ``to_json``."""
        return cls(
            columns=tuple(Column(**c) for c in data["columns"]),
            target=data["target"],
            task=data["task"],
            target_transform=data["target_transform"],
            dropped=tuple(data["dropped"]),
        )

    def names(self, kind: str) -> list[str]:
        """Input column names of one kind, in file order."""
        return [c.name for c in self.columns if c.kind == kind]


def _missing_column(label: str, name: str, columns: list[str], setting: str) -> DataError:
    from pipeline.data.read import delimiter_hint

    close = difflib.get_close_matches(name, columns, n=1)
    hint = delimiter_hint(columns) or (f"did you mean '{close[0]}'? " if close else "")
    shown = ", ".join(cells.printable(c, 60) for c in columns[:12])
    more = f", ... ({len(columns)} in all)" if len(columns) > 12 else ""
    return DataError(
        f"dataset {label} has no column '{name}' ({setting}): {hint}columns are {shown}{more}"
    )


def _infer_kind(series: pd.Series) -> str:
    import datetime as dt

    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        return "datetime"
    # pyarrow's date32 columns arrive as Python dates in an object column.
    first = series.first_valid_index()
    if first is not None and isinstance(series[first], dt.date | dt.time | dt.timedelta):
        return "datetime"
    return "categorical"


def _mostly(series: pd.Series, matches: np.ndarray) -> tuple[int, Any, int, int] | None:
    """(data row, value) of the first present cell where ``matches`` is False, and how many
    present cells match, out of how many, when at least ``MOSTLY`` (but not all) do; else None."""
    present = series.notna().to_numpy()
    total = int(present.sum())
    count = int(matches.sum())
    if total == 0 or count == total or count < MOSTLY * total:
        return None
    pos = int((present & ~matches).nonzero()[0][0])
    return cells.data_row(series, pos), cells.plain(series.iloc[pos]), count, total


def mostly_numbers(series: pd.Series) -> tuple[int, Any, int, int] | None:
    """For a text column that is mostly numbers: (data row, value) of its first non-number, and
    how many of its present values are numbers, out of how many; else None."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    return _mostly(series, cells.are_numbers(series))


def _mostly_booleans(series: pd.Series) -> tuple[int, Any, int, int] | None:
    """Like ``mostly_numbers``, for a text column that is mostly true/false."""
    return _mostly(series, cells.are_boolean_words(series))


def _bad_cell(name: str, label: str, row: int, value: Any, tail: str, subject: str) -> DataError:
    """A cell's error as training words it: the whole value's repr (``cells.shown``)."""
    return cells.cell_error(name, label, row, cells.shown(value, None), tail, subject=subject)


def _resolve_task(target: pd.Series, declared: str, label: str, name: str) -> str:
    import pandas as pd

    distinct = target.dropna().unique()
    if len(distinct) < 2:
        value = cells.plain(distinct[0]) if len(distinct) else None
        raise DataError(
            f"target column '{name}' in {label} has a single value {value!r}: expected at least "
            "two distinct values; check PIPELINE_DATA__TARGET and the file"
        )
    if declared != "auto":
        if declared == "binary" and len(distinct) != 2:
            raise DataError(
                f"target column '{name}' in {label} has {len(distinct)} distinct values but "
                "PIPELINE_DATA__TASK=binary expects 2: use multiclass or regression"
            )
        return declared
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    if numeric and len(distinct) > 2:
        return "regression"
    return "binary" if len(distinct) == 2 else "multiclass"


def _text_column_problem(
    series: pd.Series, name: str, label: str, max_cardinality: int
) -> str | None:
    """Why an inferred text column cannot be used as categories: a warning when it is to be
    dropped (an identifier), a ``DataError`` when it needs the user's decision, else None."""
    advice = "declare the column categorical in PIPELINE_DATA__COLUMN_KINDS"
    mostly = mostly_numbers(series)
    if mostly is not None:
        row, value, count, total = mostly
        raise _bad_cell(
            name,
            label,
            row,
            value,
            f", but {count} of its {total} values are numbers: fix the row, add {value!r} to "
            f"PIPELINE_DATA__MISSING_VALUES if it means missing, or {advice}",
            "column",
        )
    mostly = _mostly_booleans(series)
    if mostly is not None:
        row, value, count, total = mostly
        raise _bad_cell(
            name,
            label,
            row,
            value,
            f", but {count} of its {total} values are true/false: fix the row, or {advice}",
            "column",
        )
    present = int(series.notna().sum())
    distinct = int(series.nunique(dropna=True))
    if present >= IDENTIFIER_MIN_ROWS and distinct == present:
        return (
            f"column '{name}' has a different value in every row (an identifier?): ignored; "
            f"add it to PIPELINE_DATA__DROP to say so, or {advice} to keep it"
        )
    if distinct > max_cardinality:
        raise DataError(
            f"column '{name}' in {label} has {distinct} distinct text values, more than "
            f"PIPELINE_FEATURES__MAX_CATEGORICAL_CARDINALITY={max_cardinality}: add it to "
            f"PIPELINE_DATA__DROP, {advice}, or raise the limit"
        )
    return None


def _resolve_transform(target: pd.Series, task: str, declared: str, label: str, name: str) -> str:
    if task != "regression":
        if declared in ("log", "log1p"):
            raise ConfigError(
                f"PIPELINE_TRAIN__TARGET_TRANSFORM={declared} applies to regression, but target "
                f"'{name}' is {task}: set it to none or auto"
            )
        return "none"
    values = target.dropna().astype("float64")
    if declared == "auto":
        positive = bool((values > 0).all())
        return "log" if positive and float(values.skew()) > _TARGET_SKEW_FOR_LOG else "none"
    if declared == "log" and not bool((values > 0).all()):
        raise DataError(
            f"target column '{name}' in {label} has values <= 0, which log cannot take: set "
            "PIPELINE_TRAIN__TARGET_TRANSFORM=log1p (for values >= 0) or none"
        )
    if declared == "log1p" and not bool((values > -1).all()):
        raise DataError(
            f"target column '{name}' in {label} has values <= -1, which log1p cannot take: set "
            "PIPELINE_TRAIN__TARGET_TRANSFORM=none"
        )
    return declared


def prepare_target(frame: pd.DataFrame, name: str, task_hint: str, label: str) -> pd.DataFrame:
    """Rows with a present target; a numeric target checked for text and infinities."""
    import numpy as np

    if name not in frame.columns:
        raise _missing_column(label, name, [str(c) for c in frame.columns], "PIPELINE_DATA__TARGET")
    target = frame[name]
    present = target.notna()
    if not present.any():
        raise DataError(
            f"target column '{name}' in {label} is empty (every value is missing): fill it in "
            "or choose another PIPELINE_DATA__TARGET"
        )
    if not present.all():  # a copy only when rows go: at 10M rows it is the whole table
        frame = frame.loc[present]  # the index keeps the file's row numbers for messages
    if task_hint == "auto":
        mostly = mostly_numbers(frame[name])
        if mostly is not None:
            row, value, count, total = mostly
            raise _bad_cell(
                name,
                label,
                row,
                value,
                f", but {count} of its {total} values are numbers: fix the row, leave it empty "
                "to drop it, or set PIPELINE_DATA__TASK=multiclass if the target is a class label",
                "target column",
            )
    if task_hint in ("auto", "regression"):
        bad = cells.first_non_number(frame[name])
        if bad is not None and task_hint == "regression":
            raise _bad_cell(
                name,
                label,
                *bad,
                ": expected a number for a regression target; fix the row or set "
                "PIPELINE_DATA__TASK to binary or multiclass",
                "target column",
            )
        if bad is None and frame[name].dtype != bool:
            values = frame[name].astype("float64").to_numpy()
            nonfinite = ~np.isfinite(values)
            if nonfinite.any():
                pos = int(nonfinite.nonzero()[0][0])
                raise cells.cell_error(
                    name,
                    label,
                    cells.data_row(frame[name], pos),
                    str(values[pos]),  # a float as text: "inf", "nan"
                    ": expected a finite number; fix the row or leave the cell empty to drop it",
                    subject="target column",
                )
    return frame


def infer(
    frame: pd.DataFrame,
    data: DataSettings,
    target_transform: str,
    label: str,
    *,
    max_cardinality: int = 1000,
) -> tuple[Schema, list[str]]:
    """The schema of ``frame`` under ``data``'s overrides, and warnings worth logging.

    A text column that is mostly numbers (or true/false) with a few other values is refused,
    naming the first odd cell; one with a different value in every row (an identifier) is
    dropped with a warning; one with more than ``max_cardinality`` distinct values is refused.
    Columns declared in ``PIPELINE_DATA__COLUMN_KINDS`` are taken as declared.
    """
    columns = [str(c) for c in frame.columns]
    if data.target not in columns:
        raise _missing_column(label, data.target, columns, "PIPELINE_DATA__TARGET")
    for name in data.column_kinds:
        if name not in columns:
            raise _missing_column(label, name, columns, "PIPELINE_DATA__COLUMN_KINDS")
    warnings = [
        f"column '{d}' listed in PIPELINE_DATA__DROP is not in {label}"
        for d in data.drop
        if d not in columns
    ]
    task = _resolve_task(frame[data.target], data.task, label, data.target)
    transform = _resolve_transform(frame[data.target], task, target_transform, label, data.target)

    out: list[Column] = []
    dropped = [d for d in data.drop if d in columns]
    for position, name in enumerate(columns, start=1):
        if name == data.target or name in data.drop:
            continue
        if not name.strip():
            raise DataError(
                f"column {position} of dataset {label} has no name (an index saved with the "
                'data?): name it in the header, or add "" to PIPELINE_DATA__DROP to ignore it'
            )
        series = frame[name]
        if series.isna().all():
            warnings.append(f"column '{name}' has no values: ignored")
            dropped.append(name)
            continue
        declared = data.column_kinds.get(name)
        kind = declared or _infer_kind(series)
        if kind == "categorical" and not declared:
            problem = _text_column_problem(series, name, label, max_cardinality)
            if problem is not None:
                warnings.append(problem)
                dropped.append(name)
                continue
        if kind == "datetime":
            raise DataError(
                f"column '{name}' in {label} holds dates, which are not supported as features: "
                "add it to PIPELINE_DATA__DROP or declare it categorical in "
                "PIPELINE_DATA__COLUMN_KINDS"
            )
        if kind == "numeric":
            bad = cells.first_non_number(series)
            if bad is not None:
                raise _bad_cell(
                    name,
                    label,
                    *bad,
                    ": expected a number; fix the row or declare the column categorical in "
                    "PIPELINE_DATA__COLUMN_KINDS",
                    "column",
                )
        out.append(Column(name, kind))
    if not out:
        raise DataError(
            f"dataset {label} has no feature columns besides the target '{data.target}': check "
            "PIPELINE_DATA__DROP"
        )
    return Schema(tuple(out), data.target, task, transform, tuple(dropped)), warnings
