"""SIGKILL at random moments of train -> package -> release never leaves a partial artifact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import artifacts, releases
from pipeline.package import open_package
from pipeline.store import LocalStore, Store

# A zygote imports everything once, then forks one child per attempt that runs the whole chain
# train -> package -> release. Each child is a real process killed with a real SIGKILL; forking
# only spares the test twenty 2-second interpreter start-ups, so kills land inside the stages.
# It also imports what the stages import lazily (torch's optimizer pulls in torch._dynamo and
# sympy, about 1 s a child): imports start no thread, so forking stays safe, and a kill in the
# train window lands in training and writing rather than in an import.
ZYGOTE = """
import json, os, sys
from typer.main import get_command
import pandas, pyarrow.csv, pyarrow.pandas_compat, torch, torch._dynamo
import pipeline.log, pipeline.train, pipeline.evaluate, pipeline.package, pipeline.releases
from pipeline.cli import app

cmd = get_command(app)
print(json.dumps({"event": "zygote.ready"}), flush=True)
for line in sys.stdin:
    attempt, work = line.split()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.update(PIPELINE_SEED=attempt, PIPELINE_MODEL__VERSION="0.1." + attempt)
            code = cmd.main(["train"], prog_name="pipeline", standalone_mode=False) or 0
            if not code:
                args = ["package", "--id-file", work + "/package.id"]
                code = cmd.main(args, prog_name="pipeline", standalone_mode=False) or 0
            if not code:
                package_id = open(work + "/package.id").read().strip()
                args = ["release", "create", package_id]
                code = cmd.main(args, prog_name="pipeline", standalone_mode=False) or 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    print(json.dumps({"event": "forked", "pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"event": "exited", "pid": pid, "status": status}), flush=True)
"""

KILLS = 20


class Zygote:
    """The forking driver, and every event its children log, with the moment each arrived."""

    def __init__(self, store: str, work: Path, extra: Mapping[str, str] | None = None) -> None:
        """A driver whose children use the store ``store`` (a path or a URI) and ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
        env.update(
            PIPELINE_STORE=store,
            PIPELINE_LOG_FORMAT="json",
            PIPELINE_ENV_FILE=os.devnull,
            PIPELINE_TRAIN__MAX_EPOCHS="3",
            # A small network: the kills test the stages' writes, which do not depend on its
            # size, and each of the 22 chains trains (4 members of 256 and 128: 1 s a chain).
            PIPELINE_MODEL__HIDDEN="[64]",
            PIPELINE_MODEL__MEMBERS="2",
        )
        env.update(extra or {})
        self.work = work
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_for("zygote.ready", 0)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.seen.append((time.perf_counter(), json.loads(line)))

    def wait_for(self, name: str, after: int, timeout: float = 120) -> tuple[float, dict[str, Any]]:
        """The first event called ``name`` at or after position ``after`` of the stream."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for at, event in self.seen[after:]:
                if event.get("event") == name:
                    return at, event
            time.sleep(0.002)
        raise AssertionError(f"no {name} event within {timeout} s: {self.seen[-5:]}")

    def start(self, attempt: int) -> tuple[int, int]:
        """Fork a chain with inputs of its own (a new build, a new version): (pid, position)."""
        assert self.proc.stdin is not None
        folder = self.work / f"run-{attempt}"
        folder.mkdir(parents=True)
        position = len(self.seen)
        self.proc.stdin.write(f"{attempt} {folder}\n")
        self.proc.stdin.flush()
        return int(self.wait_for("forked", position)[1]["pid"]), position

    def status(self, pid: int, position: int) -> int:
        """The child's wait status once the zygote reaped it."""
        for _ in range(2):
            _, event = self.wait_for("exited", position)
            if event["pid"] == pid:
                return int(event["status"])
        raise AssertionError(f"child {pid} was not reaped")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def assert_consistent(store: Store) -> dict[str, int]:
    """Every build, package and release the store shows is whole and verifies; returns counts.

    Work in progress may only be left under ``tmp/`` or as hidden ``.name.tmp`` files (a local
    folder) or in folders whose publish never completed (an object store), which no reader lists.
    """
    builds = store.list("builds")
    for bid in builds:
        artifacts.load_build(store, bid)  # every file against the manifest, and the id
    latest = store.read_ref(artifacts.LATEST)
    assert latest is None or latest in builds
    packages = 0
    for name in store.list("packages"):
        folder = f"packages/{name}"
        for entry in store.list(folder):
            if entry.endswith(".tar.gz"):
                # gzip CRC, members, digests, build id
                opened = open_package(store.local_file(f"{folder}/{entry}"))
                assert opened.build_id in builds
                packages += 1
            elif entry.endswith(".json"):
                sidecar = json.loads(store.read_bytes(f"{folder}/{entry}"))
                archive = store.read_bytes(f"{folder}/{entry.replace('.json', '.tar.gz')}")
                assert hashlib.sha256(archive).hexdigest() == sidecar["package_id"]
    released = assert_releases_consistent(store)
    root = store.root if isinstance(store, LocalStore) else None
    for path in root.rglob("*") if root else []:
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if path.is_file() and not hidden and path.relative_to(root).parts[0] != "tmp":
            assert path.stat().st_size > 0, f"empty file {path}"
    return {"builds": len(builds), "packages": packages, "releases": released}


def assert_releases_consistent(store: Store) -> int:
    """Every release numbered without a gap, the last one current, each one's package there;
    returns how many releases there are."""
    released = 0
    for name in store.list("releases"):
        rows = releases.list_releases(store, name)
        assert [r["number"] for r in rows] == list(range(1, len(rows) + 1))  # no gap
        current = releases.current_number(store, name)
        assert current == (rows[-1]["number"] if rows else None)
        for row in rows:
            release = releases.show(store, row["ref"])
            releases.find_package(store, release.package_id)  # its package is there
        released += len(rows)
    return released


# Each stage's window runs from the event before its writes to the event that ends it; a kill
# lands at a uniformly random moment inside one window, so every stage's writes are exercised.
WINDOWS = {
    "train": ("data.fetched", "train.summary"),
    "package": ("train.summary", "package.summary"),
    "release": ("package.summary", "release.created"),
}
# A kill that lands after its stage ended proves nothing about that stage: it is tried again,
# at most this many times in all per planned kill.
TRIES = 3


def windows_seen(events: list[tuple[float, dict[str, Any]]]) -> dict[str, float]:
    """How long each stage's window lasted in ``events`` (one chain), for the windows it closed."""
    at = {e["event"]: t for t, e in reversed(events)}
    return {s: at[b] - at[a] for s, (a, b) in WINDOWS.items() if a in at and b in at}


def sigkill_at_random_moments(
    zygote: Zygote, store: Store, rng: random.Random, plan: list[str]
) -> dict[str, int]:
    """Run one chain whole, then one per stage of ``plan`` killed -9 at a moment drawn from
    ``rng`` inside that stage's window, checking the store after each; then one more chain
    whole. Returns where the kills landed (most must land inside a stage at work).

    A window's length is the median of every pass through it seen so far, not one reference
    run: on a shared CI machine a stage's pace drifts with the load beside it, and a length
    taken once can be twice the true one, putting most kills after the stage ended.
    """
    pid, position = zygote.start(0)
    assert zygote.status(pid, position) == 0
    seen = {s: [t] for s, t in windows_seen(zygote.seen[position:]).items()}
    assert set(seen) == set(WINDOWS), seen
    before = assert_consistent(store)
    assert before == {"builds": 1, "packages": 1, "releases": 1}

    landed: Counter[str] = Counter()
    attempt = 0
    for stage in plan:
        for _ in range(TRIES):
            attempt += 1
            length = statistics.median(seen[stage])
            pid, position = zygote.start(attempt)
            # A pidfd names this child even after it exits: no signal can hit a reused pid.
            pidfd = os.pidfd_open(pid)
            start, end = WINDOWS[stage]
            opened, _ = zygote.wait_for(start, position)
            delay = opened + rng.uniform(0, 1.2) * length - time.perf_counter()
            time.sleep(max(0.0, delay))
            with contextlib.suppress(ProcessLookupError):  # it finished first
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
            status = zygote.status(pid, position)
            assert status in (0, signal.SIGKILL), status  # finished, or killed by our signal
            for s, t in windows_seen(zygote.seen[position:]).items():
                seen[s].append(t)
            finished = any(e.get("event") == end for _, e in zygote.seen[position:])
            landed[f"{stage} {'after its end' if finished else 'inside'}"] += 1
            assert_consistent(store)
            if not finished:
                break
    inside = sum(n for key, n in landed.items() if key.endswith("inside"))
    assert inside >= len(plan) * 3 // 4, landed  # most kills hit a stage at work

    pid, position = zygote.start(attempt + 1)
    assert zygote.status(pid, position) == 0
    after = assert_consistent(store)
    assert after["releases"] >= before["releases"] + 1 and after["builds"] >= 2
    medians = {s: round(statistics.median(t), 3) for s, t in seen.items()}
    print(f"kills: {dict(sorted(landed.items()))}; median windows (s): {medians}")
    return dict(landed)


def test_sigkill_at_20_random_moments_leaves_the_store_consistent_and_the_next_run_succeeds(
    tmp_path: Path,
) -> None:
    """Kill -9 the chain at 20 seeded random moments inside train, package and release; after
    each the store verifies, and a final uninterrupted chain succeeds on what was left."""
    store, rng = tmp_path / "store", random.Random(20261124)
    plan = ["train"] * 8 + ["package"] * 6 + ["release"] * 6
    rng.shuffle(plan)
    assert len(plan) == KILLS
    zygote = Zygote(str(store), tmp_path)
    try:
        sigkill_at_random_moments(zygote, LocalStore(store), rng, plan)
    finally:
        zygote.close()
