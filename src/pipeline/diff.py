"""`pipeline diff`: what changed between two builds, and whether the model got better or worse.

Each side is a build (id, unique prefix, ``latest``), a release (``name@vN``, ``name@current``,
``vN``/``current`` for PIPELINE_MODEL__NAME) or a package (id, prefix, or a ``.tar.gz`` path):
all three come down to one build's verified files. The comparison is one JSON document
(``compare``) whose bytes depend only on the two builds, so CI can store it, diff it and gate on
it; the table and Markdown renderings are views of that document.

Nothing heavy is imported (no torch, pandas, numpy or matplotlib): the command only reads JSON
files, and a review tool that loads torch for that would take seconds to start. The resolvers of
releases and packages are imported where they are used; ``--html`` imports ``report``, which
draws.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.errors import ConfigError, GateError, IntegrityError, NotFoundError
from pipeline.settings import space
from pipeline.store import Store, canonical_json

FORMAT = 1

# Verdicts of one metric, and of the whole comparison on the primary metric.
BETTER, WORSE, SAME, NOISE = "better", "worse", "same", "within CV noise"
MISSING = "missing"  # one side has no value for the metric
INCOMPARABLE = "incomparable"  # the builds have different tasks: no primary metric to compare

_PACKAGE_ID = re.compile(r"^[0-9a-f]{8,64}$")
PROVENANCE = ("dataset", "split", "seed", "code")  # the fields of provenance.json ``inputs``


# --- the two sides ----------------------------------------------------------------------------


def resolve(store: Store, a: str | None, b: str | None, model_name: str) -> list[dict[str, Any]]:
    """Both sides: A defaults to ``<model_name>@current``, B to the latest build.

    Each side is ``{"asked", "kind", "build_id", "release", "package_id", "files"}``; a default
    that cannot be resolved is a NotFoundError naming it and what to do.
    """
    sides = []
    for label, arg, default in (("A", a, f"{model_name}@current"), ("B", b, "latest")):
        try:
            sides.append(resolve_one(store, arg or default, model_name))
        except NotFoundError as exc:
            if arg:
                raise
            what = f"the current release of {model_name}" if label == "A" else "the latest build"
            raise NotFoundError(
                f"{label} defaults to {what}, and {exc.message}; or name {label}: "
                "`pipeline diff A [B]`"
            ) from None
    return sides


def resolve_one(store: Store, ref: str, model_name: str) -> dict[str, Any]:
    """One side: a release reference, a package (id, prefix, ``.tar.gz``) or a build."""
    from pipeline import releases

    side: dict[str, Any] = {"asked": ref, "release": None, "package_id": None}
    if ref.endswith(".tar.gz") or os.sep in ref:  # releases.resolve_package's rule for a path
        return {**side, **_package_file(store, ref)}
    if releases.is_ref(ref) or "@" in ref:  # a malformed name@... gets parse_ref's message
        release = releases.show(store, ref, model_name)
        opened = _open_in_store(store, releases.find_package(store, release.package_id))
        if opened.package_id != release.package_id:
            raise IntegrityError(
                f"release {release.ref} names package {release.package_id[:12]}, but its archive "
                f"has id {opened.package_id[:12]}: the archive was replaced; restore it"
            )
        side.update(kind="release", release=release.ref, package_id=release.package_id)
        return {**side, "build_id": opened.build_id, "files": opened.files}
    # Hex digits name a build first (as everywhere else), a package when no build id has them.
    if _PACKAGE_ID.match(ref.lower()) and not any(
        bid.startswith(ref) for bid in store.list("builds")
    ):
        try:
            sidecar = releases.find_package(store, ref)
        except NotFoundError:
            raise NotFoundError(
                f"no build or package '{ref}' in store {store.uri}: check the id (builds/ and "
                "packages/*/*.json list them) or PIPELINE_STORE"
            ) from None
        opened = _open_in_store(store, sidecar)
        side.update(kind="package", package_id=opened.package_id)
        return {**side, "build_id": opened.build_id, "files": opened.files}
    build = artifacts.load_build(store, ref)
    return {**side, "kind": "build", "build_id": build.id, "files": build.files}


def _package_file(store: Store, ref: str) -> dict[str, Any]:
    """A ``.tar.gz`` on disk (anywhere), or in the store's packages folder by its location."""
    from pipeline import package, releases

    if Path(ref).is_file():
        opened = package.open_package(Path(ref))
    elif store.key_of(ref) is None:
        raise NotFoundError(f"package file {ref} does not exist: check the path")
    else:
        opened = _open_in_store(store, releases.resolve_package(store, ref))
    return {"kind": "package", "package_id": opened.package_id, "build_id": opened.build_id,
            "files": opened.files}  # fmt: skip


def _open_in_store(store: Store, sidecar: dict[str, Any]) -> Any:
    """The verified package a sidecar names (``package.OpenedPackage``)."""
    from pipeline import package

    key = f"packages/{sidecar['name']}/{sidecar['version']}.tar.gz"
    try:
        return package.open_package(store.local_file(key))
    except KeyError:
        raise NotFoundError(
            f"package {sidecar['package_id'][:12]} is recorded in {key[:-7]}.json, but {key} is "
            f"not in store {store.uri}: restore it or package the build again"
        ) from None


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


# --- the comparison ---------------------------------------------------------------------------


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
    noise: dict[str, float] = {}  # per metric, the larger K-fold std stored for A or B
    for c in cv:
        for m, s in (c["metrics"] if c else {}).items():
            noise[m] = max(noise.get(m, 0.0), s["std"])
    metrics = {}
    for part in ("validation", "test"):
        values = [r.get(part, {}) for r in recorded]
        names = sorted({k for v in values for k, x in v.items() if isinstance(x, float | None)})
        metrics[part] = [
            _metric_row(
                m, space.direction(m) == "max", values[0].get(m), values[1].get(m), noise.get(m)
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
    return {
        "format": FORMAT,
        "identical": same_build,
        "identity": {
            "a": _identity(a, schemas[0]),
            "b": _identity(b, schemas[1]),
            "same_build": same_build,
        },
        "inputs": _changes(inputs[0], inputs[1], True),
        "settings": _changes(configs[0], configs[1], all_),
        "metrics": metrics,
        "cv": {"a": cv[0], "b": cv[1]},
        "primary": primary,
        "verdict": primary["verdict"] if primary else INCOMPARABLE,
        "confusion": _confusion(recorded[0], recorded[1], all_),
        "epochs": _epochs(files[0], files[1]),
    }


def primary_metric(schema_a: dict[str, Any], schema_b: dict[str, Any]) -> str | None:
    """The test metric the verdict and the regression gate judge by, or None (other tasks).

    It is `pipeline tune`'s default metric (``space.default_metric``): log loss for
    classification, RMSE for regression, of the log target when both builds fit one (else a
    metric both report).
    """
    if schema_a["task"] != schema_b["task"]:
        return None
    log_target = schema_a.get("target_transform") == schema_b.get("target_transform") == "log"
    return space.default_metric(schema_a["task"], "log" if log_target else "none")


def _json_files(side: dict[str, Any]) -> dict[str, Any]:
    names = ("config.json", "metrics.json", "schema.json", "history.json", "provenance.json")
    return {name: json.loads(side["files"][name]) for name in names}


def _identity(side: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    keys = ("asked", "kind", "build_id", "release", "package_id")
    return {**{k: side[k] for k in keys}, "task": schema["task"]}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _metric_row(name: str, higher: bool, a: Any, b: Any, noise: float | None) -> dict[str, Any]:
    """One metric of A and B with its delta and verdict.

    ``noise`` is the larger K-fold standard deviation of the metric stored for A or B: a
    difference smaller than that is one a reshuffle of the rows could make, not a change.
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
            if primary is None
            else f"test {primary['metric']} is missing from A or B"
        )
        raise ConfigError(
            f"--fail-on-regression cannot compare {label(a)} and {label(b)}: {why}; compare "
            "builds of one task"
        )
    worse_by = primary["delta"] if primary["direction"] == "lower" else -primary["delta"]
    if worse_by > tolerance:
        raise GateError(
            f"B {label(b)} is worse than A {label(a)} on test {primary['metric']} "
            f"({primary['direction']} is better): {primary['a']:.6g} -> {primary['b']:.6g}, "
            f"delta {primary['delta']:+.4g} beyond tolerance {tolerance:g}; improve B or raise "
            "--tolerance"
        )


def label(side: dict[str, Any]) -> str:
    """How a side reads in a message: its name and short build id."""
    short = side["build_id"][:12]
    name = side["release"] or (side["package_id"] and f"package {side['package_id'][:12]}")
    return f"{name} (build {short})" if name else f"build {short}"


# --- renderings -------------------------------------------------------------------------------


def render(doc: dict[str, Any], fmt: str, *, all_: bool = False) -> bytes:
    """The document as ``json`` (canonical bytes), a ``table`` or ``markdown`` (UTF-8)."""
    if fmt == "json":
        return canonical_json(doc)
    head, sections = summary(doc, all_)
    if fmt == "markdown":
        lines = [f"**pipeline diff**: {head[0]}", *(f"- {h}" for h in head[1:])]
        for title, columns, rows in sections:
            lines += ["", f"### {title}", "", _md_row(columns), _md_row(["---"] * len(columns))]
            lines += [_md_row(r) for r in rows]
    else:
        lines = list(head)
        for title, columns, rows in sections:
            widths = [max(len(x) for x in col) for col in zip(columns, *rows, strict=True)]
            lines += ["", title]
            for r in [columns, *rows]:
                lines.append(
                    "  " + "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
                )
    return ("\n".join(lines) + "\n").encode()


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


Section = tuple[str, list[str], list[list[str]]]


def summary(doc: dict[str, Any], all_: bool) -> tuple[list[str], list[Section]]:
    """Headline lines and titled tables: what differs (everything with ``all_``), and the test
    metrics always."""
    who = [_who(side, doc["identity"][side]) for side in ("a", "b")]
    sections: list[Section] = [
        ("identity", ["", "asked", "kind", "build", "release", "package", "task"], who)
    ]
    if doc["identical"] and not all_:
        return ["no differences: A and B are the same build"], sections
    head = [_verdict_line(doc)]
    inputs = [r for r in doc["inputs"] if all_ or not r["same"]]
    if inputs:
        sections.append(
            ("inputs", ["input", "A", "B"], [[r["key"], _v(r["a"]), _v(r["b"])] for r in inputs])
        )
    else:
        head.append("inputs: the same (data, split, seed, code)")
    if doc["settings"]:
        rows = [[r["key"], _v(r["a"]), _v(r["b"])] for r in doc["settings"]]
        sections.append(("settings", ["setting", "A", "B"], rows))
    elif not doc["identical"]:
        head.append("settings: the same")
    for part in ("test", "validation"):
        rows = [
            _metric_cells(r)
            for r in doc["metrics"][part]
            if all_ or part == "test" or r["verdict"] != SAME
        ]
        if rows:
            columns = ["metric", "better", "A", "B", "delta", "delta %", "verdict"]
            sections.append((f"{part} metrics", columns, rows))
    cv_rows = [
        [side.upper(), str(cv["folds"]), m, _v(s["mean"]), _v(s["std"])]
        for side, cv in doc["cv"].items()
        if cv
        for m, s in sorted(cv["metrics"].items())
    ]
    if cv_rows:
        sections.append(("cross-validation", ["", "folds", "metric", "mean", "std"], cv_rows))
    confusion = doc["confusion"]
    if confusion and not confusion["labels"]["same"]:
        head.append(f"classes differ: A {confusion['labels']['a']}, B {confusion['labels']['b']}")
    if confusion and confusion["cells"]:
        rows = [[c["true"], c["predicted"], _v(c["a"]), _v(c["b"])] for c in confusion["cells"]]
        sections.append(("test confusion matrix", ["true", "predicted", "A", "B"], rows))
    epochs = doc["epochs"]
    if all_ or not epochs["same"]:
        keys = ("best_epoch", "selection", "refit")
        rows = [[k, _v(epochs["a"][k]), _v(epochs["b"][k])] for k in keys]
        sections.append(("epochs", ["", "A", "B"], rows))
    return head, sections


def _who(side: str, ident: dict[str, Any]) -> list[str]:
    """A side's identity row; a full build id asked for is cut to 12 digits, as shown."""
    bid, asked = ident["build_id"], ident["asked"]
    return [side.upper(), asked[:12] if asked == bid else asked, ident["kind"], bid[:12],
            ident["release"] or "", (ident["package_id"] or "")[:12], ident["task"]]  # fmt: skip


def _verdict_line(doc: dict[str, Any]) -> str:
    p = doc["primary"]
    if p is None:
        return "verdict: incomparable (A and B solve different tasks)"
    if p["delta"] is None:
        return f"verdict: {p['verdict']} (test {p['metric']} of A {_v(p['a'])}, B {_v(p['b'])})"
    change = f"{_v(p['a'])} -> {_v(p['b'])}, delta {p['delta']:+.4g}"
    return (
        f"verdict: {p['verdict']} (B against A on test {p['metric']}, {p['direction']} is "
        f"better: {change})"
    )


def _metric_cells(r: dict[str, Any]) -> list[str]:
    delta = "" if r["delta"] is None else f"{r['delta']:+.4g}"
    pct = "" if r["delta_pct"] is None else f"{r['delta_pct']:+.1f}%"
    return [r["metric"], r["direction"], _v(r["a"]), _v(r["b"]), delta, pct, r["verdict"]]


def _v(value: Any) -> str:
    """A value for a table cell: numbers to 6 significant digits, the rest as JSON."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)
