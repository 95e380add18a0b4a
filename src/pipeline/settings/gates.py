"""The ``gates`` section: the quality gates `pipeline evaluate` applies to a build's test
metrics (a build-stage check, recorded nowhere)."""

from __future__ import annotations

from pydantic import Field

from pipeline.settings.sections import _Section


class GateSettings(_Section):
    """Quality gates checked by `pipeline evaluate`; unset gates are not checked."""

    # Bounds a metric can reach: a gate past them fails every build (min_r2=2, max_rmse=-1).
    min_r2: float | None = Field(None, le=1, description="Fail when test R² is below this")
    max_rmse: float | None = Field(None, ge=0, description="Fail when test RMSE is above this")
    max_rmse_log: float | None = Field(
        None, ge=0, description="Fail when test RMSE of log is above"
    )
    max_mae: float | None = Field(None, ge=0, description="Fail when test MAE is above this")
    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="Fail when test accuracy is below this"
    )
    min_f1_macro: float | None = Field(
        None, ge=0, le=1, description="Fail when test macro F1 is below this"
    )
    min_roc_auc: float | None = Field(
        None, ge=0, le=1, description="Fail when test ROC AUC is below this"
    )
    max_log_loss: float | None = Field(
        None, ge=0, description="Fail when test log loss is above this"
    )
