"""Fixtures for the image test: the engine, one image built from a fresh store, a served container.

These tests run only when asked (`make docker-test`, or `pytest tests/container`): pyproject's
`norecursedirs` keeps them out of `make test`. Without docker or podman they fail and say what
to install; they never pass silently.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import REPO, event, run_cli
from tests.container.harness import (
    FIGURES,
    REPOSITORY,
    Container,
    Engine,
    EngineError,
    Image,
    clean_env,
    detect,
    host_env,
    start_serving,
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the measured figures of the image under test."""
    if FIGURES:
        terminalreporter.section("image figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def engine() -> Engine:
    """Docker where an engine answers, podman otherwise; fails (never skips) without either."""
    try:
        return detect()
    except EngineError as exc:
        pytest.fail(f"the image test needs a container engine: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """An image built by docker/build.py from a fresh store (the build chain runs first)."""
    work = tmp_path_factory.mktemp("image")
    store = work / "store"
    ref_file = work / "image.ref"
    context = work / "context"  # kept: its src/ is exactly the code inside the image
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, str(REPO / "docker" / "build.py"),
            "--repository", REPOSITORY, "--ref-file", str(ref_file),
            "--context", str(context),
        ],
        cwd=work,
        env=clean_env(
            **host_env(store, PIPELINE_RUN__ID_COLUMN="Id"), CONTAINER_ENGINE=engine.name
        ),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"docker/build.py failed:\n{done.stderr[-6000:]}"
    tag = ref_file.read_text().strip()
    assert done.stdout.strip() == tag, "build.py prints the image reference on stdout"
    FIGURES["build (chain + image) s"] = f"{time.monotonic() - started:.0f}"
    shown = run_cli("release", "show", "house-prices@current", env=host_env(store))
    assert shown.returncode == 0, shown.stderr
    release = event(shown.stdout, "release.show")
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    FIGURES["image"] = tag
    FIGURES["image size MB"] = f"{size / 1e6:.0f}"
    try:
        yield Image(tag=tag, store=store, release=release, engine=engine, code=context / "src")
    finally:
        # The tag and its own layers go; the base image and the build stages' layers stay: they
        # are the cache that makes the next build take seconds instead of minutes.
        engine.run("rmi", "--force", tag, check=False)


@pytest.fixture(scope="session")
def served(image: Image) -> Iterator[Container]:
    """The image's default command (serve) with its baked release."""
    container = start_serving(image)
    try:
        yield container
    finally:
        container.remove()
