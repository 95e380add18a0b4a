"""A build as the report sees it (``Subject``), and the facts its tables show, formatted.

Everything here reads the build's parsed JSON files and its stored K-fold results; nothing
draws or renders. ``_fmt`` writes a number the same way on every machine (no locale).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline import artifacts, curves
from pipeline.store import Store

MAX_TABLE_CLASSES = 30  # a larger confusion matrix is left to metrics.json


@dataclass(frozen=True)
class Subject:
    """A build as the report sees it: its parsed JSON files and stored K-fold results."""

    label: str  # how the user named it: a build id, or a release reference
    build_id: str
    files: dict[str, Any]
    cv: dict[str, Any] | None
    deployed: dict[str, Any] | None = None  # a release's version and run settings

    @property
    def metrics(self) -> dict[str, Any]:
        return self.files["metrics.json"]

    @property
    def task(self) -> str:
        return str(self.metrics["task"])

    @property
    def curves(self) -> dict[str, Any]:
        return curves.from_files(self.files)

    @property
    def inputs(self) -> dict[str, Any]:
        return self.files["provenance.json"]["inputs"]


def subject(side: dict[str, Any], store: Store) -> Subject:
    """The report's view of a resolved build, release or package (``diff.resolve_one``)."""
    from pipeline.diff.comparison import cross_validation

    files = {n: json.loads(d) for n, d in side["files"].items() if n.endswith(".json")}
    label = side["release"] or (side["package_id"] and f"package {side['package_id']}")
    # A damaged or malformed stored CV result is exit 7 naming it, as in `diff` (the report
    # crashed on one that was no JSON, and left out one of the wrong shape without a word).
    cross_validation(store, side["build_id"])
    return Subject(label or side["build_id"], side["build_id"], files,
                   artifacts.stored_cv(store, side["build_id"]), side.get("deployed"))  # fmt: skip


def _metric(s: Subject, part: str, name: str) -> str:
    return _fmt(s.metrics.get(part, {}).get(name))


def _fmt(value: Any) -> str:
    """A number as a person reads it, the same on every machine (no locale)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _scalar_metrics(s: Subject) -> list[str]:
    names: list[str] = []
    for part in ("validation", "test"):
        for k, v in s.metrics.get(part, {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in names:
                names.append(k)
    return names


def _identity_rows(s: Subject) -> list[tuple[str, str]]:
    inputs, schema = s.inputs, s.files.get("schema.json", {})
    dataset, split, code = inputs["dataset"], inputs["split"], inputs["code"]
    history = s.files["history.json"]
    rows = [
        ("build", s.build_id),
        ("task", f"{s.task}, target {schema.get('target', '?')}"),
        (
            "dataset",
            f"{dataset['uri']} ({_fmt(dataset['rows'])} rows, sha256 {dataset['sha256'][:16]})",
        ),
        (
            "split",
            f"train {_fmt(split['train'])}, validation {_fmt(split['val'])}, test "
            f"{_fmt(split['test'])} (digest {split['digest'][:16]})",
        ),
        ("seed", str(inputs["seed"])),
        ("code", f"pipeline {code['version']} (digest {code['digest'][:16]})"),
        (
            "epochs",
            f"best {s.metrics.get('best_epoch')} of {len(history.get('selection', []))}"
            f"{'; refitted on train + validation' if s.metrics.get('refit') else ''}",
        ),
    ]
    if bagged := s.metrics.get("bagging"):
        epochs = ", ".join(str(e) for e in bagged["best_epochs"])
        rows[-1] = ("epochs", f"bagged: {bagged['folds']} folds, best epochs {epochs}")
    if s.label != s.build_id:  # a release, or "package <id>"
        kind, _, name = s.label.partition(" ") if s.deployed is None else ("release", "", s.label)
        rows.insert(0, (kind, name))
    if s.deployed is not None:
        rows.insert(1, ("release settings", _release_settings(s)))
    return rows


def _release_settings(s: Subject) -> str:
    """A release's version and the run settings that change what it predicts; a binary
    release predicting at another threshold than the metrics' 0.5 is told so."""
    assert s.deployed is not None
    run = s.deployed["run"]
    parts = [f"version {s.deployed['version']}"]
    if s.task == "binary":
        at = run.get("threshold", 0.5)
        parts.append(f"threshold {at:g}" + (" (the metrics below are at 0.5)" if at != 0.5 else ""))
    parts.append(f"id column {run.get('id_column') or '–'}")
    return "; ".join(parts)


def flat_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``config.json`` as dotted keys and values, sorted (``train.learning_rate``)."""
    out: list[tuple[str, Any]] = []
    for key in sorted(config):
        value = config[key]
        if isinstance(value, dict) and value:
            out += flat_config(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
