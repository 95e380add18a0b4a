"""Tests for pipeline.metrics: hand-computed examples and properties of the pure numpy metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import metrics

# --- strategies -------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def paired(draw: st.DrawFn, values: st.SearchStrategy[float] = finite) -> tuple[list[float], ...]:
    """Two equal-length, non-empty lists of floats: (y_true, y_pred)."""
    n = draw(st.integers(min_value=1, max_value=50))
    y = draw(st.lists(values, min_size=n, max_size=n))
    yhat = draw(st.lists(values, min_size=n, max_size=n))
    return y, yhat


@st.composite
def scored(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class indices, an [N, K] probability matrix with rows summing to 1, and K labels."""
    k = draw(st.integers(min_value=2, max_value=5))
    n = draw(st.integers(min_value=1, max_value=40))
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    # Integer weights make ties (within a row and across rows) common, the interesting case.
    weights = np.array(
        draw(st.lists(st.lists(st.integers(0, 5), min_size=k, max_size=k), min_size=n, max_size=n)),
        dtype=np.float64,
    )
    weights[weights.sum(axis=1) == 0] = 1.0
    proba = weights / weights.sum(axis=1, keepdims=True)
    return y, proba, [f"c{i}" for i in range(k)]


@st.composite
def binary_grid(draw: st.DrawFn) -> tuple[list[int], np.ndarray]:
    """Binary labels with both classes present and scores on a 1/20 grid (exact under 1 - p)."""
    y = draw(
        st.lists(st.integers(0, 1), min_size=2, max_size=40).filter(lambda v: len(set(v)) == 2)
    )
    steps = draw(st.lists(st.integers(0, 20), min_size=len(y), max_size=len(y)))
    return y, np.array(steps) / 20.0


def binary_proba(p: Any) -> np.ndarray:
    """[N, 2] probabilities whose positive column (1) is p."""
    p = np.asarray(p, dtype=np.float64)
    return np.column_stack([1.0 - p, p])


def assert_plain_json(value: Any) -> None:
    """Assert value is built only of plain Python JSON types (no numpy scalars, no NaN)."""
    json.dumps(value, allow_nan=False)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            assert all(type(key) is str for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            assert type(item) in (float, int, str, bool, type(None)), type(item)


# --- regression: hand-computed ----------------------------------------------------------------


def test_regression_hand_computed() -> None:
    """rmse, mae and r2 match a small example worked by hand."""
    # err = [0, 0, 0, -2]: mse = 4/4 = 1, mae = 2/4; SS_tot = 2.25+0.25+0.25+2.25 = 5, r2 = 1-4/5.
    result = metrics.regression([1, 2, 3, 4], [1, 2, 3, 2])
    assert result == {
        "rmse": pytest.approx(1.0),
        "mae": pytest.approx(0.5),
        "r2": pytest.approx(0.2),
    }


def test_regression_r2_none_on_constant_target() -> None:
    """R² is None, not NaN or -inf, when y_true is constant (SS_tot == 0)."""
    result = metrics.regression([0.1, 0.1, 0.1], [0.0, 0.1, 0.2])
    assert result["r2"] is None
    assert result["mae"] == pytest.approx(0.2 / 3)
    assert_plain_json(result)


def test_regression_r2_can_be_negative() -> None:
    """A model worse than predicting the mean has negative R²."""
    # y mean 2, SS_tot = 2; err = [2, 0, -2], SS_res = 8: r2 = 1 - 8/2 = -3.
    assert metrics.regression([1, 2, 3], [3, 2, 1])["r2"] == pytest.approx(-3.0)


def test_regression_tiny_values_do_not_underflow() -> None:
    """Errors and spreads near the smallest float keep rmse >= mae and r2 defined."""
    # Naive squares of 2.2e-308 underflow to 0: rmse would be 0 below mae and SS_tot 0.
    tiny = 2.2250738585072014e-308
    result = metrics.regression([0.0, tiny], [0.0, 0.0])
    assert result["rmse"] == pytest.approx(tiny / math.sqrt(2), rel=1e-12)
    assert result["mae"] == pytest.approx(tiny / 2, rel=1e-12)
    # err = [0, -tiny], deviations [-tiny/2, tiny/2]: SS_res / SS_tot = 2, r2 = -1.
    assert result["r2"] == pytest.approx(-1.0)
    assert metrics.regression([0.0, tiny], [0.0, tiny])["r2"] == 1.0


def test_regression_rejects_overflowing_errors() -> None:
    """Errors beyond the float64 range raise ValueError instead of returning inf."""
    with pytest.raises(ValueError, match="overflows"):
        metrics.regression([-1e308, 1e308], [1e308, -1e308])


def test_rmse_log_hand_computed() -> None:
    """rmse_log is the RMSE of log values and only appears with log_scale."""
    # log errors: log(e) - log(1) = 1 and log(e) - log(e) = 0: rmse_log = sqrt(1/2).
    result = metrics.regression([1.0, math.e], [math.e, math.e], log_scale=True)
    assert result["rmse_log"] == pytest.approx(math.sqrt(0.5))
    assert "rmse_log" not in metrics.regression([1.0, math.e], [math.e, math.e])


def test_rmse_log_clips_non_positive_predictions() -> None:
    """A zero or negative prediction is clipped to LOG_FLOOR, giving a large finite error."""
    # log errors: log(1e-12) - log(1) = -12 ln 10 and 0: rmse_log = 12 ln 10 / sqrt(2).
    for bad in (0.0, -3.0):
        result = metrics.regression([1.0, 1.0], [bad, 1.0], log_scale=True)
        assert result["rmse_log"] == pytest.approx(12 * math.log(10) / math.sqrt(2))


def test_rmse_log_rejects_non_positive_target() -> None:
    """rmse_log refuses targets <= 0, whose log is undefined."""
    with pytest.raises(ValueError, match="y_true > 0"):
        metrics.regression([0.0, 1.0], [1.0, 1.0], log_scale=True)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([1.0, 2.0], [1.0], "length mismatch"),
        ([], [], "empty"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
        ([1.0, float("nan")], [1.0, 2.0], "NaN"),
    ],
)
def test_regression_rejects_bad_shapes(y_true: Any, y_pred: Any, message: str) -> None:
    """Mismatched, empty, 2-D or non-finite inputs raise ValueError naming the problem."""
    with pytest.raises(ValueError, match=message):
        metrics.regression(y_true, y_pred)


# --- regression: properties -------------------------------------------------------------------


@given(paired())
def test_rmse_at_least_mae_at_least_zero(pair: tuple[list[float], list[float]]) -> None:
    """RMSE >= MAE >= 0 for any predictions (up to float rounding)."""
    result = metrics.regression(*pair)
    rmse, mae = result["rmse"], result["mae"]
    assert rmse is not None and mae is not None
    assert mae >= 0.0
    assert rmse >= mae * (1 - 1e-12)


@given(st.lists(finite, min_size=2, max_size=50).filter(lambda v: len(set(v)) > 1))
def test_perfect_predictions(y: list[float]) -> None:
    """Predicting y exactly gives rmse 0, mae 0 and r2 1 when y is not constant."""
    assert metrics.regression(y, y) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}


@given(paired(positive))
def test_regression_result_is_plain_json(pair: tuple[list[float], list[float]]) -> None:
    """Every regression result, rmse_log included, is plain JSON without NaN."""
    assert_plain_json(metrics.regression(*pair, log_scale=True))


# --- classification: hand-computed ------------------------------------------------------------


def test_binary_auc_example() -> None:
    """Binary AUC counts positive-over-negative pairs: 3 of 4 here."""
    # Pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes: 3/4.
    result = metrics.classification([0, 0, 1, 1], binary_proba([0.1, 0.4, 0.35, 0.8]), ["a", "b"])
    assert result["roc_auc"] == pytest.approx(0.75)


def test_binary_auc_with_ties() -> None:
    """A tied positive/negative pair counts one half (average ranks)."""
    # Pairs: 0.5>0.2 yes, 0.5=0.5 half, 0.9>0.2 yes, 0.9>0.5 yes: 3.5/4.
    result = metrics.classification([0, 0, 1, 1], binary_proba([0.2, 0.5, 0.5, 0.9]), ["a", "b"])
    assert result["roc_auc"] == pytest.approx(0.875)
    # Every score tied: every pair is a half, AUC 0.5.
    tied = metrics.classification([0, 1, 0, 1], binary_proba([0.5] * 4), ["a", "b"])
    assert tied["roc_auc"] == pytest.approx(0.5)


def test_binary_auc_perfect_and_inverted() -> None:
    """A perfect ranking has AUC 1 and its reverse AUC 0."""
    y = [0, 0, 1, 1]
    perfect = metrics.classification(y, binary_proba([0.1, 0.2, 0.8, 0.9]), ["a", "b"])
    inverted = metrics.classification(y, binary_proba([0.9, 0.8, 0.2, 0.1]), ["a", "b"])
    assert perfect["roc_auc"] == 1.0
    assert inverted["roc_auc"] == 0.0


def test_auc_none_with_single_class() -> None:
    """AUC is None (JSON null), not NaN, when y_true holds one class."""
    result = metrics.classification([1, 1, 1], binary_proba([0.2, 0.6, 0.9]), ["a", "b"])
    assert result["roc_auc"] is None
    assert_plain_json(result)


def test_multiclass_example() -> None:
    """Three classes: accuracy, confusion matrix, macro F1, OvR AUC and log loss by hand."""
    y = [0, 1, 2, 2]
    proba = [
        [0.6, 0.3, 0.1],  # true 0, predicted 0
        [0.2, 0.5, 0.3],  # true 1, predicted 1
        [0.3, 0.4, 0.3],  # true 2, predicted 1
        [0.1, 0.2, 0.7],  # true 2, predicted 2
    ]
    result = metrics.classification(y, proba, ["a", "b", "c"])
    assert result["n"] == 4
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["confusion_matrix"] == {
        "labels": ["a", "b", "c"],
        "matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 1]],
    }
    # F1 = 2TP/(2TP+FP+FN): a 2/2 = 1, b 2/3 (one FP), c 2/3 (one FN): mean 7/9.
    assert result["f1_macro"] == pytest.approx(7 / 9)
    # OvR AUC: a {0.6} over {0.2,0.3,0.1} = 1; b {0.5} over {0.3,0.4,0.2} = 1;
    # c {0.3,0.7} over {0.1,0.3}: 0.3>0.1, 0.3=0.3 half, 0.7 beats both = 3.5/4. Mean 2.875/3.
    assert result["roc_auc"] == pytest.approx(2.875 / 3)
    expected_loss = -(math.log(0.6) + math.log(0.5) + math.log(0.3) + math.log(0.7)) / 4
    assert result["log_loss"] == pytest.approx(expected_loss)
    assert_plain_json(result)


def test_multiclass_auc_skips_classes_absent_from_y_true() -> None:
    """Multiclass AUC averages only over classes present in y_true."""
    # Class c never occurs: a {0.7,0.5} over {0.2,0.1} = 1; b {0.6,0.3} over {0.2,0.2} = 1.
    proba = [[0.7, 0.2, 0.1], [0.5, 0.2, 0.3], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]]
    result = metrics.classification([0, 0, 1, 1], proba, ["a", "b", "c"])
    assert result["roc_auc"] == pytest.approx(1.0)


def test_macro_f1_with_a_class_never_predicted() -> None:
    """A true class that is never predicted scores F1 0; a class absent everywhere is excluded."""
    y = [0, 0, 1, 2]
    # Predicted [0, 0, 0, 2]: class b (1) is never predicted, class d (3) never true or predicted.
    proba = [
        [0.7, 0.1, 0.1, 0.1],
        [0.6, 0.2, 0.1, 0.1],
        [0.5, 0.3, 0.1, 0.1],
        [0.1, 0.2, 0.6, 0.1],
    ]
    result = metrics.classification(y, proba, ["a", "b", "c", "d"])
    # a: TP 2, FP 1 -> 4/5; b: TP 0 -> 0; c: TP 1 -> 1; d excluded. Mean (0.8 + 0 + 1) / 3.
    assert result["f1_macro"] == pytest.approx(0.6)
    assert result["confusion_matrix"]["matrix"][1] == [1, 0, 0, 0]


def test_binary_log_loss() -> None:
    """Log loss is the mean negative log probability of the true class."""
    result = metrics.classification([1, 0], [[0.2, 0.8], [0.6, 0.4]], ["no", "yes"])
    assert result["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def test_log_loss_clips_zero_probability() -> None:
    """A zero probability on the true class is clipped to 1e-15, so the loss stays finite."""
    # Row 1 gives -ln(1) = 0, row 2 gives -ln(1e-15) = 15 ln 10: mean 7.5 ln 10.
    result = metrics.classification([0, 1], [[1.0, 0.0], [1.0, 0.0]], ["a", "b"])
    assert result["log_loss"] == pytest.approx(7.5 * math.log(10))
    assert_plain_json(result)


def test_classification_accepts_float_class_indices() -> None:
    """Integral float indices (as read from a float column) are accepted as classes."""
    result = metrics.classification(np.array([0.0, 1.0]), binary_proba([0.3, 0.7]), ["a", "b"])
    assert result["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("y_true", "proba", "labels", "message"),
    [
        ([0, 1, 0], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "length mismatch"),
        ([], np.empty((0, 2)), ["a", "b"], "non-empty"),
        ([0], [[1.0]], ["a"], "K >= 2"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a"], "labels"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "class indices"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "class indices"),
        ([0, 0.5], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "integer class indices"),
        ([0, 1], [[0.5, 0.4], [0.5, 0.5]], ["a", "b"], "sum to 1"),
        ([0, 1], [[1.5, -0.5], [0.5, 0.5]], ["a", "b"], r"\[0, 1\]"),
    ],
)
def test_classification_rejects_bad_input(
    y_true: Any, proba: Any, labels: list[str], message: str
) -> None:
    """Bad shapes, labels, class indices or probabilities raise ValueError naming the problem."""
    with pytest.raises(ValueError, match=message):
        metrics.classification(y_true, proba, labels)


# --- classification: properties ---------------------------------------------------------------


@given(scored())
def test_auc_in_unit_interval(case: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    """AUC is None exactly when y_true has one class, and otherwise lies in [0, 1]."""
    y, proba, labels = case
    auc = metrics.classification(y, proba, labels)["roc_auc"]
    if len(set(y.tolist())) < 2:
        assert auc is None
    else:
        assert 0.0 <= auc <= 1.0


@given(binary_grid())
def test_binary_auc_of_complement_sums_to_one(case: tuple[list[int], np.ndarray]) -> None:
    """Reversing the scores (p -> 1 - p) turns AUC into 1 - AUC."""
    y, p = case
    auc = metrics.classification(y, binary_proba(p), ["a", "b"])["roc_auc"]
    flipped = metrics.classification(y, binary_proba(1.0 - p), ["a", "b"])["roc_auc"]
    assert auc + flipped == pytest.approx(1.0, abs=1e-12)


@given(binary_grid())
def test_binary_auc_matches_pair_counting(case: tuple[list[int], np.ndarray]) -> None:
    """The rank formula equals the share of (positive, negative) pairs ordered right, ties 1/2."""
    y, p = case
    pos = [s for s, label in zip(p, y, strict=True) if label == 1]
    neg = [s for s, label in zip(p, y, strict=True) if label == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    auc = metrics.classification(y, binary_proba(p), ["a", "b"])["roc_auc"]
    assert auc == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


@given(scored())
def test_accuracy_is_confusion_trace_over_n(case: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    """Accuracy equals the confusion matrix trace over n, and the matrix counts every row once."""
    y, proba, labels = case
    result = metrics.classification(y, proba, labels)
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert matrix.shape == (len(labels), len(labels))
    assert matrix.sum() == result["n"] == len(y)
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / result["n"])


@given(scored())
def test_classification_result_is_plain_json(
    case: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    """Every classification result is plain JSON without NaN, with F1 and log loss in range."""
    y, proba, labels = case
    result = metrics.classification(y, proba, labels)
    assert_plain_json(result)
    assert 0.0 <= result["f1_macro"] <= 1.0
    assert 0.0 <= result["log_loss"] <= -math.log(metrics.EPS) + 1e-9


def test_regression_curves_of_huge_targets_are_finite_and_quiet() -> None:
    """Targets near 1e300: each decile's RMSE is computed without overflow (the squares
    overflowed, numpy printed a RuntimeWarning to stderr mid-training and the RMSE was inf),
    and ordinary values keep the plain formula's bits."""
    import math
    import warnings

    from pipeline import curves
    from pipeline.features import TargetState

    target = TargetState("y", "regression", "none", 0.0, 1.0)
    rng = np.random.default_rng(0)
    y = rng.random(200) * 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning fails the test
        deciles = curves.compute(y * 1.1, y, target)["error_by_decile"]
    assert all(d["rmse"] is not None and math.isfinite(d["rmse"]) for d in deciles)
    small = rng.random(200)
    err = small * 0.1
    plain = math.sqrt(float(np.mean(err * err)))
    assert curves._rmse(err) == plain
