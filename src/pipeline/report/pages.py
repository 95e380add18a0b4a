"""The HTML page: the tables of a build, its figures as embedded SVG, and `pipeline diff --html`.

The page has no script and no external reference: ``CSP`` forbids both.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

from pipeline.report.facts import (
    MAX_TABLE_CLASSES,
    Subject,
    _fmt,
    _identity_rows,
    _metric,
    _scalar_metrics,
    flat_config,
)
from pipeline.report.figures import Plot, draw, specs

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rows_html(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tables(s: Subject) -> str:
    parts = ["<h2>Build</h2>", _rows_html(_identity_rows(s), ("", ""))]
    names = _scalar_metrics(s)
    rows: list[tuple[Any, ...]] = [
        (n, _metric(s, "validation", n), _metric(s, "test", n)) for n in names
    ]
    parts += ["<h2>Metrics</h2>", _rows_html(rows, ("metric", "validation", "test"))]
    cm = s.metrics.get("test", {}).get("confusion_matrix")
    if cm and len(cm["labels"]) <= MAX_TABLE_CLASSES:
        labels = cm["labels"]
        header = ("true \\ predicted", *labels)
        rows = [(labels[i], *(_fmt(n) for n in row)) for i, row in enumerate(cm["matrix"])]
        parts += ["<h2>Confusion matrix (test)</h2>", _rows_html(rows, header)]
    if s.cv is not None:
        cv_names = [k[: -len("_mean")] for k in s.cv if k.endswith("_mean")]
        rows = [(n, _fmt(s.cv[f"{n}_mean"]), _fmt(s.cv.get(f"{n}_std"))) for n in cv_names]
        parts += [
            f"<h2>Cross-validation ({s.cv['folds']} folds)</h2>",
            _rows_html(rows, ("metric", "mean", "std")),
        ]
    deciles = s.curves.get("error_by_decile")
    if deciles:
        rows = [
            (
                d["decile"],
                _fmt(d["low"]),
                _fmt(d["high"]),
                d["count"],
                _fmt(d["mae"]),
                _fmt(d["bias"]),
            )
            for d in deciles
        ]
        parts += [
            "<h2>Error by decile of the actual value (test)</h2>",
            _rows_html(rows, ("decile", "from", "to", "rows", "MAE", "bias")),
        ]
    config = flat_config(s.files.get("config.json", {}))
    parts += [
        "<details><summary>Settings of this build (config.json)</summary>",
        _rows_html([(k, json.dumps(v, sort_keys=True)) for k, v in config], ("key", "value")),
        "</details>",
    ]
    return "\n".join(parts)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:24px;
max-width:1040px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.sub{color:#555;margin:0 0 16px;word-break:break-all}
table{border-collapse:collapse;margin:4px 0 8px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f7}td{word-break:break-word}
.plots{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;width:500px;border:1px solid #e5e5e5;border-radius:6px;padding:8px;
box-sizing:border-box}
figure img{display:block;width:100%;height:auto}
figcaption{font-size:12.5px;color:#333;margin-top:6px}
.note{color:#555}details{margin-top:24px}
"""


def _page(title: str, subtitle: str, body: str, figures: list[Plot]) -> bytes:
    figs = "\n".join(
        f'<figure data-plot="{_e(p.name)}"><img src="data:image/svg+xml;base64,'
        f'{base64.b64encode(p.svg).decode("ascii")}" alt="{_e(p.alt)}" width="460" '
        f'height="288"><figcaption><b>{_e(p.title)}.</b> {_e(p.caption)}</figcaption></figure>'
        for p in figures
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="sub">{_e(subtitle)}</p>
{body}
<h2>Plots</h2>
<div class="plots">
{figs}
</div>
</body>
</html>
"""
    return page.encode("utf-8")


def html_report(s: Subject) -> bytes:
    """The self-contained HTML report of one build."""
    body = _tables(s)
    missing = [
        spec.name for spec in specs(s.task) if spec.name != "cv_folds" and spec.data(s) is None
    ]
    if missing:
        body += (
            f'\n<p class="note">No plot data in this build for {", ".join(missing)}: it was '
            "made before builds stored their curves (curve_*.json). Train it again to see them."
            "</p>"
        )
    if s.cv is None:
        body += (
            '\n<p class="note">No cross-validation stored for this build: run '
            "<code>pipeline evaluate --folds 5</code> and write the report again to see the "
            "folds.</p>"
        )
    title = f"{s.task.capitalize()} model report"
    subtitle = f"{s.label} · build {s.build_id}" if s.label != s.build_id else f"build {s.build_id}"
    return _page(title, subtitle, body, draw([s]))


def diff_html(doc: dict[str, Any], sides: list[Subject], all_: bool = False) -> bytes:
    """``pipeline diff --html``: the diff's tables, then both builds' plots overlaid (A, B)."""
    from pipeline import diff

    head, sections = diff.summary(doc, all_)
    parts = ["<ul>" + "".join(f"<li>{_e(h)}</li>" for h in head) + "</ul>"]
    for title, columns, rows in sections:
        parts += [f"<h2>{_e(title.capitalize())}</h2>", _rows_html(rows, columns)]
    a, b = sides
    if a.task == b.task:
        figures = draw(sides, ["A", "B"])
    else:
        figures = []
        parts.append('<p class="note">A and B solve different tasks: no plot overlays them.</p>')
    title = "pipeline diff"
    subtitle = f"A: {a.label} (build {a.build_id[:12]}) · B: {b.label} (build {b.build_id[:12]})"
    return _page(title, subtitle, "\n".join(parts), figures)
