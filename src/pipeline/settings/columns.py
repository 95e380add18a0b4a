"""Data settings that contradict each other: each would be ignored in silence, so each is
exit 3 when the settings load (``DataSettings``), naming both settings."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic_core import PydanticCustomError

# The kinds of column a task reads its target as: a column_kinds entry for the target that
# contradicts the task would be ignored.
_TARGET_KINDS: dict[str, tuple[str, ...]] = {
    "regression": ("numeric",),
    "binary": ("categorical", "boolean"),
    "multiclass": ("categorical",),
}


def data_conflict(
    target: str, task: str, drop: list[str], column_kinds: Mapping[str, str]
) -> PydanticCustomError | None:
    """The error for the first contradiction among the data settings, or None."""
    if target in drop:  # it was trained on anyway, silently
        return PydanticCustomError(
            "target_dropped",
            f"the target '{target}' is also listed in drop {drop}: a dropped column "
            "cannot be predicted; remove it from the drop list or choose another target",
            {"fields": ("target", "drop")},
        )
    if target in column_kinds and task == "auto":  # it was ignored
        return PydanticCustomError(
            "target_kind",
            f"column_kinds names the target '{target}', whose kind the task decides, "
            "and the task is auto: set PIPELINE_DATA__TASK (regression, binary or "
            "multiclass)",
            {"fields": ("target", "column_kinds")},
        )
    kind = column_kinds.get(target)
    if kind is not None and kind not in _TARGET_KINDS.get(task, (kind,)):
        return PydanticCustomError(  # it was ignored: the task decides
            "target_kind",
            f"column_kinds says the target '{target}' is {kind}, but the task is "
            f"{task}, which reads it as {' or '.join(_TARGET_KINDS[task])}: "
            f"remove '{target}' from column_kinds, or set the task that matches",
            {"fields": ("task", "column_kinds")},
        )
    if dropped := [name for name in column_kinds if name in drop]:
        return PydanticCustomError(  # it was ignored: the column is not read
            "dropped_kind",
            f"column_kinds names '{dropped[0]}', which drop also lists: a dropped column "
            "is not a feature and has no kind; remove it from one of the two",
            {"fields": ("drop", "column_kinds")},
        )
    return None
