"""Property tests: preprocessing keeps every finite frame finite, and predict's validation
raises nothing but the project's own errors, whatever frame it is given.

Hypothesis draws the frames: mixed numeric, categorical and boolean columns with NaNs, values
up to 1.7e308 and down to 5e-324, a single row, constant columns; and, for prediction, columns
of the wrong type, missing or duplicated columns, Python objects, bytes, infinities and ints
too large for any machine type. The predictor is built in memory from a real fitted
preprocessor and a real network, exactly as a package would give it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import fitted

from pipeline import features, fit
from pipeline.data.schema import Column, Schema
from pipeline.errors import PipelineError
from pipeline.model import TabularMLP
from pipeline.predict import Predictor
from pipeline.settings import FeatureSettings, RunSettings, Settings

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Finite floats of every magnitude, with the extremes drawn often (they are where overflow is).
EXTREMES = [1.7976931348623157e308, -1.7976931348623157e308, 1e308, -1e308, 5e-324, -5e-324,
            1e-300, 0.0, -0.0, 2.0**63, -(2.0**63), 1e15 + 0.5]  # fmt: skip
FINITE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EXTREMES),
    st.integers(-(10**6), 10**6).map(float),
)
TEXT = st.one_of(
    st.sampled_from(["a", "b", "c", "", " ", "NA", "3", "3.0", "ü", "\n"]), st.text(max_size=6)
)


@st.composite
def finite_frames(draw: st.DrawFn) -> tuple[pd.DataFrame, Schema]:
    """A frame of 1-25 rows with a target and 1-6 feature columns of mixed kinds."""
    n = draw(st.integers(1, 25))
    kinds = draw(
        st.lists(st.sampled_from(["numeric", "categorical", "boolean"]), min_size=1, max_size=6)
    )
    data: dict[str, Any] = {}
    columns = []
    for k, kind in enumerate(kinds):
        name = f"{kind}_{k}"
        constant = draw(st.booleans())
        if kind == "numeric":
            cell = st.one_of(FINITE, st.just(math.nan))
            values = [draw(cell)] * n if constant else draw(st.lists(cell, min_size=n, max_size=n))
            data[name] = pd.Series(values, dtype="float64")
        elif kind == "categorical":
            cell = st.one_of(TEXT, st.none())
            values = [draw(cell)] * n if constant else draw(st.lists(cell, min_size=n, max_size=n))
            data[name] = pd.Series(values, dtype=draw(st.sampled_from(["object", "string"])))
        else:
            if draw(st.booleans()):  # a clean bool column, as pyarrow reads true/false
                data[name] = pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
            else:  # with gaps: Python objects
                cell = st.one_of(st.booleans(), st.none())
                data[name] = pd.Series(draw(st.lists(cell, min_size=n, max_size=n)), dtype=object)
        columns.append(Column(name, kind))
    task = draw(st.sampled_from(["regression", "binary", "multiclass"]))
    if task == "regression":
        data["y"] = pd.Series(draw(st.lists(FINITE, min_size=n, max_size=n)), dtype="float64")
    else:
        labels = ["no", "yes"] if task == "binary" else ["a", "b", "c"]
        data["y"] = pd.Series(draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n)))
    schema = Schema(tuple(columns), "y", task, "none", ())
    return pd.DataFrame(data), schema


def _assert_finite_encoding(enc: features.Encoded, pre: features.Preprocessor, n: int) -> None:
    assert enc.numeric.shape == (n, pre.n_numeric_features)
    assert np.isfinite(enc.numeric).all()
    assert enc.categorical.shape == (n, len(pre.categorical))
    for j, state in enumerate(pre.categorical):
        assert ((enc.categorical[:, j] >= 0) & (enc.categorical[:, j] < state.cardinality)).all()
    if enc.target is not None:
        assert enc.target.shape == (n,) and np.isfinite(enc.target).all()


@PROPERTY
@given(drawn=finite_frames())
def test_preprocessing_keeps_finite_frames_finite(drawn: tuple[pd.DataFrame, Schema]) -> None:
    """fit + transform on any finite frame gives finite features, one row per input row, codes
    inside each vocabulary, and a fitted state that is strict JSON and round-trips exactly."""
    frame, schema = drawn
    pre = fitted(frame, schema)
    enc = pre.transform(frame, "frame", with_target=True)
    _assert_finite_encoding(enc, pre, len(frame))
    text = json.dumps(pre.to_json(), allow_nan=False)  # no NaN or inf in preprocessing.json
    again = features.Preprocessor.from_json(json.loads(text)).transform(
        frame, "frame", with_target=True
    )
    assert np.array_equal(again.numeric, enc.numeric)
    assert np.array_equal(again.categorical, enc.categorical)


@PROPERTY
@given(drawn=finite_frames(), other=finite_frames())
def test_transform_of_unseen_finite_values_stays_finite(
    drawn: tuple[pd.DataFrame, Schema], other: tuple[pd.DataFrame, Schema]
) -> None:
    """A preprocessor applied to new rows (any finite values, any texts) still gives finite
    features: what prediction does with values never seen in training."""
    frame, schema = drawn
    pre = fitted(frame, schema)
    new = other[0]
    rows = len(new)
    # The new frame takes the fitted columns' names, filled from the drawn frame's values.
    pool = [c for c in new.columns if c != "y"] or ["y"]
    renamed = pd.DataFrame(
        {c.name: new[pool[k % len(pool)]].to_numpy() for k, c in enumerate(schema.columns)}
    )
    clean = pd.DataFrame(index=renamed.index)
    for c in schema.columns:
        values = renamed[c.name]
        if c.kind == "numeric":
            # Finite values only: a drawn text such as "inf" parses to infinity, which predict
            # refuses before transform ever sees it.
            number = pd.to_numeric(values, errors="coerce").astype("float64")
            clean[c.name] = number.where(np.isfinite(number))
        else:
            clean[c.name] = values
    enc = pre.transform(clean, "frame", with_target=False)
    _assert_finite_encoding(enc, pre, rows)


# --- predict's validation -----------------------------------------------------------------------

REQUIRED = ["LotArea", "Neighborhood", "CentralAir"]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """A predictor on a real fitted preprocessor and an (untrained) real network."""
    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame(
        {
            "LotArea": rng.uniform(1000, 20000, n),
            "Neighborhood": rng.choice(["CollgCr", "OldTown", "Edwards"], n),
            "CentralAir": rng.choice([True, False], n),
            "SalePrice": rng.uniform(50000, 400000, n),
        }
    )
    schema = Schema(
        (Column("LotArea", "numeric"), Column("Neighborhood", "categorical"),
         Column("CentralAir", "boolean")),
        "SalePrice", "regression", "log", (),
    )  # fmt: skip
    pre = features.fit(frame, schema, FeatureSettings(), "fixture")
    model = TabularMLP(fit.network_config(pre, Settings()))
    model.eval()
    return Predictor("house-prices", "0.1.0", "p" * 64, "b" * 64, schema, pre, model, [""], ",")


# Anything a caller (or a JSON-lines file) can put in a cell.
WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: ints far beyond int64 and float
    st.floats(),  # NaN and infinities included
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["1e999", "-inf", "nan", "true", "FALSE", "0", "1", " 12 ", "1_000", "ü"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
    st.datetimes().map(pd.Timestamp),
)


@st.composite
def wild_series(draw: st.DrawFn, n: int) -> pd.Series:
    """A column of ``n`` cells: Python objects, or a typed column of one kind."""
    shape = draw(st.sampled_from(["objects", "float", "int", "bool", "string", "category"]))
    if shape == "objects":
        return pd.Series(draw(st.lists(WILD, min_size=n, max_size=n)), dtype=object)
    if shape == "float":
        return pd.Series(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype="float64")
    if shape == "int":
        cells = st.integers(-(2**63), 2**63 - 1)
        return pd.Series(draw(st.lists(cells, min_size=n, max_size=n)), dtype="int64")
    if shape == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    cells = st.one_of(st.text(max_size=6), st.none())
    dtype = "string" if shape == "string" else "category"
    return pd.Series(draw(st.lists(cells, min_size=n, max_size=n)), dtype=dtype)


@st.composite
def wild_frames(draw: st.DrawFn) -> pd.DataFrame:
    """0-12 rows; each required column present, missing or duplicated; extra columns too."""
    n = draw(st.integers(0, 12))
    names: list[Any] = []
    for name in REQUIRED:
        names.extend([name] * draw(st.sampled_from([0, 1, 1, 1, 1, 2])))
    names.extend(draw(st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=2)))
    cols = [draw(wild_series(n)).to_numpy() for _ in names]
    frame = pd.DataFrame(dict(enumerate(cols)), index=pd.RangeIndex(n))
    frame.columns = pd.Index(names, dtype=object)
    if draw(st.booleans()):  # typed columns survive as typed (DataFrame(...) would unify)
        for k, name in enumerate(names):
            if names.count(name) == 1:
                frame[name] = draw(wild_series(n)).to_numpy() if k % 2 else frame[name]
    return frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=wild_frames(), on_error=st.sampled_from(["fail", "column"]))
def test_predict_frame_raises_only_project_errors(
    predictor: Predictor, frame: pd.DataFrame, on_error: str
) -> None:
    """Whatever the frame, predict_frame returns one finite-or-empty prediction per row, or
    raises a PipelineError (exit code, one-line message): never a bare library exception."""
    run = RunSettings(on_error=on_error)
    try:
        result = predictor.predict_frame(frame, run, label="frame")
    except PipelineError as exc:
        assert exc.exit_code != 1 and "\n" not in exc.message
        return
    assert len(result) == len(frame)
    predictions = result["prediction"].to_numpy(dtype="float64", na_value=np.nan)
    if on_error == "column":
        failed = result["error"].to_numpy() != ""
        assert np.isnan(predictions[failed]).all()
        assert np.isfinite(predictions[~failed]).all()
    else:
        assert np.isfinite(predictions).all()
