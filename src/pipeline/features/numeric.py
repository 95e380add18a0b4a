"""Numeric columns: parsing, the fitted statistics, and the arithmetic that encodes them.

Fitting (``_median``, ``_robust_scale``, ``_mean_std``, ``_skew``) and encoding
(``numeric_values``: log1p, impute, clip, scale, smooth clip) are written so that values up to
float64's largest neither overflow nor change the arithmetic of ordinary data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import cells


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
    low: float  # the training rows' range after the log, in raw units of the transformed
    high: float  # value: inputs are clipped to it (format 2: their clip_quantile quantiles)
    smooth_clip: float = 0.0  # 0: none (preprocessing format 1 had none)
    # The network's range (the clip_quantile quantiles; None: low and high), which it clips
    # its inputs to (``network_bounds``); formats 1 and 2 clipped every input to it.
    net_low: float | None = None
    net_high: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NumericState:
        """A column of ``preprocessing.json``; format 1 named the center and scale mean, std."""
        data = dict(data)
        if "mean" in data:
            data["center"], data["scale"] = data.pop("mean"), data.pop("std")
        return cls(**data)


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


def _median(x: np.ndarray, median: float | None = None) -> float:
    """The median (0 for no values); the mean of the middle two cannot overflow.

    ``np.median`` adds the two middle values of an even count, which is infinite for two
    values near 1.8e308; halving first is exact (a power of two), so it only runs then.
    ``median`` is ``np.median(x)`` when the caller has it (``order_statistics``).
    """
    if not len(x):
        return 0.0
    if median is None:
        with np.errstate(over="ignore"):
            median = float(np.median(x))
    return median if math.isfinite(median) else float(np.median(x * 0.5)) * 2.0


_QUARTILES = np.array([0.25, 0.5, 0.75])


@functools.cache
def _sorting_is_faster() -> bool:
    """Whether numpy's sort of a column beats its partition at a dozen positions here: 3x
    faster on a machine where numpy sorts with AVX-512 (650k values: 4 ms against 13 ms), 3x
    slower on an AMD EPYC with the same numpy 2.4 (35 ms against 12 ms). Timed once a process
    on 2^17 values; both give the same statistics, so only the speed depends on the answer."""
    probe = np.random.default_rng(0).random(1 << 17)
    positions = np.array([1, 1 << 15, 1 << 16, 3 << 15, (1 << 17) - 2])

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(lambda: np.sort(probe)) < best(lambda: np.partition(probe, positions))


def order_statistics(
    x: np.ndarray, tails: float = 0.0
) -> tuple[float, tuple[float, float, float], tuple[float, float] | None]:
    """``np.median(x)``, ``np.quantile(x, [0.25, 0.5, 0.75])`` and, when ``tails`` is above 0,
    ``np.quantile(x, [tails, 1 - tails])`` (else None) (``x`` float64 without NaN, at least one
    value), from one ordered copy instead of one partition per function.

    The values at the positions these read (up to 12) are found by ``_at_ranks``: each is the
    value ``np.quantile``'s partition puts there, so the quantiles are its bits (the same
    positions, the same interpolation); the median is the mean of the middle one or two values,
    as ``np.median`` takes it. Only a zero can differ from numpy's, in its sign, when 0.0 and
    -0.0 are both among the
    values at the positions asked: which one lands there depends on the algorithm, and so on
    the machine's vector instructions. Every zero returned is therefore +0.0, so the fitted
    statistics (and every build id) are the same on every machine; the encoding cannot tell
    them apart anyway (``numeric_values`` drops the sign of a zero before centring and
    scaling). ``tests/test_features.py`` holds this to numpy's own functions.
    """
    n = len(x)
    q = _QUARTILES if tails <= 0 else np.array([0.25, 0.5, 0.75, tails, 1 - tails])
    virtual = (n - 1) * q  # numpy's "linear" method, computed as numpy computes it
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above], following[above] = -1, -1  # the largest value, as numpy takes it
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    half = n // 2
    # -1 (the largest) is position n - 1; the middle positions are among the neighbours of
    # the 0.5 quantile.
    wanted = np.unique(np.concatenate([previous, following, [half - 1, half]]) % n)
    found = _at_ranks(x, wanted)

    def ordered(positions: np.ndarray) -> np.ndarray:
        """What ``np.sort(x)[positions]`` holds (``positions`` among ``wanted``, or -1)."""
        picked: np.ndarray = found[np.searchsorted(wanted, positions % n)]
        return picked

    middle = ordered(np.array([half - 1, half] if n % 2 == 0 else [half]))
    # Neighbours more than float64's largest apart (-1.7e308, 1.7e308) interpolate to inf or
    # NaN (inf * 0), as in numpy's own quantile: the callers compute those again (clip_range,
    # _robust_scale), and numpy's RuntimeWarning went to the user's stderr.
    with np.errstate(over="ignore", invalid="ignore"):
        median = float(np.mean(middle)) + 0.0  # + 0.0: -0.0 becomes 0.0
        a, b = ordered(previous), ordered(following)
        gamma = np.asanyarray(virtual - previous, dtype=virtual.dtype)
        difference = b - a
        lerp = np.add(a, difference * gamma)
        np.subtract(b, difference * (1 - gamma), out=lerp, where=gamma >= 0.5,
                    casting="unsafe", dtype=type(lerp.dtype))  # fmt: skip
    values = [float(v) + 0.0 for v in lerp]
    quartiles = (values[0], values[1], values[2])
    return median, quartiles, (values[3], values[4]) if tails > 0 else None


# ``_at_ranks`` finds the values of a column of at least this many through a histogram.
_HISTOGRAM_FROM = 1 << 16
_BINS = 4096


def _at_ranks(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``np.sort(x)[positions]`` (``x`` float64 without NaN, ``positions`` sorted, unique).

    A sort where the machine sorts faster than it partitions (``_sorting_is_faster``), else
    one partition at every position; for a long column whose values spread evenly enough,
    a histogram of ``_BINS`` equal bins between its extremes first: a value's bin only grows
    with the value, so the value at position k is, within the bin that holds the k-th value,
    the one at k less the count of the bins below; only the few bins holding a position are
    gathered and sorted (650k normal draws: 5 ms, where the partition takes 13). Whether a
    column spreads evenly is judged from 8k of its values first: a skewed one (most values in
    a few bins) takes the partition at once. The values are those of the sort or the partition,
    whichever way is taken.
    """
    n = len(x)
    if _sorting_is_faster():
        sorted_: np.ndarray = np.sort(x)[positions]
        return sorted_
    if n >= _HISTOGRAM_FROM:
        found = _through_histogram(x, positions)
        if found is not None:
            return found
    partitioned: np.ndarray = np.partition(x, positions)[positions]
    return partitioned


def _through_histogram(x: np.ndarray, positions: np.ndarray) -> np.ndarray | None:
    """``_at_ranks`` by a histogram; None where the values do not spread evenly enough."""
    n = len(x)
    low, high = float(x.min()), float(x.max())
    with np.errstate(over="ignore", divide="ignore"):
        scale = _BINS / (high - low) if high > low else math.inf
    if not math.isfinite(scale) or not math.isfinite(high - low):
        return None  # one value, or a range (or its inverse) beyond float64's

    def bins_of(values: np.ndarray) -> np.ndarray:
        # Monotone in the value: a subtraction, a positive product and a truncation.
        at = ((values - low) * scale).astype(np.intp)
        return np.minimum(at, _BINS - 1, out=at)

    sample = x[:: max(1, n // 8192)]
    counts = np.bincount(bins_of(sample), minlength=_BINS)
    held = np.searchsorted(np.cumsum(counts), positions * (len(sample) / n), side="right")
    if counts[np.unique(np.minimum(held, _BINS - 1))].sum() > len(sample) // 16:
        return None
    at = bins_of(x)
    counts = np.bincount(at, minlength=_BINS)
    ends = np.cumsum(counts)
    held = np.searchsorted(ends, positions, side="right")  # the bin of each position
    wanted = np.zeros(_BINS, dtype=bool)
    wanted[held] = True
    gathered = wanted[at]
    values, their_bins = x[gathered], at[gathered]
    values = values[np.lexsort((values, their_bins))]  # by bin, then by value
    gathered_counts = np.bincount(their_bins, minlength=_BINS)
    first = np.cumsum(gathered_counts) - gathered_counts  # each bin's first gathered value
    out: np.ndarray = values[first[held] + positions - (ends[held] - counts[held])]
    return out


# |x| + |mean| below this cannot overflow float64 (whose largest value is about 1.8e308).
_SAFE_SUM = 1e307
# smooth_clip's bound on x / radius: beyond it x / sqrt(1 + x^2) rounds to +-1 in float64.
_FLAT = 1e9


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
    if clipped.all():  # x is this function's own array (np.where above): clipped in place
        x = smooth_clip(x, t.radius)
    elif clipped.any():
        x = np.where(clipped, smooth_clip(x.copy(), np.where(clipped, t.radius, 1.0)), x)
    return x, missing


def network_bounds(states: tuple[NumericState, ...]) -> tuple[list[float | None], ...]:
    """Each column's ``net_low`` and ``net_high`` encoded (None where it has none): clipping
    an encoded input to them gives the bits clipping the raw value gave (a monotone encoding)."""
    lows: list[float | None] = []
    highs: list[float | None] = []
    for s in states:
        if s.net_low is None or s.net_high is None:
            lows.append(None)
            highs.append(None)
            continue
        table = NumericTable.of((dataclasses.replace(s, log=False),))  # in transformed units
        encoded, _ = numeric_values(np.array([[s.net_low], [s.net_high]]), table)
        lows.append(float(encoded[0, 0]))
        highs.append(float(encoded[1, 0]))
    return lows, highs


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

    ``x / radius`` is first bounded to +-1e9, where the result is +-1 in float64 already, so
    that its square cannot overflow and values up to float64's largest (and an ``x / radius``
    that overflows) still map to +-radius. ``sqrt(1 + u*u)`` takes 2 ns a value where libm's
    ``hypot(1, u)`` took 15-18 (0.4 s of one core for a 1M x 50 table). Its float64 result
    can differ from ``hypot``'s in the last bit, but not once rounded to the float32 the network
    gets: 240M values tried (normal draws at 5 scales, 4 radii; 4M from 1e-300 to 1e308) gave
    the same float32 bits.
    """
    with np.errstate(over="ignore"):  # an overflow is bounded on the next line
        x /= radius
    np.clip(x, -_FLAT, _FLAT, out=x)
    root = x * x
    root += 1.0
    np.sqrt(root, out=root)
    x /= root
    x *= radius
    return x


def clip_range(x: np.ndarray, q: float, tails: tuple[float, float]) -> tuple[float, float]:
    """``tails`` (``np.quantile(x, [q, 1 - q])``), or the same quantiles of ``x / max|x|``
    scaled back where two neighbours more than float64's largest apart (1.8e308 and -1e292)
    made numpy's interpolation overflow: finite either way, and ordinary columns keep numpy's
    bits (only such data takes the second path)."""
    if math.isfinite(tails[0]) and math.isfinite(tails[1]):
        return tails
    top = float(np.max(np.abs(x)))
    low, high = (float(v) * top for v in np.quantile(x / top, [q, 1 - q]))
    return low, high


def _robust_scale(
    x: np.ndarray, quartiles: tuple[float, float, float] | None = None
) -> tuple[float, float]:
    """Median and interquartile range (half the full range where that is 0; 1 for a constant).

    Values near float64's largest are divided by their largest magnitude first (and the result
    scaled back), so that the quantiles' interpolation cannot overflow; ordinary values keep
    the exact arithmetic. ``quartiles`` are ``np.quantile(x, [0.25, 0.5, 0.75])`` when the
    caller has them (``order_statistics``).
    """
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    if top == 0.0 or not math.isfinite(top):
        return 0.0, 1.0
    unit = top if top > _SAFE_SUM / 4 else 1.0
    u = x / unit if unit != 1.0 else x
    if unit == 1.0 and quartiles is not None:
        q25, q50, q75 = quartiles
    else:
        q25, q50, q75 = (float(q) for q in np.quantile(u, [0.25, 0.5, 0.75]))
    tiny = 1e-12 * max(abs(q50), float(np.max(np.abs(u))))
    spread = q75 - q25
    if spread <= tiny:
        spread = 0.5 * (float(u.max()) - float(u.min()))
    if spread <= tiny or not math.isfinite(spread):
        return q50 * unit, 1.0
    # A spread of just over 1 (in units of max|x|) times max|x| near float64's largest would
    # overflow: the largest float is as good a scale there.
    return q50 * unit, min(spread * unit, sys.float_info.max)


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation that cannot overflow (values up to 1e308 are legal input).

    Both are computed on ``x / max|x|`` and scaled back; a spread under 1e-12 of the largest
    value (a constant, up to rounding) becomes 1 so that a constant column standardises to 0
    instead of dividing by zero. The test is relative, as the robust scale's is: an absolute
    floor of 1e-12 took a target in units of 1e-13 (or a feature so scaled) for a constant,
    and the model predicted its mean.
    """
    scale = float(np.max(np.abs(x))) if len(x) else 0.0
    if scale == 0.0 or not math.isfinite(scale):
        return 0.0, 1.0
    u = x / scale
    mean, std = float(np.mean(u)) * scale, float(np.std(u)) * scale
    return mean, (std if std > 1e-12 * scale and math.isfinite(std) else 1.0)


def _skew(x: np.ndarray) -> float:
    """Sample skewness, scale-free (so huge values cannot overflow it)."""
    scale = max(-float(x.min()), float(x.max()))  # max |x|, without an array of |x|
    if scale == 0.0:
        return 0.0
    with np.errstate(all="ignore"):
        return float(pd.Series(x / scale).skew())
