"""The report's plots: which each task has (``SPECS``), their captions, and drawing them.

A plot's data comes from the curves ``train`` stored, ``history.json`` or the stored folds;
``draw`` imports matplotlib (through ``plots``) only when drawing starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.report.facts import Subject, _metric


@dataclass(frozen=True)
class Plot:
    """One figure of the report: what it is called, says and shows."""

    name: str
    title: str
    caption: str
    alt: str
    svg: bytes


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    draw: str  # the name of the ``plots.draw_*`` function
    data: Callable[[Subject], Any]  # the plot's data, or None when the build has none
    caption: Callable[[Subject], str]


def _confusion(s: Subject) -> Any:
    cm = s.metrics.get("test", {}).get("confusion_matrix")
    return cm if cm and len(cm["labels"]) <= 200 else None


def _learning(s: Subject) -> dict[str, Any]:
    return {**s.files["history.json"], "best_epoch": s.metrics.get("best_epoch")}


def _test_rows(s: Subject) -> str:
    split = s.inputs.get("split", {})
    return f"{split.get('test', '?')} test rows"


def _learning_caption(s: Subject) -> str:
    history = s.files["history.json"]
    sel, refit = len(history.get("selection", [])), len(history.get("refit", []))
    if folds := history.get("folds"):
        bests = ", ".join(str(e) for e in s.metrics.get("bagging", {}).get("best_epochs", []))
        return (
            f"Loss per epoch of the first of {len(folds)} bagged networks, each trained on all "
            f"folds but one and early-stopped on that one (best epochs {bests})."
        )
    text = f"Loss per epoch: {sel} epochs with early stopping chose epoch {s.metrics['best_epoch']}"
    if refit:
        text += f"; then {refit} epochs refitted on training and validation rows"
    return text + "."


def _cv_caption(s: Subject) -> str:
    assert s.cv is not None
    return (
        f"{s.cv['folds']}-fold cross-validation of this build's recipe on the rows outside the "
        "test split (pipeline evaluate --folds): each fold's score, the mean and one standard "
        "deviation."
    )


_CONFUSION = _Spec(
    "confusion_matrix",
    "Confusion matrix",
    "draw_confusion_matrix",
    _confusion,
    lambda s: (
        f"True against predicted class on {_test_rows(s)} (accuracy "
        f"{_metric(s, 'test', 'accuracy')})."
    ),
)
SPECS: dict[str, tuple[_Spec, ...]] = {
    "all": (
        _Spec(
            "learning_curve", "Learning curve", "draw_learning_curve", _learning, _learning_caption
        ),
        _Spec("cv_folds", "Cross-validation folds", "draw_cv_folds", lambda s: s.cv, _cv_caption),
    ),
    "regression": (
        _Spec(
            "predicted_vs_actual",
            "Predicted vs actual",
            "draw_predicted_vs_actual",
            lambda s: s.curves.get("predicted_actual"),
            lambda s: (
                f"Predictions on {_test_rows(s)} against the actual values (R² "
                f"{_metric(s, 'test', 'r2')}, RMSE {_metric(s, 'test', 'rmse')}); the dashed "
                "diagonal is a perfect model."
            ),
        ),
        _Spec(
            "residuals_vs_predicted",
            "Residuals vs predicted",
            "draw_residuals_vs_predicted",
            lambda s: s.curves.get("predicted_actual"),
            lambda s: (
                f"Residual (predicted - actual) of {_test_rows(s)} against the "
                "prediction; a trend or funnel shape is a bias the model did not learn."
            ),
        ),
        _Spec(
            "residual_histogram",
            "Residual histogram",
            "draw_residual_histogram",
            lambda s: s.curves.get("residual_histogram"),
            lambda s: (
                f"Distribution of the residuals of {_test_rows(s)} (MAE "
                f"{_metric(s, 'test', 'mae')})."
            ),
        ),
    ),
    "binary": (
        _CONFUSION,
        _Spec(
            "roc",
            "ROC curve",
            "draw_roc",
            lambda s: s.curves.get("roc"),
            lambda s: (
                f"True against false positive rate over every threshold (ROC AUC "
                f"{_metric(s, 'test', 'roc_auc')}); the diagonal is chance."
            ),
        ),
        _Spec(
            "pr",
            "Precision-recall curve",
            "draw_pr",
            lambda s: s.curves.get("pr"),
            lambda s: f"Precision against recall over every threshold, on {_test_rows(s)}.",
        ),
        _Spec(
            "calibration",
            "Calibration",
            "draw_calibration",
            lambda s: s.curves.get("calibration"),
            lambda s: (
                "Observed positive rate against the mean predicted probability in ten "
                "bins; on the diagonal, a probability means what it says."
            ),
        ),
        _Spec(
            "threshold_metrics",
            "Metrics vs threshold",
            "draw_threshold_metrics",
            lambda s: s.curves.get("threshold_sweep"),
            lambda s: (
                "Precision, recall, F1 and the share of rows predicted positive for "
                "each threshold on the positive class's probability "
                "(PIPELINE_RUN__THRESHOLD chooses it)."
            ),
        ),
    ),
    "multiclass": (
        _CONFUSION,
        _Spec(
            "per_class_metrics",
            "Per-class metrics",
            "draw_per_class_metrics",
            lambda s: s.curves.get("per_class"),
            lambda s: (
                f"Precision, recall and F1 of each class on {_test_rows(s)} (macro F1 "
                f"{_metric(s, 'test', 'f1_macro')})."
            ),
        ),
        _Spec(
            "roc_ovr",
            "One-vs-rest ROC",
            "draw_roc_ovr",
            lambda s: s.curves.get("roc_ovr"),
            lambda s: (
                f"ROC of each of the largest classes against the rest (macro ROC AUC "
                f"{_metric(s, 'test', 'roc_auc')})."
            ),
        ),
        _Spec(
            "confidence",
            "Accuracy vs confidence",
            "draw_confidence",
            lambda s: s.curves.get("confidence"),
            lambda s: (
                "Accuracy of the predictions kept, and the share kept, when only those "
                "whose top class probability reaches the threshold are kept."
            ),
        ),
    ),
}


def specs(task: str) -> tuple[_Spec, ...]:
    """The plots of a task's report, in order."""
    return SPECS["all"] + SPECS[task]


def expected_plots(s: Subject) -> list[str]:
    """The names of the plots ``s``'s report has (cv_folds only after evaluate --folds)."""
    return [spec.name for spec in specs(s.task) if spec.data(s) is not None]


def draw(subjects: list[Subject], labels: list[str] | None = None) -> list[Plot]:
    """Every plot the subjects' task has data for; two subjects are overlaid on one axes."""
    from pipeline import plots  # matplotlib: only now

    first = subjects[0]
    out = []
    for spec in specs(first.task):
        data = [spec.data(s) for s in subjects]
        if any(d is None for d in data):
            continue
        if spec.name == "confusion_matrix" and len(subjects) > 1:
            continue  # counts cannot be overlaid: `diff` lists the cells that changed
        series = list(zip(labels or [""] * len(subjects), data, strict=True))
        svg = plots.svg(getattr(plots, spec.draw), series, spec.title)
        caption = spec.caption(first) if len(subjects) == 1 else _overlay_caption(spec, labels)
        alt = f"{spec.title} of {first.task} build {first.build_id[:12]}. {caption}"
        out.append(Plot(spec.name, spec.title, caption, alt, svg))
    return out


def _overlay_caption(spec: _Spec, labels: list[str] | None) -> str:
    return f"{spec.title}: {' and '.join(labels or [])} on the same axes."
