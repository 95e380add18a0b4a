"""Real builds of each task for the report tests: trained once per module on the shipped data.

Regression is house prices, binary is Titanic's survival, multiclass is Titanic's passenger
class (three classes): real tables, small networks, few epochs, so a whole set trains in
seconds. ``cv_folds`` also runs ``evaluate --folds`` so the report has folds to plot.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import event, invoke_isolated

SMALL = {"PIPELINE_MODEL__HIDDEN": "[64]", "PIPELINE_TRAIN__MAX_EPOCHS": "12"}
TASKS: dict[str, dict[str, str]] = {
    "regression": {"PIPELINE_PRESET": "house-prices"},
    "binary": {"PIPELINE_PRESET": "titanic"},
    "multiclass": {
        "PIPELINE_PRESET": "titanic",
        "PIPELINE_DATA__TARGET": "pclass",
        "PIPELINE_DATA__TASK": "multiclass",
    },
}
# What a reader of each task's report must see, as the issue lists them.
EXPECTED_PLOTS = {
    "regression": [
        "learning_curve", "cv_folds", "predicted_vs_actual", "residuals_vs_predicted",
        "residual_histogram",
    ],
    "binary": [
        "learning_curve", "cv_folds", "confusion_matrix", "roc", "pr", "calibration",
        "threshold_metrics",
    ],
    "multiclass": [
        "learning_curve", "cv_folds", "confusion_matrix", "per_class_metrics", "roc_ovr",
        "confidence",
    ],
}  # fmt: skip


def env_of(task: str, **extra: str) -> dict[str, str]:
    """The settings that train ``task``'s build."""
    return {**TASKS[task], **SMALL, **extra}


def train(root: Path, task: str, cv_folds: int | None = 2, **extra: str) -> str:
    """Train ``task``'s build in ``root/store`` (and cross-validate it); its build id."""
    env = env_of(task, **extra)
    done = invoke_isolated("train", root=root, env=env)
    assert done.exit_code == 0, done.output
    build_id = str(event(done.stdout, "train.summary")["build_id"])
    if cv_folds is not None:
        done = invoke_isolated("evaluate", build_id, "--folds", str(cv_folds), root=root, env=env)
        assert done.exit_code == 0, done.output
    return build_id
