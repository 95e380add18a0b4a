"""Several `pipeline serve` processes on one port: a supervisor and its workers.

With ``PIPELINE_SERVE__WORKERS`` above 1 (by default, one per available core), the process the
user started listens on the port and starts that many workers: each is `pipeline serve` itself
(the same command and settings, one process each), and each scores with a core of its own. A
worker is a whole CLI process rather than a fork: no state is shared by accident, and its
start-up errors are reported and exit as a single server's are.

The supervisor accepts the connections and hands each to the next worker in turn, through a
Unix socket per worker (``SCM_RIGHTS``): 8 keep-alive clients get 4 connections per worker.
When the workers shared the listening socket, whichever woke first took a whole burst of
connections, and a load of 8 clients often ran on one core while the other sat idle; with
``SO_REUSEPORT`` the kernel hashes connections onto the workers, and 8 of them split 6/2 or
worse about a third of the time. Handing a connection over costs the supervisor about 20 us,
once per connection, not per request.

Readiness is shared through a small file mapped by every worker, one byte each: ``/readyz``
answers 200 only when every worker has loaded and warmed the model. The supervisor forwards
SIGTERM and SIGINT to the workers (each drains as a single server does), stops accepting when
their drain period ends, and exits 0 once all have exited 0. A worker that fails before it was
ready stops the whole server with its exit code; one that dies after (killed, out of memory) is
replaced, and the connections it held are lost with it.
"""

from __future__ import annotations

import array
import contextlib
import errno
import math
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline import scratch

# What the supervisor tells each worker, outside the PIPELINE_ settings namespace.
FD_VAR, PORT_VAR, INDEX_VAR, READY_VAR = (
    "_PIPELINE_SERVE_FD",
    "_PIPELINE_SERVE_PORT",
    "_PIPELINE_SERVE_WORKER",
    "_PIPELINE_SERVE_READY",
)
LOADING, READY = 0, 1
# The send buffer of the supervisor's end of a worker's channel (Linux doubles it).
CHANNEL_BYTES = 4096
# accept() errors that say the process or the system is out of descriptors or memory.
_SHORT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# send errors that say the worker at the other end of a channel is gone.
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED, errno.EBADF})


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


@dataclass(frozen=True)
class WorkerContext:
    """What a worker gets from its supervisor: the Unix socket its connections come through,
    the port they were accepted on, and the shared readiness."""

    channel: int
    port: int
    board: Readiness


def worker_context() -> WorkerContext | None:
    """In a worker: its channel's descriptor, the port and the shared readiness; else None."""
    values = [os.environ.get(v) for v in (FD_VAR, PORT_VAR, INDEX_VAR, READY_VAR)]
    if any(v is None for v in values):
        return None
    fd, port, index, path = (str(v) for v in values)
    i, _, n = index.partition("/")
    return WorkerContext(int(fd), int(port), Readiness(path, int(i), int(n)))


class Dispatcher:
    """The supervisor's thread that accepts connections and hands each to the next worker.

    A worker whose channel is full (it is behind, or stopped: about 11 connections wait in
    it) is passed over for the next; one whose channel is closed (it died) is dropped until its
    replacement attaches a new channel. A connection no worker can take within ``PATIENCE``
    seconds is closed.
    """

    PATIENCE = 10.0

    def __init__(self, sock: socket.socket, count: int) -> None:
        self.sock = sock
        self.channels: list[socket.socket | None] = [None] * count
        self.lock = threading.Lock()
        self.turn = 0
        self.stop_at = math.inf
        self.handed = [0] * count
        self.thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)

    def attach(self, i: int, channel: socket.socket) -> None:
        """Worker ``i``'s channel (a new one when the worker was replaced)."""
        with self.lock:
            old, self.channels[i] = self.channels[i], channel
        if old is not None:
            old.close()

    def stop_after(self, seconds: float) -> None:
        """Stop accepting ``seconds`` from now (the workers' drain period)."""
        self.stop_at = min(self.stop_at, time.monotonic() + max(0.0, seconds))

    def close(self) -> None:
        self.stop_at = 0.0
        self.thread.join(5)
        with self.lock:
            channels, self.channels = self.channels, [None] * len(self.channels)
        for channel in channels:
            if channel is not None:
                channel.close()

    def _run(self) -> None:
        self.sock.settimeout(0.1)  # to see stop_at; accepted sockets stay blocking
        try:
            while time.monotonic() < self.stop_at:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EBADF, errno.EINVAL):  # the socket was closed
                        return
                    if exc.errno in _SHORT_OF:  # the backlog waits until some are free
                        time.sleep(0.05)
                    continue  # else that client left before it was accepted
                with conn:
                    if conn.family in (socket.AF_INET, socket.AF_INET6):
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._hand(conn)
        finally:
            # New connections are refused from now on, as a single server's are once it
            # has closed its listening socket.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()

    def _hand(self, conn: socket.socket) -> None:
        """Send ``conn`` to the next worker that can take it (the worker's copy stays open
        when this one closes)."""
        deadline = time.monotonic() + self.PATIENCE
        while time.monotonic() < min(deadline, self.stop_at):
            count = len(self.channels)
            for k in range(count):
                i = (self.turn + k) % count
                channel = self.channels[i]
                if channel is None:
                    continue
                try:
                    # sendmsg itself: socket.send_fds drops its flags before Python 3.12, and a
                    # blocking send would stall every connection behind a stalled worker.
                    rights = array.array("i", [conn.fileno()])
                    channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
                                    socket.MSG_DONTWAIT)  # fmt: skip
                except OSError as exc:
                    if exc.errno in _GONE:  # it died; its replacement attaches a new channel
                        with self.lock:
                            if self.channels[i] is channel:
                                self.channels[i] = None
                        channel.close()
                    # Else it is behind (its channel is full, or too many descriptors are in
                    # flight to it): the next one.
                    continue
                self.turn = i + 1
                self.handed[i] += 1
                return
            time.sleep(0.001)


def supervise(
    count: int,
    sock: socket.socket,
    args: list[str],
    log: Any,
    on_signal: Callable[[int], None],
    drain: float = 0.0,
) -> int:
    """Run ``count`` workers on the listening ``sock`` until they have all exited; the exit
    status. ``args`` are the `pipeline serve` options the workers get (the release or
    package); ``drain`` the seconds they keep answering after a signal."""
    port = sock.getsockname()[1]
    with scratch.folder("pipeline-serve-") as tmp:
        ready_path = str(tmp / "ready")
        Path(ready_path).write_bytes(bytes(count))
        board = Readiness(ready_path, 0, count)
        dispatcher = Dispatcher(sock, count)
        stopping: list[int] = []

        def start(i: int) -> subprocess.Popen[bytes]:
            board.map[i] = LOADING
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            # A small send buffer: about 11 connections wait for a worker that is behind (or
            # stopped) before the next one is given them, where the default held about 280.
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BYTES)
            env = {**os.environ, FD_VAR: str(theirs.fileno()), PORT_VAR: str(port),
                   INDEX_VAR: f"{i}/{count}", READY_VAR: ready_path,
                   "PIPELINE_SERVE__WORKERS": "1"}  # fmt: skip
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pipeline", "serve", *args],
                    env=env,
                    pass_fds=(theirs.fileno(),),
                )
            finally:
                theirs.close()
            dispatcher.attach(i, ours)
            return proc

        procs = [start(i) for i in range(count)]
        dispatcher.thread.start()
        log.info("serve.workers", workers=count, pids=[p.pid for p in procs])

        def forward(sig: int, _frame: FrameType | None) -> None:
            if not stopping:
                dispatcher.stop_after(drain)
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
            dispatcher.close()
            log.debug("serve.connections_handed", workers=dispatcher.handed)


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
