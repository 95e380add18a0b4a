"""Preprocessing: statistics from training rows only, JSON round trips, finite outputs."""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames, range_indexes

from pipeline import features
from pipeline.data.schema import Column, Schema
from pipeline.errors import DataError
from pipeline.features import numeric
from pipeline.features.numeric import order_statistics
from pipeline.settings import FeatureSettings

_SORTS = numeric._sorting_is_faster()  # this machine's way; the other is checked beside it

SCHEMA = Schema(
    columns=(Column("x", "numeric"), Column("colour", "categorical"), Column("ok", "boolean")),
    target="y",
    task="regression",
    target_transform="none",
    dropped=(),
)


def test_statistics_come_from_the_training_rows_only() -> None:
    """Mean, median, range and vocabulary ignore rows that are not passed to fit."""
    train = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, None], "colour": ["red", "red", "blue", "blue"],
         "ok": [True, False, True, True], "y": [1.0, 2.0, 3.0, 4.0]}
    )  # fmt: skip
    test = pd.DataFrame(
        {"x": [1000.0, None], "colour": ["green", None], "ok": [None, False], "y": [9.0, 9.0]}
    )
    cfg = FeatureSettings(min_frequency=1, log_skewed=False, clip_quantile=0)  # min and max
    pre = features.fit(train, SCHEMA, cfg, "t")
    (x,) = pre.numeric
    assert (x.fill, x.low, x.high, x.indicator) == (2.0, 1.0, 3.0, True)
    # Robust scaling: the median and interquartile range of the present values 1, 2, 3.
    assert (x.center, x.scale, x.smooth_clip) == (2.0, 1.0, 1.5)
    colour, ok = pre.categorical
    assert set(colour.vocab) == {"red", "blue"} and set(ok.vocab) == {"true", "false"}
    enc = pre.transform(test, "t", with_target=True)
    # 1000 is clipped to the training maximum, 3, before scaling: (3 - 2) / 1, then smoothly
    # clipped, 1 / sqrt(1 + (1/1.5)^2).
    assert enc.numeric[0, 0] == np.float32(1.0 / np.sqrt(1.0 + 1.0 / 2.25))
    # An unseen category goes to the unknown bucket and is counted; a missing one to "missing".
    assert enc.categorical[:, 0].tolist() == [features.UNKNOWN, features.MISSING]
    assert enc.unknown_counts == {"colour": 1}
    # The missing-indicator column marks the imputed row.
    assert enc.numeric[:, 1].tolist() == [0.0, 1.0]


def test_rare_categories_fall_into_the_unknown_bucket() -> None:
    """Values seen fewer than min_frequency times in training are not in the vocabulary."""
    train = pd.DataFrame({"x": [0.0] * 5, "colour": ["a", "a", "a", "b", "c"],
                          "ok": [True] * 5, "y": np.arange(5.0)})  # fmt: skip
    pre = features.fit(train, SCHEMA, FeatureSettings(min_frequency=2), "t")
    assert pre.categorical[0].vocab == ("a",)


def test_fitted_state_round_trips_through_plain_json() -> None:
    """The fitted state is JSON, and a preprocessor rebuilt from it encodes identically."""
    frame = pd.DataFrame({"x": [1.0, 5.0, 100.0, None], "colour": ["r", "g", "r", None],
                          "ok": [True, False, None, True], "y": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    pre = features.fit(frame, SCHEMA, FeatureSettings(min_frequency=1), "t")
    again = features.Preprocessor.from_json(json.loads(json.dumps(pre.to_json())))
    a, b = (
        pre.transform(frame, "t", with_target=True),
        again.transform(frame, "t", with_target=True),
    )
    assert np.array_equal(a.numeric, b.numeric) and np.array_equal(a.categorical, b.categorical)
    assert np.array_equal(a.target, b.target)


def test_category_spelling_is_the_same_whatever_dtype_was_read() -> None:
    """3, 3.0 and "3" are one category, so a column read as int or text encodes the same."""
    assert features.as_categories(pd.Series([3, 4])).tolist() == ["3", "4"]
    assert features.as_categories(pd.Series([3.0, None])).tolist() == ["3", None]
    assert features.as_categories(pd.Series(["3", None])).tolist() == ["3", None]
    assert features.as_categories(pd.Series([True, False])).tolist() == ["true", "false"]


def test_bad_number_cells_name_column_row_and_value_as_fields() -> None:
    """Text or an infinity in a numeric column is a ``DataError`` whose fields name the cell."""
    text = pd.Series(["1", None, "abc"], index=[3, 4, 8], dtype=object)
    with pytest.raises(DataError) as caught:
        features.as_numbers(text, "x", "train.csv")
    assert (caught.value.column, caught.value.row, caught.value.value) == ("x", 9, "'abc'")
    assert caught.value.message == (
        "column 'x' in train.csv has 'abc' at data row 9: expected a number; fix the row or "
        "leave the cell empty"
    )
    with pytest.raises(DataError) as caught:
        features.as_numbers(pd.Series([1.0, -np.inf]), "x", "train.csv")
    assert (caught.value.row, caught.value.value) == (2, "-inf")
    assert "has -inf at data row 2: expected a finite number;" in caught.value.message


finite = st.one_of(st.floats(min_value=-1e300, max_value=1e300), st.just(float("nan")))


@hsettings(max_examples=60, deadline=None)
@given(
    data_frames(
        [
            column("x", elements=finite, dtype=float),
            column("colour", elements=st.sampled_from(["a", "b", "c", None])),
            column("ok", elements=st.sampled_from([True, False])),
            column("y", elements=st.floats(-1e6, 1e6), dtype=float),
        ],
        index=range_indexes(min_size=1, max_size=40),
    )
)
def test_any_finite_frame_gives_finite_features_with_rows_preserved(frame: pd.DataFrame) -> None:
    """Whatever finite (or missing) values come in, the features are finite, one row per row
    (or the target is refused: one value drowns the others)."""
    from tests.conftest import fitted

    pre = fitted(frame, SCHEMA, FeatureSettings(min_frequency=1))
    enc = pre.transform(frame, "t", with_target=True)
    assert enc.numeric.shape[0] == enc.categorical.shape[0] == len(frame)
    assert np.isfinite(enc.numeric).all() and np.isfinite(enc.target).all()
    assert (enc.categorical >= 0).all()
    assert all((enc.categorical[:, j] < s.cardinality).all() for j, s in enumerate(pre.categorical))


def test_smooth_clipping_bounds_every_value_and_keeps_small_ones() -> None:
    """x / sqrt(1 + (x/c)^2): near the identity around 0, never beyond c, even at 1e308."""
    x = np.array([0.0, 0.1, -0.1, 3.0, -30.0, 1e308, -1e308])
    y = features.smooth_clip(x.copy(), 3.0)
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) < 3.0 + 1e-12)
    assert y[0] == 0.0 and abs(y[1] - 0.1) < 1e-3 and y[2] == -y[1]
    assert np.all(np.diff(y[[4, 2, 0, 1, 3, 5]]) > 0)  # order is kept


def test_smooth_clipping_gives_hypots_float32_bits_and_survives_overflow() -> None:
    """The float32 the network gets equals x / hypot(1, x/c) * c's, from tiny values to
    float64's largest; an x / c that overflows (c = 1e-3) maps to +-c, where hypot gave NaN."""
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.standard_normal(200_000) * s for s in (0.1, 1.0, 10.0, 1e4)]
        + [np.logspace(-300, 300, 50_000), -np.logspace(-300, 300, 50_000)]
    )
    for c in (1.0, 1.5, 3.0):
        u = x / c
        reference = (u / np.hypot(1.0, u) * c).astype(np.float32)
        got = features.smooth_clip(x.copy(), c).astype(np.float32)
        assert np.array_equal(got.view(np.int32), reference.view(np.int32)), c
    y = features.smooth_clip(np.array([1e308, -1e308, 1.0]), 1e-3)
    assert y[0] == 1e-3 and y[1] == -1e-3 and 0 < y[2] <= 1e-3


def test_regression_outputs_are_bounded_to_the_training_targets() -> None:
    """A prediction beyond the training targets' range (min and max: 4 rows are too few to
    bound further in) is clipped to it; the truth is not."""
    from pipeline import outputs

    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "colour": ["a"] * 4, "ok": [True] * 4,
                          "y": [10.0, 20.0, 30.0, 40.0]})  # fmt: skip
    pre = features.fit(train, SCHEMA, FeatureSettings(min_frequency=1), "t")
    t = pre.target
    z = (np.array([10.0, 40.0]) - t.mean) / t.std
    assert (t.low, t.high) == pytest.approx(tuple(z))
    raw = np.array([[-100.0], [0.0], [100.0]], dtype=np.float32)
    assert outputs.to_values(raw, t) == pytest.approx([10.0, 25.0, 40.0])
    # Scoring decodes true targets without the bound.
    assert t.decode(np.array([100.0]))[0] > 40.0
    # Preprocessing written before the bound existed (format 1) predicts unbounded, as it did.
    old = features.TargetState(t.name, t.task, t.transform, t.mean, t.std)
    assert outputs.to_values(raw, old)[2] > 40.0


def test_format_1_preprocessing_still_loads() -> None:
    """A package made before robust scaling (mean/std, no smooth clipping) encodes as it did."""
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "colour": ["a", "a", "b", "b"],
                          "ok": [True, False, True, True], "y": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    cfg = FeatureSettings(min_frequency=1, log_skewed=False, scaling="standard", smooth_clip=0)
    pre = features.fit(train, SCHEMA, cfg, "t")
    data = pre.to_json()
    data["format"] = 1
    for s in data["numeric"]:
        s["mean"], s["std"] = s.pop("center"), s.pop("scale")
        s.pop("smooth_clip")
    data["target"] = {k: v for k, v in data["target"].items() if k not in ("low", "high")}
    old = features.Preprocessor.from_json(data)
    a = old.transform(train, "t", with_target=False).numeric
    b = pre.transform(train, "t", with_target=False).numeric
    assert np.array_equal(a, b)


def test_training_s_column_major_encoding_and_column_views_give_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `pipeline train` does with a large table: statistics fitted a column of the
    training rows at a time (``RowsOf``), and every row encoded column-major in row blocks
    from a frame whose columns go as they are read (``Consumed``). House prices (missing
    values, log-transformed and clipped columns, indicators, categories), with blocks of 100
    rows so that every column spans several: the same statistics, and the same encoded bytes,
    as the row-major encoding of the whole frame."""
    from pathlib import Path

    from pipeline.data import read
    from pipeline.data import schema as schema_mod
    from pipeline.features import preprocessor
    from pipeline.settings import DataSettings

    path = Path(features.__file__).parents[1] / "datasets" / "house-prices.csv"
    data = DataSettings(source=str(path), target="SalePrice", drop=["Id"])
    frame = read.read_table(path, data, label="hp")
    schema, _ = schema_mod.infer(frame, data, "log", "hp")
    rows = np.arange(0, len(frame), 2)
    cfg = FeatureSettings()
    pre = features.fit(frame.iloc[rows], schema, cfg, "hp")
    assert features.fit(features.RowsOf(frame, rows), schema, cfg, "hp") == pre
    assert any(s.indicator for s in pre.numeric) and any(s.log for s in pre.numeric)

    whole = pre.transform(frame, "hp", with_target=True)
    monkeypatch.setattr(preprocessor, "_BY_COLUMN_ROWS", 100)
    columns = features.Consumed(frame.copy())
    by_column = pre.transform(columns, "hp", with_target=True, rows=len(frame), by_column=True)
    assert list(columns) == ["Id"]  # every column the model uses was read once, and let go
    assert by_column.numeric.flags.f_contiguous and whole.numeric.flags.c_contiguous
    for name in ("numeric", "categorical", "target"):
        a, b = getattr(whole, name), getattr(by_column, name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), name


def test_the_network_clips_inputs_to_the_training_quantiles_the_ridge_to_their_range() -> None:
    """``clip_quantile`` q (0.01 by default): the network sees inputs clipped to the training
    rows' q and 1-q quantiles (numpy's), the ridge beside it the whole training range, which
    preprocessing clips to (the ridge extrapolates linearly up to it: Carseats' RMSE 1.084 ->
    1.056 in `make bench-quality`). The network's bound is the encoding of the quantile itself,
    so a value beyond it reaches the network as the quantile does, bit for bit. 0: the minimum
    and maximum for both."""
    import torch

    from pipeline.features.numeric import network_bounds
    from pipeline.model import ModelConfig, clipped, input_range

    x = np.arange(1000, dtype=np.float64)  # 0 .. 999: the 1% and 99% quantiles are 9.99, 989.01
    train = pd.DataFrame({"x": x, "colour": ["a"] * 1000, "ok": [True] * 1000, "y": x})
    low, high = (float(v) for v in np.quantile(x, [0.01, 0.99]))
    values = [995.0, 5000.0, 5.0, -5000.0, high, low, 999.0, 0.0]
    probe = pd.DataFrame({"x": values, "colour": ["a"] * 8, "ok": [True] * 8, "y": [0.0] * 8})
    for q, net in ((0.01, (low, high)), (0.0, (None, None))):
        cfg = FeatureSettings(log_skewed=False, clip_quantile=q)
        pre = features.fit(train, SCHEMA, cfg, "t")
        (state,) = pre.numeric
        assert (state.low, state.high, state.net_low, state.net_high) == (0.0, 999.0, *net)
        enc = pre.transform(probe, "t", with_target=False).numeric[:, 0]
        # Preprocessing (the ridge's inputs): clipped to the training range only.
        assert enc[1] == enc[6] and enc[3] == enc[7] and enc[0] != enc[1] and enc[2] != enc[3]
        bounds = network_bounds(pre.numeric)
        if not q:
            assert bounds == ([None], [None])
            continue
        shape = ModelConfig(1, (), (), (4,), 0.0, 1, input_low=tuple(bounds[0]),
                            input_high=tuple(bounds[1]))  # fmt: skip
        seen = clipped(torch.from_numpy(enc[:, None]), input_range(shape))[:, 0].numpy()
        # The network: beyond a quantile is the quantile, bit for bit; within, unchanged.
        assert seen[0].tobytes() == seen[1].tobytes() == seen[4].tobytes() == enc[4].tobytes()
        assert seen[2].tobytes() == seen[3].tobytes() == seen[5].tobytes() == enc[5].tobytes()
        assert seen[4] < enc[0] and seen[5] > enc[2]
    assert FeatureSettings().clip_quantile == 0.01


def test_a_format_2_package_predicts_as_it_did() -> None:
    """Packages made before format 3 clipped every input to the quantiles in preprocessing and
    have no input bounds in model.json: loaded now, they encode and predict as they did. And
    the format-3 pair (the range in preprocessing, the quantiles in the network) gives the
    network the same bytes, so only the ridge's inputs changed."""
    import dataclasses

    import torch

    from pipeline.model import FoldedNetwork, ModelConfig, TabularMLP
    from pipeline.settings import Settings
    from pipeline.tensors import network_config

    rng = np.random.default_rng(3)
    x = rng.standard_normal(500) * 10
    train = pd.DataFrame({"x": x, "colour": rng.choice(["a", "b"], 500),
                          "ok": rng.random(500) > 0.5, "y": x * 2})  # fmt: skip
    pre = features.fit(train, SCHEMA, FeatureSettings(), "t")
    old = pre.to_json() | {"format": 2}
    old["numeric"] = [
        {k: v for k, v in col.items() if not k.startswith("net_")}
        | {"low": col["net_low"], "high": col["net_high"]}
        for col in old["numeric"]
    ]
    pre2 = features.Preprocessor.from_json(json.loads(json.dumps(old)))
    cfg = network_config(pre, Settings())
    assert cfg.input_low is not None and ModelConfig.from_json(cfg.to_json()) == cfg
    old_cfg = dataclasses.replace(cfg, input_low=None, input_high=None)
    assert "input_low" not in old_cfg.to_json()  # model.json as a format-2 package has it
    model = TabularMLP(cfg, torch.Generator().manual_seed(0)).eval()
    before = TabularMLP(old_cfg).eval()
    before.load_state_dict(model.state_dict())
    probe = pd.DataFrame({"x": [-1e6, -40.0, -3.0, 0.0, 2.5, 31.0, 1e6, None],
                          "colour": ["a", "b"] * 4, "ok": [True] * 8, "y": [0.0] * 8})  # fmt: skip

    def scored(p: features.Preprocessor, m: TabularMLP) -> bytes:
        enc = p.transform(probe, "t", with_target=False)
        numeric, cats = torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical)
        return bytes(FoldedNetwork(m)(numeric, cats).numpy().tobytes())

    assert scored(pre2, before) == scored(pre, model)
    # The ridge's inputs do differ beyond the quantiles (that is the change).
    new_x = pre.transform(probe, "t", with_target=False).numeric[:, 0]
    old_x = pre2.transform(probe, "t", with_target=False).numeric[:, 0]
    assert new_x[0] < old_x[0] and new_x[6] > old_x[6] and new_x[3] == old_x[3]


def test_regression_predictions_are_bounded_by_the_k_th_extreme_training_targets() -> None:
    """``bound_rows`` k (3 by default) bounds regression outputs from the k-th smallest to the
    k-th largest training target; 1 to the minimum and maximum; one row per 400 training rows
    at most (a table of 400 rows or fewer keeps its minimum and maximum: the third of 31 rows
    cut R's trees table's smallest test tree to the third-smallest training volume)."""
    y = np.arange(1000, dtype=np.float64)
    train = pd.DataFrame({"x": y, "colour": ["a"] * 1000, "ok": [True] * 1000, "y": y})
    cases = ((3, 1000, (2.0, 997.0)), (1, 1000, (0.0, 999.0)), (3, 15, (0.0, 14.0)),
             (3, 400, (0.0, 399.0)), (3, 401, (1.0, 399.0)), (3, 800, (1.0, 798.0)),
             (3, 949, (2.0, 946.0)), (500, 1000, (2.0, 997.0)))  # fmt: skip
    for k, n, (low, high) in cases:
        cfg = FeatureSettings(bound_rows=k)
        target = features.fit(train.iloc[:n], SCHEMA, cfg, "t").target
        far = np.array([-1e6, 0.0, 1e6])  # standardised outputs far out, and the centre
        bounded = target.decode(target.bound(far))
        assert (bounded[0], bounded[2]) == pytest.approx((low, high)), (k, n)
        assert bounded[1] == pytest.approx(target.decode(np.array([0.0]))[0])
    assert FeatureSettings().bound_rows == 3


@hsettings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.0]),
            st.floats(-1e6, 1e6, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([0.0, 0.01, 0.05, 0.2]),
)
def test_order_statistics_are_numpy_s_median_and_quantiles_bit_for_bit(
    values: list[float], tails: float
) -> None:
    """One partition gives what ``np.median`` and ``np.quantile`` give (the fitted centres,
    fills, scales and clipping range, so every build id, depend on those bits): odd and even
    counts, ties, signed zeros, and values near float64's largest (whose sums overflow alike)."""
    x = np.array(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        median, quartiles, clip = order_statistics(x, tails)
        with mock.patch.object(numeric, "_sorting_is_faster", lambda: not _SORTS):
            assert order_statistics(x, tails) == (median, quartiles, clip)  # the other way
        expected_median = float(np.median(x))
        expected = [float(q) for q in np.quantile(x, [0.25, 0.5, 0.75])]
        expected_clip = [float(q) for q in np.quantile(x, [tails, 1 - tails])]
    # Bit for bit, but for the sign of a zero (order_statistics says when): + 0.0 drops it.
    assert (np.array(quartiles) + 0.0).tobytes() == (np.array(expected) + 0.0).tobytes()
    if tails == 0:
        assert clip is None
    else:
        assert clip is not None
        assert (np.array(clip) + 0.0).tobytes() == (np.array(expected_clip) + 0.0).tobytes()
    assert quartiles == tuple(expected)  # -0.0 == 0.0
    # The median's bits too, but for the sign of a zero.
    assert median == expected_median
    if median != 0.0:
        assert np.array([median]).tobytes() == np.array([expected_median]).tobytes()
    assert x.tobytes() == np.array(values, dtype=np.float64).tobytes()  # not partitioned


def _columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Large columns of several shapes: spread evenly (through the histogram), skewed, few
    values or one huge one (through the partition), signed zeros, a huge range."""
    normal = rng.standard_normal(n).astype(np.float32).astype(np.float64)
    zeros = np.round(rng.standard_normal(n), 1) * 0.0  # 0.0 and -0.0
    zeros[: n // 3] = rng.standard_normal(n // 3)
    return {
        "normal": normal,
        "uniform ties": np.round(rng.random(n), 3),
        "log-normal": rng.lognormal(0, 2, n),
        "small integers": rng.integers(0, 10, n).astype(np.float64),
        "one outlier": np.append(normal[:-1], 1e12),
        "signed zeros": zeros,
        "near float64's largest": normal * 1e307,
        "constant": np.full(n, 3.5),
    }


@pytest.mark.parametrize("tails", [0.0, 0.01, 0.2])
def test_order_statistics_through_the_histogram_are_numpy_s(
    tails: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Columns from ``_HISTOGRAM_FROM`` values on may be ordered through a histogram: numpy's
    statistics, bit for bit, whatever the column's shape and length (odd, even)."""
    monkeypatch.setattr(numeric, "_sorting_is_faster", lambda: False)
    rng = np.random.default_rng(11)
    through: list[str] = []  # the columns the histogram ordered
    real = numeric._through_histogram

    def counted(x: np.ndarray, positions: np.ndarray) -> np.ndarray | None:
        found = real(x, positions)
        if found is not None:
            through.append(name)
        return found

    monkeypatch.setattr(numeric, "_through_histogram", counted)
    for n in (numeric._HISTOGRAM_FROM, 200_001):
        for name, x in _columns(rng, n).items():
            with np.errstate(over="ignore", invalid="ignore"):
                median, quartiles, clip = order_statistics(x, tails)
                expected = np.quantile(x, [0.25, 0.5, 0.75])
                expected_clip = np.quantile(x, [tails, 1 - tails])
                expected_median = float(np.median(x))
            assert (np.array(quartiles) + 0.0).tobytes() == (expected + 0.0).tobytes(), name
            if tails:
                assert (np.array(clip) + 0.0).tobytes() == (expected_clip + 0.0).tobytes(), name
            assert median == expected_median, name
    evenly = ["normal", "uniform ties", "near float64's largest"]
    assert through == evenly * 2  # the others (skewed, few values) took the partition


@pytest.mark.parametrize("sorting", [True, False], ids=["sort", "partition"])
def test_order_statistics_of_a_large_column_are_numpy_s(
    sorting: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sort or a partition (whichever is faster on the machine): numpy's statistics."""
    monkeypatch.setattr(numeric, "_sorting_is_faster", lambda: sorting)
    rng = np.random.default_rng(3)
    for n in (999_999, 1_000_000):
        x = np.round(rng.lognormal(3, 2, n), 2)  # skewed, with ties
        median, quartiles, clip = order_statistics(x, 0.01)
        assert median == float(np.median(x))
        assert list(quartiles) == [float(q) for q in np.quantile(x, [0.25, 0.5, 0.75])]
        assert list(clip or ()) == [float(q) for q in np.quantile(x, [0.01, 0.99])]


@pytest.mark.parametrize(
    "values",
    [
        # Found by tests/test_properties.py: neighbours more than float64's largest apart made
        # the clipping range (inf, -inf) and every encoded value NaN.
        [1.7976931348623157e308, -9.9792015476736e291],
        # A spread of just over max|x| made the robust scale infinite.
        [0.0, 1.7976931348623155e308, 1.7976931348623155e308, -7.983361238138878e292],
    ],
)
def test_values_near_float64_s_largest_fit_finite_statistics(values: list[float]) -> None:
    """Statistics stay finite (preprocessing.json is strict JSON) and so do the encodings."""
    frame = pd.DataFrame({"x": values, "y": [0.0] * len(values)})
    schema = Schema((Column("x", "numeric"),), "y", "regression", "none", ())
    pre = features.fit(frame, schema, FeatureSettings(), "frame")
    json.dumps(pre.to_json(), allow_nan=False)
    state = pre.numeric[0]
    assert state.low <= state.high and 0 < state.scale < np.inf
    assert np.isfinite(pre.transform(frame, "frame", with_target=True).numeric).all()


@pytest.mark.parametrize("sorting", [True, False], ids=["sort", "partition"])
def test_order_statistics_give_positive_zeros_whatever_signed_zero_is_in_place(
    sorting: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sort or a partition may put 0.0 or -0.0 at a position (it depends on the algorithm and
    the machine's vector instructions); every zero the fitted statistics take is +0.0, so their
    bytes do not."""
    monkeypatch.setattr(numeric, "_sorting_is_faster", lambda: sorting)
    for values in ([-0.0, 0.0, -0.0, 0.0], [-0.0] * 5, [-0.0, 0.0, 1.0], [-1.0, -0.0, -0.0]):
        median, quartiles, clip = order_statistics(np.array(values), 0.05)
        for v in (median, *quartiles, *(clip or ())):
            assert v != 0.0 or math.copysign(1.0, v) == 1.0, (values, v)


@pytest.mark.parametrize("unit", [1e-13, 1.0, 1e13])
def test_standardisation_does_not_depend_on_the_unit(unit: float) -> None:
    """A target, and a feature under standard scaling, in units of 1e-13 are standardised as
    in units of 1: the spread that counts as none is relative to the values (an absolute floor
    of 1e-12 took them for constants: std 1, and the model predicted the mean)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    train = pd.DataFrame({"x": x * unit, "colour": ["a"] * 50, "ok": [True] * 50,
                          "y": (3 * x + rng.normal(size=50)) * unit})  # fmt: skip
    cfg = FeatureSettings(min_frequency=1, log_skewed=False, scaling="standard")
    pre = features.fit(train, SCHEMA, cfg, "t")
    assert pre.target.std == pytest.approx(float(np.std(train["y"])), rel=1e-9)
    assert pre.numeric[0].scale == pytest.approx(float(np.std(train["x"])), rel=1e-9)
    enc = pre.transform(train, "t", with_target=True)
    assert float(np.std(enc.target)) == pytest.approx(1.0, rel=1e-5)
    constant = train.assign(y=np.full(50, 7.0 * unit))
    assert features.fit(constant, SCHEMA, cfg, "t").target.std == 1.0  # a constant stays one


def test_a_regression_target_drowned_by_one_value_is_refused_naming_its_row() -> None:
    """A placeholder 99999999999 among targets near 0 was standardised by the spread it set
    alone: the other targets became one float32 value, the network a constant, and the
    metrics (computed on those values) read RMSE 0, so evaluate's gates passed. Beyond 1e6
    interquartile ranges of the median it is a data error naming the row; 1e5 trains."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    frame = pd.DataFrame(
        {"x": rng.normal(size=200), "colour": ["a"] * 200, "ok": [True] * 200, "y": y},
        index=np.arange(200) * 2,
    )  # fmt: skip  (the file's rows)
    cfg = FeatureSettings(min_frequency=1)
    spread = float(np.subtract(*np.quantile(y, [0.75, 0.25])))
    ok = frame.copy()
    ok.loc[ok.index[7], "y"] = 1e5 * spread
    features.fit(ok, SCHEMA, cfg, "t.csv")
    bad = frame.copy()
    bad.loc[bad.index[7], "y"] = 99999999999.0
    with pytest.raises(DataError) as caught:
        features.fit(bad, SCHEMA, cfg, "t.csv")
    message = caught.value.message
    assert message.startswith("target column 'y' in t.csv has 99999999999.0 at data row 15")
    assert "times the spread of the other values" in message and "placeholder" in message


def test_a_target_near_float64s_largest_is_judged_without_a_warning() -> None:
    """Targets at +-1.7e308: their interquartile range overflows to infinity, which refuses
    nothing, and numpy's RuntimeWarning reached the user's stderr beside the event stream
    (hypothesis found it in `test_preprocessing_keeps_finite_frames_finite`)."""
    import warnings

    import pandas as pd

    from pipeline.data.verdicts import refuse_extreme

    y = np.array([-1.7e308, -1.7e308, 1.7e308, 1.7e308, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refuse_extreme(y, pd.Series(y), "y", "f.csv")


def test_quantiles_between_float64s_extremes_are_computed_without_a_warning() -> None:
    """Neighbours -1.7e308 and 1.7e308 interpolate to NaN (inf * 0) at an exact position, as
    in numpy's quantile; fit_numeric computes such statistics again, finite, but numpy's
    RuntimeWarning reached the user's stderr (hypothesis found it)."""
    import warnings

    from pipeline.features.preprocessor import fit_numeric

    x = np.array([-1.7e308, -1.7e308, 1.7e308, 1.7e308, 1.7e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = fit_numeric("a", x, FeatureSettings())
    assert all(np.isfinite([state.center, state.scale, state.low, state.high]))
