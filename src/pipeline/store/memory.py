"""``MemoryStore``: a complete store in this process's memory, for tests and as a model.

It behaves as an object store does, which makes it the model for one: objects are bytes under
full keys in one dict, a folder is only the keys below it, and one lock (``_guard``) makes every
read, write, exclusive create and publish a single step that no reader sees half of. What must be
a local file (a staging folder, a file to stream from) lives in a private temporary folder that
goes away with the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.store import (
    KeyedStore,
    key_name,
    read_only_copy,
    staging_folder,
    store_error,
)


def _hidden(name: str) -> bool:
    """Whether a name has a part starting with ``.`` (never listed, as on a local disk)."""
    return any(part.startswith(".") for part in name.split("/"))


class MemoryStore(KeyedStore):
    """A store whose objects live in a dict; safe to share between threads."""

    def __init__(self) -> None:
        self.uri = f"memory://{uuid.uuid4().hex[:12]}"
        self._objects: dict[str, bytes] = {}
        self._immutable: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._scratch_dir: Path | None = None

    def _scratch(self) -> Path:
        """The store's private local folder, made on first use and removed with the store."""
        with self._guard:
            if self._scratch_dir is None:
                self._scratch_dir = Path(tempfile.mkdtemp(prefix="pipeline-memory-store-"))
                weakref.finalize(self, shutil.rmtree, self._scratch_dir, True)
            return self._scratch_dir

    def _taken(self, name: str) -> bool:
        """Whether ``name`` is an object or a folder; the caller holds ``_guard``."""
        return name in self._objects or any(k.startswith(f"{name}/") for k in self._objects)

    def read_bytes(self, key: str) -> bytes:
        with self._guard:
            try:
                return self._objects[key_name(key)]
            except KeyError:
                raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        with self._guard:
            return self._taken(key_name(key))

    def walk(self, prefix: str) -> list[str]:
        start = f"{key_name(prefix)}/" if prefix else ""
        with self._guard:
            keys = [k for k in self._objects if k.startswith(start)]
        return sorted(k for k in keys if not _hidden(k[len(start) :]))

    def list(self, prefix: str) -> list[str]:
        start = f"{key_name(prefix)}/"
        with self._guard:
            names = {k[len(start) :].split("/")[0] for k in self._objects if k.startswith(start)}
        return sorted(n for n in names if not _hidden(n))

    def write(self, key: str, data: bytes) -> None:
        name = key_name(key)
        with self._guard:
            if name in self._immutable:
                raise StoreError(
                    f"cannot write {self.location(name)}: it was created immutable and is never "
                    "rewritten; create it under a new key"
                )
            self._objects[name] = bytes(data)

    def delete(self, key: str) -> None:
        name = key_name(key)
        with self._guard:
            self._objects.pop(name, None)
            self._immutable.discard(name)

    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        name = key_name(key)
        with self._guard:
            if self._taken(name):
                return False
            self._objects[name] = bytes(data)
            if immutable:
                self._immutable.add(name)
            return True

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        name = key_name(key)
        with self._guard:
            if name in self._immutable or self._objects.get(name) != expected:
                return False
            if expected is None and self._taken(name):
                return False  # a folder of that name
            self._objects[name] = bytes(data)
            return True

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_folder(self._scratch() / "staging" / uuid.uuid4().hex)

    def publish(self, staged: Path, key: str) -> bool:
        name = key_name(key)
        try:
            # Read everything first: the copy-in below is one step under the guard.
            files = {
                f"{name}/{file.relative_to(staged).as_posix()}": file.read_bytes()
                for file in sorted(staged.rglob("*"))
                if file.is_file()
            }
        except OSError as exc:
            raise store_error(exc, self.location(name)) from exc
        with self._guard:
            if self._taken(name):
                return False  # the same content, published first by another writer
            self._objects.update(files)
        return True

    def local_file(self, key: str, *, again: bool = False) -> Path:
        name = key_name(key)
        with self._guard:
            data = self._objects.get(name)
        if data is None:
            raise KeyError(key)
        # One read-only copy per content, under the object's own file name (readers pick a
        # format by its suffix); written to a temp name and renamed, so threads may race here.
        digest = hashlib.sha256(data).hexdigest()
        path = self._scratch() / "files" / digest / name.rsplit("/", 1)[-1]
        return path if path.exists() and not again else read_only_copy(path, data)

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        name = key_name(key)
        with self._guard:
            held = self._locks.setdefault(name, threading.Lock())
        if not held.acquire(blocking=False):
            if on_wait is not None:
                on_wait()
            held.acquire()
        try:
            yield
        finally:
            held.release()

    def check_writable(self) -> None:
        return None  # memory is always writable; a full one raises MemoryError, not a refusal
