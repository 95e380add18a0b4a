"""The s3:// store's local download cache: read-only copies of objects, kept by their ETag.

``predict``, ``serve``, ``evaluate`` and a training run on a dataset in the bucket read their
objects from local copies under ``<TMPDIR>/pipeline-s3-scratch-<uid>/files/<tag>/<name>``, so
a second run from the same release or dataset downloads nothing. Without a bound that folder
only grew: a CI runner that scores a new release a day kept every package and dataset it ever
fetched. After each download, copies least recently used are removed until the cache holds at
most ``PIPELINE_STORE_CACHE_BYTES`` (ccache's habit: a size cap, oldest out first). A copy is
never removed while it may be in use: not one this process has handed out, nor one any process
used in the last ``GRACE_S`` seconds (its folder's modification time is refreshed at each use),
so a concurrent ``predict`` never loses the file it is about to open. Removing an open file is
harmless on POSIX: its reader keeps it until it closes it.

Downloads stream to a temp file beside the copy and are renamed into place: a 5 GB dataset is
never held in memory, and a download cut short leaves no copy behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

# The cap's default: ccache's 5 GB.
CACHE_BYTES = 5 * 1024**3
# A copy used this recently (by any process) is in use: never removed.
GRACE_S = 600.0

_HANDED_OUT: set[Path] = set()  # copies (their folders) this process returned
_GUARD = threading.Lock()


def stream_copy(path: Path, chunks: Iterable[bytes | memoryview]) -> Path:
    """``chunks`` written to a fresh temp name beside ``path``, fsynced, made read-only and
    renamed to ``path`` (threads and processes may race here: the last rename wins, with the
    same bytes). OSError on failure, with no temp file left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("xb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o444)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a dropped connection leaves nothing
        raise
    return path


def used(path: Path) -> Path:
    """Mark the copy at ``path`` as in use (by this process, and now), and return it."""
    with _GUARD:
        _HANDED_OUT.add(path.parent)
    with contextlib.suppress(OSError):
        os.utime(path.parent)
    return path


def prune(files: Path, cap: int, *, now: float | None = None) -> list[Path]:
    """Remove the least recently used copies under ``files`` until they hold at most ``cap``
    bytes, sparing those in use (``used`` by this process, or within ``GRACE_S``). Returns
    the folders removed. Best effort: a copy another process removes first, or one that cannot
    be removed, is skipped; the cache is never a reason for a command to fail."""
    now = time.time() if now is None else now
    entries = []
    with contextlib.suppress(OSError):
        for folder in files.iterdir():
            with contextlib.suppress(OSError):
                entries.append((folder.stat().st_mtime, folder.name, folder, _size(folder)))
    total = sum(size for *_, size in entries)
    removed: list[Path] = []
    with _GUARD:
        spared = set(_HANDED_OUT)
    for mtime, _, folder, size in sorted(entries):  # oldest use first
        if total <= cap:
            break
        if folder in spared or now - mtime < GRACE_S:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            total -= size
            removed.append(folder)
    return removed


def _size(folder: Path) -> int:
    """Bytes of the files in one copy's folder (a temp file being written counts too)."""
    total = 0
    for entry in os.scandir(folder):
        with contextlib.suppress(OSError):
            total += entry.stat(follow_symlinks=False).st_size
    return total
