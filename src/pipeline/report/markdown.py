"""The Markdown form of the report: ``report.md`` beside one SVG per plot, for a pull request
comment in CI."""

from __future__ import annotations

from typing import Any

from pipeline.report.facts import (
    MAX_TABLE_CLASSES,
    Subject,
    _fmt,
    _identity_rows,
    _metric,
    _scalar_metrics,
)
from pipeline.report.figures import draw


def markdown_report(s: Subject) -> dict[str, bytes]:
    """``report.md`` and one ``<plot>.svg`` per plot, as ``{file name: bytes}``."""
    figures = draw([s])
    lines = [f"# {s.task.capitalize()} model report", "", f"`{s.label}` · build `{s.build_id}`", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in _identity_rows(s)]
    lines += ["", "## Metrics", "", "| metric | validation | test |", "|---|---:|---:|"]
    lines += [
        f"| {n} | {_metric(s, 'validation', n)} | {_metric(s, 'test', n)} |"
        for n in _scalar_metrics(s)
    ]
    cm = s.metrics.get("test", {}).get("confusion_matrix")
    if cm and len(cm["labels"]) <= MAX_TABLE_CLASSES:
        labels = cm["labels"]
        lines += ["", "## Confusion matrix (test)", ""]
        lines += ["| true \\ predicted | " + " | ".join(_md(x) for x in labels) + " |"]
        lines += ["|---|" + "---:|" * len(labels)]
        lines += [
            f"| {_md(labels[i])} | " + " | ".join(_fmt(n) for n in row) + " |"
            for i, row in enumerate(cm["matrix"])
        ]
    if s.cv is not None:
        lines += [
            "",
            f"## Cross-validation ({s.cv['folds']} folds)",
            "",
            "| metric | mean | std |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {k[:-5]} | {_fmt(s.cv[k])} | {_fmt(s.cv.get(k[:-5] + '_std'))} |"
            for k in s.cv
            if k.endswith("_mean")
        ]
    lines += ["", "## Plots", ""]
    for p in figures:
        lines += [f"### {p.title}", "", f"![{_md(p.alt)}]({p.name}.svg)", "", _md(p.caption), ""]
    files = {f"{p.name}.svg": p.svg for p in figures}
    files["report.md"] = ("\n".join(lines).rstrip() + "\n").encode("utf-8")
    return files


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
