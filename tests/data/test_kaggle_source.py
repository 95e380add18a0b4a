"""The kaggle:// dataset source, through ``fetch`` and the real client, against a fake Kaggle.

The fake implements the two calls the client makes for a single-file download, both POSTs with a
JSON body and HTTP basic (or bearer) auth, answered with a redirect to the file:
``/api/v1/competitions.CompetitionApiService/DownloadDataFile`` and
``/api/v1/datasets.DatasetApiService/DownloadDataset``. Authenticating with a user name and key
makes no call at all.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.data.sources import Fetched, _local_path, fetch
from pipeline.data.sources import kaggle as source
from pipeline.errors import SourceError, StoreError
from pipeline.settings import load
from pipeline.store import LocalStore as Store

CSV = _local_path("builtin://house-prices").read_bytes()
CSV_SHA = hashlib.sha256(CSV).hexdigest()
USER = "fake-user"
KEY = "fake-key-4f1c9a7e0d2b"
TOKEN = "KGAT_fake-token-77e1d0"
WRONG_KEY = "wrong-key-0123456789"

COMPETITION_CALL = "/api/v1/competitions.CompetitionApiService/DownloadDataFile"
DATASET_CALL = "/api/v1/datasets.DatasetApiService/DownloadDataset"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@dataclass
class FakeKaggle:
    """A running fake Kaggle: what each file request gets, and the requests it saw.

    ``routes`` maps ("competitions", name, file) or ("datasets", "owner/name", file) to a path
    under /files/ to redirect to, or to an HTTP status to answer with; anything else is a 404.
    """

    url: str = ""
    routes: dict[tuple[str, str, str], str | int] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)

    def serve(self, kind: str, slug: str, file: str, body: bytes, at: str | None = None) -> None:
        """Make the file request redirect to ``/files/<at>`` serving ``body``."""
        path = f"/files/{at or file.rsplit('/', 1)[-1] + '.zip'}"
        self.routes[(kind, slug, file)] = path
        self.files[path] = body


def _handler(fake: FakeKaggle) -> type[http.server.BaseHTTPRequestHandler]:
    accepted = {
        "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode(),
        f"Bearer {TOKEN}",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest's output clean

        def _send(self, status: int, body: bytes, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            # Kaggle's API answers errors as JSON with a code and a message.
            body = json.dumps({"code": status, "message": message}).encode()
            self._send(status, body, Content_Type="application/json")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            fake.seen.append(("POST", self.path, body))
            if self.headers.get("Authorization") not in accepted:
                self._error(401, "Unauthenticated")
                return
            if self.path == COMPETITION_CALL:
                key = ("competitions", body.get("competitionName"), body.get("fileName"))
            elif self.path == DATASET_CALL:
                slug = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
                key = ("datasets", slug, body.get("fileName"))
            else:
                self._error(400, f"unexpected call {self.path}")
                return
            route = fake.routes.get(key, 404)
            if isinstance(route, int):
                self._error(route, "Not found" if route == 404 else "Permission denied")
            else:
                self.send_response(302)
                self.send_header("Location", route)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_GET(self) -> None:
            fake.seen.append(("GET", self.path, {}))
            if self.path in fake.files:
                self._send(200, fake.files[self.path], Content_Type="application/zip")
            else:
                self._send(404, b"<html><body>No such object</body></html>")

    return Handler


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def kaggle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and KAGGLE_CONFIG_DIR, fake credentials in the env, the client in LOCAL mode.

    The client fixes some state when it is first imported (its config dir, ``--local``), so the
    class attributes are pointed here too: the real ~/.kaggle is never read, whatever ran before.
    """
    home = tmp_path / "home"
    config_dir = home / "kaggle-config"
    config_dir.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)  # requests would send 127.0.0.1 to a proxy
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    monkeypatch.setattr(KaggleApi, "args", ["--local"])
    monkeypatch.setattr(KaggleApi, "config_dir", str(config_dir))
    monkeypatch.setattr(KaggleApi, "config", str(config_dir / "kaggle.json"))
    return home


def _point_client_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kagglesdk.kaggle_env import KaggleEnv, _env_to_endpoint

    monkeypatch.setitem(_env_to_endpoint, KaggleEnv.LOCAL, url)


@pytest.fixture
def fake(kaggle_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKaggle]:
    """A fake Kaggle on 127.0.0.1 (ephemeral port, daemon thread) that the real client talks to."""
    state = FakeKaggle()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    _point_client_at(state.url, monkeypatch)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty store in a temporary folder."""
    return Store(tmp_path / "store")


def _fetch(uri: str, store: Store, **env: str) -> Fetched:
    environ = {"PIPELINE_DATA__SOURCE": uri, "KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY, **env}
    # The fixture's private config folder reaches the settings like any other variable would.
    environ["KAGGLE_CONFIG_DIR"] = os.environ.get("KAGGLE_CONFIG_DIR", "")
    environ = {k: v for k, v in environ.items() if v}  # an empty value leaves the variable out
    return fetch(load(environ, env_file=Path("/nonexistent")).settings, store)


def _fails(uri: str, store: Store, **env: str) -> str:
    with pytest.raises(SourceError) as info:
        _fetch(uri, store, **env)
    message = info.value.message
    assert uri in message
    assert KEY not in message and TOKEN not in message
    assert "\n" not in message
    return message


def _assert_nothing_left(store: Store) -> None:
    for part in ("datasets", "tmp"):
        folder = store.path(part)
        assert not folder.exists() or not any(folder.iterdir())


def _check_cached(fetched: Fetched, store: Store, uri: str, name: str) -> None:
    assert fetched.sha256 == CSV_SHA
    assert fetched.path == store.path("datasets", CSV_SHA, name)
    assert fetched.path.read_bytes() == CSV
    recorded = store.path("datasets", CSV_SHA, "source.json").read_text()
    assert json.loads(recorded) == {"uri": uri, "sha256": CSV_SHA, "file": name}
    assert KEY not in recorded
    assert sorted(p.name for p in store.path("datasets", CSV_SHA).iterdir()) == sorted(
        [name, "source.json"]
    )


def test_competition_file_is_fetched_unzipped_and_cached(
    fake: FakeKaggle, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """A competition file served zipped is extracted and cached under datasets/<sha>/<file>."""
    fake.serve("competitions", "house-prices", "train.csv", _zip({"train.csv": CSV}))
    uri = "kaggle://competitions/house-prices/train.csv"
    fetched = _fetch(uri, store)
    _check_cached(fetched, store, uri, "train.csv")
    post = fake.seen[0]
    assert post == (
        "POST",
        COMPETITION_CALL,
        {"competitionName": "house-prices", "fileName": "train.csv"},
    )
    assert fake.seen[1] == ("GET", "/files/train.csv.zip", {})
    assert capsys.readouterr() == ("", "")


def test_dataset_file_in_a_subfolder_is_fetched_and_cached(
    fake: FakeKaggle, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dataset file under a folder is requested by its path and cached under its base name."""
    archive = _zip({"data/train.csv": CSV, "data/other.csv": b"a,b\n1,2\n"})
    fake.serve("datasets", "someone/house-prices", "data/train.csv", archive)
    uri = "kaggle://datasets/someone/house-prices/data/train.csv"
    fetched = _fetch(uri, store)
    _check_cached(fetched, store, uri, "train.csv")
    expected = {"ownerSlug": "someone", "datasetSlug": "house-prices", "fileName": "data/train.csv"}
    assert fake.seen[0] == ("POST", DATASET_CALL, expected)
    # The client prints the dataset's URL; none of it may reach our stdout (the log stream).
    assert capsys.readouterr() == ("", "")


def test_raw_file_is_moved_into_the_cache(fake: FakeKaggle, store: Store) -> None:
    """A file served as is (not zipped) is recognised by its bytes and cached unchanged."""
    fake.serve("competitions", "house-prices", "train.csv", CSV, at="train.csv")
    uri = "kaggle://competitions/house-prices/train.csv"
    _check_cached(_fetch(uri, store), store, uri, "train.csv")


def test_api_token_is_sent_as_a_bearer_token(fake: FakeKaggle, store: Store) -> None:
    """KAGGLE_API_TOKEN from the settings authenticates on its own, without user name or key."""
    fake.serve("competitions", "house-prices", "train.csv", _zip({"train.csv": CSV}))
    uri = "kaggle://competitions/house-prices/train.csv"
    fetched = _fetch(uri, store, KAGGLE_USERNAME="", KAGGLE_KEY="", KAGGLE_API_TOKEN=TOKEN)
    assert fetched.sha256 == CSV_SHA


def test_kaggle_json_alone_is_enough(
    fake: FakeKaggle, store: Store, kaggle_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no credentials in the settings, kaggle.json in KAGGLE_CONFIG_DIR is used."""
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = kaggle_home / "kaggle-config" / "kaggle.json"
    config.write_text(json.dumps({"username": USER, "key": KEY}))
    config.chmod(0o600)
    fake.serve("competitions", "house-prices", "train.csv", _zip({"train.csv": CSV}))
    uri = "kaggle://competitions/house-prices/train.csv"
    assert _fetch(uri, store, KAGGLE_USERNAME="", KAGGLE_KEY="").sha256 == CSV_SHA


def test_unusable_kaggle_json_is_a_source_error(
    fake: FakeKaggle,
    store: Store,
    kaggle_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A kaggle.json without credentials makes the client exit; that becomes a quiet SourceError."""
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    (kaggle_home / "kaggle-config" / "kaggle.json").write_text("{}")
    message = _fails("kaggle://competitions/house-prices/train.csv", store, KAGGLE_KEY="")
    assert "the client gave up" in message and "KAGGLE_API_TOKEN" in message
    assert fake.seen == []
    assert capsys.readouterr() == ("", "")  # the client's help text went nowhere


@pytest.mark.parametrize(
    ("uri", "setup", "reason"),
    [
        (
            "kaggle://competitions/house-prices/train.csv",
            lambda f: f.serve("competitions", "house-prices", "train.csv", b""),
            r"HTTP 401.*credentials rejected: check KAGGLE_USERNAME/KAGGLE_KEY",
        ),
        (
            "kaggle://competitions/no-such-thing/train.csv",
            lambda f: None,
            r"no such competition or file.*HTTP 404",
        ),
        (
            "kaggle://datasets/someone/no-such-thing/train.csv",
            lambda f: None,
            r"no such dataset or file.*HTTP 404",
        ),
        (
            "kaggle://competitions/closed/train.csv",
            lambda f: f.routes.update({("competitions", "closed", "train.csv"): 403}),
            r"HTTP 403.*accept the competition's rules",
        ),
        (
            "kaggle://competitions/house-prices/train.csv",
            lambda f: f.serve(
                "competitions", "house-prices", "train.csv", b"<!DOCTYPE html><p>Sign in</p>"
            ),
            r"Kaggle returned something that is not the file",
        ),
        (
            "kaggle://competitions/house-prices/train.csv",
            lambda f: f.serve("competitions", "house-prices", "train.csv", _zip({"test.csv": CSV})),
            r"archive does not contain train.csv",
        ),
        (
            "kaggle://datasets/someone/house-prices/train.csv",
            lambda f: f.serve(
                "datasets", "someone/house-prices", "train.csv", _zip({"../train.csv": CSV})
            ),
            r"unsafe entry",
        ),
        (
            "kaggle://competitions/house-prices/train.csv",
            lambda f: f.serve(
                "competitions", "house-prices", "train.csv", b"PK\x03\x04 not really a zip"
            ),
            r"damaged zip archive",
        ),
    ],
    ids=["401", "404-competition", "404-dataset", "403", "html", "no-member", "unsafe", "bad-zip"],
)
def test_failure_is_a_source_error_that_leaves_nothing(
    fake: FakeKaggle,
    store: Store,
    capsys: pytest.CaptureFixture[str],
    uri: str,
    setup: Callable[[FakeKaggle], object],
    reason: str,
) -> None:
    """Each failure raises a one-line SourceError naming the URI and reason, and caches nothing."""
    setup(fake)
    key = WRONG_KEY if reason.startswith("HTTP 401") else KEY
    with pytest.raises(SourceError, match=reason) as info:
        _fetch(uri, store, KAGGLE_KEY=key)
    message = info.value.message
    assert uri in message and "\n" not in message
    assert WRONG_KEY not in message and KEY not in message
    _assert_nothing_left(store)
    assert capsys.readouterr() == ("", "")


def test_oversized_member_is_refused(
    fake: FakeKaggle, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member larger than the uncompressed bound is refused before anything is extracted."""
    monkeypatch.setattr(source, "MAX_MEMBER_BYTES", 1000)
    fake.serve("competitions", "house-prices", "train.csv", _zip({"train.csv": CSV}))
    message = _fails("kaggle://competitions/house-prices/train.csv", store)
    assert "byte limit" in message
    _assert_nothing_left(store)


def test_missing_credentials_fail_before_any_request(
    fake: FakeKaggle, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no credentials anywhere, fetch says which variables to set and contacts nobody."""
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    uri = "kaggle://competitions/house-prices/train.csv"
    message = _fails(uri, store, KAGGLE_USERNAME="", KAGGLE_KEY="")
    assert message == (
        f"Kaggle credentials missing for {uri}: set KAGGLE_USERNAME and KAGGLE_KEY, "
        "or KAGGLE_API_TOKEN"
    )
    assert fake.seen == []
    _assert_nothing_left(store)


def test_refused_connection_is_a_quick_source_error(
    kaggle_home: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kaggle endpoint nobody listens on gives 'cannot reach Kaggle' within seconds."""
    _point_client_at(f"http://127.0.0.1:{_free_port()}", monkeypatch)
    started = time.monotonic()
    message = _fails("kaggle://datasets/someone/house-prices/train.csv", store)
    assert time.monotonic() - started < 5
    assert "cannot reach Kaggle" in message and "check the network" in message
    _assert_nothing_left(store)


def test_store_write_failure_is_a_store_error(
    fake: FakeKaggle, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that refuses the extracted file is the store's error, and leaves no file behind."""
    fake.serve("competitions", "house-prices", "train.csv", _zip({"train.csv": CSV}))
    real_open = Path.open

    def full_disk(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode:
            raise OSError(28, "No space left on device")
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(StoreError, match=r"the disk is full.*PIPELINE_STORE"):
        _fetch("kaggle://competitions/house-prices/train.csv", store)
    _assert_nothing_left(store)


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("kaggle://competitions/house-prices/train.csv", "train.csv"),
        ("kaggle://competitions/house-prices/data/2024/train.csv", "train.csv"),
        ("kaggle://datasets/someone/house-prices/train.parquet", "train.parquet"),
        ("kaggle://datasets/someone/house-prices/a/b/c_1-2.csv", "c_1-2.csv"),
        ("KAGGLE://competitions/house-prices/train.csv", "train.csv"),
        ("kaggle://datasets/someone/house-prices/source.json", "dataset-source.json"),
    ],
)
def test_filename_is_the_last_segment_of_the_file(uri: str, name: str) -> None:
    """The cache name is the base name of <file>, whatever folders lead to it."""
    assert source.filename(uri) == name


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("kaggle://competitions/house-prices", source.COMPETITION_FORM),
        ("kaggle://competitions//train.csv", source.COMPETITION_FORM),
        ("kaggle://competitions/house-prices/../train.csv", source.COMPETITION_FORM),
        ("kaggle://competitions/house-prices/train.csv/", source.COMPETITION_FORM),
        ("kaggle://competitions/house prices/train.csv", source.COMPETITION_FORM),
        ("kaggle://competitions/house-prices/train.csv?x=1", source.COMPETITION_FORM),
        ("kaggle://datasets/house-prices/train.csv", source.DATASET_FORM),
        ("kaggle://datasets/someone/house-prices/./train.csv", source.DATASET_FORM),
        ("kaggle://datasets/someone/../train.csv", source.DATASET_FORM),
        ("kaggle://kernels/someone/notebook/out.csv", "or kaggle://datasets/"),
        ("kaggle://", "or kaggle://datasets/"),
    ],
)
def test_malformed_uri_names_the_expected_form(uri: str, expected: str) -> None:
    """A malformed kaggle:// URI raises SourceError quoting the form it should have."""
    with pytest.raises(SourceError) as info:
        source.filename(uri)
    assert expected in info.value.message


def test_malformed_uri_message_masks_user_info() -> None:
    """A key smuggled into the URI as user info is masked in the error message."""
    with pytest.raises(SourceError) as info:
        source.filename(f"kaggle://{USER}:{KEY}@competitions/house-prices/train.csv")
    assert KEY not in info.value.message and USER not in info.value.message
