"""The fitted transform: per-column states, ``Preprocessor`` (frames to arrays) and ``fit``.

``fit`` learns every statistic from the training rows; ``Preprocessor.transform`` (a frame, or
validated columns) and ``Preprocessor.encode_values`` (parsed JSON records) encode with the
same arithmetic, and ``to_json`` / ``from_json`` carry the state as plain JSON.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import verdicts
from pipeline.data.schema import Schema
from pipeline.errors import DataError
from pipeline.features.categories import (
    MISSING,
    UNKNOWN,
    _vocab_lookup,
    as_categories,
    category_codes,
    category_counts,
)
from pipeline.features.columnwise import (
    Floats,
    floats_of,
    in_threads,
    threads_for,
    write_columns,
)
from pipeline.features.numeric import (
    NumericState,
    NumericTable,
    _forward,
    _inverse,
    _mean_std,
    _median,
    _robust_scale,
    _skew,
    as_numbers,
    clip_range,
    numeric_values,
    order_statistics,
    standardise,
)
from pipeline.settings import FeatureSettings


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
    # The training targets' range, standardised (from their bound_rows-th smallest to their
    # bound_rows-th largest): predictions are clipped to it, so a network cannot extrapolate
    # beyond what it was shown (None in preprocessing format 1: no bound).
    low: float | None = None
    high: float | None = None

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Regression outputs (standardised, transformed) back to target units."""
        return _inverse(z.astype(np.float64) * self.std + self.mean, self.transform)

    def bound(self, z: np.ndarray) -> np.ndarray:
        """Regression outputs clipped to the training targets' range (unchanged without one)."""
        if self.low is None or self.high is None:
            return z
        return np.clip(z, self.low, self.high)


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

    @functools.cached_property
    def n_numeric_features(self) -> int:
        return len(self.numeric) + sum(s.indicator for s in self.numeric)

    def to_json(self) -> dict[str, Any]:
        """The fitted state as plain JSON (``preprocessing.json``)."""
        return {
            "format": 3,
            "numeric": [dict(vars(s)) for s in self.numeric],
            "categorical": [{"name": s.name, "vocab": list(s.vocab)} for s in self.categorical],
            "target": {**vars(self.target), "classes": list(self.target.classes)},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessor:
        """The inverse of ``to_json``."""
        target = dict(data["target"])
        target["classes"] = tuple(target["classes"])
        return cls(
            numeric=tuple(NumericState.from_json(s) for s in data["numeric"]),
            categorical=tuple(
                CategoricalState(s["name"], tuple(s["vocab"])) for s in data["categorical"]
            ),
            target=TargetState(**target),
        )

    def transform(
        self,
        frame: pd.DataFrame | Mapping[str, pd.Series],
        label: str,
        *,
        with_target: bool,
        rows: int | None = None,
        by_column: bool = False,
    ) -> Encoded:
        """Encode ``frame`` (all schema columns present) into arrays.

        ``frame`` may also be a mapping of column name to series of ``rows`` rows (what
        ``pipeline predict`` validated), so that no frame is built just to be read back.
        ``by_column`` lays the numeric array out column by column (Fortran order), filled a
        column at a time: with a ``Consumed`` frame, the frame's memory goes back as the
        array's is taken, where a row-major array is touched whole by its first column (the
        same values either way).
        """
        n = len(frame) if rows is None else rows
        # The frame is read in this thread only; ``_encode`` parses each column in the thread
        # that encodes it.
        columns = (frame[s.name] for s in self.numeric)
        # Each categorical column coded in threads too (pyarrow's kernels), once it is drawn.
        texts = ((frame[c.name], c.vocab) for c in self.categorical)
        codes = in_threads(lambda pair: category_codes(*pair), texts, threads_for(n))
        if by_column:
            pairs = zip(columns, self.numeric, strict=True)
            numbers = (floats_of(c, s.name, label) for c, s in pairs)
            encoded = Encoded(self._numeric_by_column(n, numbers), *self._codes(n, codes))
        else:
            encoded = self._encode(n, columns, label, codes)
        if with_target:
            encoded.target = self.encode_target(frame, label)
        return encoded

    def encode_values(
        self,
        rows: int,
        numbers: Mapping[str, np.ndarray],
        texts: Mapping[str, Sequence[str | None]],
    ) -> Encoded:
        """Columns already parsed, as `pipeline serve` has them from JSON records, encoded
        with ``transform``'s arithmetic and no frame: ``numbers`` float64 (NaN for missing),
        ``texts`` the categorical and boolean columns' canonical texts (None for missing).

        The numeric columns go through the arithmetic side by side, as one [rows, F] array:
        a handful of array operations per request instead of a handful per column.
        """
        raw = np.empty((rows, len(self.numeric)), dtype=np.float64)
        for j, s in enumerate(self.numeric):
            raw[:, j] = numbers[s.name]
        return self.encode_rows(raw, [texts[c.name] for c in self.categorical])

    def encode_rows(self, raw: np.ndarray, texts: Sequence[Sequence[str | None]]) -> Encoded:
        """``encode_values`` of inputs already laid out in this preprocessor's column order:
        ``raw`` [rows, numeric columns] float64 (NaN for missing), ``texts`` one sequence of
        canonical texts per categorical column (None for missing)."""
        pairs = zip(self.lookups, texts, strict=True)
        codes = [
            [MISSING if v is None else lookup.get(v, UNKNOWN) for v in values]
            for lookup, values in pairs
        ]
        cats = np.array(codes, dtype=np.int64).reshape(len(codes), raw.shape[0]).T.copy()
        return self.encode_codes(raw, cats)

    def encode_codes(self, raw: np.ndarray, cats: np.ndarray) -> Encoded:
        """``encode_rows`` with the categorical columns' codes already looked up (``lookups``):
        ``cats`` [rows, categorical columns] int64. A served request looks its records' values
        up row by row, one C-level ``map`` per record."""
        rows = raw.shape[0]
        table = self._numeric_table
        numeric = np.empty((rows, self.n_numeric_features), dtype=np.float32)
        if self.numeric:
            values, missing = numeric_values(raw, table)
            numeric[:, : len(self.numeric)] = values
            numeric[:, len(self.numeric) :] = missing[:, table.indicator]
        unseen = np.count_nonzero(cats == UNKNOWN, axis=0)
        unknown = {self.categorical[j].name: int(unseen[j]) for j in np.flatnonzero(unseen)}
        return Encoded(numeric, cats, None, unknown)

    @functools.cached_property
    def lookups(self) -> list[dict[str, int]]:
        """Each categorical column's vocabulary as text -> code (an unseen text is ``UNKNOWN``,
        a missing one ``MISSING``), built once per loaded model."""
        return [_vocab_lookup(c.vocab) for c in self.categorical]

    @functools.cached_property
    def _numeric_table(self) -> NumericTable:
        return NumericTable.of(self.numeric)

    def _encode(
        self,
        n: int,
        columns: Iterator[pd.Series],
        label: str,
        codes: Iterator[tuple[np.ndarray, int]],
    ) -> Encoded:
        """Arrays from each numeric column (parsed and encoded a few at a time, in threads)
        and each categorical column's codes, in the preprocessor's column order."""
        masks: list[np.ndarray] = []  # missing indicators, written after the value columns
        table = self._numeric_table

        def encode(jx: tuple[int, pd.Series]) -> tuple[np.ndarray, np.ndarray]:
            j, series = jx
            return _in_blocks(floats_of(series, self.numeric[j].name, label), table.column(j))

        def values() -> Iterator[np.ndarray]:
            encoded = in_threads(encode, enumerate(columns), threads_for(n))
            for j, (value, missing) in enumerate(encoded):
                if table.indicator[j]:
                    masks.append(missing)
                yield value

        # [N, F] float32 written in place: the temporaries are a few columns' float64 values
        # and float32 encodings (and one block's arithmetic), where stacking float64 columns
        # needed 3x the output's memory.
        numeric = np.empty((n, self.n_numeric_features), dtype=np.float32)
        write_columns(numeric, 0, values())
        write_columns(numeric, len(self.numeric), iter(masks))
        return Encoded(numeric, *self._codes(n, codes))

    def _numeric_by_column(self, n: int, numbers: Iterator[Floats]) -> np.ndarray:
        """The [N, F] float32 numeric array in Fortran order, each column encoded and written
        in blocks of ``_BY_COLUMN_ROWS`` rows (the arithmetic is element-wise: the same values
        as ``_encode``'s, with a few MB of temporaries instead of a few whole columns)."""
        table = self._numeric_table
        numeric = np.empty((n, self.n_numeric_features), dtype=np.float32, order="F")
        indicator = len(self.numeric)
        for j, x in enumerate(numbers):
            column = table.column(j)
            for start in range(0, n, _BY_COLUMN_ROWS):
                block = slice(start, start + _BY_COLUMN_ROWS)
                value, missing = numeric_values(x.block(block), column)
                numeric[block, j] = value[:, 0]
                if table.indicator[j]:
                    numeric[block, indicator] = missing[:, 0]
            indicator += int(table.indicator[j])
        return numeric

    def _codes(
        self, n: int, codes: Iterator[tuple[np.ndarray, int]]
    ) -> tuple[np.ndarray, None, dict[str, int]]:
        """The [n, C] code array from each column's codes, no target, the unseen counts."""
        cats = np.zeros((n, len(self.categorical)), dtype=np.int64)
        unknown: dict[str, int] = {}
        for j, (c, (column, unseen)) in enumerate(zip(self.categorical, codes, strict=True)):
            cats[:, j] = column
            if unseen:
                unknown[c.name] = unseen
        return cats, None, unknown

    def encode_target(
        self, frame: pd.DataFrame | Mapping[str, pd.Series], label: str
    ) -> np.ndarray:
        """The target column encoded for the loss: standardised floats or class indices."""
        t = self.target
        series = frame[t.name]
        if t.task == "regression":
            y = as_numbers(series, t.name, label)
            y = _forward(y, t.transform)
            finite = y[np.isfinite(y)]
            largest = float(np.max(np.abs(finite))) if len(finite) else 0.0
            # np.array copies: y may share memory with the caller's frame.
            return standardise(np.array(y), t.mean, t.std, largest).astype(np.float32)
        lookup = {c: i for i, c in enumerate(t.classes)}
        values = as_categories(series)
        unseen = [v for v in values if v not in lookup]
        if unseen:
            raise DataError(
                f"target column '{t.name}' in {label} has class {unseen[0]!r} that "
                f"the model was not trained on: expected one of {list(t.classes)}"
            )
        return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))


# Rows encoded at a time (``_in_blocks``, ``_numeric_by_column``): 512 KB per float64
# temporary, so a block's dozen element-wise passes run in a core's 2 MB cache rather than
# memory (1M rows x 50 columns: 0.77 s in blocks of 1M, 0.64 s in blocks of 64k).
_BY_COLUMN_ROWS = 1 << 16


def _in_blocks(x: Floats, column: NumericTable) -> tuple[np.ndarray, np.ndarray]:
    """``numeric_values`` of one column's values ``x`` [n] (``column``: its statistics),
    ``_BY_COLUMN_ROWS`` rows at a time: the values as float32 [n] (what the network gets) and
    the missing mask [n]. Element-wise arithmetic: the same values as one call on all rows."""
    n = len(x)
    values = np.empty(n, dtype=np.float32)
    missing = np.empty(n, dtype=bool)
    for start in range(0, n, _BY_COLUMN_ROWS):
        block = slice(start, start + _BY_COLUMN_ROWS)
        value, absent = numeric_values(x.block(block), column)
        values[block], missing[block] = value[:, 0], absent[:, 0]
    return values, missing


def fit(
    frame: pd.DataFrame | Mapping[str, pd.Series],
    schema: Schema,
    cfg: FeatureSettings,
    label: str,
) -> Preprocessor:
    """Fit preprocessing on ``frame``, which must hold the training rows only (a frame, or a
    mapping of column name to series such as ``RowsOf``)."""
    # The frame is read in this thread only; the columns are fitted in threads, the numeric
    # ones first, then the categorical and boolean ones (pyarrow's counting, the same memory
    # as a numeric column's at most); the first column read gives the row count.
    kinds = [(c.name, c.kind == "numeric") for c in schema.columns]
    order = [nk for nk in kinds if nk[1]] + [nk for nk in kinds if not nk[1]]
    columns = ((name, numeric, frame[name]) for name, numeric in order)
    first = next(columns, None)

    def fitted(column: tuple[str, bool, pd.Series]) -> NumericState | CategoricalState:
        name, numeric, series = column
        if numeric:
            return fit_numeric(name, as_numbers(series, name, label), cfg)
        return fit_categorical(name, series, cfg)

    states: list[NumericState | CategoricalState] = []
    if first is not None:
        threads = threads_for(len(first[2]))
        states = list(in_threads(fitted, itertools.chain([first], columns), threads))
    numeric = [s for s in states if isinstance(s, NumericState)]
    categorical = [s for s in states if isinstance(s, CategoricalState)]
    target = fit_target(frame[schema.target], schema, label, cfg.bound_rows)
    return Preprocessor(tuple(numeric), tuple(categorical), target)


def fit_categorical(name: str, series: pd.Series, cfg: FeatureSettings) -> CategoricalState:
    """One categorical or boolean column's vocabulary from its training rows."""
    kept = [(v, c) for v, c in category_counts(series) if c >= cfg.min_frequency]
    # Most frequent first, ties by value, so the vocabulary never depends on hash order.
    kept.sort(key=lambda vc: (-vc[1], vc[0]))
    return CategoricalState(name, tuple(v for v, _ in kept))


def fit_numeric(name: str, x: np.ndarray, cfg: FeatureSettings) -> NumericState:
    """One numeric column's statistics from its float64 values (NaN for missing)."""
    missing = np.isnan(x)
    present = x[~missing] if missing.any() else x  # not written to below
    log = False
    if cfg.log_skewed and len(present) > 2 and present.min() >= 0:
        skew = _skew(present)
        log = math.isfinite(skew) and skew > cfg.skew_threshold
    if log:
        present = np.log1p(present)
    # The median, the quartiles and the clipping quantiles from one partition (an exact
    # median at 1M rows costs about as much as reading the column).
    median, quartiles, tails = None, None, None
    if len(present):
        median, quartiles, tails = order_statistics(present, cfg.clip_quantile)
    fill = _median(present, median)
    # Inputs are clipped to the training range (+ 0.0: a -0.0 minimum differs by machine), the
    # network's to the quantiles (the extreme 1% are too few rows to learn a trend from).
    low, high, net_low, net_high = 0.0, 0.0, None, None
    if len(present):
        low, high = float(present.min()) + 0.0, float(present.max()) + 0.0
    if tails is not None:
        net_low, net_high = clip_range(present, cfg.clip_quantile, tails)
    if cfg.scaling == "robust":
        center, scale = _robust_scale(present, quartiles)
    else:
        filled = np.where(missing, fill, np.log1p(np.maximum(x, 0)) if log else x)
        center, scale = _mean_std(filled)
    return NumericState(
        name, log, fill, center, scale, bool(missing.any()), low, high, cfg.smooth_clip,
        net_low, net_high,
    )  # fmt: skip


# The prediction bound takes one training row beyond it per this many (``fit_target``): house
# prices' 949 training rows keep the third-smallest and third-largest, a table of 400 rows or
# fewer its minimum and maximum.
ROWS_PER_BOUND_ROW = 400


def fit_target(series: pd.Series, schema: Schema, label: str, rows: int) -> TargetState:
    """The target's encoding; for regression, the range predictions are bounded to: from the
    k-th smallest to the k-th largest training target, k at most ``rows`` and one per
    ``ROWS_PER_BOUND_ROW`` training rows (1: min and max)."""
    if schema.task == "regression":
        y = _forward(as_numbers(series, schema.target, label), schema.target_transform)
        verdicts.refuse_extreme(y, series, schema.target, label)
        transform = schema.target_transform
        mean, std = _mean_std(y)
        finite = y[np.isfinite(y)]
        largest = float(np.max(np.abs(finite))) if len(finite) else 0.0
        z = standardise(np.array(finite), mean, std, largest)
        low, high = None, None
        if len(z):
            # No prediction beyond what fewer than ``rows`` training rows reached: a few
            # extreme targets are too few to extrapolate towards (a tree's leaf averages them).
            # One such row per ROWS_PER_BOUND_ROW, so the bound sits at about the same extreme
            # quantile at every size: with a tenth of 31 rows at each end (the third of them),
            # R's trees table priced its smallest test tree at the third-smallest training
            # volume (RMSE of log 0.194 -> 0.102 at the extremes; the ridge 0.097).
            k = min(rows, math.ceil(len(z) / ROWS_PER_BOUND_ROW)) - 1
            if k:
                part = np.partition(z, [k, len(z) - 1 - k])
                low, high = float(part[k]), float(part[len(z) - 1 - k])
            else:
                low, high = float(z.min()), float(z.max())
        return TargetState(schema.target, "regression", transform, mean, std, (), low, high)
    classes = sorted({v for v in as_categories(series) if v is not None}, key=_class_key)
    return TargetState(schema.target, schema.task, "none", classes=tuple(classes))


def _class_key(value: str) -> tuple[int, float, str]:
    """Numeric class labels in numeric order (2 before 10), then text labels."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
