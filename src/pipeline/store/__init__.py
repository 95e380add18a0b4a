"""The artifact store: one interface, addressed by URI, with crash-safe writes.

``Store`` is the interface every stage uses; nothing outside this package knows how a store
keeps its objects. ``LocalStore`` (``local.py``) keeps them in a local folder (``./store`` or
``file:///abs/path``); ``MemoryStore`` (``memory.py``) keeps them in a dict, for tests and as the
model for an object store; ``S3Store`` (``s3.py``) keeps them in an S3-compatible bucket
(``s3://bucket/prefix``) with the server's conditional writes. This module also holds the
helpers they need: canonical JSON, file digests and atomic local writes; ``numbered.py``
lists and claims numbered objects (release records, history events) on any store.

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
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import ConfigError, StoreError

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


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}
# What to do depends on the cause: "free space" is no advice for a read-only disk.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_reason(exc: OSError) -> str:
    """The cause of a failed file operation in words (``the disk is full``)."""
    return _REASONS.get(exc.errno or 0, exc.strerror or str(exc))


def store_error(exc: OSError, what: Path | str, advice: str | None = None) -> StoreError:
    """The one-line error for a failed store write, with the reason and the remedy in words.

    ``advice`` replaces the default remedy, for files outside the store (``--id-file``).
    """
    if advice is None:
        fix = "free space" if exc.errno in _FULL else "make it writable"
        if exc.errno == errno.EXDEV:  # builds/ linked to another file system than tmp/
            fix = "keep the store's folders on one file system (no links out of it)"
        advice = f"{fix} or point PIPELINE_STORE at a writable folder"
    return StoreError(f"cannot write {what}: {os_reason(exc)}; {advice}")


def temp_beside(path: Path, data: bytes) -> Path:
    """``data`` written and fsynced under a fresh hidden name in ``path``'s folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder should be: say that, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path.parent)) from None
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a temp file behind
        raise
    return tmp


def read_only_copy(path: Path, data: bytes) -> Path:
    """``data`` at ``path`` as a read-only file (a store's ``local_file`` copy), written to a
    temp name and renamed so that threads and processes may race here; StoreError on failure."""
    try:
        tmp = temp_beside(path, data)
        tmp.chmod(0o444)
        tmp.replace(path)
    except OSError as exc:
        raise store_error(exc, path) from exc
    return path


def atomic_write_bytes(path: Path, data: bytes, advice: str | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    ``advice`` is the remedy a failure names (``store_error``'s).
    """
    tmp: Path | None = None
    try:
        tmp = temp_beside(path, data)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise store_error(exc, path, advice) from exc


# This process's own descriptors by path: /proc/self/fd/N, and /dev/fd/N (/dev/stdout is
# /proc/self/fd/1).
_OWN_FD = re.compile(r"/(?:proc/self|dev)/fd/(\d+)")


def _link_hops(path: Path) -> list[Path]:
    """``path`` and each path its symbolic links lead to, in order, up to the first that is
    not a link, is one of this process's descriptors, or lies in /proc (whose links name open
    files, not paths); at most 40, the kernel's own limit."""
    hops = [path]
    while len(hops) < 40:
        at = hops[-1]
        if at.parts[:2] == ("/", "proc") or _OWN_FD.fullmatch(str(at)) or not at.is_symlink():
            break
        hops.append(at.parent / at.readlink())
    return hops


def output_target(path: Path) -> tuple[Path, bool]:
    """Where a file the user named (``-o``, ``--id-file``, ...) is written, and whether straight
    through rather than by renaming a finished temporary file onto it.

    A stream or device (``/dev/stdout``, ``/dev/null``, a FIFO, a terminal; anything reached
    through ``/proc``) is written straight through: a rename would replace the device node
    (as root) or fail, and ``/dev/stdout`` redirected to a file would lose what the process
    already wrote there. A symbolic link to a file is followed, so the link survives and its
    target is replaced.
    """
    import stat

    at = _link_hops(path)[-1]
    if at.parts[:2] == ("/", "proc") or _OWN_FD.fullmatch(str(at)):
        return path, True
    try:
        mode = at.stat().st_mode
    except OSError:
        return at, False  # not there yet (or unreadable: the write will say why)
    return (path, True) if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) else (at, False)


def open_stream(path: Path) -> BinaryIO:
    """A stream target (``output_target``) opened for writing. One of this process's own
    descriptors (``/dev/stdout`` is ``/proc/self/fd/1``) is shared, not opened again: a second
    opening of a redirected stdout has an offset of its own, and the two would overwrite each
    other's bytes. Anything else is appended to."""
    own = _OWN_FD.fullmatch(str(_link_hops(path)[-1]))
    if own is None:
        return path.open("ab")
    fd = int(own.group(1))
    if fd in (1, 2):  # what Python holds for them first, so that the order holds
        (sys.stdout if fd == 1 else sys.stderr).flush()
    return os.fdopen(os.dup(fd), "wb")


def write_output(path: Path, data: bytes, advice: str) -> None:
    """``atomic_write_bytes`` of a file the user named, through ``output_target``."""
    target, stream = output_target(path)
    if not stream:
        atomic_write_bytes(target, data, advice)
        return
    try:
        with open_stream(path) as fh:
            fh.write(data)
    except OSError as exc:
        raise store_error(exc, path, advice) from exc


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


def key_name(key: str) -> str:
    """A key in its canonical form, its parts joined by ``/`` (``key_parts`` checks them)."""
    return "/".join(key_parts(key))


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
    def from_uri(
        uri: str, *, timeout: float = 30.0, retries: int = 3, allow_http: bool = False,
        s3: Mapping[str, str] | None = None, cache_bytes: int = 5 * 1024**3,
    ) -> Store:  # fmt: skip
        """Open the store named by ``PIPELINE_STORE``: a path, a ``file://`` or an ``s3://`` URI.

        ConfigError (exit 3) for a value that names no usable folder or bucket (see
        ``local.root_of``), StoreError for a store that is a file or lies under one: readers
        would see an empty store otherwise.
        ``timeout`` (seconds per request) and ``retries`` bound an object store's requests
        (PIPELINE_STORE_TIMEOUT, PIPELINE_STORE_RETRIES); ``allow_http`` lets it reach an
        ``http://`` endpoint (AWS_ALLOW_HTTP); ``s3`` is the S3 client's configuration (key
        id, secret, session token, endpoint, region); ``cache_bytes`` caps its download cache
        (``s3_cache``). ``MemoryStore`` has no URI here on purpose: every command opens the
        store anew, so a store in one process's memory would be empty for the next command.
        """
        if uri.strip().lower().startswith("s3://"):
            from pipeline.store.s3 import S3Store

            return S3Store(
                uri.strip(), timeout=timeout, retries=retries, allow_http=allow_http, s3=s3,
                cache_bytes=cache_bytes,
            )  # fmt: skip
        from pipeline.store.local import check_not_a_file, root_of

        root = root_of(uri)
        check_not_a_file(root)
        return LocalStore(root)

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The bytes stored under ``key``; ``KeyError`` when there are none."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` names an object or a folder (a prefix of other keys)."""

    @abc.abstractmethod
    def walk(self, prefix: str) -> list[str]:
        """Sorted full keys of every object below ``prefix`` at any depth, hidden names left out
        (an empty ``prefix``: the whole store)."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted names directly under ``prefix`` (empty when there are none)."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there, atomically."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key`` if it exists (checkpoints, a release orphan)."""

    def delete_all(self, prefix: str) -> None:
        """Remove every object directly under ``prefix`` (a local store: the folder too)."""
        for name in self.list(prefix):
            self.delete(f"{prefix}/{name}")

    @abc.abstractmethod
    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        """Store ``data`` under ``key`` only if nothing is there; False when it was taken.

        ``immutable`` marks a record that must never be rewritten (read-only on a local disk,
        object lock on an object store). It can still be deleted.
        """

    @abc.abstractmethod
    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        """Replace the object at ``key`` with ``data`` only if it still holds ``expected``.

        Compare-and-swap: ``expected`` None means "only if absent". False, and nothing written,
        when another writer changed the object since ``expected`` was read (an object store
        sends ``If-Match`` on the ETag it read). Callers put a sequence number in ``data`` so
        that equal bytes mean the same state (no ABA).
        """

    @abc.abstractmethod
    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A private local scratch folder, removed afterwards whatever happens (what a SIGKILL
        left behind is removed by a later ``staging()``: LocalStore's sweep)."""

    @abc.abstractmethod
    def publish(self, staged: Path, key: str) -> bool:
        """Make a finished staged folder appear as ``key`` in one step: all its files or none.

        Content-addressed folders never change, so if ``key`` exists it already holds the same
        content: the staged copy is dropped and False is returned.
        """

    @abc.abstractmethod
    def local_file(self, key: str, *, again: bool = False) -> Path:
        """A local path to read ``key`` from; ``KeyError`` when there is no object. The file
        must not be modified. ``again``: not a copy kept from before (``refs.open_stored``)."""

    @abc.abstractmethod
    def lock(
        self, key: str, on_wait: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive lock named ``key`` (serialises read-modify-write sequences);
        ``on_wait`` is called once if another holder makes this one wait."""

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """Where a person finds ``key``: an absolute local path, or a URI (for messages)."""

    @abc.abstractmethod
    def key_of(self, location: str) -> str | None:
        """The key that a user-given location names in this store; None if it lies outside.

        The inverse of ``location``: a local path for a folder store, a URI for an object store.
        """

    @abc.abstractmethod
    def check_writable(self) -> None:
        """StoreError now if the store cannot be written at all (read-only, a file, no access):
        commands that work for minutes before their first write (training) call it up front."""

    def check_can_hold(self, key: str) -> None:
        """StoreError now if ``key`` cannot be written later (a file where one of its folders
        goes), for work that takes minutes before that write. Object stores have no folders."""
        return None  # a hook: only a folder store has something to check

    @abc.abstractmethod
    def contains(self, location: str) -> bool:
        """Whether a user-given location (an output path) is the store or lies inside it."""

    def refuse_inside(self, location: Path | str | None, option: str) -> None:
        """ConfigError if an output named by ``option`` would be written into the store: only
        the stages write the store, and an output there could replace an immutable release
        record or a package, or leave a file no manifest lists."""
        if location is not None and self.contains(str(location)):
            raise ConfigError(
                f"{option} {location} lies inside the store '{self.uri}' (PIPELINE_STORE), whose "
                "files only pipeline writes: expected a path outside it; choose another path"
            )

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


class KeyedStore(Store):
    """A store whose objects are named ``<uri>/<key>`` (memory, S3): keys are locations.

    The folder store differs: its locations are paths on this machine.
    """

    def contains(self, location: str) -> bool:
        return location == self.uri or location.startswith(f"{self.uri}/")

    def location(self, key: str) -> str:
        return f"{self.uri}/{key_name(key)}"

    def key_of(self, location: str) -> str | None:
        rest = location.removeprefix(f"{self.uri}/")
        if rest == location:
            return None
        try:
            return key_name(rest)
        except StoreError:
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
    "open_stream",
    "os_reason",
    "output_target",
    "read_only_copy",
    "sha256_file",
    "store_error",
    "temp_beside",
    "write_output",
]
