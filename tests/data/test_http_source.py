"""The http(s) dataset source, through ``fetch``, against a real local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pipeline
from pipeline.data.sources import Fetched, _local_path, fetch
from pipeline.data.sources.http import download, filename
from pipeline.errors import DataError, SourceError
from pipeline.settings import Settings, load
from pipeline.store import LocalStore as Store

CSV = _local_path("builtin://house-prices").read_bytes()
CSV_SHA = hashlib.sha256(CSV).hexdigest()
GZIPPED = gzip.compress(CSV, mtime=0)
TIMEOUT = 0.5


@dataclass
class Server:
    """A running local server: its base URL and what it saw."""

    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def count(self, path_prefix: str = "/") -> int:
        return sum(1 for path, _ in self.requests if path.startswith(path_prefix))


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each response, so a short body ends at close.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest's output clean

        def _send(self, status: int, body: bytes, length: int | None = None, **headers: str):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.requests.append((self.path, dict(self.headers)))
            path = self.path.split("?", 1)[0]
            if path.endswith("/house-prices.csv") and path.startswith(("/data/", "/secret/")):
                self._send(200, CSV, Content_Type="text/csv")
            elif path == "/gzip/house-prices.csv":
                self._send(200, GZIPPED, Content_Encoding="gzip")
            elif path == "/missing.csv":
                self._send(404, b"no such file")
            elif path == "/broken.csv":
                self._send(500, b"boom")
            elif path == "/truncated.csv":
                self._send(200, CSV[: len(CSV) // 2], length=len(CSV))
            elif path == "/stall.csv":
                server.stop.wait(10)  # never answers within the client's timeout
            elif path == "/stall-body.csv":
                self.send_response(200)
                self.send_header("Content-Length", str(len(CSV)))
                self.end_headers()
                self.wfile.write(CSV[:1000])
                self.wfile.flush()
                server.stop.wait(10)  # headers and a first chunk, then nothing
            elif path == "/empty.csv":
                self._send(200, b"")
            elif path == "/other/house-prices.csv":  # another dataset under the same name
                self._send(200, CSV.replace(b"208500", b"208501", 1), Content_Type="text/csv")
            elif path == "/nolength.csv":  # HTTP/1.0: the body ends where the connection does
                self.send_response(200)
                self.end_headers()
                self.wfile.write(CSV)
            else:
                self._send(400, b"unexpected path")

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A ThreadingHTTPServer on 127.0.0.1 with an ephemeral port, in a daemon thread."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)  # requests would send 127.0.0.1 to a proxy
    state = Server(url="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval keeps shutdown() (which waits for the next poll) from costing 0.5 s.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()  # release stalled handlers
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _settings(url: str, **extra: str) -> Settings:
    env = {"PIPELINE_DATA__SOURCE": url, "PIPELINE_HTTP_TIMEOUT": str(TIMEOUT), **extra}
    return load(env, env_file=Path("/nonexistent")).settings


def _fetch(url: str, store: Store, **extra: str) -> Fetched:
    return fetch(_settings(url, **extra), store)


def _assert_nothing_left(store: Store) -> None:
    datasets = store.path("datasets")
    assert not datasets.exists() or not any(datasets.iterdir())
    tmp = store.path("tmp")
    assert not tmp.exists() or not any(tmp.iterdir())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty store in a temporary folder."""
    return Store(tmp_path / "store")


def test_download_is_cached_by_digest_with_its_source(server: Server, store: Store) -> None:
    """A download lands in datasets/<sha256>/<name> with source.json, hashed from served bytes."""
    url = f"{server.url}/data/house-prices.csv"
    fetched = _fetch(url, store)
    assert fetched.sha256 == CSV_SHA
    assert fetched.size == len(CSV)
    assert fetched.cached is False
    assert fetched.uri == url
    assert fetched.path == store.path("datasets", CSV_SHA, "house-prices.csv")
    assert fetched.path.read_bytes() == CSV
    source = json.loads(store.path("datasets", CSV_SHA, "source.json").read_text())
    assert source == {"uri": url, "sha256": CSV_SHA, "file": "house-prices.csv"}
    assert [p.name for p in store.path("tmp").iterdir()] == []


def test_download_sends_the_pipeline_user_agent(server: Server, store: Store) -> None:
    """Every request names the tool and its version in User-Agent."""
    _fetch(f"{server.url}/data/house-prices.csv", store)
    [(_, headers)] = server.requests
    assert headers["User-Agent"] == f"pipeline/{pipeline.__version__}"


def test_pinned_fetch_is_served_from_cache_without_a_request(server: Server, store: Store) -> None:
    """With PIPELINE_DATA__SHA256 matching a cached copy, fetch never contacts the server."""
    url = f"{server.url}/data/house-prices.csv"
    first = _fetch(url, store)
    assert server.count() == 1
    second = _fetch(url, store, PIPELINE_DATA__SHA256=CSV_SHA)
    assert server.count() == 1
    assert second.cached is True
    assert second.path == first.path
    assert second.sha256 == CSV_SHA


def test_a_pin_is_served_from_the_cache_only_for_the_uri_that_cached_it(
    server: Server, store: Store
) -> None:
    """A pin copied from another dataset, whose bytes the store caches: the fetch returned
    those bytes for this URI without a request, and the build recorded this URI as their
    source. The URI is fetched now, and its own bytes fail the pin (exit 4)."""
    _fetch(f"{server.url}/data/house-prices.csv", store)
    assert server.count() == 1
    with pytest.raises(DataError, match=r"PIPELINE_DATA__SHA256 expects"):
        _fetch(f"{server.url}/other/house-prices.csv", store, PIPELINE_DATA__SHA256=CSV_SHA)
    assert server.count() == 2


def test_a_body_without_a_content_length_is_said_to_be_unchecked(
    server: Server, store: Store
) -> None:
    """A server that sends no Content-Length (and no chunked encoding) ends the body by
    closing the connection, as it does when it fails: a cut-short download was cached and
    used without a word. The fetch says it could not check, and how to (a pin); a body with
    its length gets no such note."""
    fetched = _fetch(f"{server.url}/nolength.csv", store)
    assert fetched.sha256 == CSV_SHA and fetched.warning is not None
    assert "sent without a Content-Length" in fetched.warning
    assert "pin PIPELINE_DATA__SHA256" in fetched.warning
    assert _fetch(f"{server.url}/data/house-prices.csv", store).warning is None


@pytest.mark.parametrize("pinned", [False, True])
def test_a_damaged_cached_copy_is_replaced_by_the_download(
    server: Server, store: Store, pinned: bool
) -> None:
    """A cached dataset edited in the store (one value changed, same size): the next fetch
    downloaded the right bytes, then kept the damaged copy ("the same bytes, cached before")
    and returned it with the download's digest, so `train` fitted other data than its build
    records. With a pin, the cache check saw the damage, downloaded, and still returned it.
    Now the damaged copy is replaced by the download."""
    import os
    import stat

    url = f"{server.url}/data/house-prices.csv"
    first = _fetch(url, store)
    cached = first.path
    os.chmod(cached, stat.S_IRUSR | stat.S_IWUSR)  # the store keeps it read-only
    damaged = CSV.replace(b"208500", b"999999", 1)
    assert damaged != CSV and len(damaged) == len(CSV)
    cached.write_bytes(damaged)
    extra = {"PIPELINE_DATA__SHA256": CSV_SHA} if pinned else {}
    second = _fetch(url, store, **extra)
    assert server.count() == 2  # downloaded again (the pinned cache check failed)
    assert second.sha256 == CSV_SHA
    assert second.path.read_bytes() == CSV
    assert cached.read_bytes() == CSV  # repaired in the store, for every later reader
    assert [p.name for p in store.path("tmp").iterdir()] == []


def test_wrong_pin_is_a_data_error_and_caches_nothing(server: Server, store: Store) -> None:
    """A download whose sha256 differs from PIPELINE_DATA__SHA256 fails and is not cached."""
    with pytest.raises(DataError, match=r"PIPELINE_DATA__SHA256 expects 0{64}"):
        _fetch(f"{server.url}/data/house-prices.csv", store, PIPELINE_DATA__SHA256="0" * 64)
    _assert_nothing_left(store)


def test_gzip_encoded_body_is_saved_decoded_and_not_called_truncated(
    server: Server, store: Store
) -> None:
    """Content-Length counts compressed bytes: a gzip response is complete and saved decoded."""
    fetched = _fetch(f"{server.url}/gzip/house-prices.csv", store)
    assert len(GZIPPED) < len(CSV)
    assert fetched.sha256 == CSV_SHA
    assert fetched.path.read_bytes() == CSV


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.csv", "HTTP 404 Not Found"),
        ("/broken.csv", "HTTP 500 Internal Server Error"),
        ("/truncated.csv", rf"truncated \(received {len(CSV) // 2} of {len(CSV)} bytes\)"),
        ("/empty.csv", "the server returned an empty body"),
        ("/stall.csv", rf"within {TIMEOUT:g} seconds.*PIPELINE_HTTP_TIMEOUT"),
        ("/stall-body.csv", rf"within {TIMEOUT:g} seconds.*PIPELINE_HTTP_TIMEOUT"),
    ],
)
def test_failed_download_is_a_source_error_that_leaves_nothing(
    server: Server, store: Store, path: str, reason: str
) -> None:
    """Each server failure raises SourceError naming the URL and reason, and caches nothing."""
    url = f"{server.url}{path}"
    with pytest.raises(SourceError) as info:
        _fetch(url, store)
    assert re.search(reason, info.value.message), info.value.message
    assert url in info.value.message
    _assert_nothing_left(store)


@pytest.mark.parametrize("path", ["/truncated.csv", "/stall-body.csv", "/empty.csv"])
def test_download_deletes_a_partial_file(server: Server, tmp_path: Path, path: str) -> None:
    """download() itself removes what it wrote when the body fails, not only fetch's staging."""
    dest = tmp_path / "partial.csv"
    with pytest.raises(SourceError):
        download(f"{server.url}{path}", dest, _settings(f"{server.url}{path}"))
    assert not dest.exists()


def test_refused_connection_is_a_source_error(store: Store) -> None:
    """A port nobody listens on gives 'cannot reach' with advice to check the URL and network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.csv"
    with pytest.raises(SourceError, match=r"cannot reach .*connection refused.*check the URL"):
        _fetch(url, store)
    _assert_nothing_left(store)


def test_unknown_host_is_a_source_error(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name that does not resolve gives 'cannot reach' and says the host was not found."""

    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # hermetic: no real DNS lookup
    with pytest.raises(SourceError, match=r"cannot reach .*host name not found.*network"):
        _fetch("http://no-such-host.invalid/data.csv", store)


def test_credentials_never_reach_messages_or_source_json(server: Server, store: Store) -> None:
    """user:password and token query values appear in neither error messages nor source.json."""
    host = server.url.removeprefix("http://")
    ok = f"http://alice:secretpw@{host}/secret/house-prices.csv?token=abc123&v=2"
    fetched = _fetch(ok, store)
    recorded = store.path("datasets", fetched.sha256, "source.json").read_text()
    assert fetched.uri == f"http://***@{host}/secret/house-prices.csv?token=%2A%2A%2A&v=2"
    assert "v=2" in recorded
    # The credentials did reach the server (as basic auth and the query), just not our outputs.
    assert "abc123" in server.requests[0][0]
    assert server.requests[0][1]["Authorization"].startswith("Basic ")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"127.0.0.1:{sock.getsockname()[1]}"
    failing = [
        f"http://alice:secretpw@{host}/missing.csv?token=abc123",
        f"http://alice:secretpw@{refused}/data.csv?token=abc123",
        f"http://alice:secretpw@{host}/stall.csv?token=abc123",
    ]
    for url in failing:
        with pytest.raises(SourceError) as info:
            _fetch(url, store)
        text = " ".join(str(e) for e in (info.value, info.value.__cause__) if e is not None)
        for secret in ("secretpw", "abc123", "alice"):
            assert secret not in text
            assert secret not in recorded


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("https://h/x/train.csv?token=1", "train.csv"),
        ("https://h/x/train.csv#frag", "train.csv"),
        ("https://h/my%20data%3F.parquet", "mydata.parquet"),
        ("https://h", "dataset"),
        ("https://h/", "dataset"),
        ("https://h/x/", "dataset"),
        ("https://h/..", "dataset"),
        ("https://h/x/%2E%2E", "dataset"),
        ("https://h/a/..%2F..%2Fetc%2Fpasswd", "etcpasswd"),
        ("https://h/.env", "env"),
        ("https://h/x/source.json", "dataset-source.json"),
        ("https://h/%C3%A9%C3%A9", "dataset"),
    ],
)
def test_filename_is_the_safe_last_path_segment(uri: str, name: str) -> None:
    """The cache name is the URL path's last segment reduced to safe characters, else 'dataset'."""
    assert filename(uri) == name


def test_filename_keeps_the_extension_of_a_very_long_name() -> None:
    """A name too long for a file system is shortened but keeps its extension (format detection)."""
    name = filename("https://h/" + "a" * 300 + ".parquet")
    assert len(name) <= 128
    assert name.endswith(".parquet")


@given(st.text())
def test_filename_is_always_a_safe_single_name(path: str) -> None:
    """Whatever the URL path, the name is non-empty, safe, not hidden and not reserved."""
    name = filename("https://h/" + path)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", name)
    assert name != "source.json"


def test_an_invalid_port_is_named_in_the_message(store: Store) -> None:
    """`http://127.0.0.1:99999/x.csv` said "'http://127.0.0.1...' has an invalid port",
    cutting off the port it complained about; the user info stays out of it."""
    with pytest.raises(SourceError) as caught:
        _fetch("http://reader:pw-s3cr3t@127.0.0.1:99999/x.csv", store)
    message = caught.value.message
    assert "'http://127.0.0.1:99999...' has an invalid port ('99999'" in message
    assert "s3cr3t" not in message


def test_a_file_uri_without_a_path_names_no_file(store: Store) -> None:
    """`file://` was read as the working folder: "dataset . is not a file"."""
    for uri in ("file://", "file:///"):
        with pytest.raises(SourceError, match=f"'{uri}' names no file: write file:///"):
            _fetch(uri, store)
