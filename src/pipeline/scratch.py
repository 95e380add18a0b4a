"""Private temporary folders, marked with the process that made them and swept once it is gone.

A command killed with SIGKILL (an out-of-memory kill, a CI job's timeout) leaves its temporary
folders for good: Ray's session files (``pipeline-ray-*``, 300-500 KB each), Ray Train's and
Ray Tune's run state (``pipeline-train-*``, ``pipeline-tune-*``), serve's readiness board
(``pipeline-serve-*``). Each is made here with a mark naming its process (pid and start time);
making one first removes the folders of the same prefix, in the same place, whose process has
gone. A folder without a mark (made by an older version, or being made this instant) is left.
Linux only (``/proc``); elsewhere nothing is swept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARK = ".pipeline-owner"


def start_time(pid: int) -> str | None:
    """``pid``'s start time (clock ticks since boot), None once it is gone (or a zombie:
    exited, not yet waited for), or where there is no ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def make(prefix: str, base: Path | str | None = None) -> Path:
    """A new folder ``base/<prefix><8 random characters>`` (the system's temporary folder by
    default), marked with this process, after sweeping ``sweep(prefix, base)``."""
    where = Path(base) if base is not None else Path(tempfile.gettempdir())
    sweep(prefix, where)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    mine = start_time(os.getpid())
    if mine is not None:
        (path / MARK).write_text(f"{os.getpid()} {mine}\n")
    return path


@contextlib.contextmanager
def folder(prefix: str, base: Path | str | None = None) -> Iterator[Path]:
    """``make``'s folder for the duration of the block, removed afterwards."""
    path = make(prefix, base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep(prefix: str, base: Path) -> list[Path]:
    """Remove the folders ``base/<prefix>*`` whose marking process has gone; those removed."""
    removed: list[Path] = []
    try:
        candidates = list(base.glob(f"{prefix}*"))
    except OSError:
        return removed
    for path in candidates:
        try:
            pid, started = (path / MARK).read_text().split()
            if start_time(int(pid)) == started:
                continue  # its process still runs
        except (OSError, ValueError):
            continue  # no mark (or not ours to judge): left alone
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
