"""Checks of a cross-validation's folds before any of them trains: every class among each
fold's training rows (`evaluate --folds`, `tune`), and, for a search scored by ROC AUC, two
classes among each fold's held-out rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline import split
from pipeline.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.data.schema import Schema
    from pipeline.search import Payload


# What a class missing from a fold's training rows leaves to do: the folds are stratified, so
# only a class of one row misses one, and no number of folds changes that.
EVALUATE_REMEDY = "merge or drop a class that rare, or evaluate without --folds"
TUNE_REMEDY = (
    "merge or drop a class that rare, or score the trials on the validation split "
    "(PIPELINE_TUNE__SCORING=validation)"
)


def every_class_in(
    frame: pd.DataFrame, schema: Schema, fit_rows: np.ndarray, fold: str,
    remedy: str = EVALUATE_REMEDY,
) -> None:  # fmt: skip
    """DataError when a class of the target has no row among a fold's training rows: the fold's
    model could not score it ("a class the model was not trained on", with no fold named)."""
    if schema.task == "regression":
        return
    target = frame[schema.target]
    missing = set(target.dropna()) - set(target.iloc[fit_rows].dropna())
    if missing:
        counts = target.value_counts()
        shown = ", ".join(
            f"{c!r} ({int(counts[c])} row{'s' if counts[c] > 1 else ''})"
            for c in sorted(missing, key=str)
        )
        raise DataError(
            f"{fold}: its training rows hold no row of class {shown}: a class needs rows in "
            f"every fold's training rows; {remedy}"
        )


def check_folds(payload: Payload) -> None:
    """Before any trial runs: every fold of a cross-validated search holds every class in its
    training rows (``every_class_in``); each trial failed on it, after Ray had started and
    every trial had run, as exit 6."""
    from pipeline import search

    if payload.folds is None:
        return
    every = np.sort(np.concatenate([payload.train, payload.val]))
    val_fraction = payload.settings.train.val_fraction
    labels = search.labels_of(payload.frame, payload.schema, every)
    parts = split.folds(every, payload.folds, val_fraction, payload.seeds.split, labels)
    for i, part in enumerate(parts):
        fold = f"fold {i + 1} of {payload.folds}"
        every_class_in(payload.frame, payload.schema, part[0], fold, TUNE_REMEDY)
        if payload.metric == "roc_auc" and labels is not None:
            _two_classes_held_out(labels, every, part[2], fold)


def _two_classes_held_out(
    labels: np.ndarray, every: np.ndarray, held: np.ndarray, fold: str
) -> None:
    """DataError when a fold's held-out rows hold one class: ROC AUC is undefined on them, and
    the trials' mean over the folds left that fold out without a word (a "5-fold" score of
    2 folds)."""
    counts = np.unique(labels, return_counts=True)[1]
    if len(np.unique(labels[np.searchsorted(every, held)])) >= 2:
        return
    rarest = int(counts.min())
    fewer = (
        f"use PIPELINE_TUNE__FOLDS={rarest} or fewer (the rarest class has {rarest} rows), "
        if rarest >= 2
        else ""
    )
    raise DataError(
        f"{fold}: its {len(held)} held-out rows hold one class only, where ROC AUC is "
        f"undefined (PIPELINE_TUNE__METRIC=roc_auc); {fewer}or choose another metric "
        "(log_loss, accuracy)"
    )
