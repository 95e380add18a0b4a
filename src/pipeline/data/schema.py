"""Column kinds, the task, and the target: inferred from a frame, overridable by settings.

The resolved ``Schema`` is stored with every build; it is the input contract predictions are
validated against.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.data import cells, spellings, verdicts
from pipeline.errors import ConfigError, DataError
from pipeline.settings import DataSettings

if TYPE_CHECKING:
    import pandas as pd

# A regression target with a right tail longer than this is fitted on its log by default.
_TARGET_SKEW_FOR_LOG = 0.75
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
    from pipeline.data.csv_errors import delimiter_hint

    # The same name in another case first (target y, column Y): difflib scores it by letters.
    close = [c for c in columns if c.casefold() == name.casefold()]
    close = close or difflib.get_close_matches(name, columns, n=1)
    hint = delimiter_hint(columns) or (f"did you mean '{close[0]}'? " if close else "")
    shown = ", ".join(cells.printable(c, 60) for c in columns[:12])
    more = f", ... ({len(columns)} in all)" if len(columns) > 12 else ""
    return DataError(
        f"dataset {label} has no column '{name}' ({setting}): {hint}columns are {shown}{more}"
    )


def _absent_drop(name: str, columns: list[str], label: str) -> str:
    """The warning for a column of the default drop list that ``label`` lacks; when the table
    has it in another case (``id`` for ``Id``), that column is named: it is a feature now."""
    said = f"column '{name}' listed in PIPELINE_DATA__DROP is not in {label}"
    like = [c for c in columns if c.casefold() == name.casefold()]
    if not like:
        return said
    return (
        f"{said}; its column '{like[0]}' is used as a feature: if it is an id, set "
        f"PIPELINE_DATA__DROP='{json.dumps([like[0]])}'"
    )


def _infer_kind(series: pd.Series) -> str:
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if series.dtype == object:  # pyarrow's booleans with a missing cell: True/False/None
        present = series.dropna()
        if len(present) and all(isinstance(v, bool | np.bool_) for v in present):
            return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if spellings.is_temporal(series):
        return "datetime"
    return "categorical"


def _resolve_task(target: pd.Series, declared: str, label: str, name: str) -> str:
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    # More than _FEW_CODES distinct numbers among the first rows settle it: an amount (the
    # checks below would all pass), without hashing a million values (40 ms).
    first = target.iloc[:_FIRST_ROWS]
    if numeric and declared in ("auto", "regression") and first.nunique() > _FEW_CODES:
        return "regression"
    distinct = target.dropna().unique()
    if len(distinct) < 2:
        value = cells.plain(distinct[0]) if len(distinct) else None
        raise DataError(
            f"target column '{name}' in {label} has a single value {value!r}: expected at least "
            "two distinct values; check PIPELINE_DATA__TARGET and the file"
        )
    if declared != "auto":
        if declared == "binary" and len(distinct) != 2:
            verdicts.refuse_spelt_twice(target, name, label)  # Y/N and yes/no: say that first
            raise DataError(
                f"target column '{name}' in {label} has {len(distinct)} distinct values but "
                "PIPELINE_DATA__TASK=binary expects 2: use multiclass or regression"
            )
        return declared
    if numeric and len(distinct) > 2:
        codes = len(distinct) <= _FEW_CODES and 2 * len(distinct) <= target.notna().sum()
        if codes and all(float(v).is_integer() for v in distinct):
            shown = ", ".join(str(cells.plain(v)) for v in sorted(distinct))
            raise DataError(
                f"target column '{name}' in {label} holds {len(distinct)} whole numbers "
                f"({shown}): classes coded as numbers, or amounts? set PIPELINE_DATA__TASK="
                "multiclass for classes, or PIPELINE_DATA__TASK=regression for amounts"
            )
        return "regression"
    return "binary" if len(distinct) == 2 else "multiclass"


# A numeric target of at most this many distinct whole numbers, each seen twice on average
# (1, 2, 3; a quality score of 3 to 8), reads as classes as well as amounts: `task=auto`
# refuses to pick.
_FEW_CODES = 10
# How many rows ``_resolve_task`` looks at first for a numeric target.
_FIRST_ROWS = 4096


def _text_column(
    series: pd.Series, name: str, label: str, max_cardinality: int
) -> tuple[str | None, str | None]:
    """The kind of an inferred text column (None: dropped, an identifier) and a warning to log.

    A column whose values are all numbers (text in a Parquet file, say) is numeric; one that
    needs the user's decision is a ``DataError``; an identifier is dropped with the warning.
    """
    advice = "declare the column categorical in PIPELINE_DATA__COLUMN_KINDS"
    profile = spellings.profile(series)
    verdicts.refuse_spellings(series, profile, name, label)
    if profile.numbers.sum() == profile.present.sum():  # with a note on leading zeros
        return "numeric", verdicts.zero_padded(profile.uniques, name)
    mostly = verdicts.mostly(series, profile.numbers, placeholder=True)
    if mostly is not None:
        row, value, count, total = mostly
        raise verdicts.bad_cell(
            name,
            label,
            row,
            value,
            f", but {count} of its {total} values are numbers: fix the row, add {value!r} to "
            f"PIPELINE_DATA__MISSING_VALUES if it means missing, or {advice}",
            "column",
        )
    mostly = verdicts.mostly_booleans(series, profile)
    if mostly is not None:
        row, value, count, total = mostly
        raise verdicts.bad_cell(
            name,
            label,
            row,
            value,
            f", but {count} of its {total} values are true/false: fix the row, or {advice}",
            "column",
        )
    present = int(profile.present.sum())
    distinct = len(profile.uniques)  # the present values, as ``nunique`` counts them
    if present >= IDENTIFIER_MIN_ROWS and distinct == present:
        warning = (
            f"column '{name}' has a different value in every row (an identifier?): ignored; "
            f"add it to PIPELINE_DATA__DROP to say so, or {advice} to keep it"
        )
        return None, warning
    if distinct > max_cardinality:
        raise DataError(
            f"column '{name}' in {label} has {distinct} distinct text values, more than "
            f"PIPELINE_FEATURES__MAX_CATEGORICAL_CARDINALITY={max_cardinality}: add it to "
            f"PIPELINE_DATA__DROP, {advice}, or raise the limit"
        )
    return "categorical", verdicts.twin_spellings(profile.uniques, name)


_REAL_EXTREMES = (
    "; if such values are real, declare PIPELINE_TRAIN__TARGET_TRANSFORM=log, under which only "
    "the logs are checked"
)


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
        if not positive:
            verdicts.refuse_stray_non_positive(values, target, name, label, _TARGET_SKEW_FOR_LOG)
        skewed = positive and float(values.skew()) > _TARGET_SKEW_FOR_LOG
        if skewed:  # a placeholder skews the target too, and the log would hide it from the
            # check that refuses it (99999999999 among house prices: 30 spreads away in logs)
            verdicts.refuse_extreme(values.to_numpy(), values, name, label, _REAL_EXTREMES)
        return "log" if skewed else "none"
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
    """Rows with a present target; a target that may be a number (task auto or regression)
    checked for dates, formatted numbers, text and infinities, text numbers made numbers."""
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
        kept = frame[name]
        if kept.dtype == object and all(isinstance(v, bool | np.bool_) for v in kept):
            # True/false with missing cells came as Python objects: without the missing ones
            # they are a bool column again (they were read as the numbers 1 and 0, so the
            # classes were "0" and "1" where the same file without a gap gave "false"/"true").
            frame = frame.assign(**{name: kept.astype(bool)})
    if task_hint in ("auto", "regression"):
        frame = verdicts.text_target(frame, name, task_hint, label)
        bad = cells.first_non_number(frame[name])
        if bad is not None and task_hint == "regression":
            raise verdicts.bad_cell(
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
    drop_declared: bool = False,
) -> tuple[Schema, list[str]]:
    """The schema of ``frame`` under ``data``'s overrides, and warnings worth logging.

    A text column whose values are all numbers is numeric. One that is dates, formatted
    numbers (``208,500``, ``12%``), or mostly numbers (or true/false) with a few other values is
    refused, naming a cell (``verdicts``); one with a different value in every row (an
    identifier) is dropped with a warning; one with more than ``max_cardinality`` distinct
    values is refused. Columns declared in ``PIPELINE_DATA__COLUMN_KINDS`` are taken as declared.
    A column in ``PIPELINE_DATA__DROP`` that the data lacks is refused when the user set the
    list (``drop_declared``: a misspelt id column would otherwise become a feature), and only
    warned about in the default list, which names a column (``Id``) many tables lack.

    ``infer_target``, ``infer_column`` and ``finish`` are its steps, for a caller that has the
    columns in other processes (`pipeline train --workers`).
    """
    columns = [str(c) for c in frame.columns]
    head = infer_target(columns, frame[data.target] if data.target in columns else None,
                        data, target_transform, label, drop_declared=drop_declared)  # fmt: skip
    out: list[Column] = []
    for position, name in enumerate(columns, start=1):
        if name == data.target or name in data.drop:
            continue
        column, warning = infer_column(frame[name], name, position, data, label, max_cardinality)
        if warning is not None:
            head.warnings.append(warning)
        if column is None:
            head.dropped.append(name)
        else:
            out.append(column)
    return finish(head, out, data, label), head.warnings


@dataclass
class Head:
    """What the header and the target decide: the task, the target's transform, the columns
    dropped so far and the warnings so far (``infer``'s first step)."""

    task: str
    transform: str
    dropped: list[str]
    warnings: list[str]


def infer_target(
    columns: list[str],
    target: pd.Series | None,
    data: DataSettings,
    target_transform: str,
    label: str,
    *,
    drop_declared: bool = False,
) -> Head:
    """``infer``'s checks of the header (``columns``, every name in the file) and of the target
    column's values (None: the file lacks it, which is an error)."""
    if target is None or data.target not in columns:
        raise _missing_column(label, data.target, columns, "PIPELINE_DATA__TARGET")
    for name in data.column_kinds:
        if name not in columns:
            raise _missing_column(label, name, columns, "PIPELINE_DATA__COLUMN_KINDS")
    absent = [d for d in dict.fromkeys(data.drop) if d not in columns]
    if absent and drop_declared:
        raise _missing_column(label, absent[0], columns, "PIPELINE_DATA__DROP")
    warnings = [_absent_drop(d, columns, label) for d in absent]
    task = _resolve_task(target, data.task, label, data.target)
    transform = _resolve_transform(target, task, target_transform, label, data.target)
    # In the file's order, once each: the drop list in another order, or naming a column
    # twice, is the same schema (and build id).
    return Head(task, transform, [c for c in columns if c in data.drop], warnings)


def infer_column(
    series: pd.Series,
    name: str,
    position: int,
    data: DataSettings,
    label: str,
    max_cardinality: int,
) -> tuple[Column | None, str | None]:
    """One input column (``position`` counts from 1 in the file): its ``Column``, or None when
    it is dropped, and a warning to log, if any; a ``DataError`` when it cannot be a feature."""
    if not name.strip():
        raise DataError(
            f"column {position} of dataset {label} has no name (an index saved with the "
            'data?): name it in the header, or add "" to PIPELINE_DATA__DROP to ignore it'
        )
    if series.isna().all():
        return None, f"column '{name}' has no values: ignored"
    declared = data.column_kinds.get(name)
    kind = declared or _infer_kind(series)
    note = None
    if kind == "categorical" and not declared:
        inferred, note = _text_column(series, name, label, max_cardinality)
        if inferred is None:
            return None, note
        kind = inferred
    if kind == "datetime":
        raise DataError(
            f"column '{name}' in {label} holds dates, times or durations, which are not "
            "supported as features: add it to PIPELINE_DATA__DROP or declare it categorical "
            "in PIPELINE_DATA__COLUMN_KINDS"
        )
    if kind == "boolean":  # declared so, or read so: every present cell true or false
        wrong = cells.parse_booleans(series)[1]
        if wrong.any():
            pos = int(wrong.nonzero()[0][0])
            raise verdicts.bad_cell(
                name, label, cells.data_row(series, pos), cells.plain(series.iloc[pos]),
                ": expected true or false; fix the row or declare another kind in "
                "PIPELINE_DATA__COLUMN_KINDS", "column",
            )  # fmt: skip
    if kind == "numeric":
        bad = cells.first_non_number(series)
        if bad is not None:
            raise verdicts.bad_cell(
                name,
                label,
                *bad,
                ": expected a number; fix the row or declare the column categorical in "
                "PIPELINE_DATA__COLUMN_KINDS",
                "column",
            )
        if not declared and verdicts.counts_rows(series, IDENTIFIER_MIN_ROWS):
            return Column(name, kind), (
                f"column '{name}' counts the rows ({int(series.iloc[0])}, "
                f"{int(series.iloc[0]) + 1}, {int(series.iloc[0]) + 2}, ...): an index saved with "
                "the data? It is used as a feature, which ties a prediction to a row's place in "
                "the file; add it to PIPELINE_DATA__DROP, or, a trend such as a year per row, "
                "declare it numeric in PIPELINE_DATA__COLUMN_KINDS to keep it without this word"
            )
        note = note or verdicts.beyond_float(series, name)
    return Column(name, kind), note


def finish(head: Head, columns: list[Column], data: DataSettings, label: str) -> Schema:
    """The schema from ``infer_target``'s result and the input columns, in file order."""
    if not columns:
        raise DataError(
            f"dataset {label} has no feature columns besides the target '{data.target}': check "
            "PIPELINE_DATA__DROP"
        )
    return Schema(tuple(columns), data.target, head.task, head.transform, tuple(head.dropped))
