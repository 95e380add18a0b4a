"""What a build's plots need, computed once from the test predictions that training makes.

Each curve is a plain JSON list of flat objects (one file ``curve_<name>.json`` per curve in
the build, part of its id), the shape DVC's plot templates read (``dvc plots show
builds/<id>/curve_roc.json``). Sizes are bounded whatever the test set's size: a regression's
(actual, predicted) pairs are a deterministic sample of at most ``MAX_POINTS`` rows, ROC and PR
curves at most ``MAX_CURVE_POINTS`` points, the rest fixed-size tables. Values are rounded to
``DIGITS`` significant digits: plots need no more, and the files stay small and readable.

Pure numpy, no torch: ``pipeline report`` reads these files, never the model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import metrics
from pipeline.artifacts import CURVE_PREFIX

if TYPE_CHECKING:
    from pipeline.features import TargetState
    from pipeline.model import TabularMLP
    from pipeline.tensors import Elsewhere, Tensors

PREFIX = CURVE_PREFIX  # the build id covers every file named so (``artifacts.build_id``)
MAX_POINTS = 2000
MAX_CURVE_POINTS = 200
HISTOGRAM_BINS = 30
CALIBRATION_BINS = 10
SWEEP = 51  # thresholds 0.00, 0.02, ..., 1.00
TOP_CLASSES = 5  # one-vs-rest ROC curves for the classes with the most test rows
DIGITS = 6

Curves = dict[str, list[dict[str, Any]]]


def file_name(curve: str) -> str:
    """The build file holding ``curve``."""
    return f"{PREFIX}{curve}.json"


def from_files(files: dict[str, Any]) -> dict[str, Any]:
    """``{curve: content}`` for every curve file among a build's ``{name: content}``."""
    return {
        name[len(PREFIX) : -len(".json")]: value
        for name, value in files.items()
        if name.startswith(PREFIX) and name.endswith(".json")
    }


def compute(values: np.ndarray, y: np.ndarray, target: TargetState) -> Curves:
    """The curves of one task from ``outputs.to_values``' result and the true targets.

    ``y`` is in target units for regression and class indices for classification.
    """
    if target.task == "regression":
        return _regression(np.asarray(values, dtype=np.float64), np.asarray(y, dtype=np.float64))
    p = np.asarray(values, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    if target.task == "binary":
        return _binary(p[:, 1], labels == 1)
    return _multiclass(p, labels, list(target.classes))


def _num(x: float) -> float | None:
    """A JSON number rounded to ``DIGITS`` significant digits (None for NaN or infinity)."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{DIGITS}g}")


def _ratio(num: float, den: float) -> float | None:
    return _num(num / den) if den else None


def sample_rows(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """At most ``limit`` row positions out of ``n``, evenly spread: the same rows every time.

    The test rows are already a seeded shuffle of the data, so an even spread over them is an
    unbiased sample, drawn without a random generator.
    """
    if n <= limit:
        return np.arange(n)
    return (np.arange(limit, dtype=np.int64) * n) // limit


# --- regression -------------------------------------------------------------------------------


def _regression(pred: np.ndarray, actual: np.ndarray) -> Curves:
    keep = sample_rows(len(actual))
    pairs = [
        {
            "actual": _num(actual[i]),
            "predicted": _num(pred[i]),
            "residual": _num(pred[i] - actual[i]),
        }
        for i in keep
    ]
    return {
        "predicted_actual": pairs,
        "residual_histogram": _histogram(pred - actual),
        "error_by_decile": _error_by_decile(pred, actual),
    }


def _histogram(residual: np.ndarray) -> list[dict[str, Any]]:
    """Counts of residuals (predicted - actual) in ``HISTOGRAM_BINS`` equal-width bins."""
    low, high = float(residual.min()), float(residual.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(residual, bins=HISTOGRAM_BINS, range=(low, high))
    return [
        {"low": _num(edges[i]), "high": _num(edges[i + 1]), "count": int(counts[i])}
        for i in range(len(counts))
    ]


def _rmse(err: np.ndarray) -> float:
    """The root mean square of ``err``; scaled (``metrics.rms``) only where the squares
    overflow, so that ordinary curves keep their bytes (and builds their ids)."""
    with np.errstate(over="ignore"):
        square = float(np.mean(err * err))
    return math.sqrt(square) if math.isfinite(square) else metrics.rms(err)


def _error_by_decile(pred: np.ndarray, actual: np.ndarray) -> list[dict[str, Any]]:
    """Errors within each tenth of the rows ordered by the actual value (ties by row order)."""
    order = np.argsort(actual, kind="stable")
    rows = []
    for d, part in enumerate(np.array_split(order, 10), start=1):
        if len(part) == 0:
            continue
        err = pred[part] - actual[part]
        rows.append(
            {
                "decile": d,
                "low": _num(actual[part].min()),
                "high": _num(actual[part].max()),
                "count": len(part),
                "mean_actual": _num(actual[part].mean()),
                "mean_predicted": _num(pred[part].mean()),
                "mae": _num(np.abs(err).mean()),
                "rmse": _num(_rmse(err)),
                "bias": _num(err.mean()),
            }
        )
    return rows


# --- binary -----------------------------------------------------------------------------------


def _roc_points(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """(fpr, tpr, precision, recall, threshold) at every distinct score, highest first."""
    order = np.argsort(-score, kind="stable")
    s, pos = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each distinct score
    tp = np.cumsum(pos)[last].astype(np.float64)
    fp = (last + 1) - tp
    n_pos, n_neg = float(pos.sum()), float(len(pos) - pos.sum())
    tpr = tp / n_pos if n_pos else np.zeros_like(tp)
    fpr = fp / n_neg if n_neg else np.zeros_like(fp)
    precision = tp / (tp + fp)
    return fpr, tpr, precision, tpr, s[last]


def _thin(n: int, limit: int = MAX_CURVE_POINTS) -> np.ndarray:
    """At most ``limit`` of ``n`` curve points, evenly spread, the first and last kept."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def _roc(positive: np.ndarray, score: np.ndarray) -> list[dict[str, Any]]:
    fpr, tpr, _, _, thr = _roc_points(positive, score)
    rows = [{"fpr": 0.0, "tpr": 0.0, "threshold": None}]
    rows += [
        {"fpr": _num(fpr[i]), "tpr": _num(tpr[i]), "threshold": _num(thr[i])}
        for i in _thin(len(thr))
    ]
    return rows


def _pr(positive: np.ndarray, score: np.ndarray) -> list[dict[str, Any]]:
    _, _, precision, recall, thr = _roc_points(positive, score)
    return [
        {"recall": _num(recall[i]), "precision": _num(precision[i]), "threshold": _num(thr[i])}
        for i in _thin(len(thr))
    ]


def _calibration(positive: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Mean predicted probability and observed positive rate in ``CALIBRATION_BINS`` bins."""
    which = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    rows = []
    for b in range(CALIBRATION_BINS):
        inside = which == b
        n = int(inside.sum())
        if n == 0:
            continue
        rows.append(
            {
                "low": _num(b / CALIBRATION_BINS),
                "high": _num((b + 1) / CALIBRATION_BINS),
                "count": n,
                "mean_predicted": _num(p[inside].mean()),
                "fraction_positive": _num(positive[inside].mean()),
            }
        )
    return rows


def _threshold_sweep(positive: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Precision, recall, F1 and positive rate when the positive class is p >= threshold."""
    rows = []
    n_pos = float(positive.sum())
    for t in np.linspace(0.0, 1.0, SWEEP):
        picked = p >= t
        tp = float(np.sum(picked & positive))
        k = float(picked.sum())
        precision = tp / k if k else None
        recall = tp / n_pos if n_pos else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        rows.append(
            {
                "threshold": _num(t),
                "precision": None if precision is None else _num(precision),
                "recall": None if recall is None else _num(recall),
                "f1": None if f1 is None else _num(f1),
                "positive_rate": _num(k / len(p)),
            }
        )
    return rows


def _binary(p: np.ndarray, positive: np.ndarray) -> Curves:
    return {
        "roc": _roc(positive, p),
        "pr": _pr(positive, p),
        "calibration": _calibration(positive, p),
        "threshold_sweep": _threshold_sweep(positive, p),
    }


# --- multiclass -------------------------------------------------------------------------------


def _multiclass(p: np.ndarray, y: np.ndarray, classes: list[str]) -> Curves:
    k = len(classes)
    pred = p.argmax(axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    per_class = []
    for c, name in enumerate(classes):
        tp, support, predicted = int(cm[c, c]), int(cm[c].sum()), int(cm[:, c].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * tp, support + predicted)
        per_class.append(
            {
                "class": name,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": support,
            }
        )
    support = cm.sum(axis=1)
    # The classes with the most test rows (ties: the earlier class), each with both kinds present.
    top = [c for c in np.argsort(-support, kind="stable") if 0 < support[c] < len(y)][:TOP_CLASSES]
    roc = []
    for c in sorted(top):
        for row in _roc(y == c, p[:, c]):
            roc.append({"class": classes[c], "fpr": row["fpr"], "tpr": row["tpr"]})
    confidence = p.max(axis=1)
    correct = pred == y
    coverage = []
    for t in np.linspace(0.0, 1.0, 21):
        kept = confidence >= t
        n = int(kept.sum())
        coverage.append(
            {
                "threshold": _num(t),
                "coverage": _num(n / len(y)),
                "accuracy": _ratio(float(correct[kept].sum()), n),
                "count": n,
            }
        )
    return {"per_class": per_class, "roc_ovr": roc, "confidence": coverage}


def of_test(
    model: TabularMLP, rows: Tensors | Elsewhere, target: TargetState
) -> tuple[dict[str, Any], Curves]:
    """Metrics and plot curves of the final network on the test rows, from one pass."""
    from pipeline.tensors import predict_rows, score

    values = predict_rows(model, rows, target)
    y_encoded = rows.targets().cpu().numpy()
    y = target.decode(y_encoded) if target.task == "regression" else y_encoded
    return score(values, y_encoded, target), compute(values, y, target)
