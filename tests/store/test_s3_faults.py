"""Faults of a real S3 server's answers, injected by a proxy in front of it (tests/s3_proxy.py).

503 SlowDown is retried within PIPELINE_STORE_RETRIES and is a one-line StoreUnavailable (exit
10) beyond; a response lost after the server applied an exclusive create (a release record, a
history event) still gives exactly one release; the store verifies afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from tests import s3_proxy
from tests.conftest import event, one_error_line
from tests.test_crash_safety import assert_releases_consistent
from tests.test_releases import NAME, make_package

from pipeline import releases
from pipeline.errors import StoreError
from pipeline.store import Store

pytestmark = pytest.mark.s3


@pytest.fixture
def proxy(s3_server: Any) -> Iterator[s3_proxy.FaultProxy]:
    with s3_proxy.running(s3_server.endpoint) as running:
        yield running


@pytest.fixture
def via_proxy(s3_env: Mapping[str, str], proxy: s3_proxy.FaultProxy) -> dict[str, str]:
    """The test's store reached through the proxy, with 2 retries and a short timeout."""
    return {
        **s3_env,
        "AWS_ENDPOINT_URL": proxy.url,
        "PIPELINE_STORE_RETRIES": "2",
        "PIPELINE_STORE_TIMEOUT": "5",
    }


def _direct(s3_env: Mapping[str, str]) -> Store:
    """The same store reached directly (the test's process has the server's AWS_* set)."""
    return Store.from_uri(s3_env["PIPELINE_STORE"], allow_http=True)


@pytest.mark.parametrize("refusals", [1, 2])
def test_503_slowdown_within_the_retries_is_retried_and_succeeds(
    cli: Any, via_proxy: dict[str, str], proxy: s3_proxy.FaultProxy, s3_env: Any, refusals: int
) -> None:
    """With 2 retries, 1 or 2 SlowDown answers in a row are absorbed: the create succeeds."""
    pid = make_package(_direct(s3_env))
    proxy.slow_down(refusals)
    result = cli("release", "create", pid, env=via_proxy)
    assert result.exit_code == 0, result.output
    assert event(result.stdout, "release.created")["number"] == 1
    assert proxy.slow_downs == 0 and len(proxy.seen) > refusals  # refused, then forwarded


def test_503_slowdown_beyond_the_retries_is_one_line_exit_10(
    cli: Any, via_proxy: dict[str, str], proxy: s3_proxy.FaultProxy, s3_env: Any
) -> None:
    """Three SlowDown answers to a client allowed 2 retries: exit 10, one line naming the
    code and the setting to raise; the store still verifies and a later create works."""
    store = _direct(s3_env)
    pid = make_package(store)
    proxy.slow_down(3)
    result = cli("release", "create", pid, env=via_proxy)
    assert result.exit_code == 10, result.output
    line = one_error_line(result)
    assert "SlowDown" in line and "after 3 tries" in line and "PIPELINE_STORE_RETRIES" in line
    assert_releases_consistent(store)
    assert cli("release", "create", pid, env=via_proxy).exit_code == 0
    assert releases.current_number(store, NAME) == 1


@pytest.mark.parametrize("lost", [r"/v1\.json", r"/history/00000001\.json", r"/\.lock"])
def test_a_lost_response_to_an_exclusive_create_still_gives_exactly_one_release(
    cli: Any, via_proxy: dict[str, str], proxy: s3_proxy.FaultProxy, s3_env: Any, lost: str
) -> None:
    """The server stores the release record (or its history event, or the lock) but the
    client never hears back: its retry meets its own object (the writer nonce) and goes on,
    so one `release create` makes exactly v1 with one event, and the store verifies."""
    store = _direct(s3_env)
    pid = make_package(store)
    proxy.lose(lost)
    result = cli("release", "create", pid, env=via_proxy)
    assert proxy.lost, proxy.seen  # the response was really dropped
    assert result.exit_code == 0, result.output
    assert [r["number"] for r in releases.list_releases(store, NAME)] == [1]
    assert [(e["seq"], e["release"]) for e in releases.history(store, NAME)] == [(1, 1)]
    assert_releases_consistent(store)


def test_a_multipart_upload_cut_by_a_refused_part_is_aborted_and_the_folder_stays_hidden(
    via_proxy: dict[str, str], proxy: s3_proxy.FaultProxy, tmp_path: Any, monkeypatch: Any
) -> None:
    """A 12 MiB file is uploaded in 5 MiB parts; the server refuses the second part: publish
    fails with a one-line StoreError, the client aborts the upload (DELETE ?uploadId=...,
    seen by the proxy, answered by the server), and the folder is in no listing."""
    for name, value in via_proxy.items():
        monkeypatch.setenv(name, value)
    store = Store.from_uri(via_proxy["PIPELINE_STORE"], timeout=5, retries=1, allow_http=True)
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "weights.bin").write_bytes(bytes(12 << 20))
    proxy.deny(r"partNumber=2\b")
    with pytest.raises(StoreError, match=r"AccessDenied|refused") as caught:
        store.publish(staged, "builds/big")
    assert "\n" not in str(caught.value)
    parts = [(m, p) for m, p in proxy.seen if "uploadId=" in p]
    assert any(m == "PUT" and "partNumber=1" in p for m, p in parts), proxy.seen
    aborted = [a for a in proxy.answers if a[0] == "DELETE" and "uploadId=" in a[1]]
    assert [status for *_, status in aborted] == [204], parts  # AbortMultipartUpload, done
    assert store.list("builds") == [] and not store.exists("builds/big")
