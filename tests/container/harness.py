"""Helpers of the image test: the engine, HTTP from the host, containers that serve.

One module both conftest.py and the tests import, so they share one FIGURES dict.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "docker"))
from container_engine import Engine, EngineError, detect

__all__ = ["Engine", "EngineError", "detect"]

FIXTURE_CSV = REPO / "tests" / "fixtures" / "house-prices-test.csv"
REPOSITORY = "localhost/pipeline-test"
READY_TIMEOUT = 120.0

# Figures shown at the end of the run (image size, build and start times).
FIGURES: dict[str, str] = {}


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without the developer's PIPELINE_*/KAGGLE_* settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("PIPELINE_", "KAGGLE_"))
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Image:
    """The image under test and the host store its release came from."""

    tag: str
    store: Path
    release: dict[str, Any]
    engine: Engine
    # The build context's src/: the code inside the image, for host runs that must use the same
    # code while the checkout keeps changing.
    code: Path


def host_env(store: Path, **extra: str) -> dict[str, str]:
    """Settings for host-side pipeline commands against ``store``."""
    return {
        "PIPELINE_STORE": str(store),
        "PIPELINE_LOG_FORMAT": "json",
        # No developer's .env: /dev/null reads no file.
        "PIPELINE_ENV_FILE": os.devnull,
        **extra,
    }


def http(url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """GET (or POST JSON ``body``) with the standard library; the status and the parsed JSON."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Container:
    """A detached container serving on a host port."""

    name: str
    url: str
    engine: Engine

    def logs(self) -> str:
        """Its output so far (for failure messages)."""
        done = self.engine.run("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def remove(self) -> None:
        """Remove it, running or not."""
        self.engine.run("rm", "--force", self.name, check=False)


def start_serving(image: Image, *args: str) -> Container:
    """`run -d` the image's default command (serve) on a free loopback port; wait until ready."""
    name = f"pipeline-test-{uuid.uuid4().hex[:10]}"
    engine = image.engine
    engine.run(
        "run", "--detach", "--name", name, *engine.run_flags,
        "--publish", "127.0.0.1::8080", *args, image.tag,
    )  # fmt: skip
    container = Container(name, "", engine)
    try:
        mapped = engine.run("port", name, "8080/tcp").stdout.strip().splitlines()[0]
        container.url = "http://" + mapped.replace("0.0.0.0", "127.0.0.1")
        wait_ready(container)
    except BaseException:
        container.remove()
        raise
    return container


def start_serving_on_host_network(image: Image, port: int, *args: str) -> Container:
    """`run -d` serve sharing the host's network (it reaches services on the host's loopback,
    such as the suite's S3 server) on ``port``; wait until ready."""
    name = f"pipeline-test-{uuid.uuid4().hex[:10]}"
    engine = image.engine
    engine.run(
        "run", "--detach", "--name", name, *engine.run_flags, "--network", "host",
        "--env", f"PIPELINE_SERVE__PORT={port}", "--env", "PIPELINE_SERVE__HOST=127.0.0.1",
        *args, image.tag,
    )  # fmt: skip
    container = Container(name, f"http://127.0.0.1:{port}", engine)
    try:
        wait_ready(container)
    except BaseException:
        container.remove()
        raise
    return container


def wait_ready(container: Container) -> None:
    """Poll /readyz until 200; fail with the container's logs if it exits or never gets ready."""
    deadline = time.monotonic() + READY_TIMEOUT
    started = time.monotonic()
    while time.monotonic() < deadline:
        state = container.engine.run(
            "inspect", "--format", "{{.State.Running}}", container.name, check=False
        )
        if state.stdout.strip() != "true":
            pytest.fail(f"the container stopped before it was ready:\n{container.logs()}")
        try:
            status, _ = http(f"{container.url}/readyz", timeout=2)
        except (OSError, ValueError):
            status = 0
        if status == 200:
            FIGURES.setdefault("container ready s", f"{time.monotonic() - started:.1f}")
            return
        time.sleep(0.5)
    pytest.fail(f"not ready after {READY_TIMEOUT:.0f} s:\n{container.logs()}")
