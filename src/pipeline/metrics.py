"""Evaluation metrics in pure numpy: regression errors and classification scores.

Every function returns plain Python values (``float``, ``int``, ``list``) so results go straight
into JSON manifests and log events; a metric that is undefined for the data (R² of a constant
target, AUC with a single class present) is ``None``, never NaN. Bad shapes raise ``ValueError``:
they are programming errors, because the caller validates user data before it gets here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Predictions are clipped to this floor before a log so that rmse_log stays finite.
LOG_FLOOR = 1e-12
# log_loss clips probabilities to [EPS, 1], the usual convention, so a confident miss costs ~34.5.
EPS = 1e-15
# Tolerance for "rows sum to 1": float32 softmax outputs are off by a few ulps of float32.
_ROW_SUM_ATOL = 1e-4


def regression(y_true: Any, y_pred: Any, *, log_scale: bool = False) -> dict[str, float | None]:
    """Return ``rmse``, ``mae`` and ``r2`` of predictions.

    ``r2`` is ``None`` when ``y_true`` is constant, and in the degenerate case where R² is too
    negative for a float64 (a spread of ~1e-300 with errors of ~1).

    With ``log_scale`` the result also has ``rmse_log``, the RMSE between ``log(y_true)`` and
    ``log(y_pred)``: every target must be > 0, and predictions are clipped to ``LOG_FLOOR`` so a
    non-positive prediction costs a large but finite error.
    """
    y = _vector("y_true", y_true)
    yhat = _vector("y_pred", y_pred)
    _same_length(("y_true", y), ("y_pred", yhat))

    with np.errstate(over="ignore"):  # overflow is reported below, as a ValueError
        err = yhat - y
    if not np.all(np.isfinite(err)):
        raise ValueError("y_pred - y_true overflows float64: rescale the target before scoring")
    rmse = rms(err)
    result: dict[str, float | None] = {
        "rmse": rmse,
        "mae": _scaled_mean_abs(err),
        "r2": _r2(y, rmse),
    }
    if log_scale:
        if np.any(y <= 0):
            raise ValueError(
                f"rmse_log needs y_true > 0, got minimum {float(y.min())!r}: "
                "use log_scale=False for targets that can be zero or negative"
            )
        log_err = np.log(np.maximum(yhat, LOG_FLOOR)) - np.log(y)
        result["rmse_log"] = rms(log_err)
    return result


# Events and API documents carry a confusion matrix only up to this many classes (a K x K
# matrix grows with the square of K); metrics.json always keeps it.
EVENT_MAX_CLASSES = 10


def bounded(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` for a log event or an API answer: each part's confusion matrix is left out
    when it has more than ``EVENT_MAX_CLASSES`` classes (the build's metrics.json has it)."""

    def part(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        matrix = value.get("confusion_matrix")
        if isinstance(matrix, dict) and len(matrix.get("labels", ())) > EVENT_MAX_CLASSES:
            return {k: v for k, v in value.items() if k != "confusion_matrix"}
        return {k: part(v) for k, v in value.items()}

    return dict(part(metrics))


def one_class(scores: dict[str, Any], rows: str) -> str | None:
    """A warning when a classifier put every one of ``rows`` (``test rows``) in one class
    while they hold others (ISLR's Caravan, 6% buyers: every test row "No", accuracy the
    majority's, with no word): its probabilities may still rank the rows. None otherwise."""
    matrix = scores.get("confusion_matrix")
    if not isinstance(matrix, dict):
        return None
    cm = np.asarray(matrix["matrix"], dtype=np.int64)
    predicted = np.flatnonzero(cm.sum(axis=0))
    present = np.flatnonzero(cm.sum(axis=1))
    if len(predicted) != 1 or len(present) < 2:
        return None
    labels = matrix["labels"]
    only = int(predicted[0])
    others = int(cm.sum()) - int(cm[only, only])
    auc = scores.get("roc_auc")
    ranked = f" (ROC AUC {auc:.3f})" if isinstance(auc, float) else ""
    threshold = "lower PIPELINE_RUN__THRESHOLD, " if len(labels) == 2 else ""
    return (
        f"every one of the {int(cm.sum()):,} {rows} is predicted as {labels[only]!r}, though "
        f"{others:,} of them {'is' if others == 1 else 'are'} of another class{ranked}: no "
        "row's probability reaches the "
        f"others'; accuracy is the majority's. To find the rarer class, {threshold}use the "
        "probabilities `pipeline predict` writes, or judge the model by f1_macro and roc_auc"
    )


def classification(
    y_true: Any, proba: Any, labels: list[str], threshold: float | None = None
) -> dict[str, Any]:
    """Return accuracy, macro F1, ROC AUC, log loss, the confusion matrix and the row count.

    ``y_true`` holds class indices in ``[0, K)`` and ``proba`` is ``[N, K]`` with rows summing to
    1; for a binary task (K == 2) column 1 is the positive class. ``roc_auc`` is ``None`` when
    ``y_true`` holds a single class. The confusion matrix has true classes as rows and predicted
    classes (argmax, or for a binary task with ``threshold`` the positive class where its
    probability reaches it, as predict decides) as columns, in the order of ``labels``.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"proba must be a non-empty [N, K] array with K >= 2, got shape {p.shape}")
    n, k = p.shape
    if len(labels) != k:
        raise ValueError(f"got {len(labels)} labels for {k} probability columns: expected one each")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("proba must hold finite probabilities in [0, 1]")
    if not np.allclose(p.sum(axis=1), 1.0, rtol=0.0, atol=_ROW_SUM_ATOL):
        raise ValueError("every row of proba must sum to 1: apply softmax before scoring")
    y = _class_indices(y_true, k)
    _same_length(("y_true", y), ("proba", p))

    pred = p.argmax(axis=1) if threshold is None or k != 2 else (p[:, 1] >= threshold) * 1
    # [K, K]: rows = true class, columns = predicted class.
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    true_p = np.clip(p[np.arange(n), y], EPS, 1.0)
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1_macro": _f1_macro(cm),
        "roc_auc": _roc_auc(y, p),
        "log_loss": float(np.mean(-np.log(true_p))),
        "confusion_matrix": {"labels": list(labels), "matrix": cm.tolist()},
        "n": int(n),
    }


def _r2(y: FloatArray, rmse: float) -> float | None:
    """R² = 1 - SS_res / SS_tot, or ``None`` when y is constant or R² is below -1.8e308."""
    # Test constancy on the values, not on SS_tot: mean() of equal floats can be off by an ulp,
    # and the squares of a tiny spread underflow to 0. Distinct floats always differ by > 0.
    if np.all(y == y[0]):
        return None
    # SS_res / SS_tot = (rmse / rms of deviations)^2; both RMS are scaled, so neither underflows.
    ratio = rmse / rms(y - y.mean())
    r2 = 1.0 - ratio * ratio
    return r2 if np.isfinite(r2) else None


def rms(x: FloatArray) -> float:
    """Root mean square, scaled by max |x| so squares neither underflow nor overflow."""
    scale = float(np.max(np.abs(x)))
    if scale == 0.0:
        return 0.0
    return scale * float(np.sqrt(np.mean((x / scale) ** 2)))


def _scaled_mean_abs(x: FloatArray) -> float:
    """Mean of |x|, scaled like ``rms`` so that RMS >= mean |x| holds up to rounding."""
    scale = float(np.max(np.abs(x)))
    if scale == 0.0:
        return 0.0
    return scale * float(np.mean(np.abs(x) / scale))


def _f1_macro(cm: IntArray) -> float:
    """Macro F1 over the classes that are true or predicted at least once (sklearn's labels)."""
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    # F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN); a present class with TP == 0 scores 0.
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(tp), dtype=np.float64), where=denom > 0)
    return float(f1[present].mean())


def _roc_auc(y: IntArray, p: FloatArray) -> float | None:
    """Binary AUC of column 1, or the mean one-vs-rest AUC over the classes present in y."""
    present = np.unique(y)
    if len(present) < 2:
        return None
    if p.shape[1] == 2:
        return _binary_auc(y == 1, p[:, 1])
    return float(np.mean([_binary_auc(y == c, p[:, c]) for c in present]))


def _binary_auc(positive: npt.NDArray[np.bool_], score: FloatArray) -> float:
    """Mann–Whitney AUC: P(score of a positive > score of a negative), ties counting one half."""
    ranks = _average_ranks(score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_ranks(x: FloatArray) -> FloatArray:
    """1-based ranks of x, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    # A group of c ties ending at cumulative position e spans ranks e-c+1..e, mean e - (c-1)/2.
    ends = np.cumsum(counts)
    mean_rank: FloatArray = ends - (counts - 1) / 2.0
    return mean_rank[inverse]


def _vector(name: str, values: Any) -> FloatArray:
    """``values`` as a non-empty, finite 1-D float array."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: metrics need at least one row")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _class_indices(values: Any, k: int) -> IntArray:
    """``values`` as a 1-D int array of class indices in [0, k)."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("y_true is empty: metrics need at least one row")
    if a.dtype.kind not in "iu" and not (
        a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a))
    ):
        raise ValueError(f"y_true must hold integer class indices, got dtype {a.dtype}")
    idx = a.astype(np.int64)
    if idx.min() < 0 or idx.max() >= k:
        raise ValueError(
            f"y_true holds class indices {int(idx.min())}..{int(idx.max())}: expected 0..{k - 1}"
        )
    return idx


def _same_length(*arrays: tuple[str, npt.NDArray[Any]]) -> None:
    """Raise ``ValueError`` unless every array has the same number of rows."""
    lengths = {name: len(a) for name, a in arrays}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {shown} rows")
