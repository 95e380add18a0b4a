"""Scoring a recipe on training rows, and the trials of a search: what `tune` runs on Ray.

A trial is one configuration of the recipe (settings from ``PIPELINE_TUNE__SPACE`` applied to
the current ones), fitted and scored on the training rows only: the validation split that
`train` uses for early stopping, or K-fold cross-validation of the training and validation
rows. The test rows are never given to a trial: the search cannot choose by them.

Every configuration is drawn from the one seed before any trial runs, trial ``i`` from its own
stream (``[TAG, seed, i]``), so the configurations do not depend on how many trials run at a
time, on which node, or in which order they finish; a trial's score depends only on its
configuration and the data (training is deterministic). Trial 0 (trials count from 0) is the
current configuration, so the winner is never worse than it on the search's own metric.

``trainable`` is the function Ray runs in its workers; it lives in the installed package (a
function defined in a test or a script is not importable there).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import features, fit, fold_checks, runtime, split
from pipeline.data.schema import Schema
from pipeline.errors import ConfigError, PipelineError
from pipeline.settings import Settings, space

# Mixed into every trial's seed: the search's draws never coincide with the split's or the
# initialisation's streams of the same seed.
TAG = 0x7475_6E65  # "tune"
# Configurations that repeat an earlier trial are drawn again, this many times at most.
_REDRAWS = 100


def metric_for(settings: Settings, task: str, target_transform: str) -> str:
    """The metric that ranks trials: the setting, or for ``auto`` the task's usual one.

    ``target_transform`` is the schema's, resolved (``auto`` has become log or none).
    """
    chosen = settings.tune.metric
    regression = ("rmse", "rmse_log", "mae", "r2")
    log_target = target_transform == "log"
    if chosen == "auto":
        return space.default_metric(task, target_transform)
    if (chosen in regression) != (task == "regression"):
        raise ConfigError(
            f"PIPELINE_TUNE__METRIC={chosen} does not apply to a {task} target: use "
            f"{'rmse, rmse_log, mae or r2' if task == 'regression' else 'accuracy, log_loss, f1_macro or roc_auc'}"  # noqa: E501
            " (or auto)"
        )
    if chosen == "rmse_log" and not log_target:
        raise ConfigError(
            "PIPELINE_TUNE__METRIC=rmse_log needs a log target (PIPELINE_TRAIN__TARGET_TRANSFORM="
            "log, or auto on a positive right-skewed target): set it, or use rmse"
        )
    if chosen == "roc_auc" and task != "binary":
        raise ConfigError("PIPELINE_TUNE__METRIC=roc_auc needs a binary target: use log_loss")
    return chosen


# Up to this many training + validation rows, `scoring=auto` cross-validates each trial: on
# small tables one validation split is too noisy to choose by (its winner often loses on other
# splits); beyond it one split is steady and K fits would cost K times as much.
CV_ROWS = 10_000


def folds_for(settings: Settings, rows: int) -> int | None:
    """K for K-fold scoring of the trials, or None to score on the validation split."""
    scoring = settings.tune.scoring
    if scoring == "auto":
        scoring = "cv" if rows <= CV_ROWS else "validation"
    return settings.tune.folds if scoring == "cv" else None


def better(metric: str) -> str:
    """``min`` or ``max``: which way ``metric`` improves."""
    return "max" if metric in ("r2", "accuracy", "f1_macro", "roc_auc") else "min"


def current_values(settings: Settings) -> dict[str, Any]:
    """The current value of every key of the space: trial 0's configuration."""
    public = settings.public()
    out = {}
    for key in settings.tune.space:
        section, name = key.split(".", 1)
        out[key] = copy.deepcopy(public[section][name])
    return out


def trial_configs(settings: Settings, n: int) -> list[dict[str, Any]]:
    """``n`` configurations: the current one, then ``n - 1`` drawn from the space.

    Trial ``i``'s draw depends on the seed and ``i`` only, so a search of 16 trials starts with
    the 8 of a search of 8. A draw that repeats an earlier configuration is drawn again.
    """
    space = settings.tune.space
    configs = [current_values(settings)]
    seen = {_canonical(configs[0])}
    for i in range(1, n):
        rng = np.random.default_rng([TAG, settings.seed, i])
        config = _draw(space, rng)
        for _ in range(_REDRAWS):
            if _canonical(config) not in seen:
                break
            config = _draw(space, rng)
        seen.add(_canonical(config))
        configs.append(config)
    return configs


def check_trials(settings: Settings, n: int) -> None:
    """ConfigError when a space of choices and integer ranges holds fewer configurations than
    ``n`` trials (trial 0, the current settings, counted too): the draws past them repeated
    earlier trials, scores and all, without a word."""
    size = 1
    for key, dimension in settings.tune.space.items():
        ((kind, spec),) = dimension.items()
        if kind == "choice":
            size *= len({_canonical({key: v}) for v in spec})
        elif kind == "int":
            size *= int(spec[1]) - int(spec[0]) + 1
        elif spec[0] != spec[1]:
            return  # a continuous range: no end of configurations
        # else a range of one value (``{"uniform": [0.3, 0.3]}``): one configuration
    current = current_values(settings)
    inside = all(_within(settings.tune.space[k], v) for k, v in current.items())
    most = size + (0 if inside else 1)
    if n > most:
        raise ConfigError(
            f"{n} trials (PIPELINE_TUNE__TRIALS) are more than the {most} configuration(s) "
            f"the space can give ({size} in PIPELINE_TUNE__SPACE"
            f"{'' if inside else ', and the current settings'}): the rest would repeat them; "
            f"ask for {most} trial{'' if most == 1 else 's'} (--trials {most}) or widen the "
            "space"
        )


def _within(dimension: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` is one the dimension can draw: a choice, an integer in range, or the
    one value of a range of one (dropout 0.1 in ``{"uniform": [0.1, 0.1]}``: counted as a
    configuration of its own, trials 0 and 1 ran the same one, score and all)."""
    ((kind, spec),) = dimension.items()
    if kind == "choice":
        return any(_canonical({"v": v}) == _canonical({"v": value}) for v in spec)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind == "int":
        return isinstance(value, int) and int(spec[0]) <= value <= int(spec[1])
    return float(spec[0]) <= float(value) <= float(spec[1])


def _draw(space: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key in sorted(space):
        ((kind, spec),) = space[key].items()
        if kind == "choice":
            config[key] = copy.deepcopy(spec[int(rng.integers(len(spec)))])
        elif kind == "int":
            config[key] = int(rng.integers(int(spec[0]), int(spec[1]) + 1))
        else:
            low, high = float(spec[0]), float(spec[1])
            if kind == "loguniform":
                value = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                value = rng.uniform(low, high)
            # Three significant digits: a preset a person can read, and still inside the range.
            config[key] = min(high, max(low, float(f"{value:.3g}")))
    return config


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def apply(settings: Settings, config: dict[str, Any]) -> Settings:
    """``settings`` with the configuration's values in place (validated again). A drawn
    combination the settings refuse (the space is checked against the defaults; these are
    the user's settings) is a ``ConfigError``: its trial fails with one line, not retried."""
    from pydantic import ValidationError

    tree = settings.model_dump()
    for key, value in config.items():
        section, name = key.split(".", 1)
        tree[section][name] = copy.deepcopy(value)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        reason = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"the trial's settings are not valid: {where}: {reason}") from None


# -- scoring ----------------------------------------------------------------------------------


def fit_and_score(
    settings: Settings,
    frame: pd.DataFrame,
    schema: Schema,
    label: str,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    seeds: split.Seeds,
    device: str,
) -> tuple[dict[str, Any], int]:
    """Fit preprocessing on ``rows[0]``, train with early stopping on ``rows[1]``, score
    ``rows[2]``: (metrics, epochs run). Statistics never see the validation or scored rows."""
    fit_rows, val_rows, scored = rows
    pre = features.fit(frame.iloc[fit_rows], schema, settings.features, label)
    enc = pre.transform(frame, label, with_target=True)
    tensors = fit.Tensors.all(enc, device)
    fitted = fit.fit(
        fit.network_config(pre, settings),
        tensors.select(fit_rows),
        tensors.select(val_rows),
        pre.target,
        settings.train,
        seeds,
        device,
    )
    if settings.model.linear_blend:
        train, val = tensors.select(fit_rows), tensors.select(val_rows)
        fit.blend_linear(fitted.model, train, val, pre)
    scores = fit.evaluate_rows(fitted.model, tensors.select(scored), pre.target)
    return {m: v for m, v in scores.items() if isinstance(v, float)}, len(fitted.history)


def labels_of(frame: pd.DataFrame, schema: Schema, rows: np.ndarray) -> np.ndarray | None:
    """The classes of ``rows`` (positions in ``frame``) that stratify the folds; None for
    regression."""
    labels = split.class_labels(frame, schema)
    return None if labels is None else labels[rows]


def cross_validate(
    settings: Settings,
    frame: pd.DataFrame,
    schema: Schema,
    label: str,
    rows: np.ndarray,
    k: int,
    split_seed: int,
    device: str,
    on_fold: Any = None,
    only: range | None = None,
) -> dict[str, Any]:
    """K-fold CV of the recipe on ``rows``: each fold trains on K-1 parts, scores the held-out one.

    Early stopping inside a fold uses a validation slice of that fold's training rows, so the
    held-out part is never seen before it is scored. Statistics are refitted per fold.
    ``on_fold(i, rows_scored, epochs, scores)`` is told of each fold as it finishes. ``only``
    runs those folds alone (`pipeline tune`'s successive halving spends folds a few at a time):
    fold i is the same rows and seeds whichever folds run with it.
    """
    results: list[dict[str, Any]] = []
    labels = labels_of(frame, schema, rows)
    parts = split.folds(rows, k, settings.train.val_fraction, split_seed, labels)
    for i, part in enumerate(parts):
        if only is not None and i not in only:
            continue
        fold_checks.every_class_in(frame, schema, part[0], f"fold {i + 1} of {k}")
        seeds = split.Seeds.from_seed(settings.seed + 1 + i)
        scores, epochs = fit_and_score(settings, frame, schema, label, part, seeds, device)
        if on_fold is not None:
            on_fold(i, len(part[2]), epochs, scores)
        results.append(scores)
    summary: dict[str, Any] = {"folds": k, "per_fold": results}
    for metric in dict.fromkeys(m for r in results for m in r):  # the first fold may lack one
        values = np.array([r[metric] for r in results if r.get(metric) is not None], dtype=float)
        if not len(values):
            continue
        summary[f"{metric}_mean"] = float(values.mean())
        summary[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return summary


# -- a trial, in a Ray worker -----------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """Everything a trial needs, sent once to the cluster's object store.

    ``frame`` holds the training and validation rows only (the test rows never leave the
    driver); ``train`` and ``val`` are positions into it.
    """

    settings: Settings
    configs: list[dict[str, Any]]
    frame: pd.DataFrame
    schema: Schema
    label: str
    train: np.ndarray
    val: np.ndarray
    seeds: split.Seeds
    metric: str
    folds: int | None
    threads: int


def run_trial(payload: Payload, trial: int, folds: tuple[int, int] | None = None) -> dict[str, Any]:
    """Fit and score trial ``trial`` (0-based); the result a trial reports. With cv scoring,
    ``folds`` (first, end) runs those folds only (all by default); the result then also holds
    each fold's scores and epochs (``per_fold``), which ``fold_summary`` combines."""
    t0 = time.perf_counter()
    runtime.configure(payload.threads, "cpu")
    settings = apply(payload.settings, payload.configs[trial])
    per_fold: dict[str, Any] | None = None
    if payload.folds is None:
        rows = (payload.train, payload.val, payload.val)
        scores, epochs = fit_and_score(
            settings, payload.frame, payload.schema, payload.label, rows, payload.seeds, "cpu"
        )
        metrics: dict[str, Any] = scores
    else:
        every = np.sort(np.concatenate([payload.train, payload.val]))
        per_fold = {}

        def record(i: int, _n: int, fold_epochs: int, fold_scores: dict[str, Any]) -> None:
            per_fold[str(i)] = {"metrics": fold_scores, "epochs": fold_epochs}

        first, end = folds or (0, payload.folds)
        cross_validate(
            settings,
            payload.frame,
            payload.schema,
            payload.label,
            every,
            payload.folds,
            payload.seeds.split,
            "cpu",
            on_fold=record,
            only=range(first, end),
        )
        metrics, epochs = fold_summary(per_fold)
    score = metrics.get(payload.metric)
    ok = score is not None and math.isfinite(score)
    result = {
        "trial": trial,
        "status": "ok" if ok else "failed",
        "score": score,
        "metrics": metrics,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - t0, 3),
        "error": None if ok else "no finite score",
    }
    if per_fold is not None:
        result["per_fold"] = per_fold
    return result


def fold_summary(per_fold: dict[str, Any]) -> tuple[dict[str, float], int]:
    """Each metric's mean over the folds run (in fold order; a fold without it is left out),
    and their mean epoch count: a trial's scores however its folds were split between runs."""
    order = sorted(per_fold, key=int)
    names = list(dict.fromkeys(m for f in order for m in per_fold[f]["metrics"]))
    metrics = {}
    for name in names:
        values = [per_fold[f]["metrics"].get(name) for f in order]
        kept = np.array([v for v in values if v is not None], dtype=float)
        if len(kept):
            metrics[name] = float(kept.mean())
    epochs = round(float(np.mean([per_fold[f]["epochs"] for f in order])))
    return metrics, epochs


def trainable(config: dict[str, Any], payload: Payload) -> None:
    """The function Ray Tune runs for one trial: score it and report the result once.

    A mistake in the configuration (a ``PipelineError``) is reported as a failed trial, not
    raised: retrying it would fail the same way. Anything else (a killed worker, out of memory)
    propagates, and Ray retries the trial.
    """
    from ray import tune

    trial = int(config["trial"])
    folds = config.get("folds")
    try:
        result = run_trial(payload, trial, None if folds is None else (folds[0], folds[1]))
    except PipelineError as exc:
        error = exc.message if trial == 0 else _drawn(exc.message, payload.configs[trial])
        result = {"trial": trial, "status": "failed", "score": None, "metrics": {},
                  "epochs": 0, "seconds": 0.0, "error": error}  # fmt: skip
    tune.report(result)


def _drawn(message: str, config: dict[str, Any]) -> str:
    """A drawn trial's error that advises a setting the trial took from the space: said so, as
    changing that setting does not change the trial ("lower PIPELINE_TRAIN__LEARNING_RATE"
    for a rate drawn from PIPELINE_TUNE__SPACE). Trial 0 is the settings themselves."""
    for key, value in config.items():
        variable = "PIPELINE_" + key.upper().replace(".", "__")
        if variable in message:
            return (
                f"{message} (this trial drew {key}={value!r} from the search space, which "
                f"{variable} does not change: narrow that dimension of PIPELINE_TUNE__SPACE)"
            )
    return message
