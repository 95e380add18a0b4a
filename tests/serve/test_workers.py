"""`pipeline serve` with several worker processes on one port (PIPELINE_SERVE__WORKERS)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.serve.conftest import serve_once, wait_ready

LOCAL = {"PIPELINE_SERVE__HOST": "127.0.0.1"}

pytestmark = pytest.mark.slow


def test_two_workers_share_the_port_answer_alike_replace_a_dead_one_and_drain(
    serve: Any, house: dict[str, Any]
) -> None:
    """/readyz is 200 once both workers have loaded; connections reach both and get the same
    predictions; a worker killed with SIGKILL is replaced; SIGTERM drains both and exits 0."""
    env = {**house["env"], **LOCAL, "PIPELINE_RELEASE": house["release"],
           "PIPELINE_SERVE__WORKERS": "2", "PIPELINE_RUN__ID_COLUMN": "Id"}  # fmt: skip
    server = serve(env=env, cwd=house["root"])
    wait_ready(server)
    pids = server.wait_event("serve.workers")["pids"]
    assert len(pids) == 2 and server.proc.pid not in pids
    model = httpx2.get(f"{server.url}/v1/model").json()
    record = {c["name"]: (1.0 if c["kind"] == "numeric" else None)
              for c in model["input_schema"]["columns"]}  # fmt: skip
    answers = set()
    # A new connection each time: the supervisor hands connections to the workers in turn,
    # so 40 connections get 20 each (the probes' connections take turns too).
    for i in range(40):
        response = httpx2.post(f"{server.url}/v1/predict", json={"records": [{**record, "Id": 7}]},
                               headers={"X-Request-ID": f"r{i}"})  # fmt: skip
        assert response.status_code == 200
        answers.add(response.content)
    deadline = time.monotonic() + 10  # the last requests' log lines may still be on their way
    while len(served_by := _predict_workers(server)) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(answers) == 1  # the same bytes from either worker
    assert sorted(served_by.count(w) for w in (0, 1)) == [20, 20], served_by

    os.kill(pids[0], signal.SIGKILL)
    replaced = server.wait_event("serve.worker_replaced")
    assert replaced["worker"] == 0 and replaced["exit_code"] == -signal.SIGKILL
    server.wait_event("serve.ready", count=3)  # the replacement loaded
    wait_ready(server)
    for _ in range(4):  # the replacement takes its turns
        response = httpx2.post(f"{server.url}/v1/predict", json={"records": [{**record, "Id": 7}]})
        assert response.status_code == 200 and response.content in answers
    deadline = time.monotonic() + 10
    while len(served_by := _predict_workers(server)) < 44 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(served_by[40:]) == [0, 0, 1, 1], served_by[40:]
    assert server.stop() == 0
    stopped = server.named("serve.stopped")
    assert len(stopped) == 2 and all(e["unanswered"] == 0 for e in stopped)
    assert server.named("serve.workers_stopped")[0]["exit_code"] == 0
    assert "Uvicorn running" not in server.stderr  # uvicorn's console line: serve.listening says it


def _predict_workers(server: Any) -> list[int]:
    return [e["worker"] for e in server.named("serve.request") if e["path"] == "/v1/predict"]


def test_an_unknown_release_is_one_line_before_any_worker_starts(house: dict[str, Any]) -> None:
    """An unknown release, or none named: the supervisor says so once (every worker said it,
    each on its own line) and exits with its code, before it listens or starts a worker."""
    base = {**house["env"], **LOCAL, "PIPELINE_SERVE__WORKERS": "2", "PIPELINE_SERVE__PORT": "0"}
    for extra, code, said in (
        ({"PIPELINE_RELEASE": "house-prices@v99"}, 8, "house-prices@v99 does not exist"),
        ({}, 3, "no model to run"),
    ):
        done = serve_once({**base, **extra}, house["root"])
        assert done.returncode == code, (done.returncode, done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr
        assert '"serve.listening"' not in done.stdout and '"serve.workers"' not in done.stdout


def test_a_damaged_package_is_one_line_before_any_worker_starts(house: dict[str, Any]) -> None:
    """A damaged archive is found by the supervisor's own check (every worker said it)."""
    damaged = house["root"] / "damaged.tar.gz"
    damaged.write_bytes(b"\x1f\x8b" + b"not a package" * 10)
    env = {**house["env"], **LOCAL, "PIPELINE_SERVE__WORKERS": "2", "PIPELINE_SERVE__PORT": "0"}
    done = serve_once(env, house["root"], "--package", str(damaged))
    assert done.returncode == 7, (done.returncode, done.stderr[-2000:])
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(damaged) in done.stderr and '"serve.workers"' not in done.stdout


def test_workers_that_cannot_load_stop_the_server_with_their_exit_code(
    house: dict[str, Any], tmp_path: Path
) -> None:
    """A failure only the workers meet (here a torch that refuses to load, which the
    supervisor never imports): the server exits with their code and says why, instead of
    replacing them in a loop."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "from pipeline.errors import ConfigError\n"
        "raise ConfigError('torch cannot be loaded here (a test)')\n"
    )
    env = {**house["env"], **LOCAL, "PIPELINE_RELEASE": house["release"],
           "PIPELINE_SERVE__WORKERS": "2", "PIPELINE_SERVE__PORT": "0",
           "PYTHONPATH": str(fake.parent)}  # fmt: skip
    done = serve_once(env, house["root"])
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert "torch cannot be loaded here" in done.stderr and "Traceback" not in done.stderr
    assert '"serve.worker_failed"' in done.stdout and '"serve.worker_replaced"' not in done.stdout


def test_workers_do_not_outlive_a_supervisor_killed_with_sigkill(
    serve: Any, house: dict[str, Any]
) -> None:
    """SIGKILL cannot be passed on: each worker notices its supervisor is gone and stops."""
    env = {**house["env"], **LOCAL, "PIPELINE_RELEASE": house["release"],
           "PIPELINE_SERVE__WORKERS": "2"}  # fmt: skip
    server = serve(env=env, cwd=house["root"])
    wait_ready(server)
    pids = server.wait_event("serve.workers")["pids"]
    server.proc.kill()
    server.proc.wait(10)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stopped_worker_holds_a_few_connections_and_the_other_takes_the_rest(
    serve: Any, house: dict[str, Any]
) -> None:
    """A worker that is stopped (SIGSTOP: as one stuck would be) is handed connections only
    until its channel is full, about 11; the other worker answers all the rest meanwhile, and
    the stopped one answers its share once it runs again. Nothing is lost."""
    held = _channel_capacity()  # what the kernel queues in a channel of that buffer size
    assert held <= 20, held
    env = {**house["env"], **LOCAL, "PIPELINE_RELEASE": house["release"],
           "PIPELINE_SERVE__WORKERS": "2"}  # fmt: skip
    server = serve(env=env, cwd=house["root"])
    wait_ready(server)
    pids = server.wait_event("serve.workers")["pids"]
    model = httpx2.get(f"{server.url}/v1/model").json()
    body = {"records": [{c["name"]: (1.0 if c["kind"] == "numeric" else None)
                         for c in model["input_schema"]["columns"]}]}  # fmt: skip
    statuses: list[int] = []

    def post() -> None:  # a new connection each
        statuses.append(httpx2.post(f"{server.url}/v1/predict", json=body, timeout=120).status_code)

    os.kill(pids[0], signal.SIGSTOP)
    try:
        clients = [threading.Thread(target=post) for _ in range(40)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 60
        while len(statuses) < 40 - held and time.monotonic() < deadline:
            time.sleep(0.05)
        answered_while_stopped = len(statuses)
    finally:
        os.kill(pids[0], signal.SIGCONT)
    for client in clients:
        client.join(120)
    assert answered_while_stopped >= 40 - held, (answered_while_stopped, held)
    assert statuses == [200] * 40
    assert server.stop() == 0


def _channel_capacity() -> int:
    """Connections a worker's channel holds before a send would block (on this kernel)."""
    import array
    import socket

    from pipeline.serve.workers import CHANNEL_BYTES

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BYTES)
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))]
    sent = 0
    with ours, theirs:
        try:
            while sent < 1000:
                ours.sendmsg([b"c"], rights, socket.MSG_DONTWAIT)
                sent += 1
        except BlockingIOError:
            pass
    return sent
