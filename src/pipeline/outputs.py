"""What the network's outputs mean: values in target units, and the columns a prediction has.

Regression outputs are standardised (and maybe log-transformed) targets, decoded back to
target units; binary outputs are one logit; multiclass outputs are K logits. A prediction row
is ``[id column] prediction [probability_<class> ...] [error]``: the same columns whether it is
written by ``pipeline predict`` or returned by ``pipeline serve``.
"""

from __future__ import annotations

import numpy as np

from pipeline.features import TargetState

PREDICTION = "prediction"
ERROR = "error"


def probability_column(cls: str) -> str:
    """The column holding the probability of class ``cls``."""
    return f"probability_{cls}"


def columns(target: TargetState, id_column: str | None, error_column: bool) -> list[str]:
    """The output columns of a prediction, in order."""
    names = [id_column] if id_column else []
    names.append(PREDICTION)
    if target.task != "regression":
        names += [probability_column(c) for c in target.classes]
    if error_column:
        names.append(ERROR)
    return names


def to_values(out: np.ndarray, target: TargetState) -> np.ndarray:
    """Raw outputs [N, n_outputs] to target units [N] (regression) or class probabilities [N, K]."""
    if target.task == "regression":
        return target.decode(target.bound(out[:, 0]))
    if target.task == "binary":
        p1 = 1.0 / (1.0 + np.exp(-out[:, 0].astype(np.float64)))
        return np.stack([1.0 - p1, p1], axis=1)
    z = out.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def prediction_columns(
    values: np.ndarray, target: TargetState, threshold: float, bad: np.ndarray
) -> dict[str, np.ndarray]:
    """The prediction and probability columns for ``to_values``' result; ``bad`` rows are empty.

    A binary prediction is the positive class when its probability reaches ``threshold``; a
    multiclass prediction is the most probable class.
    """
    if target.task == "regression":
        return {PREDICTION: np.where(bad, np.nan, values)}
    classes = np.array(target.classes, dtype=object)
    if target.task == "binary":
        picked = (values[:, 1] >= threshold).astype(np.int64)
    else:
        picked = values.argmax(axis=1)
    labels = classes[picked]
    labels[bad] = None
    result = {PREDICTION: labels}
    for k, name in enumerate(target.classes):
        result[probability_column(name)] = np.where(bad, np.nan, values[:, k])
    return result
