"""``/docs``: the API described in one self-contained HTML page, readable offline.

Swagger UI loads its JavaScript and CSS from a CDN, so a server without internet access (or a
browser behind a strict proxy) showed a blank page. This page has no script and no external
reference (a Content-Security-Policy meta enforces it): the routes with their summaries, the
model's input columns, an example request, and a link to the OpenAPI document for tools.
"""

from __future__ import annotations

import html
import json
from typing import Any

_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .6rem;"
    "text-align:left}code,pre{background:#f4f4f4;padding:.1rem .3rem}pre{padding:.6rem}"
)


def page(doc: dict[str, Any], info: dict[str, Any], base: str = "http://localhost:8080/") -> str:
    """The HTML page for an OpenAPI document and the served model's ``/v1/model`` document."""
    e = html.escape
    routes = "".join(
        f"<tr><td><code>{e(method.upper())}</code></td><td><code>{e(path)}</code></td>"
        f"<td>{e(op.get('summary', ''))}</td></tr>"
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
    )
    columns = info["input_schema"]["columns"]
    rows = "".join(
        f"<tr><td><code>{e(c['name'])}</code></td><td>{e(c['kind'])}</td></tr>" for c in columns
    )
    # Every column, each null (missing): a record lacking a column is refused.
    example = {"records": [{c["name"]: None for c in columns}]}
    curl = (
        f"curl -s {base.rstrip('/')}/v1/predict -H 'Content-Type: application/json' "
        f"-d '{json.dumps(example)}'"
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{e(doc.get('info', {}).get('title', 'pipeline serve'))}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{e(info['name'])} {e(info['version'])}</h1>"
        f"<p>{_code(doc.get('info', {}).get('description', ''))}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3).</p>'
        f"<h2>Routes</h2><table><tr><th>method</th><th>path</th><th>what</th></tr>{routes}"
        f"</table><h2>Input columns ({len(columns)})</h2>"
        "<p>Each record is an object holding every one of these columns; null is a missing "
        "value. "
        "A CSV body (<code>text/csv</code>) takes the same columns as its header.</p>"
        f"<table><tr><th>column</th><th>kind</th></tr>{rows}</table>"
        f"<h2>Example</h2><pre>{e(curl)}</pre></body></html>"
    )


def _code(text: str) -> str:
    """``text`` escaped, its `backquoted` parts (the OpenAPI description's Markdown) as code."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backquote: left as written
        return html.escape(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
