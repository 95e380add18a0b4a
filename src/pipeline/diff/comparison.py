"""The comparison of two resolved sides as one JSON document (``compare``), and the regression
gate that judges it (``check_regression``).

The document's bytes depend only on the two builds (and the K-fold results stored for them),
so CI can store it, diff it and gate on it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline import artifacts
from pipeline.errors import ConfigError, GateError, IntegrityError
from pipeline.settings import space
from pipeline.store import Store

FORMAT = 1

# Verdicts of one metric, and of the whole comparison on the primary metric.
BETTER, WORSE, SAME, NOISE = "better", "worse", "same", "within CV noise"
MISSING = "missing"  # one side has no value for the metric
INCOMPARABLE = "incomparable"  # the builds have different tasks: no primary metric to compare


PROVENANCE = ("dataset", "split", "seed", "code")  # the fields of provenance.json ``inputs``


def cross_validation(store: Store, build_id: str) -> dict[str, Any] | None:
    """The stored K-fold result of ``build_id`` with the most folds, or None.

    ``pipeline evaluate --folds K`` stores the summary of ``search.cross_validate`` (``folds``,
    ``per_fold``, ``<metric>_mean``, ``<metric>_std``) at ``artifacts.cv_key``. Returns
    ``{"folds": K, "metrics": {metric: {"mean", "std"}}}``.
    """
    where = store.location(f"{artifacts.EVALUATIONS}/{build_id}")
    try:
        summary = artifacts.stored_cv(store, build_id)
        if summary is None:
            return None
        metrics = {
            k.removesuffix("_mean"): {"mean": v, "std": summary[k.removesuffix("_mean") + "_std"]}
            for k, v in summary.items()
            if k.endswith("_mean")
        }
        folds = summary["folds"]
        ok = _number(folds) and all(_number(x) for m in metrics.values() for x in m.values())
    except (KeyError, ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise IntegrityError(
            f"the cross-validation result with the most folds in {where} is not one (folds, "
            "<metric>_mean and <metric>_std numbers): move it away, or run `pipeline evaluate "
            f"{build_id[:12]} --folds K` again"
        )
    return {"folds": folds, "metrics": metrics}


def compare(
    store: Store, a: dict[str, Any], b: dict[str, Any], *, all_: bool = False
) -> dict[str, Any]:
    """The diff document of two resolved sides (see the README's `pipeline diff`).

    ``all_`` also lists the settings and confusion cells that did not change.
    """
    files = [_json_files(side) for side in (a, b)]
    schemas = [f["schema.json"] for f in files]
    recorded = [f["metrics.json"] for f in files]
    cv = [cross_validation(store, side["build_id"]) for side in (a, b)]
    noise = _noise(cv, [f["provenance.json"]["inputs"].get("split") for f in files])
    metrics = {}
    for part in ("validation", "test"):
        values = [r.get(part, {}) for r in recorded]
        names = sorted({k for v in values for k, x in v.items() if isinstance(x, float | None)})
        metrics[part] = [
            _metric_row(
                m,
                space.direction(m) == "max",
                values[0].get(m),
                values[1].get(m),
                noise[part].get(m),
            )
            for m in names
        ]
    primary_name = primary_metric(schemas[0], schemas[1])
    primary = next((r for r in metrics["test"] if r["metric"] == primary_name), None)
    same_build = a["build_id"] == b["build_id"]
    configs = [_flatten(f["config.json"]) for f in files]
    inputs = [
        _flatten({k: f["provenance.json"]["inputs"].get(k) for k in PROVENANCE}) for f in files
    ]
    # What a release adds to its build: the version and the run settings predict and serve
    # use (a threshold, the id column). Two releases of one build with other thresholds
    # predict other classes: they are not identical.
    deployed = [_flatten(side["deployed"] or {}) for side in (a, b)]
    released = _changes(deployed[0], deployed[1], all_) if a["deployed"] and b["deployed"] else []
    return {
        "format": FORMAT,
        "identical": same_build and not any(not r["same"] for r in released),
        "identity": {
            "a": _identity(a, schemas[0]),
            "b": _identity(b, schemas[1]),
            "same_build": same_build,
        },
        "inputs": _changes(inputs[0], inputs[1], True),
        "settings": _changes(configs[0], configs[1], all_),
        "release_settings": released,
        "metrics": metrics,
        "cv": {"a": cv[0], "b": cv[1]},
        "primary": primary,
        "verdict": primary["verdict"] if primary else INCOMPARABLE,
        "confusion": _confusion(recorded[0], recorded[1], all_),
        "epochs": _epochs(files[0], files[1]),
    }


def primary_metric(schema_a: dict[str, Any], schema_b: dict[str, Any]) -> str | None:
    """The test metric the verdict and the regression gate judge by, or None (other tasks, or
    other targets: a model of YearBuilt is not a better model of SalePrice for its lower RMSE).

    It is `pipeline tune`'s default metric (``space.default_metric``): log loss for
    classification, RMSE for regression, of the log target when both builds fit one (else a
    metric both report).
    """
    if schema_a["task"] != schema_b["task"] or schema_a.get("target") != schema_b.get("target"):
        return None
    log_target = schema_a.get("target_transform") == schema_b.get("target_transform") == "log"
    return space.default_metric(schema_a["task"], "log" if log_target else "none")


def _json_files(side: dict[str, Any]) -> dict[str, Any]:
    names = ("config.json", "metrics.json", "schema.json", "history.json", "provenance.json")
    return {name: json.loads(side["files"][name]) for name in names}


def _identity(side: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    keys = ("asked", "kind", "build_id", "release", "package_id")
    return {**{k: side[k] for k in keys}, "task": schema["task"], "target": schema.get("target")}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _noise(cv: list[dict[str, Any] | None], splits: list[Any]) -> dict[str, dict[str, float]]:
    """Per part (validation, test) and metric, the larger of A's and B's K-fold standard
    deviations, scaled from a fold's rows to the part's: std * sqrt(fold rows / part rows).

    A fold holds (train + validation rows) / K rows, and a metric's spread over n rows goes
    as 1/sqrt(n): unscaled, 100 folds' std was over four times 5 folds', and every change
    read as noise. A side whose split sizes are not recorded gives no figure.
    """
    noise: dict[str, dict[str, float]] = {"validation": {}, "test": {}}
    for c, split in zip(cv, splits, strict=True):
        if not c or not isinstance(split, dict):
            continue
        sizes: dict[str, Any] = {k: split.get(k) for k in ("train", "val", "test")}
        if not all(_number(n) and n > 0 for n in sizes.values()):
            continue
        fold_rows = (sizes["train"] + sizes["val"]) / c["folds"]
        for part, rows in (("validation", sizes["val"]), ("test", sizes["test"])):
            scale = math.sqrt(fold_rows / rows)
            for m, s in c["metrics"].items():
                noise[part][m] = max(noise[part].get(m, 0.0), s["std"] * scale)
    return noise


def _metric_row(name: str, higher: bool, a: Any, b: Any, noise: float | None) -> dict[str, Any]:
    """One metric of A and B with its delta and verdict.

    ``noise`` is the larger K-fold standard deviation of the metric stored for A or B, scaled
    to the part's rows (``_noise``): a difference smaller than that is one a reshuffle of the
    rows could make, not a change.
    """
    row: dict[str, Any] = {"metric": name, "direction": "higher" if higher else "lower",
                           "a": a, "b": b, "delta": None, "delta_pct": None}  # fmt: skip
    if not (_number(a) and _number(b)):
        return {**row, "verdict": SAME if a == b else MISSING}
    delta = b - a
    row.update(delta=delta, delta_pct=delta / abs(a) * 100 if a else None)
    if delta == 0:
        verdict = SAME
    elif noise is not None and noise > abs(delta):
        verdict = NOISE
    else:
        verdict = BETTER if (delta > 0) == higher else WORSE
    return {**row, "verdict": verdict}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"learning_rate": 0.001}}`` as ``{"train.learning_rate": 0.001}``; lists and
    empty mappings stay values."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _changes(a: dict[str, Any], b: dict[str, Any], all_: bool) -> list[dict[str, Any]]:
    """``{key, a, b, same}`` per key of either side (null where a side lacks it), sorted; only
    the changed ones unless ``all_``."""
    rows = [
        {"key": k, "a": a.get(k), "b": b.get(k), "same": k in a and k in b and a[k] == b[k]}
        for k in sorted(a.keys() | b.keys())
    ]
    return [r for r in rows if all_ or not r["same"]]


def _confusion(a: dict[str, Any], b: dict[str, Any], all_: bool) -> dict[str, Any] | None:
    """The test confusion matrix cells that changed (every cell with ``all_``), by label.

    None unless both builds are classifiers. Labels only one side has are listed under
    ``labels``; their cells count as null on the other side.
    """
    matrices = [r.get("test", {}).get("confusion_matrix") for r in (a, b)]
    if not all(isinstance(m, dict) for m in matrices):
        return None
    labels = [[str(x) for x in m["labels"]] for m in matrices]
    counts = [
        {(t, p): m["matrix"][i][j] for i, t in enumerate(ls) for j, p in enumerate(ls)}
        for m, ls in zip(matrices, labels, strict=True)
    ]
    la, lb = labels
    rows = []
    union = la + [x for x in lb if x not in la]
    for t in union:
        for p in union:
            ca, cb = counts[0].get((t, p)), counts[1].get((t, p))
            if all_ or ca != cb:
                rows.append({"true": t, "predicted": p, "a": ca, "b": cb})
    return {"labels": {"a": la, "b": lb, "same": la == lb}, "cells": rows}


def _epochs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Best epoch (early stopping's choice) and the epochs run in selection and refit."""
    sides = [
        {
            "best_epoch": f["metrics.json"].get("best_epoch"),
            "selection": len(f["history.json"].get("selection", [])),
            "refit": len(f["history.json"].get("refit", [])),
        }
        for f in (a, b)
    ]
    return {"a": sides[0], "b": sides[1], "same": sides[0] == sides[1]}


# --- the regression gate ----------------------------------------------------------------------


def check_tolerance(tolerance: float | None, gate: bool) -> float:
    """``--tolerance`` as a number: finite, >= 0, and only with ``--fail-on-regression``."""
    if tolerance is None:
        return 0.0
    if not gate:
        raise ConfigError(
            "--tolerance applies to --fail-on-regression: add it, or drop --tolerance"
        )
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(
            f"--tolerance {tolerance}: expected a number >= 0 (how much worse B's primary test "
            "metric may be than A's, in the metric's units)"
        )
    return tolerance


def check_regression(doc: dict[str, Any], tolerance: float) -> None:
    """GateError when B's primary test metric is worse than A's by more than ``tolerance``.

    The tolerance is absolute, in the metric's units; CV noise does not excuse a regression
    here (the tolerance is how a project says how much noise it accepts).
    """
    primary = doc["primary"]
    a, b = doc["identity"]["a"], doc["identity"]["b"]
    if primary is None or primary["delta"] is None:
        why = (
            f"A is a {a['task']} model and B a {b['task']} one"
            if a["task"] != b["task"]
            else f"A predicts {a['target']!r} and B {b['target']!r}"
            if primary is None
            else f"test {primary['metric']} is missing from A or B"
        )
        raise ConfigError(
            f"--fail-on-regression cannot compare {label(a)} and {label(b)}: {why}; compare "
            "builds of one task and target"
        )
    worse_by = primary["delta"] if primary["direction"] == "lower" else -primary["delta"]
    if worse_by > tolerance:
        raise GateError(
            f"B {label(b)} is worse than A {label(a)} on test {primary['metric']} "
            f"({primary['direction']} is better): {primary['a']:.6g} -> {primary['b']:.6g}, "
            f"delta {primary['delta']:+.4g} beyond tolerance {tolerance:g}"
            + (" (the diff calls it within the K-fold noise)" if primary["verdict"] == NOISE
               else "")
            + "; improve B or raise --tolerance"
        )  # fmt: skip


def label(side: dict[str, Any]) -> str:
    """How a side reads in a message: its name and short build id."""
    short = side["build_id"][:12]
    name = side["release"] or (side["package_id"] and f"package {side['package_id'][:12]}")
    return f"{name} (build {short})" if name else f"build {short}"
