"""Preprocessing: columns to tensors-ready arrays, with every statistic fitted on training rows.

numeric     -> optional log1p (long right tail) -> impute with the median -> clip to the
               training range -> robust scaling (median, interquartile range) -> smooth
               clipping x / sqrt(1 + (x/c)^2), so that no value lies beyond +-c (RealMLP's
               recipe, c = 1.5 by default: an outlier cannot drive the network into
               extrapolation), plus a 0/1
               missing indicator where training rows had gaps
categorical -> index into a vocabulary of values seen at least ``min_frequency`` times;
               0 is the unknown bucket (rare or unseen values), 1 is "missing"
boolean     -> a categorical with the values "false" / "true"

The fitted state is plain JSON (``Preprocessor.to_json``): nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import cells
from pipeline.data.schema import Schema
from pipeline.errors import DataError
from pipeline.settings import FeatureSettings

UNKNOWN, MISSING = 0, 1


def as_categories(series: pd.Series) -> np.ndarray:
    """Values as canonical strings (object array, None for missing), whatever dtype was read.

    The same value must map to the same string whether a file was read as int, float or text:
    ``3``, ``3.0`` and ``"3"`` all become ``"3"``; booleans become ``"true"`` / ``"false"``.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Canonicalise each category once, then spread by code (-1 is missing).
        cats = as_categories(pd.Series(series.cat.categories))
        lookup = np.empty(len(cats) + 1, dtype=object)
        lookup[:-1] = cats  # lookup[-1] stays None: code -1
        out: np.ndarray = lookup[series.cat.codes.to_numpy()]
        return out
    missing = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(series):
        flags = series.fillna(False).to_numpy(dtype=bool)
        out = np.where(flags, cells.BOOLEAN_NAMES[True], cells.BOOLEAN_NAMES[False]).astype(object)
        out[missing] = None
        return out
    if pd.api.types.is_integer_dtype(series):
        out = series.astype("string").to_numpy(dtype=object, na_value=None)
        return out
    if pd.api.types.is_float_dtype(series):
        out = cells.float_category_texts(series.to_numpy(dtype="float64", na_value=np.nan))
        out[missing] = None
        return out
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        return series.to_numpy(dtype=object, na_value=None)
    # Mixed Python objects (e.g. JSON lines): one value at a time.
    values = series.to_numpy(dtype=object, na_value=None)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = cells.category_text(v)
    return out


def _arrow_strings(series: pd.Series) -> Any:
    """The pyarrow array behind a pyarrow-backed text column (pandas' default), else None.

    Text columns read through pyarrow stay in Arrow memory; encoding them there with pyarrow's
    kernels avoids making a Python ``str`` object per cell (the slow part at a million rows).
    Such a column's values are already canonical (``as_categories`` returns them unchanged).
    """
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa

        return pa.array(series.array)
    return None


def category_counts(series: pd.Series) -> list[tuple[str, int]]:
    """(canonical value, count) of every present value, in no particular order."""
    arr = _arrow_strings(series)
    if arr is not None:
        import pyarrow.compute as pc

        counted = pc.value_counts(arr.drop_null())
        values, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
        return list(zip(values, counts, strict=True))
    counts_ = pd.Series(as_categories(series)).value_counts(dropna=True)
    return [(v, int(c)) for v, c in counts_.items()]


def category_codes(series: pd.Series, vocab: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """Codes into ``vocab`` (its position + 2; ``MISSING``; ``UNKNOWN`` for values not in it),
    and how many present values were unknown."""
    arr = _arrow_strings(series)
    if arr is not None:
        import pyarrow.compute as pc

        # null where the value is missing or not in the vocabulary.
        index = pc.index_in(arr, value_set=_vocab_array(vocab, arr.type))
        found = pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        absent = arr.is_null().to_numpy(zero_copy_only=False)
    else:
        values = as_categories(series)
        # -1 for anything not in the vocabulary, missing values included.
        found = _vocab_index(vocab).get_indexer(values).astype(np.int64)
        absent = pd.isna(values)
    codes = np.where(found >= 0, found + 2, np.where(absent, MISSING, UNKNOWN))
    return codes, int(((found < 0) & ~absent).sum())


# A package's vocabularies, as the lookup structures encoding needs, built once per process
# rather than once per call (a served request encodes a single row).
@functools.lru_cache(maxsize=4096)
def _vocab_index(vocab: tuple[str, ...]) -> pd.Index:
    index = pd.Index(list(vocab), dtype=object)
    index.get_indexer([])  # builds the hash table now, kept with the cached index
    return index


@functools.lru_cache(maxsize=4096)
def _vocab_array(vocab: tuple[str, ...], type_: Any) -> Any:
    import pyarrow as pa

    return pa.array(vocab, type=type_)


@functools.lru_cache(maxsize=4096)
def _vocab_lookup(vocab: tuple[str, ...]) -> dict[str, int]:
    return {value: i + 2 for i, value in enumerate(vocab)}


def text_codes(values: Sequence[str | None], vocab: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """``category_codes`` of canonical texts (None for missing) given as a plain sequence."""
    lookup = _vocab_lookup(vocab)
    codes = np.fromiter(
        (MISSING if v is None else lookup.get(v, UNKNOWN) for v in values),
        dtype=np.int64,
        count=len(values),
    )
    return codes, int(np.count_nonzero(codes == UNKNOWN))


def as_numbers(series: pd.Series, name: str, label: str) -> np.ndarray:
    """float64 values (NaN for missing); text or infinities are a ``DataError`` naming the row.

    Training's number rule (``cells.parse_numbers``'s ``pandas``): the fitted statistics, and so
    every build id, depend on it.
    """
    values, bad = cells.parse_numbers(series)
    if bad.any():
        pos = int(bad.nonzero()[0][0])
        raise cells.cell_error(
            name,
            label,
            cells.data_row(series, pos),
            cells.shown(cells.plain(series.iloc[pos]), None),
            ": expected a number; fix the row or leave the cell empty",
        )
    infinite = np.isinf(values)
    if infinite.any():
        pos = int(infinite.nonzero()[0][0])
        raise cells.cell_error(
            name,
            label,
            cells.data_row(series, pos),
            str(values[pos]),  # a float as text: "inf" or "-inf"
            ": expected a finite number; replace it or leave the cell empty",
        )
    return values


@dataclass(frozen=True)
class NumericState:
    """Fitted statistics of one numeric column: ``(clip(x, low, high) - center) / scale``,
    then smoothly clipped to ``+-smooth_clip`` when it is not 0."""

    name: str
    log: bool
    fill: float
    center: float
    scale: float
    indicator: bool
    low: float  # training range after the log, in raw units of the transformed value:
    high: float  # inputs are clipped to it, because a network extrapolates badly
    smooth_clip: float = 0.0  # 0: none (preprocessing format 1 had none)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NumericState:
        """A column of ``preprocessing.json``; format 1 named the center and scale mean, std."""
        data = dict(data)
        if "mean" in data:
            data["center"], data["scale"] = data.pop("mean"), data.pop("std")
        return cls(**data)


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
    # The training targets' range, standardised: predictions are clipped to it, so a network
    # cannot extrapolate beyond what it was shown (None in preprocessing format 1: no bound).
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

    @property
    def n_numeric_features(self) -> int:
        return len(self.numeric) + sum(s.indicator for s in self.numeric)

    def to_json(self) -> dict[str, Any]:
        """The fitted state as plain JSON (``preprocessing.json``)."""
        return {
            "format": 2,
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
    ) -> Encoded:
        """Encode ``frame`` (all schema columns present) into arrays.

        ``frame`` may also be a mapping of column name to series of ``rows`` rows (what
        ``pipeline predict`` validated), so that no frame is built just to be read back.
        """
        n = len(frame) if rows is None else rows
        numbers = (as_numbers(frame[s.name], s.name, label) for s in self.numeric)
        codes = (category_codes(frame[c.name], c.vocab) for c in self.categorical)
        encoded = self._encode(n, numbers, codes)
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
        table = self._numeric_table
        numeric = np.empty((rows, self.n_numeric_features), dtype=np.float32)
        if self.numeric:
            raw = np.empty((rows, len(self.numeric)), dtype=np.float64)
            for j, s in enumerate(self.numeric):
                raw[:, j] = numbers[s.name]
            values, missing = numeric_values(raw, table)
            numeric[:, : len(self.numeric)] = values
            numeric[:, len(self.numeric) :] = missing[:, table.indicator]
        codes = (text_codes(texts[c.name], c.vocab) for c in self.categorical)
        return Encoded(numeric, *self._codes(rows, codes))

    @functools.cached_property
    def _numeric_table(self) -> NumericTable:
        return NumericTable.of(self.numeric)

    def _encode(
        self,
        n: int,
        numbers: Iterator[np.ndarray],
        codes: Iterator[tuple[np.ndarray, int]],
    ) -> Encoded:
        """Arrays from each numeric column's float64 values and each categorical column's
        codes, in the preprocessor's column order, one numeric column at a time."""
        masks: list[np.ndarray] = []  # missing indicators, written after the value columns
        table = self._numeric_table

        def values() -> Iterator[np.ndarray]:
            for j, x in enumerate(numbers):
                value, missing = numeric_values(x[:, None], table.column(j))
                if table.indicator[j]:
                    masks.append(missing[:, 0])
                yield value[:, 0]

        # [N, F] float32 written in place: one column's float64 arithmetic is the only
        # temporary, where stacking float64 columns needed 3x the output's memory.
        numeric = np.empty((n, self.n_numeric_features), dtype=np.float32)
        _write_columns(numeric, 0, values())
        _write_columns(numeric, len(self.numeric), iter(masks))
        return Encoded(numeric, *self._codes(n, codes))

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


# Staging for _write_columns: at most this many bytes, copied out this many rows at a time.
_STAGE_BYTES = 64 << 20
_BLOCK_ROWS = 16384


def _write_columns(out: np.ndarray, first: int, columns: Iterator[np.ndarray]) -> None:
    """Write ``columns`` (each [N]) into ``out[:, first:]`` in order, cast to ``out``'s dtype.

    Writing one column of a row-major array touches a cache line per value; a few columns
    staged side by side and copied out in row blocks fill each line at once (5x faster at 1M
    rows). The stage holds as many columns as fit in ``_STAGE_BYTES``, at least one.
    """
    n, width = out.shape
    if width == 0:
        return
    stage = np.empty((max(1, min(width, _STAGE_BYTES // max(1, n * out.itemsize))), n), out.dtype)
    used = 0

    def flush() -> None:
        for start in range(0, n, _BLOCK_ROWS):
            block = slice(start, start + _BLOCK_ROWS)
            out[block, first : first + used] = stage[:used, block].T

    for column in columns:
        stage[used] = column
        used += 1
        if used == len(stage):
            flush()
            first, used = first + used, 0
    if used:
        flush()


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


def _median(x: np.ndarray) -> float:
    """The median (0 for no values); the mean of the middle two cannot overflow.

    ``np.median`` adds the two middle values of an even count, which is infinite for two
    values near 1.8e308; halving first is exact (a power of two), so it only runs then.
    """
    if not len(x):
        return 0.0
    with np.errstate(over="ignore"):
        median = float(np.median(x))
    return median if math.isfinite(median) else float(np.median(x * 0.5)) * 2.0


# |x| + |mean| below this cannot overflow float64 (whose largest value is about 1.8e308).
_SAFE_SUM = 1e307


@dataclass(frozen=True)
class NumericTable:
    """The numeric columns' fitted statistics as arrays, one entry per column, so that the
    arithmetic runs on several columns side by side with the same per-value operations."""

    log: np.ndarray  # bool
    fill: np.ndarray
    low: np.ndarray
    high: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    largest: np.ndarray  # the largest magnitude an input is clipped to (``standardise``)
    radius: np.ndarray  # smooth clipping radius; 0: none
    indicator: np.ndarray  # bool

    @classmethod
    def of(cls, states: tuple[NumericState, ...]) -> NumericTable:
        def floats(values: list[float]) -> np.ndarray:
            return np.array(values, dtype=np.float64)

        return cls(
            log=np.array([s.log for s in states], dtype=bool),
            fill=floats([s.fill for s in states]),
            low=floats([s.low for s in states]),
            high=floats([s.high for s in states]),
            center=floats([s.center for s in states]),
            scale=floats([s.scale for s in states]),
            largest=floats([max(abs(s.low), abs(s.high)) for s in states]),
            radius=floats([s.smooth_clip for s in states]),
            indicator=np.array([s.indicator for s in states], dtype=bool),
        )

    def column(self, j: int) -> NumericTable:
        """Column ``j`` alone (views, no copies)."""
        one = slice(j, j + 1)
        return NumericTable(*(getattr(self, f.name)[one] for f in dataclasses.fields(self)))


def numeric_values(x: np.ndarray, t: NumericTable) -> tuple[np.ndarray, np.ndarray]:
    """Encoded values (a new float64 array) and the missing mask of ``x`` [n, k] (float64, NaN
    for missing), whose k columns ``t`` describes: optional log1p (negative values, which never
    occurred in training, clamped to 0), the median for missing values, clipping to the
    training range, robust scaling, then smooth clipping where a radius is set.

    Each value goes through the same operations whether its column is encoded alone or beside
    others, so a row's encoding does not depend on how it was read.
    """
    missing = np.isnan(x)
    if t.log.any():
        x = np.where(t.log, np.log1p(np.maximum(x, 0.0)), x)
    x = np.where(missing, t.fill, x)  # a new array: the in-place steps are safe
    np.clip(x, t.low, t.high, out=x)
    # -0.0 becomes 0.0: clipping keeps or drops a zero's sign depending on whether numpy's
    # vector or scalar loop ran, which depends on how many columns are encoded at once.
    x += 0.0
    x = standardise(x, t.center, t.scale, t.largest)
    clipped = t.radius > 0
    if clipped.any():
        x = np.where(clipped, smooth_clip(x.copy(), np.where(clipped, t.radius, 1.0)), x)
    return x, missing


def standardise(x: np.ndarray, mean: Any, std: Any, largest: Any) -> np.ndarray:
    """``(x - mean) / std``, in place where it can be; ``largest`` bounds ``|x|``. The
    statistics are numbers, or arrays with one entry per column of ``x``.

    Values up to 1.8e308 are legal input, and ``x - mean`` overflows to infinity when ``x``
    and ``mean`` are both that large with opposite signs. Only then is the same quantity
    computed as ``x / std - mean / std``, whose terms stay small (the spread is at least a
    fixed fraction of the mean): ordinary data keeps the exact arithmetic, and its bytes.
    """
    with np.errstate(over="ignore"):  # a sum that overflows is simply not exact
        exact = np.asarray(largest + np.abs(mean) < _SAFE_SUM)
    if exact.all():
        x -= mean
        x /= std
        return x
    if not exact.any():
        x /= std
        x -= mean / std
        return x
    with np.errstate(over="ignore"):  # the branch that overflows is not the one kept
        return np.where(exact, (x - mean) / std, x / std - mean / std)


def smooth_clip(x: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """``x / sqrt(1 + (x / radius)^2)`` in place: the identity near 0, at most ``radius``
    (one radius, or one per column of ``x``).

    ``hypot`` cannot overflow, so values up to float64's largest still map into the range.
    """
    x /= radius
    x /= np.hypot(1.0, x)
    x *= radius
    return x


def _robust_scale(x: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range (half the full range where that is 0; 1 for a constant).

    Values near float64's largest are divided by their largest magnitude first (and the result
    scaled back), so that the quantiles' interpolation cannot overflow; ordinary values keep
    the exact arithmetic.
    """
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    if top == 0.0 or not math.isfinite(top):
        return 0.0, 1.0
    unit = top if top > _SAFE_SUM / 4 else 1.0
    u = x / unit if unit != 1.0 else x
    q25, q50, q75 = (float(q) for q in np.quantile(u, [0.25, 0.5, 0.75]))
    tiny = 1e-12 * max(abs(q50), float(np.max(np.abs(u))))
    spread = q75 - q25
    if spread <= tiny:
        spread = 0.5 * (float(u.max()) - float(u.min()))
    if spread <= tiny or not math.isfinite(spread):
        return q50 * unit, 1.0
    return q50 * unit, spread * unit


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
        fill = _median(present)
        filled = np.where(missing, fill, np.log1p(np.maximum(x, 0)) if log else x)
        low, high = (float(present.min()), float(present.max())) if len(present) else (0.0, 0.0)
        if cfg.scaling == "robust":
            center, scale = _robust_scale(present)
        else:
            center, scale = _mean_std(filled)
        numeric.append(
            NumericState(
                name,
                log,
                fill,
                center,
                scale,
                bool(missing.any()),
                low,
                high,
                cfg.smooth_clip,
            )
        )
    categorical: list[CategoricalState] = []
    for name in [c.name for c in schema.columns if c.kind in ("categorical", "boolean")]:
        kept = [(v, c) for v, c in category_counts(frame[name]) if c >= cfg.min_frequency]
        # Most frequent first, ties by value, so the vocabulary never depends on hash order.
        kept.sort(key=lambda vc: (-vc[1], vc[0]))
        categorical.append(CategoricalState(name, tuple(v for v, _ in kept)))
    target = _fit_target(frame[schema.target], schema, label)
    return Preprocessor(tuple(numeric), tuple(categorical), target)


def _fit_target(series: pd.Series, schema: Schema, label: str) -> TargetState:
    if schema.task == "regression":
        y = _forward(as_numbers(series, schema.target, label), schema.target_transform)
        transform = schema.target_transform
        mean, std = _mean_std(y)
        finite = y[np.isfinite(y)]
        largest = float(np.max(np.abs(finite))) if len(finite) else 0.0
        z = standardise(np.array(finite), mean, std, largest)
        low, high = (float(z.min()), float(z.max())) if len(z) else (None, None)
        return TargetState(schema.target, "regression", transform, mean, std, (), low, high)
    classes = sorted({v for v in as_categories(series) if v is not None}, key=_class_key)
    return TargetState(schema.target, schema.task, "none", classes=tuple(classes))


def _class_key(value: str) -> tuple[int, float, str]:
    """Numeric class labels in numeric order (2 before 10), then text labels."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
