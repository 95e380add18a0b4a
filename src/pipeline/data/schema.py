"""Column kinds, the task, and the target: inferred from a frame, overridable by settings.

The resolved ``Schema`` is stored with every build; it is the input contract predictions are
validated against.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, DataError
from pipeline.settings import DataSettings

if TYPE_CHECKING:
    import pandas as pd

# A regression target with a right tail longer than this is fitted on its log by default.
_TARGET_SKEW_FOR_LOG = 0.75


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
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return DataError(
        f"dataset {label} has no column '{name}' ({setting}): {hint}columns are {shown}"
    )


def _infer_kind(series: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        return "datetime"
    return "categorical"


def data_row(series: pd.Series, position: int) -> int:
    """The 1-based data row in the file (header excluded) of ``series``'s ``position``-th value.

    Frames keep the file's row numbers as their index, even after rows are filtered out.
    """
    return int(series.index[position]) + 1


def plain(value: Any) -> Any:
    """A value as the user wrote it: numpy scalars unwrapped for messages."""
    return value.item() if hasattr(value, "item") else value


def first_non_number(series: pd.Series) -> tuple[int, Any] | None:
    """(1-based data row, value) of the first present value that is not a number, else None."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    coerced = pd.to_numeric(series, errors="coerce")
    bad = coerced.isna() & series.notna()
    if not bad.any():
        return None
    pos = int(bad.to_numpy().nonzero()[0][0])
    return data_row(series, pos), plain(series.iloc[pos])


def _resolve_task(target: pd.Series, declared: str, label: str, name: str) -> str:
    import pandas as pd

    distinct = target.dropna().unique()
    if len(distinct) < 2:
        value = plain(distinct[0]) if len(distinct) else None
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
    frame = frame.loc[present]  # the index keeps the file's row numbers for messages
    if task_hint in ("auto", "regression"):
        bad = first_non_number(frame[name])
        if bad is not None and task_hint == "regression":
            raise DataError(
                f"target column '{name}' in {label} has {bad[1]!r} at data row {bad[0]}: "
                "expected a number for a regression target; fix the row or set "
                "PIPELINE_DATA__TASK to binary or multiclass"
            )
        if bad is None and frame[name].dtype != bool:
            values = frame[name].astype("float64").to_numpy()
            nonfinite = ~np.isfinite(values)
            if nonfinite.any():
                pos = int(nonfinite.nonzero()[0][0])
                raise DataError(
                    f"target column '{name}' in {label} has {values[pos]} at data row "
                    f"{data_row(frame[name], pos)}: expected a finite number; fix the row or "
                    "leave the cell empty to drop it"
                )
    return frame


def infer(
    frame: pd.DataFrame, data: DataSettings, target_transform: str, label: str
) -> tuple[Schema, list[str]]:
    """The schema of ``frame`` under ``data``'s overrides, and warnings worth logging."""
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
    for name in columns:
        if name == data.target or name in data.drop:
            continue
        series = frame[name]
        if series.isna().all():
            warnings.append(f"column '{name}' has no values: ignored")
            dropped.append(name)
            continue
        kind = data.column_kinds.get(name) or _infer_kind(series)
        if kind == "datetime":
            raise DataError(
                f"column '{name}' in {label} holds dates, which are not supported as features: "
                "add it to PIPELINE_DATA__DROP or declare it categorical in "
                "PIPELINE_DATA__COLUMN_KINDS"
            )
        if kind == "numeric":
            bad = first_non_number(series)
            if bad is not None:
                raise DataError(
                    f"column '{name}' in {label} has {bad[1]!r} at data row {bad[0]}: "
                    "expected a number; fix the row or declare the column categorical in "
                    "PIPELINE_DATA__COLUMN_KINDS"
                )
        out.append(Column(name, kind))
    if not out:
        raise DataError(
            f"dataset {label} has no feature columns besides the target '{data.target}': check "
            "PIPELINE_DATA__DROP"
        )
    return Schema(tuple(out), data.target, task, transform, tuple(dropped)), warnings
