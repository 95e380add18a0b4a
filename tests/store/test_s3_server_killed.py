"""The S3 server itself killed (SIGKILL) in the middle of an upload, then started again.

A server of the test's own (the suite's shared one must live on) is reached through the fault
proxy, which kills it at the first upload of the stage's artifact and then acts dead: the cut
request is reset and every later connection is refused. The stage fails with exit 10 and one
line; after the server restarts on its data, the store verifies and the same command succeeds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import s3_proxy
from tests import s3_server as local
from tests.conftest import event
from tests.conftest import run_fresh as run_cli
from tests.store.test_s3_chain import SMALL, _open
from tests.test_crash_safety import assert_consistent

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[local.S3Server]:
    started = local.start(timeout=60, parent=tmp_path)
    try:
        yield started
    finally:
        started.stop()


def _killed_mid_upload(server: local.S3Server, env: dict[str, str], pattern: str,
                       *args: str) -> Any:  # fmt: skip
    """Run ``pipeline *args`` through a proxy that kills the server at ``pattern``'s upload."""
    with s3_proxy.running(server.endpoint) as proxy:
        proxy.die_on(pattern, server.kill)
        via = {**env, "AWS_ENDPOINT_URL": proxy.url, "PIPELINE_STORE_RETRIES": "1",
               "PIPELINE_STORE_TIMEOUT": "5"}  # fmt: skip
        done = run_cli(*args, env=via)
        assert proxy.died, f"no upload matched {pattern}: {proxy.seen}"
    assert not server.alive()
    return done


@pytest.mark.parametrize(
    ("stage", "pattern"), [("train", r"/builds/[0-9a-f]{64}/weights"), ("package", r"\.tar\.gz")]
)
def test_a_server_killed_mid_upload_fails_the_stage_with_exit_10_and_loses_nothing(
    server: local.S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str,
    pattern: str,
) -> None:  # fmt: skip
    env = {**server.env("killed"), **SMALL, "PIPELINE_LOG_FORMAT": "json",
           "PIPELINE_ENV_FILE": os.devnull}  # fmt: skip
    if stage == "package":
        trained = run_cli("train", env=env)
        assert trained.returncode == 0, trained.stderr[-3000:]
    done = _killed_mid_upload(server, env, pattern, stage)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 10, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in done.stderr
    assert "no S3 server answers" in lines[0] or "did not answer" in lines[0], lines[0]
    assert server.secret_key not in done.stdout + done.stderr

    server.restart()
    store = _open(env, monkeypatch)
    counts = assert_consistent(store)  # the cut folder or archive is in no listing
    assert counts["builds"] == (1 if stage == "package" else 0)
    assert counts["packages"] == 0
    again = run_cli(stage, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert event(again.stdout, f"{stage}.summary")
    counts = assert_consistent(store)
    assert counts["builds"] == 1 and counts["packages"] == (1 if stage == "package" else 0)
