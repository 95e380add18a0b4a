"""Releases to serve, built once per test session, and a `pipeline serve` process to talk to."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests import warm
from tests.conftest import REPO, invoke_isolated

TEST_CSV = REPO / "tests" / "fixtures" / "house-prices-test.csv"


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("PIPELINE_", "KAGGLE_")) and k != "PORT"
    }
    return {**base, **extra}


def invoked(*args: str, root: Path, env: Mapping[str, str]) -> Any:
    """Run a `pipeline` command in-process and fail the test with its output unless it exits 0.

    For set-up and for reference outputs (`pipeline predict` to compare the server with): what
    these tests check runs in `pipeline serve`, a real process.
    """
    result = invoke_isolated(*args, root=root, env=env)
    assert result.exit_code == 0, result.output[-3000:]
    return result


def serve_once(env: Mapping[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pipeline serve` expected to exit on its own (a start-up error), its output captured."""
    full = _clean_env(env)
    if warm.usable(full):
        return warm.run(["serve", *args], full, cwd, timeout=120)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", *args], env=full, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _release(
    root: Path, preset: str | None, data: Path | None = None, **extra: str
) -> dict[str, Any]:
    """train -> package -> release create in a store of its own, as a CI job runs them."""
    env = {
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_CONFIG_DIR": str(REPO / "config"),
        "PIPELINE_SEED": "0",
        # Short training of a small ensemble: these tests are about serving, not about the
        # model's quality.
        "PIPELINE_TRAIN__MAX_EPOCHS": "40",
        "PIPELINE_TRAIN__PATIENCE": "10",
        "PIPELINE_MODEL__HIDDEN": "[64]",
        "PIPELINE_MODEL__MEMBERS": "2",
        **({"PIPELINE_PRESET": preset} if preset else {}),
        **({"PIPELINE_DATA__SOURCE": str(data)} if data else {}),
        **extra,
    }
    invoked("train", root=root, env=env)
    invoked("package", "--id-file", str(root / "package.id"), root=root, env=env)
    package_id = (root / "package.id").read_text().strip()
    invoked("release", "create", package_id, "--id-file", str(root / "release.id"), root=root,
            env=env)  # fmt: skip
    release = (root / "release.id").read_text().strip()
    archive = next((root / "store" / "packages").glob("*/*.tar.gz"))
    return {"env": env, "root": root, "release": release, "package": archive,
            "package_id": package_id}  # fmt: skip


@pytest.fixture(scope="session")
def house(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A house-prices release (regression) whose run settings copy the Id column through."""
    root = tmp_path_factory.mktemp("house")
    return _release(root, None, PIPELINE_RUN__ID_COLUMN="Id")


@pytest.fixture(scope="session")
def titanic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Titanic release (binary classification, `?` read as missing)."""
    return _release(tmp_path_factory.mktemp("titanic"), "titanic")


@pytest.fixture(scope="session")
def flags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small model with a boolean, a numeric and a categorical column, from a generated CSV."""
    root = tmp_path_factory.mktemp("flags")
    lines = ["member,age,city,spend"]
    for i in range(240):
        member = ("true", "false")[i % 2] if i % 17 else ""
        city = ("north", "south", "east")[i % 3]
        spend = 10 + (i % 2) * 25 + (i % 7) * 3 + (i % 3)
        lines.append(f"{member},{20 + i % 50},{city},{spend}")
    data = root / "flags.csv"
    data.write_text("\n".join(lines) + "\n")
    return _release(root, None, data, PIPELINE_DATA__TARGET="spend", PIPELINE_DATA__DROP="[]",
                    PIPELINE_DATA__COLUMN_KINDS='{"member": "boolean"}',
                    PIPELINE_MODEL__NAME="flags")  # fmt: skip


def wait_ready(server: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while ready_status(server) != 200:
        assert time.monotonic() < deadline, "".join(server.lines)[-2000:]
        assert server.proc.poll() is None, server.stderr
        time.sleep(0.05)


def ready_status(server: Any) -> int | None:
    """/readyz's status; None while it does not answer within 5 s (workers loading torch on
    a machine shared with the rest of the suite: a ReadTimeout failed the test), or while the
    supervisor closes the probe's connection because no worker attached within its patience
    (``workers.Dispatcher.PATIENCE``: seen once in a full local run, a reset)."""
    try:
        return httpx2.get(f"{server.url}/readyz").status_code
    except (httpx2.TimeoutException, httpx2.ReadError, httpx2.RemoteProtocolError):
        return None


class Served:
    """A `pipeline serve` process whose JSON log lines are collected as they arrive.

    Forked from the warm server (``tests/warm.py``) unless the environment changes a start-up
    variable; with more than one worker, the supervisor's workers are ``python -m pipeline``.
    """

    def __init__(
        self, args: list[str], env: Mapping[str, str], cwd: Path, open_files: int | None = None
    ) -> None:
        def limit() -> None:  # `ulimit -n open_files` in the child, as a container may set it
            if open_files is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

        full = _clean_env(env)
        self.proc: Any
        if warm.usable(full):
            self.proc = warm.Process(["serve", *args], full, cwd, open_files)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "serve", *args],
                env=full,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=limit if open_files is not None else None,
            )
        self.lines: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()
        self.port = int(self.wait_event("serve.listening")["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def events(self) -> list[dict[str, Any]]:
        """Every log event so far (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in list(self.lines) if line.strip()]

    def named(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        """The events called ``name`` so far (those with these ``fields``' values)."""
        return [
            e
            for e in self.events()
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_event(
        self, name: str, count: int = 1, timeout: float = 120, **fields: Any
    ) -> dict[str, Any]:
        """The ``count``-th event called ``name`` (with these ``fields``' values), waiting for
        it. A request's event needs its path: ``wait_ready``'s /readyz logs one too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.named(name, **fields)
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                self._reader.join(5)
                found = self.named(name, **fields)
                if len(found) >= count:
                    return found[count - 1]
                self._err.join(5)
                raise AssertionError(
                    f"serve exited {self.proc.returncode} before {name!r}: {self.stderr[-2000:]}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} event within {timeout}s: {''.join(self.lines)[-2000:]}")

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        """The serve.ready event, once /readyz also says 200."""
        ready = self.wait_event("serve.ready", timeout=timeout)
        assert httpx2.get(f"{self.url}/readyz").status_code == 200
        return ready

    def terminate(self) -> None:
        """Send SIGTERM once, as `docker stop` or Kubernetes does."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        """The exit status, once the process has exited on its own, and all its output read."""
        code = self.proc.wait(timeout)
        self._reader.join(5)
        self._err.join(5)
        if isinstance(self.proc, warm.Process) and not (
            self._reader.is_alive() or self._err.is_alive()
        ):
            self.proc.close()
        return code

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status."""
        self.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        """Stop it whatever state it is in (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait(10)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start `pipeline serve` processes; each is killed at the end of the test if still running."""
    started: list[Served] = []

    def start(*args: str, env: Mapping[str, str], cwd: Path, port: str | None = "0",
              open_files: int | None = None) -> Served:  # fmt: skip
        # One process unless the test asks for workers: its events are then one server's.
        full = {"PIPELINE_LOG_FORMAT": "json", "PIPELINE_SERVE__WORKERS": "1", **env}
        if port is not None:
            full.setdefault("PIPELINE_SERVE__PORT", port)
        server = Served(list(args), full, cwd, open_files)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()
