"""`pipeline data fetch`: resolves the dataset and reports its digest, caching remote data."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import HOUSE_PRICES_SHA, event

from pipeline.data.sources import _local_path


@pytest.fixture
def server() -> Iterator[str]:
    """A local HTTP server serving the house-prices CSV at /train.csv."""
    body = _local_path("builtin://house-prices").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_builtin_reports_the_documented_digest(cli: Any, tmp_path: Path) -> None:
    """The default source is the built-in house-prices CSV; its digest goes to --id-file."""
    result = cli("data", "fetch", "--id-file", str(tmp_path / "sha"))
    assert result.exit_code == 0, result.output
    assert event(result.stdout, "data.summary")["sha256"] == HOUSE_PRICES_SHA
    assert (tmp_path / "sha").read_text().strip() == HOUSE_PRICES_SHA


def test_fetch_http_caches_under_the_digest_and_train_uses_it(
    cli: Any, store: Path, server: str
) -> None:
    """An http source is cached under its sha256; a pinned digest then trains from the cache."""
    url = f"{server}/train.csv"
    result = cli("data", "fetch", env={"PIPELINE_DATA__SOURCE": url})
    assert result.exit_code == 0, result.output
    summary = event(result.stdout, "data.summary")
    assert summary["sha256"] == HOUSE_PRICES_SHA and summary["cached"] is False
    assert (store / "datasets" / HOUSE_PRICES_SHA / "train.csv").is_file()
    # With the digest pinned, the cached copy is used without downloading again.
    env = {
        "PIPELINE_DATA__SOURCE": url,
        "PIPELINE_DATA__SHA256": HOUSE_PRICES_SHA,
        "PIPELINE_TRAIN__MAX_EPOCHS": "2",
    }
    result = cli("data", "fetch", env=env)
    assert event(result.stdout, "data.summary")["cached"] is True
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output
    assert event(result.stdout, "data.fetched")["cached"] is True


def test_a_local_file_off_its_pin_is_that_error_even_when_it_cannot_be_read(
    cli: Any, tmp_path: Path
) -> None:
    """`train` hashes a local file while reading it; a file that is not a table and does not
    match PIPELINE_DATA__SHA256 is reported as changed data (the cause), not as a bad table."""
    data = tmp_path / "data.csv"
    data.write_bytes(b"\x00\x01 not a table \xff" * 100)
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__SHA256": "0" * 64}
    result = cli("train", env=env)
    assert result.exit_code != 0
    assert "PIPELINE_DATA__SHA256 expects " + "0" * 64 in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # Without the pin, the same file is refused as a table.
    result = cli("train", env={"PIPELINE_DATA__SOURCE": str(data)})
    assert result.exit_code != 0 and "SHA256" not in result.stderr, result.stderr
