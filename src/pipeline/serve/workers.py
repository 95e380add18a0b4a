"""Several `pipeline serve` processes on one port: a supervisor and its workers.

With ``PIPELINE_SERVE__WORKERS`` above 1 (by default, one per available core), the process the
user started binds the listening socket and starts that many workers: each is `pipeline serve`
itself (the same command and settings, one process each), inheriting the socket, so the kernel
shares incoming connections between them and each scores with a core of its own. Each worker's
libuv accepts one connection per wake-up (``UV_TCP_SINGLE_ACCEPT``): otherwise the loop that
woke first took a whole burst of keep-alive connections, and the other cores sat idle. A worker is a
whole CLI process rather than a fork: no state is shared by accident, and its start-up errors
are reported and exit as a single server's are.

Readiness is shared through a small file mapped by every worker, one byte each: ``/readyz``
answers 200 only when every worker has loaded and warmed the model. The supervisor forwards
SIGTERM and SIGINT to the workers (each drains as a single server does) and exits 0 once all have
exited 0. A worker that fails before it was ready stops the whole server with its exit code; one
that dies after (killed, out of memory) is replaced.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

# What the supervisor tells each worker, outside the PIPELINE_ settings namespace.
FD_VAR, INDEX_VAR, READY_VAR = (
    "_PIPELINE_SERVE_FD",
    "_PIPELINE_SERVE_WORKER",
    "_PIPELINE_SERVE_READY",
)
LOADING, READY = 0, 1


class Readiness:
    """One byte per worker in a shared file: ``mark`` this worker, ``all_ready`` for /readyz."""

    def __init__(self, path: str, index: int, count: int) -> None:
        with Path(path).open("r+b") as fh:
            self.map = mmap.mmap(fh.fileno(), count)
        self.index, self.count = index, count

    def mark(self, value: int) -> None:
        self.map[self.index] = value

    def all_ready(self) -> bool:
        return all(self.map[i] == READY for i in range(self.count))


def worker_context() -> tuple[int, Readiness] | None:
    """In a worker: the inherited socket's descriptor and the shared readiness; else None."""
    fd, index, path = (os.environ.get(v) for v in (FD_VAR, INDEX_VAR, READY_VAR))
    if fd is None or index is None or path is None:
        return None
    i, _, n = index.partition("/")
    return int(fd), Readiness(path, int(i), int(n))


def supervise(
    count: int, sock: Any, args: list[str], log: Any, on_signal: Callable[[int], None]
) -> int:
    """Run ``count`` workers on ``sock`` until they have all exited; the exit status.

    ``args`` are the `pipeline serve` options the workers get (the release or package).
    """
    with tempfile.TemporaryDirectory(prefix="pipeline-serve-") as tmp:
        ready_path = str(Path(tmp) / "ready")
        Path(ready_path).write_bytes(bytes(count))
        board = Readiness(ready_path, 0, count)
        sock.set_inheritable(True)
        stopping: list[int] = []

        def start(i: int) -> subprocess.Popen[bytes]:
            board.map[i] = LOADING
            env = {**os.environ, FD_VAR: str(sock.fileno()), INDEX_VAR: f"{i}/{count}",
                   READY_VAR: ready_path, "PIPELINE_SERVE__WORKERS": "1",
                   "UV_TCP_SINGLE_ACCEPT": "1"}  # fmt: skip
            return subprocess.Popen(
                [sys.executable, "-m", "pipeline", "serve", *args],
                env=env,
                pass_fds=(sock.fileno(),),
            )

        procs = [start(i) for i in range(count)]
        log.info("serve.workers", workers=count, pids=[p.pid for p in procs])

        def forward(sig: int, _frame: FrameType | None) -> None:
            stopping.append(sig)
            on_signal(sig)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(sig)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return _watch(procs, board, start, stopping, log)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def _watch(
    procs: list[subprocess.Popen[bytes]],
    board: Readiness,
    start: Callable[[int], subprocess.Popen[bytes]],
    stopping: list[int],
    log: Any,
) -> int:
    """Wait until every worker has exited; the first bad exit status (0 when none).

    While the server is not stopping, a worker that exits before it was ready stops the others
    (the release cannot be served) and one that exits after is replaced.
    """
    failure = 0
    handled: set[int] = set()  # the pids whose exit was dealt with
    while True:
        for i, p in enumerate(procs):
            code = p.poll()
            if code is None or p.pid in handled:
                continue
            handled.add(p.pid)
            if stopping or failure:
                failure = failure or (0 if code == 0 else code if code > 0 else 1)
            elif board.map[i] != READY:
                log.error("serve.worker_failed", worker=i, exit_code=code)
                failure = code if code > 0 else 1
                for other in procs:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
            else:
                log.warning("serve.worker_replaced", worker=i, exit_code=code)
                procs[i] = start(i)
        if all(p.poll() is not None for p in procs):
            return failure
        time.sleep(0.05)
