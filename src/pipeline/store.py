"""The artifact store: one interface, addressed by URI, with crash-safe writes.

Today the store is a local folder (``./store`` or ``file:///abs/path``). Stages only use the
methods here, so an object store can be added behind the same interface.

Every write is atomic: a file is written under a temporary name in the same folder, fsynced and
renamed; a directory (a build, a cached dataset) is assembled under ``tmp/`` and renamed into
place in one step. A reader never sees half of anything; a crash leaves the old state or the new.
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


def _temp_beside(path: Path, data: bytes) -> Path:
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
        tmp = _temp_beside(path, data)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise store_error(exc, path) from exc


def atomic_write_json(path: Path, obj: Any) -> None:
    """``atomic_write_bytes`` of the canonical JSON of ``obj``."""
    atomic_write_bytes(path, canonical_json(obj))


def read_json(path: Path) -> Any:
    """Parse a JSON file written by this module."""
    return json.loads(path.read_text(encoding="utf-8"))


class Store(abc.ABC):
    """The artifact store interface. Stages use only these methods, never file paths.

    Keys are relative names joined by ``/`` (``builds/<id>/weights.pt``). Every write is atomic
    and ``create`` is exclusive, which is all the stages need for crash safety and for
    concurrent writers; an object store implements the same methods with conditional puts.
    Layout: ``datasets/<sha256>/``, ``builds/<id>/``, ``packages/<name>/``,
    ``releases/<name>/``, ``refs/`` and ``tmp/`` (work in progress, never read).
    """

    uri: str

    @staticmethod
    def from_uri(uri: str) -> Store:
        """Open the store named by ``PIPELINE_STORE``: a path or a ``file://`` URI."""
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
        """Whether ``key`` names a file or a folder."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted names directly under ``prefix`` (empty when there are none)."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there, atomically."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key`` if it exists (mutable state only: checkpoints)."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        """Store ``data`` under ``key`` only if nothing is there; False when it was taken.

        ``immutable`` marks a record that must never be rewritten (read-only on a local disk,
        object lock on an object store).
        """

    @abc.abstractmethod
    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A private local scratch folder, removed afterwards whatever happens."""

    @abc.abstractmethod
    def publish(self, staged: Path, key: str) -> bool:
        """Make a finished staged folder appear as ``key`` in one step.

        Content-addressed folders never change, so if ``key`` exists it already holds the same
        content: the staged copy is dropped and False is returned.
        """

    @abc.abstractmethod
    def local_file(self, key: str) -> Path:
        """A local path to read ``key`` from (large files are streamed from disk)."""

    @abc.abstractmethod
    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive lock named ``key`` (serialises read-modify-write sequences)."""

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


def _parts(key: str) -> list[str]:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise StoreError(f"invalid store key '{key}': expected a relative name without '..'")
    return parts


class LocalStore(Store):
    """A store in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def path(self, *parts: str) -> Path:
        """Where ``parts`` lives on disk (for this implementation and its tests only)."""
        return self.root.joinpath(*parts)

    def _at(self, key: str) -> Path:
        return self.root.joinpath(*_parts(key))

    def read_bytes(self, key: str) -> bytes:
        path = self._at(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise StoreError(
                f"cannot read {path}: {exc.strerror or exc}; check PIPELINE_STORE's permissions"
            ) from exc

    def exists(self, key: str) -> bool:
        return self._at(key).exists()

    def list(self, prefix: str) -> list[str]:
        folder = self._at(prefix)
        try:
            return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def write(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._at(key), data)

    def delete(self, key: str) -> None:
        path = self._at(key)
        try:
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except FileNotFoundError:
            pass  # the folder itself is gone: nothing to delete
        except OSError as exc:
            raise store_error(exc, path) from exc

    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        final = self._at(key)
        tmp: Path | None = None
        try:
            tmp = _temp_beside(final, data)
            if immutable:
                tmp.chmod(0o444)
            try:
                # link() fails if the name is taken: the finished file appears under its final
                # name, or not at all, and never replaces another writer's.
                os.link(tmp, final)
            except FileExistsError:
                return False
            fsync_dir(final.parent)
            return True
        except OSError as exc:
            raise store_error(exc, final) from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        folder = self.path("tmp", uuid.uuid4().hex)
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise store_error(exc, folder) from exc
        try:
            yield folder
        except OSError as exc:
            # The caller's writes into the staging folder (a full disk, a quota): one error
            # class for every store write, and the folder goes below either way.
            raise store_error(exc, folder) from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path, key: str) -> bool:
        final = self._at(key)
        try:
            for file in staged.rglob("*"):
                if file.is_file():
                    with file.open("rb") as fh:
                        os.fsync(fh.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                return False
            try:
                staged.rename(final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.exists():
                    return False  # a concurrent writer published the same content first
                raise
            fsync_dir(final.parent)
        except OSError as exc:
            raise store_error(exc, final) from exc
        return True

    def local_file(self, key: str) -> Path:
        path = self._at(key)
        if not path.is_file():
            raise KeyError(key)
        return path

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        import fcntl

        path = self._at(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(exc, path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
