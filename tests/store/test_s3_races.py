"""Racing ``pipeline release rollback`` processes (and rollbacks racing creates) on s3://.

Each process runs the real CLI commands in a loop after a common start time, so that their
requests interleave on the real server. Afterwards the history must explain everything: its
events chain (each one's ``previous`` is the release the event before it made current), every
rollback a process reported is in it exactly once, creates are numbered 1, 2, 3... and both
``current`` (the file) and ``@current`` (the last event) name the release the last event made
current. The lock (a lease renewed by If-Match) orders the writers; the history's sequence
numbers are claimed by exclusive create, so even a writer that lost its lease could not
overwrite an event.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from tests.store.test_s3_chain import _open, _process_env
from tests.test_releases import NAME, make_package

from pipeline import releases
from pipeline.settings import RunSettings
from pipeline.store import Store

pytestmark = [pytest.mark.s3, pytest.mark.slow]

# One process: the CLI's commands, run in-process one after the other from a common start.
SCRIPT = """
import json, sys, time
from typer.main import get_command
from pipeline.cli import app

cmd = get_command(app)
time.sleep(max(0.0, {start_at} - time.time()))
for args in {plan!r}:
    try:
        code = cmd.main(args, prog_name="pipeline", standalone_mode=False) or 0
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({{"event": "exit", "args": args, "code": code}}), flush=True)
"""


def _race(s3: dict[str, str], plans: list[list[list[str]]]) -> list[dict[str, Any]]:
    """Run one process per plan at once; every JSON event they printed."""
    start_at = time.time() + 3.0  # every interpreter is up before any starts
    env = {**_process_env(s3), "PIPELINE_LOG_FORMAT": "json", "PIPELINE_MODEL__NAME": NAME}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT.format(start_at=start_at, plan=plan)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for plan in plans
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err[-2000:] for _, err in outs]
    found = [json.loads(line) for out, _ in outs for line in out.splitlines() if line[:1] == "{"]
    codes = [e["code"] for e in found if e["event"] == "exit"]
    assert set(codes) <= {0, 8}, codes  # done, or nothing older to roll back to
    return found


def assert_history_explains(store: Store, events_seen: list[dict[str, Any]]) -> list[int]:
    """The history accounts for every create and rollback the processes reported, in one
    chain, and ``current`` is where its last event leads; returns the created numbers."""
    history = releases.history(store, NAME)
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    for before, after in itertools.pairwise(history):
        assert after["previous"] == before["release"], (before, after)  # one unbroken chain
    created = [e["release"] for e in history if e["action"] == "create"]
    assert created == list(range(1, len(created) + 1))
    reported = [e for e in events_seen if e.get("event") == "release.rolled_back"]
    assert sorted((e["previous"], e["current"]) for e in reported) == sorted(
        (e["previous"], e["release"]) for e in history if e["action"] == "rollback"
    )
    made = [e["number"] for e in events_seen if e.get("event") == "release.created"]
    assert set(made) <= set(created)
    last = history[-1]["release"]
    assert releases.current_number(store, NAME) == last
    assert store.read_json(f"releases/{NAME}/current") == {"release": last, "seq": len(history)}
    assert not store.exists(f"releases/{NAME}/.lock")
    return created


def _seed(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, count: int) -> tuple[Store, str]:
    store = _open(s3, monkeypatch)
    pid = make_package(store)
    for _ in range(count):
        releases.create(store, pid, RunSettings())
    return store, pid


def test_racing_rollbacks_leave_current_where_the_history_leads(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six processes rolling back v8 (by default and with --to) at once: every rollback is one
    event of an unbroken chain, and no process moves ``current`` from a stale reading."""
    s3 = s3_server.env(f"rollback-{uuid.uuid4().hex[:8]}")
    store, _ = _seed(s3, monkeypatch, 8)
    rollback = ["release", "rollback", "--name", NAME]
    plans = [[rollback, rollback, [*rollback, "--to", f"v{8 - p}"], rollback] for p in range(6)]
    seen = _race(s3, plans)
    rolled = [e for e in seen if e.get("event") == "release.rolled_back"]
    assert len(rolled) >= 12  # most of them raced and succeeded
    assert assert_history_explains(store, seen) == list(range(1, 9))


def test_rollbacks_racing_creates_keep_numbers_consecutive_and_current_explained(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three processes creating releases while three roll back: creates get v4..v12 with no
    gap, each rollback is in the history once, and ``current`` is the last event's."""
    s3 = s3_server.env(f"mixed-{uuid.uuid4().hex[:8]}")
    store, pid = _seed(s3, monkeypatch, 3)
    create = ["release", "create", pid]
    rollback = ["release", "rollback", "--name", NAME]
    plans = [[create] * 3] * 3 + [[rollback] * 3] * 3
    seen = _race(s3, plans)
    made = sorted(e["number"] for e in seen if e.get("event") == "release.created")
    assert made == list(range(4, 13))
    assert assert_history_explains(store, seen) == list(range(1, 13))
