"""A full disk or a read-only store: exit 9 with one line, nothing partial, the old store intact.

The faults are real: each command runs in a private mount namespace (``unshare -m``) whose store
is a size-limited tmpfs (ENOSPC) or a tmpfs remounted read-only (EROFS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import invoke_isolated

ENV = {"PIPELINE_LOG_FORMAT": "json", "PIPELINE_TRAIN__MAX_EPOCHS": "3"}

# Runs inside the namespace: mount, copy the prepared store in, fault it, run the command, look.
INSIDE = r"""
import hashlib, json, os, shutil, subprocess, sys
store, prepared, size, mode = sys.argv[1:5]
command = json.loads(sys.argv[5])

def snapshot():
    return {
        os.path.relpath(os.path.join(d, f), store): hashlib.sha256(
            open(os.path.join(d, f), "rb").read()).hexdigest()
        for d, _, files in os.walk(store) for f in files
    }

subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", store], check=True)
shutil.copytree(prepared, store, dirs_exist_ok=True)
if mode == "ro":
    subprocess.run(["mount", "-o", "remount,ro", store], check=True)
before = snapshot()
done = subprocess.run([sys.executable, "-m", "pipeline", *command], capture_output=True, text=True)
after = snapshot()
check = subprocess.run(
    [sys.executable, "-m", "pipeline", "predict", "--release", "house-prices@current",
     os.environ["FIXTURE"], "-o", os.environ["OUTPUT"]],
    capture_output=True, text=True,
)
print(json.dumps({
    "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
    "before": before, "after": after, "predict_rc": check.returncode,
    "predict_stderr": check.stderr,
}))
"""


def _base_env(tmp: Path, store: Path) -> dict[str, str]:
    return {**ENV, "PIPELINE_STORE": str(store), "PIPELINE_ENV_FILE": str(tmp / "none.env")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one build, one package and one current release (made in-process: the
    faulted command and the check after it are the real processes)."""
    tmp = tmp_path_factory.mktemp("prepared")
    store = tmp / "store"
    env = _base_env(tmp, store)
    for args in (["train"], ["package", "--id-file", str(tmp / "pkg.id")]):
        done = invoke_isolated(*args, root=tmp, env=env)
        assert done.exit_code == 0, done.output
    package_id = (tmp / "pkg.id").read_text().strip()
    done = invoke_isolated("release", "create", package_id, root=tmp, env=env)
    assert done.exit_code == 0, done.output
    return store


def _pages(folder: Path) -> int:
    """Bytes the folder's files take on a tmpfs (whole 4 KiB pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file())


def _faulted(tmp: Path, prepared: Path, mode: str, size: int, *command: str) -> dict[str, Any]:
    store = tmp / "faulted-store"
    store.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    env.update(
        _base_env(tmp, store),
        PIPELINE_SEED="1",  # another build than the prepared one: it has to be written
        PIPELINE_MODEL__VERSION="0.2.0",
        FIXTURE=str(Path(__file__).parent / "fixtures" / "house-prices-test.csv"),
        OUTPUT=str(tmp / "predictions.csv"),
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", INSIDE,
         str(store), str(prepared), str(size), mode, json.dumps(command)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"the namespace could not be set up: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _assert_clean_failure(result: dict[str, Any], reason: str) -> None:
    assert result["rc"] == 9, result["stderr"]
    lines = result["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), lines
    assert reason in lines[0] and "PIPELINE_STORE" in lines[0]
    assert "Traceback" not in result["stderr"] + result["stdout"]
    # Nothing half-written and nothing lost: exactly the files there were, byte for byte.
    assert result["after"] == result["before"]
    assert result["predict_rc"] == 0, result["predict_stderr"]


@pytest.mark.parametrize("command", [("train",), ("package",)])
def test_full_disk_fails_with_exit_9_and_leaves_the_store_as_it_was(
    tmp_path: Path, prepared: Path, command: tuple[str, ...]
) -> None:
    """ENOSPC while writing a build or a package: one line, exit 9, the store unchanged."""
    size = _pages(prepared) + 16 * 4096  # the old store fits; a new build or package does not
    result = _faulted(tmp_path, prepared, "full", size, *command)
    _assert_clean_failure(result, "the disk is full")


@pytest.mark.parametrize(
    "command", [("train",), ("package",), ("release", "create", "@prepared"), ("data", "fetch")]
)
def test_read_only_store_fails_with_exit_9_and_leaves_the_store_as_it_was(
    tmp_path: Path, prepared: Path, command: tuple[str, ...]
) -> None:
    """EROFS on a read-only store: one line naming the cause, exit 9, the store unchanged."""
    if command[-1] == "@prepared":
        command = (*command[:-1], (prepared.parent / "pkg.id").read_text().strip())
    size = _pages(prepared) + 64 * 4096
    result = _faulted(tmp_path, prepared, "ro", size, *command)
    if command == ("data", "fetch"):
        # The built-in dataset is read in place: fetching it writes nothing, so it succeeds.
        assert result["rc"] == 0, result["stderr"]
        assert result["after"] == result["before"]
        return
    _assert_clean_failure(result, "read-only")
