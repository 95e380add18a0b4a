"""``S3Store`` against the suite's real S3-compatible server (SeaweedFS on loopback).

Each test works under a fresh prefix of the test bucket, so tests share one server safely.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import one_error_line
from tests.store.test_store import check_swap

from pipeline.errors import ConfigError, StoreError, StoreUnavailable
from pipeline.store import Store
from pipeline.store.s3 import PENDING, S3Store

pytestmark = pytest.mark.s3


@pytest.fixture
def s3(s3_env: Mapping[str, str]) -> S3Store:
    store = Store.from_uri(s3_env["PIPELINE_STORE"], timeout=30, retries=1, allow_http=True)
    assert isinstance(store, S3Store)
    return store


def test_from_uri_opens_an_s3_store_and_refuses_a_malformed_uri() -> None:
    """``s3://bucket/prefix`` opens an S3Store without a request; a bad bucket name is exit 9."""
    store = Store.from_uri("s3://some-bucket/a/b")
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("some-bucket", "a/b")
    with pytest.raises(ConfigError, match="no S3 URI"):
        Store.from_uri("s3://Bad_Bucket/x")
    # A '..' in the prefix was refused with the bucket-name rule, which it did not break.
    for odd in ("s3://some-bucket/ml/../copied", "s3://some-bucket/a//b", "s3://some-bucket/./x"):
        with pytest.raises(ConfigError, match=r"empty, '\.' or '\.\.' part in its prefix"):
            Store.from_uri(odd)


def test_objects_are_written_read_listed_and_created_exclusively(s3: S3Store) -> None:
    """The Store contract on the real server: write/read, exclusive create, list, walk, delete."""
    s3.write("refs/latest", b"abc\n")
    assert s3.read_bytes("refs/latest") == b"abc\n"
    assert s3.read_ref("latest") == "abc"
    assert s3.create("releases/m/v1.json", b"{}", immutable=True)
    assert not s3.create("releases/m/v1.json", b"{}")
    assert s3.exists("releases/m") and s3.exists("releases/m/v1.json")
    assert not s3.exists("releases/n")
    assert s3.list("releases") == ["m"] and s3.list("releases/m") == ["v1.json"]
    assert s3.walk("") == ["refs/latest", "releases/m/v1.json"]
    s3.delete("releases/m/v1.json")
    s3.delete("releases/m/v1.json")  # absent: nothing to do
    with pytest.raises(KeyError):
        s3.read_bytes("releases/m/v1.json")
    assert s3.list("nothing") == []


def test_swap_is_if_match_on_the_etag_read_with_one_winner(s3: S3Store) -> None:
    """The store contract's compare-and-swap, on the real server's If-Match."""
    check_swap(s3)


def test_a_folder_is_invisible_until_published_and_a_crashed_publish_is_completed(
    s3: S3Store, tmp_path: Path
) -> None:
    """Files uploaded by a publish killed before its marker stay hidden from list, walk and
    exists; the next publish of the same folder makes it appear whole."""
    s3.write(f"builds/abc/{PENDING}", b"")  # a publish killed after its first upload
    s3.write("builds/abc/weights.pt", b"w")
    assert s3.list("builds") == [] and s3.walk("builds") == [] and not s3.exists("builds/abc")
    assert s3.list("builds/abc") == []
    staged = tmp_path / "staged"
    (staged / "sub").mkdir(parents=True)
    (staged / "weights.pt").write_bytes(b"w")
    (staged / "sub" / "manifest.json").write_bytes(b"{}")
    assert s3.publish(staged, "builds/abc")
    assert s3.list("builds") == ["abc"] and s3.exists("builds/abc")
    assert s3.walk("builds") == ["builds/abc/sub/manifest.json", "builds/abc/weights.pt"]
    assert not s3.publish(staged, "builds/abc")  # content-addressed: already there


def test_local_file_is_a_read_only_copy_cached_by_etag(s3: S3Store) -> None:
    """``local_file`` downloads once per object version, and a new version is a new copy."""
    s3.write("packages/m/p.tar.gz", b"one")
    first = s3.local_file("packages/m/p.tar.gz")
    assert first.read_bytes() == b"one" and first.name == "p.tar.gz"
    assert s3.local_file("packages/m/p.tar.gz") == first
    first.chmod(0o644)  # a copy cut short (a full disk, a killed copy): fetched again
    first.write_bytes(b"on")
    assert s3.local_file("packages/m/p.tar.gz").read_bytes() == b"one"
    s3.write("packages/m/p.tar.gz", b"two")
    assert s3.local_file("packages/m/p.tar.gz").read_bytes() == b"two"
    with pytest.raises(KeyError):
        s3.local_file("packages/m/none.tar.gz")


def test_a_retried_create_finds_its_own_nonce_and_another_writers_object_is_taken(
    s3: S3Store,
) -> None:
    """A lost response: the first attempt's object is there when the retry gets 412. The
    writer that made it (same nonce) has succeeded; any other writer has lost the key."""
    assert s3._create("history/00000001.json", b"{}", "nonce-a")  # the first attempt landed
    assert s3._create("history/00000001.json", b"{}", "nonce-a")  # its retry: ours, success
    assert not s3._create("history/00000001.json", b"{}", "nonce-b")  # another writer's


def test_a_lock_left_by_a_killed_holder_is_taken_over_after_one_lease(s3: S3Store) -> None:
    """A lease whose ETag stops changing (its holder died) is taken over once a lease has
    passed; a live holder's lease (renewed) is never taken."""
    s3.lease_s = 1.0
    s3.write("releases/m/.lock", b'{"holder": "dead"}')  # left behind by a SIGKILL
    t0 = time.monotonic()
    with s3.lock("releases/m/.lock"):
        waited = time.monotonic() - t0
        assert 1.0 <= waited < 5
        got = threading.Event()

        def contend() -> None:
            with s3.lock("releases/m/.lock"):
                got.set()

        other = threading.Thread(target=contend)
        other.start()
        assert not got.wait(2.5)  # renewed every 0.2 s: never stale while held
    other.join(timeout=10)
    assert got.is_set()
    assert not s3.exists("releases/m/.lock")


class _AcceptEveryPut(http.server.BaseHTTPRequestHandler):
    """Answers 200 to every PUT, ignoring If-None-Match (as some S3 look-alikes do)."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("ETag", '"x"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>fake-bucket</Name>'
            b"<KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>"
        )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def fake_server() -> Iterator[str]:
    """The one fake here: a real HTTP server in a thread that accepts every PUT. SeaweedFS
    honours If-None-Match, so a server that ignores it can only be imitated."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AcceptEveryPut)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_ignores_if_none_match_is_refused(
    fake_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's second exclusive create succeeds on such a server: refused, exit 9."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret-here",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": fake_server,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    store = Store.from_uri("s3://fake-bucket/x", timeout=5, retries=0, allow_http=True)
    with pytest.raises(StoreError, match="ignores If-None-Match") as caught:
        store.create("releases/m/v1.json", b"{}")
    assert caught.value.exit_code == 9


# --- faults through the CLI: one line, the documented exit code, no traceback --------------


def test_wrong_credentials_are_exit_9_without_the_secret(
    cli: Any, s3_env: Mapping[str, str]
) -> None:
    """A wrong secret key is refused by the server: exit 9, and the key is in no output."""
    wrong = "wrong-secret-4e1f9a0c"
    result = cli("release", "list", "--name", "m", env={**s3_env, "AWS_SECRET_ACCESS_KEY": wrong})
    assert result.exit_code == 9, result.output
    line = one_error_line(result)
    assert "refused the credentials" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert "AWS_REGION" in line  # a wrong region was told as wrong keys alone
    assert wrong not in result.stdout + result.stderr


def test_no_credentials_at_all_are_named_as_such(
    cli: Any, s3_env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no AWS_* key pair set, the server's refusal read "the S3 server answered an error":
    the line now says that no key was set and which variables to set."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = {
        k: v for k, v in s3_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    result = cli(
        "release",
        "list",
        "--name",
        "m",
        env={**env, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
    )
    assert result.exit_code == 9, result.output
    line = one_error_line(result)
    assert "no AWS_ACCESS_KEY_ID is set (environment or .env)" in line, line
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line


def test_a_missing_bucket_is_exit_9_and_is_not_created(
    cli: Any, s3_env: Mapping[str, str], s3_server: Any
) -> None:
    """A bucket that does not exist is named (the server would create it on a first put)."""
    env = {**s3_env, "PIPELINE_STORE": "s3://no-such-bucket-here/x"}
    for args in (("release", "list", "--name", "m"), ("train",)):
        result = cli(*args, env=env)
        assert result.exit_code == 9, result.output
        assert "bucket 'no-such-bucket-here' does not exist" in one_error_line(result)


def test_a_server_that_is_down_is_exit_10(cli: Any, s3_env: Mapping[str, str]) -> None:
    """Nothing listens at the endpoint (a stopped server): exit 10, bounded retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    env = {**s3_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    result = cli("release", "list", "--name", "m", env={**env, "PIPELINE_STORE_RETRIES": "1"})
    assert result.exit_code == 10, result.output
    assert "no S3 server answers" in one_error_line(result)
    assert "(after 2 tries:" in one_error_line(result)
    once = cli("release", "list", "--name", "m", env={**env, "PIPELINE_STORE_RETRIES": "0"})
    assert once.exit_code == 10 and "(after 1 try:" in one_error_line(once), once.output


def test_a_server_that_hangs_is_exit_10_within_the_timeout(
    cli: Any, s3_env: Mapping[str, str]
) -> None:
    """A listening socket that never answers: exit 10 after PIPELINE_STORE_TIMEOUT per try."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        env = {
            **s3_env,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s.getsockname()[1]}",
            "PIPELINE_STORE_TIMEOUT": "0.5",
            "PIPELINE_STORE_RETRIES": "1",
        }
        t0 = time.monotonic()
        result = cli("release", "list", "--name", "m", env=env)
        elapsed = time.monotonic() - t0
    assert result.exit_code == 10, result.output
    assert "did not answer within 0.5 s" in one_error_line(result)
    assert elapsed < 10


def test_the_error_of_a_down_server_is_raised_as_store_unavailable(s3_env: Any) -> None:
    """StoreUnavailable is a StoreError (callers that catch store failures still do)."""
    assert issubclass(StoreUnavailable, StoreError) and StoreUnavailable.exit_code == 10


def test_the_aws_variables_work_from_a_dotenv_file(
    cli: Any, s3_env: Mapping[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key pair, endpoint and region in .env only: `config show` listed them from .env, but the
    S3 client read the process's environment alone (a traceback, or 'answered an error')."""
    aws = {k: v for k, v in s3_env.items() if k.startswith("AWS_")}
    for name in aws:
        monkeypatch.delenv(name)
    dotenv = tmp_path / "s3.env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in aws.items()))
    env = {"PIPELINE_STORE": s3_env["PIPELINE_STORE"], "PIPELINE_ENV_FILE": str(dotenv)}
    result = cli("release", "list", "--name", "m", env=env)
    # The bucket was listed (an empty store has no model 'm'): the credentials were read.
    assert result.exit_code == 8, result.output
    assert "no model 'm' in store s3://" in one_error_line(result)
    assert aws["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


def test_dropped_connections_are_exit_10_and_said(cli: Any, s3_env: Mapping[str, str]) -> None:
    """A server that takes each connection and closes it: the client retries, then exit 10
    (it was exit 9 'the S3 server answered an error', which no server did)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def close_each() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                listener.accept()[0].close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    try:
        env = {**s3_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
               "PIPELINE_STORE_RETRIES": "1"}  # fmt: skip
        result = cli("release", "list", "--name", "m", env=env)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert result.exit_code == 10, result.output
    # The client reports a closed connection as dropped or, under load, as a failed connect.
    line = one_error_line(result)
    assert "kept failing (connections dropped" in line or "no S3 server answers" in line, line
