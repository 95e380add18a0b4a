"""The artifact store: one interface, addressed by URI, with crash-safe writes.

Today the store is a local folder (``./store`` or ``file:///abs/path``). Stages only use the
methods here, so an object store can be added behind the same interface.

Every write is atomic: a file is written under a temporary name in the same folder, fsynced and
renamed; a directory (a build, a cached dataset) is assembled under ``tmp/`` and renamed into
place in one step. A reader never sees half of anything; a crash leaves the old state or the new.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipeline.errors import StoreError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, fixed separators, a trailing newline."""
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_error(exc: OSError, what: Path) -> StoreError:
    """The one-line error for a failed store write, with the reason in words."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return StoreError(
        f"cannot write {what}: {reason}; free space or point PIPELINE_STORE at a writable folder"
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise store_error(exc, path) from exc


def atomic_write_json(path: Path, obj: Any) -> None:
    """``atomic_write_bytes`` of the canonical JSON of ``obj``."""
    atomic_write_bytes(path, canonical_json(obj))


def read_json(path: Path) -> Any:
    """Parse a JSON file written by this module."""
    return json.loads(path.read_text(encoding="utf-8"))


class Store:
    """A local-folder artifact store.

    Layout: ``datasets/<sha256>/`` (fetched data), ``builds/<build id>/``, ``refs/`` (named
    pointers such as the latest build) and ``tmp/`` (work in progress, never read).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_uri(cls, uri: str) -> Store:
        """Open the store named by ``PIPELINE_STORE``: a path or a ``file://`` URI."""
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            path = unquote(parsed.path) if parsed.scheme == "file" else uri
            return cls(Path(path).expanduser())
        raise StoreError(
            f"unsupported store URI '{uri}' (PIPELINE_STORE): expected a folder path or file:// URI"
        )

    def path(self, *parts: str) -> Path:
        """Where ``parts`` lives inside the store (nothing is created)."""
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private folder under ``tmp/``, removed afterwards whatever happens."""
        folder = self.path("tmp", uuid.uuid4().hex)
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise store_error(exc, folder) from exc
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path, *parts: str) -> Path:
        """Move a finished staged folder to ``parts`` in one rename; keep an existing twin.

        Content-addressed folders never change, so if the destination exists it already holds
        the same content and the staged copy is dropped.
        """
        final = self.path(*parts)
        try:
            for file in staged.rglob("*"):
                if file.is_file():
                    with file.open("rb") as fh:
                        os.fsync(fh.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                return final
            try:
                staged.rename(final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.exists():
                    return final  # a concurrent writer published the same content first
                raise
            fsync_dir(final.parent)
        except OSError as exc:
            raise store_error(exc, final) from exc
        return final

    def write_ref(self, name: str, value: str) -> None:
        """Point the named reference (e.g. ``latest-build``) at ``value``, atomically."""
        atomic_write_bytes(self.path("refs", name), (value + "\n").encode())

    def read_ref(self, name: str) -> str | None:
        """The value of a named reference, or None when it was never written."""
        try:
            return self.path("refs", name).read_text().strip() or None
        except FileNotFoundError:
            return None
