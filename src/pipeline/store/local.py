"""``LocalStore``: the store in a local folder (``PIPELINE_STORE=./store`` or ``file://``).

A file is written under a temporary name in the same folder, fsynced and renamed (``create``
links it instead, so it never replaces another writer's); a folder (a build, a cached dataset) is
assembled under ``tmp/`` and renamed into place in one step; locks are ``flock`` on a dot file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.store import (
    Store,
    atomic_write_bytes,
    fsync_dir,
    key_parts,
    staging_folder,
    store_error,
    temp_beside,
)


class LocalStore(Store):
    """A store in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def path(self, *parts: str) -> Path:
        """Where ``parts`` lives on disk (for this implementation and its tests only)."""
        return self.root.joinpath(*parts)

    def _at(self, key: str) -> Path:
        return self.root.joinpath(*key_parts(key))

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

    def walk(self, prefix: str) -> list[str]:
        found = []
        for folder, dirs, files in os.walk(self._at(prefix) if prefix else self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # locks, temp files
            here = Path(folder).relative_to(self.root)
            found += [(here / f).as_posix() for f in files if not f.startswith(".")]
        return sorted(found)

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
            tmp = temp_beside(final, data)
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

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_folder(self.path("tmp", uuid.uuid4().hex))

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

    def location(self, key: str) -> str:
        return str(self._at(key).resolve())

    def key_of(self, location: str) -> str | None:
        path, root = Path(location).resolve(), self.root.resolve()
        if path == root or not path.is_relative_to(root):
            return None
        return path.relative_to(root).as_posix()
