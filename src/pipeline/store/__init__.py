"""The artifact store: one interface, addressed by URI, with crash-safe writes.

``Store`` is the interface every stage uses; nothing outside this package knows how a store
keeps its objects. ``LocalStore`` (``local.py``) keeps them in a local folder (``./store`` or
``file:///abs/path``); ``MemoryStore`` (``memory.py``) keeps them in a dict, for tests and as the
model for an object store. This module also holds the helpers both need: canonical JSON, file
digests and atomic local writes.

Every write is atomic: a reader never sees half of anything, and a crash leaves the old state or
the new. This is the bottom layer: it imports only ``pipeline.errors`` and the standard library.
"""

from __future__ import annotations

import abc
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


def store_error(exc: OSError, what: Path | str) -> StoreError:
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


def temp_beside(path: Path, data: bytes) -> Path:
    """``data`` written and fsynced under a fresh hidden name in ``path``'s folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a temp file behind
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp: Path | None = None
    try:
        tmp = temp_beside(path, data)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise store_error(exc, path) from exc


def atomic_write_json(path: Path, obj: Any) -> None:
    """``atomic_write_bytes`` of the canonical JSON of ``obj``."""
    atomic_write_bytes(path, canonical_json(obj))


@contextlib.contextmanager
def staging_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` for a caller to stage files in, and remove it afterwards, whatever happens.

    An OSError in the caller's writes (a full disk, a quota) becomes a ``StoreError``: one error
    class for every store write.
    """
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise store_error(exc, folder) from exc
    try:
        yield folder
    except OSError as exc:
        raise store_error(exc, folder) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def key_parts(key: str) -> list[str]:
    """The ``/``-separated parts of a store key; StoreError for an empty key or one with '..'."""
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise StoreError(f"invalid store key '{key}': expected a relative name without '..'")
    return parts


class Store(abc.ABC):
    """The artifact store interface. Stages use only these methods, never file paths.

    Keys are relative names joined by ``/`` (``builds/<id>/weights.pt``). Every write is atomic
    and ``create`` is exclusive, which is all the stages need for crash safety and for
    concurrent writers; an object store implements the same methods with conditional puts.
    Names starting with ``.`` (locks, temp files) are never listed.
    Layout: ``datasets/<sha256>/``, ``builds/<id>/``, ``packages/<name>/``,
    ``releases/<name>/``, ``refs/`` and ``tmp/`` (work in progress, never read).
    """

    uri: str

    @staticmethod
    def from_uri(uri: str) -> Store:
        """Open the store named by ``PIPELINE_STORE``: a path or a ``file://`` URI.

        ``MemoryStore`` has no URI here on purpose: every command opens the store anew, so a
        store in one process's memory would be empty for the next command.
        """
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            path = unquote(parsed.path) if parsed.scheme == "file" else uri
            return LocalStore(Path(path).expanduser())
        raise StoreError(
            f"unsupported store URI '{uri}' (PIPELINE_STORE): expected a folder path or file:// URI"
        )

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The bytes stored under ``key``; ``KeyError`` when there are none."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` names an object or a folder (a prefix of other keys)."""

    @abc.abstractmethod
    def walk(self, prefix: str) -> list[str]:
        """Sorted full keys of every object below ``prefix`` at any depth, hidden names left out.

        An empty ``prefix`` walks the whole store.
        """

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted names directly under ``prefix`` (empty when there are none)."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there, atomically."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key`` if it exists (checkpoints, a release orphan)."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        """Store ``data`` under ``key`` only if nothing is there; False when it was taken.

        ``immutable`` marks a record that must never be rewritten (read-only on a local disk,
        object lock on an object store). It can still be deleted.
        """

    @abc.abstractmethod
    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A private local scratch folder, removed afterwards whatever happens."""

    @abc.abstractmethod
    def publish(self, staged: Path, key: str) -> bool:
        """Make a finished staged folder appear as ``key`` in one step: all its files or none.

        Content-addressed folders never change, so if ``key`` exists it already holds the same
        content: the staged copy is dropped and False is returned.
        """

    @abc.abstractmethod
    def local_file(self, key: str) -> Path:
        """A local path to read ``key`` from (large files are streamed from disk).

        ``KeyError`` when there is no object. The file must not be modified.
        """

    @abc.abstractmethod
    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive lock named ``key`` (serialises read-modify-write sequences)."""

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """Where a person finds ``key``: an absolute local path, or a URI (for messages)."""

    @abc.abstractmethod
    def key_of(self, location: str) -> str | None:
        """The key that a user-given location names in this store; None if it lies outside.

        The inverse of ``location``: a local path for a folder store, a URI for an object store.
        """

    def read_json(self, key: str) -> Any:
        """Parse the JSON stored under ``key``."""
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> None:
        """``write`` the canonical JSON of ``obj``."""
        self.write(key, canonical_json(obj))

    def write_ref(self, name: str, value: str) -> None:
        """Point the named reference (e.g. ``latest-build``) at ``value``, atomically."""
        self.write(f"refs/{name}", (value + "\n").encode())

    def read_ref(self, name: str) -> str | None:
        """The value of a named reference, or None when it was never written."""
        try:
            return self.read_bytes(f"refs/{name}").decode().strip() or None
        except KeyError:
            return None


# The implementations import the interface above, so they come after it.
from pipeline.store.local import LocalStore  # noqa: E402
from pipeline.store.memory import MemoryStore  # noqa: E402

__all__ = [
    "CHUNK",
    "LocalStore",
    "MemoryStore",
    "Store",
    "atomic_write_bytes",
    "atomic_write_json",
    "canonical_json",
    "fsync_dir",
    "key_parts",
    "sha256_file",
    "store_error",
    "temp_beside",
]
