"""Real `pipeline` processes without an interpreter start-up each: a forking server for the tests.

`python -m pipeline train|predict|serve ...` spends about 2 s of CPU importing torch, pandas and
the stages before it reads its first argument; the suite starts about a hundred such processes.
A warm server imports all of that once per xdist worker and forks one child per command. Each
child is a real process: its own pid, argv, environment, working directory, file descriptors,
signals and exit status; it runs the same ``pipeline.cli.main`` as ``python -m pipeline`` and
exits the way the interpreter does (threads joined, exit handlers run, streams flushed).

What a fork shares with its server, a test about interpreter start-up must not get: which modules
are imported (start-up tests), the hash seed (two processes that must agree without sharing it),
locale, time zone and thread settings read when a library loads. ``run_cli(..., fresh=True)``
starts ``python -m pipeline`` as before, and an environment that changes any variable read at
interpreter or library start (``START_VARIABLES``) gets a fresh process by itself.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# TESTS_FRESH_PROCESSES=1 turns the server off: every command is `python -m pipeline` again.
DISABLED = os.environ.get("TESTS_FRESH_PROCESSES") == "1"
# Read when the interpreter or a library starts, not when a command runs.
START_VARIABLES = re.compile(r"^(PYTHON.*|LANG|LC_.*|TZ|OMP_.*|MKL_.*|OPENBLAS_.*|KMP_.*|LD_.*)$")

SERVER = r"""
import atexit, json, os, select, signal, sys, threading, traceback

import numpy, pandas, pyarrow, pyarrow.csv, pyarrow.parquet, pyarrow.pandas_compat
import torch, torch._dynamo
import fastapi, uvicorn, structlog, typer
import pipeline.train, pipeline.evaluate, pipeline.package, pipeline.releases
import pipeline.predict.stage, pipeline.serve.server, pipeline.serve.app
from pipeline.cli import main

channel = os.fdopen(os.dup(1), "w", buffering=1)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)


def child(request, out, err):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.close(wake_r)
    os.close(wake_w)
    channel.close()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, opened in enumerate([os.open(os.devnull, os.O_RDONLY), out, err]):
        os.dup2(opened, fd)
        os.close(opened)
    if request.get("open_files"):
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (request["open_files"], hard))
    sys.argv = ["pipeline", *request["args"]]
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if not isinstance(exit.code, int) and exit.code is not None:
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what the interpreter does on the way out
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


print(json.dumps({"event": "ready", "threads": threading.active_count()}), file=channel)
pending = b""
while True:
    try:
        readable, _, _ = select.select([0, wake_r], [], [])
    except InterruptedError:
        continue
    if wake_r in readable:
        os.read(wake_r, 4096)
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        print(json.dumps({"event": "exited", "pid": pid, "status": status}), file=channel)
    if 0 in readable:
        data = os.read(0, 65536)
        if not data:
            break
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            channel.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            # Opened here, so the child holds them from its first instruction: the test's
            # reader sees end of file only once the child and its own children closed them.
            out = os.open(request["stdout"], os.O_WRONLY)
            err = os.open(request["stderr"], os.O_WRONLY)
            pid = os.fork()
            if pid == 0:
                child(request, out, err)
            os.close(out)
            os.close(err)
            print(json.dumps({"event": "forked", "id": request["id"], "pid": pid}), file=channel)
"""


class Server:
    """One warm server (per xdist worker), started on first use and stopped at exit.

    ``prefix`` runs it under another command that then executes Python, e.g. ``unshare -m``
    for a mount namespace of its own that its children share (``pid`` is then the server's).
    """

    def __init__(self, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", SERVER], env=server_env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
        )  # fmt: skip
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.forked: dict[int, int] = {}  # request id -> pid
        self.exited: dict[int, int] = {}  # pid -> wait status
        self.ready = False
        self.next_id = 0
        self.pid = self.proc.pid
        threading.Thread(target=self._read, daemon=True).start()
        with self.changed:
            if not self.changed.wait_for(lambda: self.ready or self.proc.poll() is not None, 120):
                raise RuntimeError("the warm pipeline server did not start within 120 s")
        if not self.ready:
            raise RuntimeError(f"the warm pipeline server exited {self.proc.returncode}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.changed:
                if message["event"] == "ready":
                    self.ready = True
                elif message["event"] == "forked":
                    self.forked[message["id"]] = message["pid"]
                    self.exited.pop(message["pid"], None)  # an earlier child's, the pid reused
                else:
                    self.exited[message["pid"]] = message["status"]
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def fork(self, request: dict[str, Any]) -> int:
        """Start one child for ``request``; its pid."""
        assert self.proc.stdin is not None
        with self.changed:
            self.next_id += 1
            ident = self.next_id
            self.proc.stdin.write(json.dumps({**request, "id": ident}) + "\n")
            self.proc.stdin.flush()
            if not self.changed.wait_for(lambda: ident in self.forked, 60):
                raise RuntimeError("the warm pipeline server did not fork within 60 s")
            return self.forked.pop(ident)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        """The child's wait status once it exited, or None after ``timeout`` seconds."""
        with self.changed:
            self.changed.wait_for(lambda: pid in self.exited, timeout)
            return self.exited.get(pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_server: Server | None = None
_server_lock = threading.Lock()


def server() -> Server:
    """This process's warm server, started on first use."""
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = Server()
            atexit.register(_server.close)
        return _server


def usable(env: Mapping[str, str]) -> bool:
    """Whether a command with the environment ``env`` may be forked from the warm server: not
    when TESTS_FRESH_PROCESSES=1, nor when ``env`` changes a variable read at interpreter or
    library start."""
    base = server_env()
    keys = {k for k in (*env, *base) if START_VARIABLES.match(k)}
    return not DISABLED and all(env.get(k) == base.get(k) for k in keys)


def server_env() -> dict[str, str]:
    """The environment a warm server starts with (and so its children's start-up variables)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}


class Process:
    """A forked `pipeline` command: like ``subprocess.Popen`` with pipes for stdout and stderr.

    The pipes are named pipes the child opens for writing, so its output arrives as it is
    written, and end of file comes when the child and everything it started have closed them.
    """

    def __init__(
        self, args: list[str], env: Mapping[str, str], cwd: Path | str | None = None,
        open_files: int | None = None, on: Server | None = None,
    ) -> None:  # fmt: skip
        """Fork ``pipeline *args`` from the server ``on`` (default: this process's)."""
        self.args = ["pipeline", *args]
        self.folder = Path(tempfile.mkdtemp(prefix="warm-"))
        out, err = self.folder / "stdout", self.folder / "stderr"
        os.mkfifo(out)
        os.mkfifo(err)
        self.returncode: int | None = None
        self._server = on or server()
        request = {"args": list(args), "env": dict(env), "cwd": str(cwd or os.getcwd()),
                   "stdout": str(out), "stderr": str(err), "open_files": open_files}  # fmt: skip
        # Open the read ends without blocking first: the child's open for writing then
        # succeeds at once, whichever side comes first.
        read_out = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        read_err = os.open(err, os.O_RDONLY | os.O_NONBLOCK)
        self.pid = self._server.fork(request)
        for fd in (read_out, read_err):
            os.set_blocking(fd, True)
        self.stdout = os.fdopen(read_out, "r")
        self.stderr = os.fdopen(read_err, "r")

    def poll(self) -> int | None:
        if self.returncode is None:
            status = self._server.wait(self.pid, 0)
            if status is not None:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            status = self._server.wait(self.pid, timeout)
            if status is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Close the read ends and remove the named pipes (once the output was read)."""
        for stream in (self.stdout, self.stderr):
            stream.close()
        if self.folder.exists():
            for name in ("stdout", "stderr"):
                (self.folder / name).unlink(missing_ok=True)
            self.folder.rmdir()


def run(
    args: list[str],
    env: Mapping[str, str],
    cwd: Path | None,
    timeout: float,
    on: Server | None = None,
) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run(..., capture_output=True, text=True)`` of ``python -m pipeline``,
    forked from the server ``on`` (default: this process's)."""
    proc = Process(args, env, cwd, on=on)
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        raise
    for reader in readers:
        reader.join(max(1.0, deadline - time.monotonic()))
    proc.close()
    return subprocess.CompletedProcess(proc.args, code, "".join(out), "".join(err))
