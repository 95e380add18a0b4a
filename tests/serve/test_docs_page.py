"""``/docs`` works offline: one HTML page with no script and no external reference."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from pipeline.serve.app import ServeState, create_app
from pipeline.serve.server import load_release
from pipeline.settings import ServeSettings, load


def test_docs_page_is_self_contained_and_describes_the_model(house: dict[str, Any]) -> None:
    """The page names the routes and input columns, links /openapi.json, and loads nothing."""
    loaded = load_release(load(house["env"]).settings, None, house["package"])
    with TestClient(create_app(ServeState(ServeSettings(), loaded=loaded))) as client:
        response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)  # nothing off the server
    assert 'href="/openapi.json"' in page
    assert "/v1/predict" in page and "<code>LotArea</code>" in page
    assert page.count("<tr><td><code>") >= 80  # one row per route and per input column
    # The description's Markdown backquotes are code, not literal backquotes, said once.
    assert "Predictions of <code>SalePrice</code>" in page and "`" not in page
    assert page.count("SalePrice</code>") == 1
    # The example is a request this server takes: every column, at the URL asked.
    import html
    import json

    curl = html.unescape(re.search(r"<pre>(.*?)</pre>", page, re.S)[1])  # type: ignore[index]
    assert curl.startswith("curl -s http://testserver/v1/predict ")
    body = json.loads(curl.split("-d '", 1)[1].rstrip("'"))
    with TestClient(create_app(ServeState(ServeSettings(), loaded=loaded))) as client:
        answered = client.post("/v1/predict", json=body)
    assert answered.status_code == 200, answered.text
