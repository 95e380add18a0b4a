"""Shared fixtures: an isolated environment, a temporary store, and CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from pipeline.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"

# The documented sha256 of the datasets shipped in the package (../shared/datasets/README.md).
HOUSE_PRICES_SHA = "1e18addf81e5e4d347cc17ee6075bbe4a42b7fa26b9e5b063e8f692a5f929d41"
TITANIC_SHA = "1a2fd48ca2a2f84328dfdee05ea4482f7d456ba09368a271c25e8246dafee8ce"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No PIPELINE_*/KAGGLE_* variable or .env of the developer's leaks into a test."""
    for key in list(os.environ):
        if key.upper().startswith(("PIPELINE_", "KAGGLE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIPELINE_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("PIPELINE_CONFIG_DIR", str(REPO / "config"))
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A fresh store folder (not created: commands must create it)."""
    return tmp_path / "store"


@pytest.fixture
def cli(store: Path) -> Any:
    """Invoke the CLI in-process with extra env; JSON logs; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, env: Mapping[str, str] | None = None) -> Any:
        full = {"PIPELINE_STORE": str(store), "PIPELINE_LOG_FORMAT": "json", **(env or {})}
        return runner.invoke(app, list(args), env=full, catch_exceptions=False)

    return invoke


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline`` in a real subprocess with a clean PIPELINE_* environment."""
    base = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("PIPELINE_", "KAGGLE_"))
    }
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    """Parse a JSON-lines log stream (fails the test on any non-JSON line)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def event(stdout: str, name: str) -> dict[str, Any]:
    """The last event called ``name`` in a JSON-lines stream."""
    found = [e for e in events(stdout) if e.get("event") == name]
    assert found, f"no {name!r} event in output:\n{stdout[-2000:]}"
    return found[-1]


def store_files(store: Path) -> list[Path]:
    """Every file in a store except scratch space (tmp/ must be empty after any command)."""
    if not store.exists():
        return []
    return sorted(p for p in store.rglob("*") if p.is_file())
