"""Views of the diff document: canonical JSON, a plain-text table or Markdown (``render``), and
the headline lines and titled tables they share with `pipeline diff --html` (``summary``)."""

from __future__ import annotations

import json
from typing import Any

from pipeline.diff.comparison import SAME
from pipeline.store import canonical_json


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
        ("identity", ["", "asked", "kind", "build", "release", "package", "task", "target"], who)
    ]
    if doc["identical"] and not all_:
        same = ", released with the same settings" if doc["release_settings"] else ""
        return [f"no differences: A and B are the same build{same}"], sections
    head = [_verdict_line(doc), *_caveats(doc)]
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
    if doc["release_settings"]:  # the test metrics below are the builds', at their settings
        rows = [[r["key"], _v(r["a"]), _v(r["b"])] for r in doc["release_settings"]]
        sections.append(("release settings", ["setting", "A", "B"], rows))
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


def _caveats(doc: dict[str, Any]) -> list[str]:
    """What the verdict does not say: test rows that are not the same rows (another split), and
    releases whose run settings differ from their builds' metrics (a threshold)."""
    lines = []
    split = [r for r in doc["inputs"] if r["key"].startswith("split") and not r["same"]]
    if split and doc["primary"] is not None:
        steadier = (
            "the verdict weighs them by the stored K-fold noise"
            if doc["cv"]["a"] and doc["cv"]["b"]
            else "`pipeline evaluate --folds 5` of each gives a comparison over every row"
        )
        lines.append(
            "the test rows differ (another split: other data or seed), so the metrics are of "
            f"other rows: {steadier}"
        )
    released = [r for r in doc["release_settings"] if not r["same"]]
    if released:
        changes = ", ".join(f"{r['key']} {_v(r['a'])} -> {_v(r['b'])}" for r in released)
        at = (
            ", whose classes are at threshold 0.5: `pipeline evaluate RELEASE` scores a "
            "release at its own"
            if any(r["key"] == "run.threshold" for r in released)
            else ""
        )
        lines.append(f"released with other settings ({changes}); the metrics are the builds'{at}")
    return lines


def _who(side: str, ident: dict[str, Any]) -> list[str]:
    """A side's identity row; a full build id asked for is cut to 12 digits, as shown."""
    bid, asked = ident["build_id"], ident["asked"]
    return [side.upper(), asked[:12] if asked == bid else asked, ident["kind"], bid[:12],
            ident["release"] or "", (ident["package_id"] or "")[:12], ident["task"],
            ident.get("target") or ""]  # fmt: skip


def _verdict_line(doc: dict[str, Any]) -> str:
    p = doc["primary"]
    if p is None:
        a, b = doc["identity"]["a"], doc["identity"]["b"]
        what = "tasks" if a["task"] != b["task"] else "targets"
        return f"verdict: incomparable (A and B solve different {what})"
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
