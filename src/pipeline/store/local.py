"""``LocalStore``: the store in a local folder (``PIPELINE_STORE=./store`` or ``file://``).

A file is written under a temporary name in the same folder, fsynced and renamed (``create``
links it instead, so it never replaces another writer's); a folder (a build, a cached dataset) is
assembled under ``tmp/`` and renamed into place in one step; locks are ``flock`` on a dot file.
A staging folder is held under ``flock`` while in use, so the folder of a run killed with SIGKILL
(the kernel drops its lock) is removed by the next ``staging()``.

``root_of`` and ``check_not_a_file`` vet what ``PIPELINE_STORE`` names before the store is used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.errors import ConfigError, StoreError
from pipeline.store import (
    Store,
    atomic_write_bytes,
    fsync_dir,
    key_parts,
    staging_folder,
    store_error,
    temp_beside,
)

_STAGED = re.compile(r"[0-9a-f]{32}")  # staging folder names under tmp/


def root_of(uri: str) -> Path:
    """The folder that ``PIPELINE_STORE`` names: a path or a ``file://`` URI on this machine.

    ConfigError (exit 3: a setting) for a value that names no folder here: empty, another
    scheme, a ``file://`` URI with a host (it would silently become a local path), or a
    ``~user`` that does not exist.
    """
    setting = f"PIPELINE_STORE='{uri}'"
    expected = "expected a folder path or a file:///absolute/path URI"
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{setting} names the host '{parsed.netloc}': a store is a folder on this "
                "machine; mount the share and give its local path (file:///mnt/...)"
            )
        if parsed.query or parsed.fragment or not parsed.path.startswith("/"):
            raise ConfigError(f"{setting} is no folder URI: {expected} (no ? or #); give one")
        uri = unquote(parsed.path)
    elif parsed.scheme:
        raise ConfigError(
            f"unsupported store URI '{uri}' (PIPELINE_STORE): expected a folder path, a "
            "file:///absolute/path URI or s3://bucket/prefix (any S3-compatible server)"
        )
    if not uri.strip() or "\0" in uri:  # an empty value would make the working folder the store
        raise ConfigError(
            f"{setting} names no folder: {expected}; set one, or unset it for ./store"
        )
    try:
        return Path(uri).expanduser()
    except RuntimeError:  # ~user without such a user, or ~ without a home folder
        raise ConfigError(
            f"{setting}: '{uri.split('/')[0]}' is no home folder on this machine; "
            "give the store's absolute path"
        ) from None


def check_not_a_file(root: Path) -> None:
    """StoreError if ``root``, or the nearest folder above it that exists, is not a folder.

    A store that is a file would otherwise read as an empty store (``release list`` shows
    nothing) and fail only at the first write, after the work.
    """
    for path in (root, *root.parents):
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there yet (it is created on the first write), or under a file
        except OSError as exc:
            raise StoreError(
                f"cannot read {path} (PIPELINE_STORE={root}): {exc.strerror or exc}; "
                "check its permissions"
            ) from exc
        if not stat.S_ISDIR(mode):
            where = "is a file" if path == root else f"lies under the file {path}"
            raise StoreError(
                f"PIPELINE_STORE={root} {where}: expected a folder (it is created if missing); "
                "point PIPELINE_STORE at a folder"
            )
        return


def _sweep(tmp: Path) -> None:
    """Remove the staging folders under ``tmp`` whose lock no live process holds."""
    import fcntl

    try:
        folders = [p for p in tmp.iterdir() if _STAGED.fullmatch(p.name)]
    except OSError:
        return  # no tmp/ yet
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)  # its run died: nobody holds it
        except OSError:
            continue  # locked: a run at work stages there
        finally:
            os.close(fd)


def _read_error(exc: OSError, path: Path) -> StoreError:
    return StoreError(
        f"cannot read {path}: {exc.strerror or exc}; check PIPELINE_STORE's permissions"
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
            raise _read_error(exc, path) from exc

    def exists(self, key: str) -> bool:
        path = self._at(key)
        try:
            return path.exists()
        except OSError as exc:  # an unreadable folder on the way: not "absent"
            raise _read_error(exc, path) from exc

    def walk(self, prefix: str) -> list[str]:
        def refuse(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise _read_error(exc, Path(exc.filename or self.root)) from exc

        found = []
        start = self._at(prefix) if prefix else self.root
        for folder, dirs, files in os.walk(start, onerror=refuse):
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
        except OSError as exc:  # permissions: an unreadable store is no empty store
            raise _read_error(exc, folder) from exc

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

    def delete_all(self, prefix: str) -> None:
        super().delete_all(prefix)
        folder = self._at(prefix)
        while folder != self.root:  # the emptied folders: an object store leaves no trace
            try:
                folder.rmdir()
            except OSError:  # not empty (another writer's file), or gone
                return
            folder = folder.parent

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

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        # Writers of one key agree through a hidden lock file beside it (flock): compare, then
        # an atomic replace, as one step for every process on this machine.
        parts = key_parts(key)
        with self.lock("/".join((*parts[:-1], f".{parts[-1]}.swap"))):
            try:
                held: bytes | None = self.read_bytes(key)
            except KeyError:
                held = None
            if held != expected or (expected is None and self.exists(key)):
                return False
            self.write(key, data)
            return True

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        # The folder is held under flock while in use: a run killed with SIGKILL cannot remove
        # its folder, but the kernel drops its lock, so the next staging() removes it (_sweep).
        import fcntl

        tmp = self.path("tmp")
        _sweep(tmp)
        while True:
            with staging_folder(tmp / uuid.uuid4().hex) as folder:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a _sweep looks at it
                    if os.fstat(fd).st_nlink:  # 0: swept before it was locked; take another
                        yield folder
                        return
                finally:
                    os.close(fd)

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

    def local_file(self, key: str, *, again: bool = False) -> Path:
        path = self._at(key)  # the object itself: there is no other copy to take ``again``
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                raise KeyError(key)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise _read_error(exc, path) from exc
        return path

    def check_writable(self) -> None:
        check_not_a_file(self.root)
        # The store, or the folder it will be created in. statvfs tells a read-only mount
        # (EROFS) from a permission problem (EACCES); access() answers for this process's user.
        folder = next((p for p in (self.root, *self.root.parents) if p.exists()), self.root)
        try:
            code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else 0
            if not code and not os.access(folder, os.W_OK | os.X_OK):
                code = errno.EACCES
        except OSError as exc:
            raise store_error(exc, folder) from exc
        if code:
            raise store_error(OSError(code, os.strerror(code)), folder)

    def check_can_hold(self, key: str) -> None:
        path = self._at(key)
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                return
            if folder.exists() and not folder.is_dir():
                raise store_error(
                    NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder)), path
                )

    def contains(self, location: str) -> bool:
        try:
            path, root = Path(location).resolve(), self.root.resolve()
        except (OSError, RuntimeError):  # a symlink loop: it is nowhere, so not in the store
            return False
        return path == root or path.is_relative_to(root)

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        import fcntl

        path = self._at(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(exc, path) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by another process (the kernel frees a dead one's)
                if on_wait is not None:
                    on_wait()
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
