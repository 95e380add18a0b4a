"""The search space of `pipeline tune`: typed dimensions over recipe settings, checked at load.

A space maps a setting's path (``"train.learning_rate"``) to one dimension, written as a
one-key mapping in a preset or as JSON in ``PIPELINE_TUNE__SPACE``::

    {"train.learning_rate": {"loguniform": [0.0003, 0.01]},
     "model.dropout": {"uniform": [0.0, 0.4]},
     "features.min_frequency": {"int": [1, 10]},
     "model.hidden": {"choice": [[256, 128], [512, 256]]}}

Only settings that shape what is learned may be searched (features, the network, the optimiser
and its schedule): not the data, the split, the seed or operational knobs. Each dimension is
checked where the settings load: a path that names no such setting, bounds out of order, or a
value the setting itself would refuse is one line naming the key (exit 3), before any data is
read. Sampling lives in ``pipeline.search``; this module only says what a valid space is.
"""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from pipeline.settings.tree import Settings

KINDS = ("loguniform", "uniform", "int", "choice")
# Sections whose fields may be searched, and the fields of those that may not, with why.
SEARCHABLE = ("features", "model", "train")
_RUN = "it chooses how a run executes, not what the model learns"
_ROWS = "it changes the rows or the target each trial is scored on: scores could not be compared"
_AFTER = "it acts after a trial is scored, so no score could tell its values apart"
NOT_SEARCHABLE = {
    "model.name": "it names the package, not what the model learns",
    "model.version": "it names the package, not what the model learns",
    "train.val_fraction": _ROWS,
    "train.test_fraction": _ROWS,
    "train.target_transform": _ROWS,
    "train.refit": _AFTER,
    "train.bag_folds": "trials are scored unbagged, so no score could tell its values apart",
    "train.device": _RUN,
    "train.threads": _RUN,
    "train.checkpoint_every": _RUN,
    "train.workers": _RUN,
    "features.max_categorical_cardinality": "it decides which columns are read: the data",
}
MAX_CHOICES = 64

# The default space: what a user without ML background can trust for the tabular MLP, and the
# recipe's own knobs (ensemble size, input clipping) that issue 13 added to it.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "train.learning_rate": {"loguniform": [3e-4, 1e-2]},
    "train.weight_decay": {"loguniform": [1e-5, 1e-1]},
    "train.batch_size": {"choice": [32, 64, 128, 256]},
    "model.hidden": {"choice": [[128], [256, 128], [512, 256], [256, 256, 128], [512, 256, 128]]},
    "model.dropout": {"uniform": [0.0, 0.4]},
    "features.max_embedding_dim": {"choice": [4, 8, 16, 32]},
    "features.min_frequency": {"int": [1, 10]},
    "features.log_skewed": {"choice": [True, False]},
    "features.smooth_clip": {"uniform": [1.0, 5.0]},
    "features.clip_quantile": {"choice": [0.0, 0.005, 0.01, 0.02]},
    "model.members": {"choice": [2, 4, 8]},
}


def dotted(space: Any) -> Any:
    """``space`` with nested keys joined by dots: TOML reads ``model.dropout = {uniform = ...}``
    under ``[tune.space]`` as ``{"model": {"dropout": {...}}}``, where JSON spells the key
    ``"model.dropout"``. Only a table of tables is joined: a dimension (one of ``KINDS`` as its
    one key) or a malformed one (``{"normal": [0, 1]}``) is left for ``check_space`` to judge."""
    if not isinstance(space, dict):
        return space
    out: dict[str, Any] = {}
    for key, value in space.items():
        tables = (
            isinstance(value, dict)
            and bool(value)
            and all(isinstance(v, dict) for v in value.values())
        )
        if tables and not (len(value) == 1 and next(iter(value)) in KINDS):
            out.update({f"{key}.{inner}": dim for inner, dim in dotted(value).items()})
        else:
            out[key] = value
    return out


def check_space(
    space: dict[str, Any],
    sections: dict[str, type[BaseModel]],
    base: dict[str, BaseModel] | None = None,
) -> dict[str, Any]:
    """``space`` in normal form if every key names a searchable setting and every dimension
    is valid for it: each choice as its setting reads it (``["64"]`` is ``[64]``), bounds as
    the numbers they draw, so that one search has one id however it was spelled.

    ``sections`` maps a section name to its settings class (for the keys and their checks).
    ``base`` maps it to the section as configured, beside which the rules across one
    section's settings (the weight bound of ``model.hidden`` times ``model.members``) are
    checked, for every combination of the dimensions' probe values: `pipeline tune` does so
    (``search.check_fits``). Without it (as settings load, for every command) those rules are
    left to that check: beside the defaults, ``[4096, 4096, 4096]`` was refused for the
    default 4 members with 1 member set. Raises ``PydanticCustomError`` naming the key.
    """
    if not space:
        raise PydanticCustomError("empty_space", "the space is empty: give at least one key")
    normal: dict[str, Any] = {}
    for key, dim in space.items():
        section, field = _field_of(key, sections)
        kind, spec = _dimension(key, dim)
        model = sections[section]
        annotation = model.model_fields[field].annotation
        if kind != "choice" and annotation not in (int, float):
            # Only the bounds are checked against the setting: 0 and 1 are valid booleans,
            # and the fractions drawn between them were not (every trial failed, retried).
            raise PydanticCustomError(
                "bad_space_kind",
                f"key '{key}' is not a number setting: {'an' if kind == 'int' else 'a'} {kind} "
                f"range draws numbers; list its values as a choice, e.g. "
                f"{_example(key, model, field)}",
            )
        if kind in ("uniform", "loguniform") and annotation is int:
            raise PydanticCustomError(
                "bad_space_kind",
                f"key '{key}' is an integer setting: a {kind} range draws fractions; use "
                f'{{"int": {_short(spec)}}} or a choice',
            )
        values = []
        for value in _probe_values(kind, spec):
            try:
                read = _beside(model, (base or {}).get(section), {field: value})[field]
            except ValidationError as exc:
                if base is None and all(not e["loc"] for e in exc.errors()):
                    # A rule across the section's settings alone: judged beside the settings
                    # as configured, by the tune command. The value as its type reads it.
                    read = _typed(annotation, value)
                    values.append(read if kind == "choice" else value)
                    continue
                reason = exc.errors()[0]["msg"]
                raise PydanticCustomError(
                    "bad_space_value",
                    f"key '{key}': {kind} value {value!r} is not a valid {key} ({reason})",
                ) from None
            values.append(read if kind == "choice" else value)
        normal[key] = {kind: values}
    if base is not None:
        _check_together(normal, sections, base)
    return normal


def _typed(annotation: Any, value: Any) -> Any:
    """``value`` as a setting of type ``annotation`` reads it, as JSON."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return adapter.dump_python(adapter.validate_python(value), mode="json")


def check_fits(settings: Settings) -> None:
    """ConfigError when values the space can draw break a rule across one section's settings
    (the weight bound of ``model.hidden`` times ``model.members``) beside the settings as
    configured: settings load checks each value beside the section's defaults only, so
    ``[4096, 4096, 4096]`` with 1 member set was refused there for the default 4 members, and
    ``[4096, 2048]`` with 16 members passed and failed every trial that drew it."""
    from pipeline.errors import ConfigError
    from pipeline.settings.sections import FeatureSettings, ModelSettings, TrainSettings

    sections = {"features": FeatureSettings, "model": ModelSettings, "train": TrainSettings}
    base = {name: getattr(settings, name) for name in sections}
    try:
        check_space(settings.tune.space, sections, base)  # type: ignore[arg-type]
    except PydanticCustomError as exc:
        where = settings.source_of("tune", "space")
        said = f"from {where}" if settings.is_set("tune", "space") else "(the default space)"
        raise ConfigError(f"invalid setting tune.space {said}: {exc.message()}") from None


def _beside(
    model: type[BaseModel], configured: BaseModel | None, values: dict[str, Any]
) -> dict[str, Any]:
    """``values`` validated as settings of ``model`` beside the ``configured`` section's other
    values (its defaults when None), as JSON."""
    fields = {**configured.model_dump(), **values} if configured is not None else values
    return model.model_validate(fields).model_dump(mode="json")


# Combinations of one section's probe values tried at most (``_check_together``).
MAX_COMBINATIONS = 4096


def _check_together(
    normal: dict[str, Any], sections: dict[str, type[BaseModel]], base: dict[str, BaseModel]
) -> None:
    """A rule across one section's settings (the network's weight bound: ``model.hidden``
    times ``model.members``) holds for every combination of their dimensions' probe values
    (bounds and choices). Each value alone passed with the others at their defaults, and a
    drawn combination that broke the rule failed its trial, retried twice, with exit 0."""
    import itertools

    by_section: dict[str, list[str]] = {}
    for key in normal:
        by_section.setdefault(key.split(".", 1)[0], []).append(key)
    for section, keys in by_section.items():
        probes = [next(iter(normal[k].values())) for k in keys]
        if len(keys) < 2 or math.prod(len(p) for p in probes) > MAX_COMBINATIONS:
            continue
        for combination in itertools.product(*probes):
            values = {k.split(".", 1)[1]: v for k, v in zip(keys, combination, strict=True)}
            try:
                _beside(sections[section], base.get(section), values)
            except ValidationError as exc:
                error = exc.errors()[0]
                fields = (error.get("ctx") or {}).get("fields") or list(values)
                named = [f"{section}.{f}" for f in fields]
                shown = ", ".join(f"{section}.{f}={values[f]!r}" for f in fields if f in values)
                raise PydanticCustomError(
                    "bad_space_combination",
                    f"keys {', '.join(repr(k) for k in named)}: together they can draw "
                    f"{shown}, which is not valid ({error['msg'].removeprefix('Value error, ')});"
                    " narrow one of these dimensions",
                ) from None


def default_metric(task: str, target_transform: str) -> str:
    """The task's usual metric (``PIPELINE_TUNE__METRIC=auto``; what `pipeline diff` judges
    by): log loss for classification, RMSE for regression, of the log target when one is fit.

    ``target_transform`` is the schema's, resolved (``auto`` has become log or none).
    """
    if task == "regression":
        return "rmse_log" if target_transform == "log" else "rmse"
    return "log_loss"


def direction(metric: str) -> str:
    """``min`` or ``max``: which way ``metric`` gets better."""
    return "max" if metric in ("r2", "accuracy", "f1_macro", "roc_auc") else "min"


def _field_of(key: str, sections: dict[str, type[BaseModel]]) -> tuple[str, str]:
    names = [
        f"{s}.{f}"
        for s in SEARCHABLE
        for f in sections[s].model_fields
        if f"{s}.{f}" not in NOT_SEARCHABLE
    ]
    if key in names:
        section, field = key.split(".", 1)
        return section, field
    hint = difflib.get_close_matches(key, names, n=1)
    why = (
        f"is not searchable ({NOT_SEARCHABLE[key]})"
        if key in NOT_SEARCHABLE
        else f"names no searchable setting{f' (did you mean {hint[0]!r}?)' if hint else ''}"
    )
    raise PydanticCustomError(
        "bad_space_key",
        f"key '{key}' {why}; searchable keys are section.field of features, model and train, "
        "e.g. 'train.learning_rate'",
    )


def _dimension(key: str, dim: Any) -> tuple[str, Any]:
    if not isinstance(dim, dict) or len(dim) != 1 or next(iter(dim)) not in KINDS:
        raise PydanticCustomError(
            "bad_space_dimension",
            f"key '{key}': expected one of {{\"loguniform\": [low, high]}}, "
            '{"uniform": [low, high]}, {"int": [low, high]} or {"choice": [values]}'
            f", got {_short(dim)}",
        )
    kind, spec = next(iter(dim.items()))
    if kind == "choice":
        if not isinstance(spec, list) or not 1 <= len(spec) <= MAX_CHOICES:
            raise PydanticCustomError(
                "bad_space_choice",
                f"key '{key}': choice needs a list of 1 to {MAX_CHOICES} values, got "
                f"{_short(spec)}",
            )
        return kind, spec
    numbers = isinstance(spec, list) and len(spec) == 2
    numbers = numbers and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in spec
    )
    if kind == "int":
        numbers = numbers and all(float(v).is_integer() for v in spec)
    if not numbers or spec[0] > spec[1]:
        raise PydanticCustomError(
            "bad_space_bounds",
            f"key '{key}': {kind} needs [low, high], two numbers with low <= high"
            f"{' (integers)' if kind == 'int' else ''}, got {_short(spec)}",
        )
    if kind == "loguniform" and spec[0] <= 0:
        raise PydanticCustomError(
            "bad_space_bounds",
            f"key '{key}': loguniform needs low > 0 (a log scale), got {_short(spec)}; use "
            "uniform for a range that starts at 0",
        )
    return kind, spec


def _probe_values(kind: str, spec: Any) -> list[Any]:
    """The values whose validity stands for the whole dimension: both bounds, every choice."""
    if kind == "choice":
        return list(spec)
    if kind == "int":
        return [int(spec[0]), int(spec[1])]
    return [float(spec[0]), float(spec[1])]


def _example(key: str, model: type[BaseModel], field: str) -> str:
    """A choice dimension for ``key`` as the message's suggestion: both booleans, a text
    setting's every value, else the default."""
    import json
    import typing

    info = model.model_fields[field]
    if info.annotation is bool:
        values = [True, False]
    elif typing.get_origin(info.annotation) is typing.Literal:
        values = list(typing.get_args(info.annotation))
    else:
        values = [info.get_default(call_default_factory=True)]
    return json.dumps({key: {"choice": values}})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
