"""The evaluation stage: re-test a stored build, cross-validate its recipe, apply quality gates.

``evaluate`` trusts nothing but the build: it re-fetches the exact dataset (by digest), rebuilds
the split and checks it against the recorded digest, loads the verified weights and measures the
test rows again. ``--folds K`` runs K-fold cross-validation of the build's recipe on the rows
outside the test split (Chollet's advice for small data: one split is a noisy estimate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts, features, metrics
from pipeline import log as logging_
from pipeline.data.schema import Schema
from pipeline.data.sources import PinMismatch
from pipeline.errors import ConfigError, DataError, GateError, IntegrityError, NotFoundError
from pipeline.log import redacted_uri
from pipeline.prepare import Prepared, prepare
from pipeline.settings import GateSettings, Settings
from pipeline.store import Store, canonical_json

# Recorded and re-measured test metrics may differ in the last bits (BLAS); more is a red flag.
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Evaluation:
    """What `pipeline evaluate` measured."""

    build_id: str
    test: dict[str, Any]
    cross_validation: dict[str, Any] | None
    gates: dict[str, dict[str, Any]]


def build_settings(current: Settings, build: artifacts.Build) -> Settings:
    """The build's recipe (data, features, model, training, seed) with today's operational knobs."""
    recipe = build.json("config.json")
    merged = current.model_dump()  # secrets included: the recipe may fetch from Kaggle
    for section in ("data", "features", "model", "train"):
        merged[section] = {**merged[section], **recipe[section]}
    recorded = recipe["data"]["source"]
    if recorded == redacted_uri(current.data.source):
        # The build recorded the source without its credentials: today's has them.
        merged["data"]["source"] = current.data.source
    elif current.is_set("data", "source") and _gone(recorded):
        # A local file moved since: the source set today is used; its sha256 must still be
        # the build's (the fetch checks it), so it is the same data wherever it lives now.
        merged["data"]["source"] = current.data.source
    merged["seed"] = recipe["seed"]
    return Settings.model_validate(merged)


def ignored_settings(current: Settings, recipe: Settings) -> list[str]:
    """The recipe settings set today (a preset, .env, the environment) to other values than
    the build's, which ``build_settings`` replaced: a user who pointed PIPELINE_DATA__SOURCE at
    new labelled rows got the build's own test metrics back, without a word. A setting the
    build did not record keeps today's value in the recipe, so it never differs."""
    ignored = [
        f"PIPELINE_{section.upper()}__{key.upper()}"
        for section in ("data", "features", "model", "train")
        for key in type(getattr(current, section)).model_fields
        if current.is_set(section, key)
        and _same(getattr(getattr(current, section), key))
        != _same(getattr(getattr(recipe, section), key))
    ]
    if current.is_set("seed") and current.seed != recipe.seed:
        ignored.append("PIPELINE_SEED")
    return ignored


def _say_ignored(ignored: list[str], build_id: str, log: Any) -> None:
    if ignored:
        log.warning(
            "evaluate.settings_ignored", settings=ignored,
            message=f"build {build_id[:12]} is re-tested on the data and settings it was "
            f"trained with; {', '.join(ignored)} set today "
            f"{'differs and is' if len(ignored) == 1 else 'differ and are'} not used: train a "
            "build with them to score them (or predict new rows with a release)",
        )  # fmt: skip


def _same(value: Any) -> Any:
    """A setting as compared: a list in any order (the build records drop and missing_values
    sorted) is the same setting."""
    return sorted(map(str, value)) if isinstance(value, list) else value


def _gone(source: str) -> bool:
    """Whether ``source`` is a local file path (or file:// URI) that no longer exists."""
    from urllib.parse import urlparse

    parsed = urlparse(source)
    if parsed.scheme not in ("", "file") or (parsed.scheme == "file" and parsed.netloc):
        return False
    return not Path(parsed.path if parsed.scheme else source).exists()


def _gate_checks(gates: GateSettings, test: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, bound in gates.model_dump().items():
        if bound is None:
            continue
        direction, metric = name.split("_", 1)
        value = test.get(metric)
        if value is None and metric in test:  # defined for the task, not for these test rows
            # (R² of a constant target): the gate cannot pass, and saying "this build does not
            # have r2" with exit 3 blamed the setting.
            out[name] = {"metric": metric, "value": None, "bound": bound, "passed": False}
            continue
        if value is None:
            have = sorted(k for k, v in test.items() if isinstance(v, float))
            raise ConfigError(
                f"gate PIPELINE_GATES__{name.upper()} needs test metric '{metric}', which this "
                f"build does not have (it has {have})"
            )
        passed = value >= bound if direction == "min" else value <= bound
        out[name] = {"metric": metric, "value": value, "bound": bound, "passed": passed}
    return out


def cross_validate(
    settings: Settings, data: Prepared, rows: np.ndarray, k: int, device: str, log: Any
) -> dict[str, Any]:
    """K-fold CV of the build's recipe on ``rows`` (``search.cross_validate``), fold by fold
    in the log."""

    from pipeline import fit, search

    def on_fold(i: int, n: int, epochs: int, scores: dict[str, Any]) -> None:
        log.info("evaluate.fold", fold=i + 1, folds=k, rows=n, epochs=epochs, **scores)

    try:
        cv = search.cross_validate(
            settings, data.frame, data.schema, data.label, rows, k, data.seeds.split, device,
            on_fold,
        )  # fmt: skip
    except fit.Stopped:  # a fold's loop stopped at SIGTERM/Ctrl-C: the command's exit 130
        raise KeyboardInterrupt from None
    folds = cv["per_fold"]
    for metric in dict.fromkeys(m for r in folds for m in r):
        undefined = sum(r.get(metric) is None for r in folds)
        if undefined:  # it was left out of the mean without a word (ROC AUC at 24 folds)
            log.warning("evaluate.warning", metric=metric, undefined_folds=undefined, folds=k,
                        message=f"{metric} is undefined on {undefined} of {k} folds (their "
                        "held-out rows hold one class): its mean covers the others; use "
                        "fewer folds")  # fmt: skip
    return cv


def check_folds(folds: int | None) -> None:
    """One rule for ``--folds K``: K-fold cross-validation needs K >= 2, and no K (None) means
    no cross-validation; 0, 1 and negatives are all refused, before any data is read."""
    if folds is not None and folds < 2:
        raise ConfigError(
            f"--folds {folds}: cross-validation needs 2 or more folds; omit --folds to skip it"
        )


def _runtime(settings: Settings, recipe: Settings) -> dict[str, Any]:
    """torch set up as the build trained (determinism, threads, device): what was chosen."""
    from pipeline import runtime

    return runtime.configure_for(settings, recipe.train.batch_size)


def _build_of(store: Store, ref: str | None, model_name: str) -> tuple[str | None, float | None]:
    """``ref``, or the build a release reference (``name@vN``, ``name@current``; ``vN`` or
    ``current`` of ``model_name``) names, as `report` and `diff` read them: re-testing what
    is in production is `pipeline evaluate house-prices@current`. With it, the release's
    ``PIPELINE_RUN__THRESHOLD`` (None for a build): a binary release predicts at it."""
    from pipeline import releases

    if ref is None or not (releases.is_ref(ref) or "@" in ref):
        return ref, None
    release = releases.show(store, ref, model_name)
    releases.released_package(store, release)  # an edited record names another build
    if not store.exists(f"builds/{release.build_id}/manifest.json"):
        raise NotFoundError(
            f"release {release.ref} is build {release.build_id[:12]}, which is not in store "
            f"{store.uri}: evaluate needs the build (its data and split), not only its package"
        )
    threshold = release.run.get("threshold")
    return release.build_id, None if threshold is None else float(threshold)


def run(
    settings: Settings, store: Store, ref: str | None, folds: int | None, log: Any
) -> Evaluation:
    """Evaluate build ``ref`` (default: the latest), cross-validate with ``folds`` folds
    (None: do not) and apply the gates in ``settings``."""
    check_folds(folds)
    t0 = time.perf_counter()
    build_ref, threshold = _build_of(store, ref, settings.model.name)
    build = artifacts.load_build(store, build_ref)
    logging_.bind(build_id=build.id)
    log.info("evaluate.build", build_id=build.id)
    # A gate on a metric the task has not (PIPELINE_GATES__MIN_R2 of a classifier): exit 3 now,
    # not after the re-test and K folds of cross-validation, whose result was stored first.
    _gate_checks(settings.gates, build.json("metrics.json")["test"])
    recipe = build_settings(settings, build)
    _say_ignored(ignored_settings(settings, recipe), build.id, log)
    if settings.train.device != "cpu":  # a CUDA device asked for and absent: before any data
        _runtime(settings, recipe)
    inputs = build.json("provenance.json")["inputs"]
    pinned = recipe.model_copy(
        update={"data": recipe.data.model_copy(update={"sha256": inputs["dataset"]["sha256"]})}
    )
    schema = Schema.from_json(build.json("schema.json"))
    try:
        data = prepare(pinned, store, log, schema)
    except PinMismatch as exc:  # the pin is the build's, not the user's PIPELINE_DATA__SHA256
        raise DataError(
            f"dataset {exc.uri} has sha256 {exc.fetched[:12]}, but build {build.id[:12]} was "
            f"trained on sha256 {exc.pin[:12]}: the data changed since; restore it to evaluate "
            "this build, or train a new one"
        ) from None
    if data.split.digest() != inputs["split"]["digest"]:
        raise IntegrityError(
            f"the split of {data.label} no longer matches build {build.id}: the rows or the "
            "splitting code changed; retrain"
        )
    # torch from here on: a missing build or a changed dataset was refused without it.
    from pipeline import fit
    from pipeline.model import load_model

    device = _runtime(settings, recipe)["device"]
    pre = features.Preprocessor.from_json(build.json("preprocessing.json"))
    model = load_model(build.json("model.json"), build.files["weights.pt"]).to(device)
    enc = pre.transform(data.frame.iloc[data.split.test], data.label, with_target=True)
    # A binary release is scored at its threshold, as it predicts (a gate on a release at
    # 0.7 passed on the build's accuracy at 0.5); the build's own metrics are at 0.5.
    at = threshold if data.schema.task == "binary" and threshold != 0.5 else None
    test = fit.evaluate_rows(model, fit.Tensors.all(enc, device), pre.target, at)
    _warnings(test, build.json("metrics.json")["test"] if at is None else None, log)

    cv = None
    if folds is not None:
        cv = _stored_cv(store, build.id, recipe, data, folds, device, log)
        if at is not None:  # the recipe's folds, not the release: their classes are at 0.5
            log.warning(
                "evaluate.warning",
                message=f"the cross-validation scores the recipe's classes at 0.5; the test "
                f"metrics are at the release's PIPELINE_RUN__THRESHOLD={at:g}",
            )

    gates = _gate_checks(settings.gates, test)
    failed = {k: g for k, g in gates.items() if not g["passed"]}
    log.info(
        "evaluate.summary",
        build_id=build.id,
        task=data.schema.task,
        test=metrics.bounded(test),
        # The threshold a binary model's classes were scored at (0.5 but for a release's own).
        threshold=(0.5 if at is None else at) if data.schema.task == "binary" else None,
        cross_validation=cv and {k: v for k, v in cv.items() if k != "per_fold"},
        gates=gates,
        passed=not failed,
        seconds=round(time.perf_counter() - t0, 3),
    )
    if failed:
        raise _gates_failed(build.id, failed, at)
    return Evaluation(build.id, test, cv, gates)


def _stored_cv(
    store: Store, build_id: str, recipe: Settings, data: Any, folds: int, device: str, log: Any
) -> dict[str, Any]:
    """K-fold cross-validation of the recipe on the training and validation rows, stored under
    the build (deterministic for the build and K: a rerun rewrites the same bytes)."""
    import torch

    store.check_can_hold(artifacts.cv_key(build_id, folds))  # before minutes of training
    rest = np.sort(np.concatenate([data.split.train, data.split.val]))
    if len(rest) < folds * 2:
        raise DataError(
            f"{len(rest)} training rows cannot be split into {folds} folds of at least 2 "
            f"rows: use --folds {len(rest) // 2} or fewer"
            if len(rest) >= 4
            else f"{len(rest)} training rows are too few to cross-validate (2 folds of 2 "
            "rows at least): evaluate without --folds"
        )
    with torch.random.fork_rng(devices=[]):
        cv = cross_validate(recipe, data, rest, folds, device, log)
    store.write(artifacts.cv_key(build_id, folds), canonical_json(cv))
    return cv


def _gates_failed(
    build_id: str, failed: dict[str, dict[str, Any]], threshold: float | None
) -> GateError:
    """The error naming each failed gate: its metric's value against the bound, or why the
    metric has no value on these test rows."""
    detail = "; ".join(
        (
            f"{g['metric']} {g['value']:.4g} {'<' if k.startswith('min') else '>'} {g['bound']:g}"
            if g["value"] is not None
            else f"{g['metric']} is undefined on the test rows (a constant target?)"
        )
        # Each gate by its variable: the error line then says where one not set in the
        # environment came from (a preset, .env), as for any other setting.
        + f" (PIPELINE_GATES__{k.upper()})"
        for k, g in failed.items()
    )
    at = "" if threshold is None else f" at its release's PIPELINE_RUN__THRESHOLD={threshold:g}"
    return GateError(
        f"build {build_id[:12]} fails its quality gates{at}: {detail}; improve the model or "
        "revisit the gate"
    )


def _warnings(test: dict[str, Any], recorded: dict[str, Any] | None, log: Any) -> None:
    """A warning event when re-measured test metrics differ from the build's (``recorded``;
    None: scored otherwise) beyond rounding, and one when every test row is predicted as one
    class (``metrics.one_class``)."""
    if (warning := metrics.one_class(test, "test rows")) is not None:
        log.warning("evaluate.warning", message=warning)
    if recorded is None:
        return
    drift = {
        k: abs(test[k] - recorded[k])
        for k, v in test.items()
        if isinstance(v, float) and isinstance(recorded.get(k), float)
    }
    if any(d > _TOLERANCE * max(1.0, abs(recorded[k])) for k, d in drift.items()):
        log.warning(
            "evaluate.drift",
            message="re-measured test metrics differ from the build's",
            drift=drift,
        )
