"""A full disk or a read-only store: exit 9 with one line, nothing partial, the old store intact.

The faults are real: each command runs in a private mount namespace (``unshare -m``) whose store
is a size-limited tmpfs (ENOSPC) or a tmpfs remounted read-only (EROFS). The commands are real
processes forked from a warm server started in that namespace (``tests/warm.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import warm
from tests.conftest import invoke_isolated

ENV = {"PIPELINE_LOG_FORMAT": "json", "PIPELINE_TRAIN__MAX_EPOCHS": "3"}


def _snapshot(store: Path) -> dict[str, str]:
    """Every file under ``store`` and its sha256."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def _base_env(tmp: Path, store: Path) -> dict[str, str]:
    return {**ENV, "PIPELINE_STORE": str(store), "PIPELINE_ENV_FILE": os.devnull}


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


@pytest.fixture(scope="module")
def namespace() -> Iterator[warm.Server]:
    """A warm server in a private mount namespace (``unshare -m``): the commands it forks see
    the faulted store mounted there, and nothing outside it does."""
    server = warm.Server(("unshare", "-m", "--propagation", "private"))
    yield server
    server.close()


def _inside(server: warm.Server, *command: str) -> None:
    """Run ``command`` (a mount) in the server's mount namespace."""
    subprocess.run(["nsenter", "-t", str(server.pid), "-m", *command], check=True, timeout=60)


def _run(server: warm.Server, args: list[str], env: dict[str, str], cwd: Path) -> Any:
    """``pipeline *args`` in the server's namespace: forked from it, or a fresh interpreter
    entered into it when TESTS_FRESH_PROCESSES=1."""
    if not warm.DISABLED:
        return warm.run(args, env, cwd, 300, on=server)
    enter = ["nsenter", "-t", str(server.pid), "-m", sys.executable, "-m", "pipeline"]
    return subprocess.run(
        [*enter, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _faulted(
    tmp: Path, prepared: Path, server: warm.Server, mode: str, size: int, *command: str
) -> dict[str, Any]:
    """Mount a tmpfs of ``size`` bytes as a store in the namespace, copy the prepared store in,
    fault it (``full``: only the size; ``ro``: remounted read-only), run ``pipeline *command``
    there, then `pipeline predict` from the current release: what happened, and the store's
    files before and after."""
    store = tmp / "faulted-store"
    store.mkdir()
    seen = Path(f"/proc/{server.pid}/root") / store.relative_to("/")  # the store in there
    _inside(server, "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(store))
    shutil.copytree(prepared, seen, dirs_exist_ok=True)
    if mode == "ro":
        _inside(server, "mount", "-o", "remount,ro", str(store))
    env = {
        **warm.server_env(),
        **_base_env(tmp, store),
        "PIPELINE_SEED": "1",  # another build than the prepared one: it has to be written
        "PIPELINE_MODEL__VERSION": "0.2.0",
    }
    before = _snapshot(seen)
    done = _run(server, list(command), env, tmp)
    after = _snapshot(seen)
    fixture = Path(__file__).parent / "fixtures" / "house-prices-test.csv"
    args = ["predict", "--release", "house-prices@current", str(fixture)]
    check = _run(server, [*args, "-o", str(tmp / "predictions.csv")], env, tmp)
    _inside(server, "umount", str(store))
    return {
        "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
        "before": before, "after": after,
        "predict_rc": check.returncode, "predict_stderr": check.stderr,
    }  # fmt: skip


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
    tmp_path: Path, prepared: Path, namespace: warm.Server, command: tuple[str, ...]
) -> None:
    """ENOSPC while writing a build or a package: one line, exit 9, the store unchanged."""
    size = _pages(prepared) + 16 * 4096  # the old store fits; a new build or package does not
    result = _faulted(tmp_path, prepared, namespace, "full", size, *command)
    _assert_clean_failure(result, "the disk is full")


@pytest.mark.parametrize(
    "command", [("train",), ("package",), ("release", "create", "@prepared"), ("data", "fetch")]
)
def test_read_only_store_fails_with_exit_9_and_leaves_the_store_as_it_was(
    tmp_path: Path, prepared: Path, namespace: warm.Server, command: tuple[str, ...]
) -> None:
    """EROFS on a read-only store: one line naming the cause, exit 9, the store unchanged."""
    if command[-1] == "@prepared":
        command = (*command[:-1], (prepared.parent / "pkg.id").read_text().strip())
    size = _pages(prepared) + 64 * 4096
    result = _faulted(tmp_path, prepared, namespace, "ro", size, *command)
    if command == ("data", "fetch"):
        # The built-in dataset is read in place: fetching it writes nothing, so it succeeds.
        assert result["rc"] == 0, result["stderr"]
        assert result["after"] == result["before"]
        return
    _assert_clean_failure(result, "read-only")


def test_a_full_disk_after_the_archive_leaves_no_archive_without_its_record(
    tmp_path: Path, prepared: Path, namespace: warm.Server
) -> None:
    """ENOSPC with room for the package archive but not for its record (``<version>.json``):
    the archive was left in the store without it, and `release create` of its path said
    "package the build first". Now the archive goes too: the store is as it was."""
    [archive] = (prepared / "packages").rglob("*.tar.gz")
    size = _pages(prepared) + -(-archive.stat().st_size // 4096) * 4096
    result = _faulted(tmp_path, prepared, namespace, "full", size, "package")
    _assert_clean_failure(result, "the disk is full")


def test_a_builds_folder_on_another_file_system_is_named(
    tmp_path: Path, prepared: Path, namespace: warm.Server
) -> None:
    """builds/ mounted from another file system than the store's tmp/ (a link or a mount out
    of the store): the build's final rename fails with EXDEV, and the message said "make it
    writable", which it was. It now says to keep the store on one file system."""
    store = tmp_path / "split-store"
    seen = Path(f"/proc/{namespace.pid}/root") / store.relative_to("/")
    shutil.copytree(prepared, seen)
    _inside(namespace, "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(store / "builds"))
    shutil.copytree(prepared / "builds", seen / "builds", dirs_exist_ok=True)
    env = {**warm.server_env(), **_base_env(tmp_path, store), "PIPELINE_SEED": "1"}
    done = _run(namespace, ["train"], env, tmp_path)
    _inside(namespace, "umount", str(store / "builds"))
    assert done.returncode == 9, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "keep the store's folders on one file system" in lines[0], lines
