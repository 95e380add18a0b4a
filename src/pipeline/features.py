"""Preprocessing: columns to tensors-ready arrays, with every statistic fitted on training rows.

numeric     -> optional log1p (long right tail) -> impute with the median -> standardise,
               plus a 0/1 missing indicator where training rows had gaps
categorical -> index into a vocabulary of values seen at least ``min_frequency`` times;
               0 is the unknown bucket (rare or unseen values), 1 is "missing"
boolean     -> a categorical with the values "false" / "true"

The fitted state is plain JSON (``Preprocessor.to_json``): nothing is pickled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.schema import Schema, data_row, first_non_number
from pipeline.errors import DataError
from pipeline.settings import FeatureSettings

UNKNOWN, MISSING = 0, 1


def as_categories(series: pd.Series) -> np.ndarray:
    """Values as canonical strings (object array, None for missing), whatever dtype was read.

    The same value must map to the same string whether a file was read as int, float or text:
    ``3``, ``3.0`` and ``"3"`` all become ``"3"``; booleans become ``"true"`` / ``"false"``.
    """
    missing = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(series):
        flags = series.fillna(False).to_numpy(dtype=bool)
        out = np.where(flags, "true", "false").astype(object)
        out[missing] = None
        return out
    if pd.api.types.is_integer_dtype(series):
        out = series.astype("string").to_numpy(dtype=object, na_value=None)
        return out
    if pd.api.types.is_float_dtype(series):
        x = series.to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(x)
        integral = finite & (np.mod(np.where(finite, x, 0.0), 1.0) == 0)
        small = integral & (np.abs(x) < 2**63)
        out = x.astype(str).astype(object)
        out[small] = x[small].astype(np.int64).astype(str)
        for k in np.flatnonzero(integral & ~small):  # beyond int64: Python's exact int
            out[k] = str(int(x[k]))
        out[missing] = None
        return out
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        return series.to_numpy(dtype=object, na_value=None)
    # Mixed Python objects (e.g. JSON lines): one value at a time.
    values = series.to_numpy(dtype=object, na_value=None)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = None
        elif isinstance(v, bool | np.bool_):
            out[i] = "true" if v else "false"
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def as_numbers(series: pd.Series, name: str, label: str) -> np.ndarray:
    """float64 values (NaN for missing); text or infinities are a ``DataError`` naming the row."""
    bad = first_non_number(series)
    if bad is not None:
        raise DataError(
            f"column '{name}' in {label} has {bad[1]!r} at data row {bad[0]}: expected a number; "
            "fix the row or leave the cell empty"
        )
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        pos = int(infinite.nonzero()[0][0])
        raise DataError(
            f"column '{name}' in {label} has {values[pos]} at data row {data_row(series, pos)}: "
            "expected a "
            "finite number; replace it or leave the cell empty"
        )
    return values


@dataclass(frozen=True)
class NumericState:
    """Fitted statistics of one numeric column."""

    name: str
    log: bool
    fill: float
    mean: float
    std: float
    indicator: bool
    low: float  # training range after the log, in raw units of the transformed value:
    high: float  # inputs are clipped to it, because a network extrapolates badly


@dataclass(frozen=True)
class CategoricalState:
    """Fitted vocabulary of one categorical or boolean column (index = position + 2)."""

    name: str
    vocab: tuple[str, ...]

    @property
    def cardinality(self) -> int:
        return len(self.vocab) + 2


@dataclass(frozen=True)
class TargetState:
    """How the target is encoded: standardised (transformed) values or class indices."""

    name: str
    task: str
    transform: str
    mean: float = 0.0
    std: float = 1.0
    classes: tuple[str, ...] = ()


@dataclass
class Encoded:
    """A frame as arrays: numeric [N, F] float32, categorical [N, C] int64, target or None."""

    numeric: np.ndarray
    categorical: np.ndarray
    target: np.ndarray | None
    unknown_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Preprocessor:
    """Fitted preprocessing for one schema."""

    numeric: tuple[NumericState, ...]
    categorical: tuple[CategoricalState, ...]
    target: TargetState

    @property
    def n_numeric_features(self) -> int:
        return len(self.numeric) + sum(s.indicator for s in self.numeric)

    def to_json(self) -> dict[str, Any]:
        """The fitted state as plain JSON (``preprocessing.json``)."""
        return {
            "format": 1,
            "numeric": [vars(s) for s in self.numeric],
            "categorical": [{"name": s.name, "vocab": list(s.vocab)} for s in self.categorical],
            "target": {**vars(self.target), "classes": list(self.target.classes)},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessor:
        """The inverse of ``to_json``."""
        target = dict(data["target"])
        target["classes"] = tuple(target["classes"])
        return cls(
            numeric=tuple(NumericState(**s) for s in data["numeric"]),
            categorical=tuple(
                CategoricalState(s["name"], tuple(s["vocab"])) for s in data["categorical"]
            ),
            target=TargetState(**target),
        )

    def transform(self, frame: pd.DataFrame, label: str, *, with_target: bool) -> Encoded:
        """Encode ``frame`` (all schema columns present) into arrays."""
        n = len(frame)
        cols: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        for s in self.numeric:
            x = as_numbers(frame[s.name], s.name, label)
            missing = np.isnan(x)
            if s.log:
                # Negative values never occurred in training; clamp so log1p stays defined.
                x = np.log1p(np.maximum(x, 0.0))
            x = np.clip(np.where(missing, s.fill, x), s.low, s.high)
            cols.append((x - s.mean) / s.std)
            if s.indicator:
                indicators.append(missing.astype("float64"))
        numeric = np.stack(cols + indicators, axis=1) if cols else np.zeros((n, 0))
        cats = np.zeros((n, len(self.categorical)), dtype=np.int64)
        unknown: dict[str, int] = {}
        for j, c in enumerate(self.categorical):
            values = as_categories(frame[c.name])
            # -1 for anything not in the vocabulary, missing values included.
            found = pd.Index(list(c.vocab), dtype=object).get_indexer(values).astype(np.int64)
            absent = pd.isna(values)
            codes = np.where(found >= 0, found + 2, np.where(absent, MISSING, UNKNOWN))
            unseen = int(((found < 0) & ~absent).sum())
            if unseen:
                unknown[c.name] = unseen
            cats[:, j] = codes
        target = self.encode_target(frame, label) if with_target else None
        return Encoded(numeric.astype(np.float32), cats, target, unknown)

    def encode_target(self, frame: pd.DataFrame, label: str) -> np.ndarray:
        """The target column encoded for the loss: standardised floats or class indices."""
        t = self.target
        series = frame[t.name]
        if t.task == "regression":
            y = as_numbers(series, t.name, label)
            y = _forward(y, t.transform)
            return ((y - t.mean) / t.std).astype(np.float32)
        lookup = {c: i for i, c in enumerate(t.classes)}
        values = as_categories(series)
        unseen = [v for v in values if v not in lookup]
        if unseen:
            raise DataError(
                f"target column '{t.name}' in {label} has class {unseen[0]!r} that "
                f"the model was not trained on: expected one of {list(t.classes)}"
            )
        return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))

    def decode_regression(self, z: np.ndarray) -> np.ndarray:
        """Model outputs (standardised, transformed) back to target units."""
        t = self.target
        return _inverse(z.astype(np.float64) * t.std + t.mean, t.transform)


def _forward(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log":
        return np.log(y)
    if transform == "log1p":
        return np.log1p(y)
    return y


def _inverse(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log":
        return np.exp(y)
    if transform == "log1p":
        return np.expm1(y)
    return y


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation that cannot overflow (values up to 1e308 are legal input).

    Both are computed on ``x / max|x|`` and scaled back; a zero spread becomes 1 so that a
    constant column standardises to 0 instead of dividing by zero.
    """
    scale = float(np.max(np.abs(x))) if len(x) else 0.0
    if scale == 0.0 or not math.isfinite(scale):
        return 0.0, 1.0
    u = x / scale
    mean, std = float(np.mean(u)) * scale, float(np.std(u)) * scale
    return mean, (std if std > 1e-12 * max(1.0, abs(mean)) and math.isfinite(std) else 1.0)


def _skew(x: np.ndarray) -> float:
    """Sample skewness, scale-free (so huge values cannot overflow it)."""
    scale = float(np.max(np.abs(x)))
    if scale == 0.0:
        return 0.0
    with np.errstate(all="ignore"):
        return float(pd.Series(x / scale).skew())


def fit(frame: pd.DataFrame, schema: Schema, cfg: FeatureSettings, label: str) -> Preprocessor:
    """Fit preprocessing on ``frame``, which must hold the training rows only."""
    numeric: list[NumericState] = []
    for name in schema.names("numeric"):
        x = as_numbers(frame[name], name, label)
        missing = np.isnan(x)
        present = x[~missing]
        log = False
        if cfg.log_skewed and len(present) > 2 and present.min() >= 0:
            skew = _skew(present)
            log = math.isfinite(skew) and skew > cfg.skew_threshold
        if log:
            present = np.log1p(present)
        fill = float(np.median(present)) if len(present) else 0.0
        filled = np.where(missing, fill, np.log1p(np.maximum(x, 0)) if log else x)
        low, high = (float(present.min()), float(present.max())) if len(present) else (0.0, 0.0)
        mean, std = _mean_std(filled)
        numeric.append(NumericState(name, log, fill, mean, std, bool(missing.any()), low, high))
    categorical: list[CategoricalState] = []
    for name in [c.name for c in schema.columns if c.kind in ("categorical", "boolean")]:
        counts = pd.Series(as_categories(frame[name])).value_counts(dropna=True)
        kept = [(v, c) for v, c in counts.items() if c >= cfg.min_frequency]
        # Most frequent first, ties by value, so the vocabulary never depends on hash order.
        kept.sort(key=lambda vc: (-vc[1], vc[0]))
        categorical.append(CategoricalState(name, tuple(v for v, _ in kept)))
    target = _fit_target(frame[schema.target], schema, label)
    return Preprocessor(tuple(numeric), tuple(categorical), target)


def _fit_target(series: pd.Series, schema: Schema, label: str) -> TargetState:
    if schema.task == "regression":
        y = _forward(as_numbers(series, schema.target, label), schema.target_transform)
        transform = schema.target_transform
        return TargetState(schema.target, "regression", transform, *_mean_std(y))
    classes = sorted({v for v in as_categories(series) if v is not None}, key=_class_key)
    return TargetState(schema.target, schema.task, "none", classes=tuple(classes))


def _class_key(value: str) -> tuple[int, float, str]:
    """Numeric class labels in numeric order (2 before 10), then text labels."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
