"""``S3Store``: the store in an S3-compatible bucket (``PIPELINE_STORE=s3://bucket/prefix``).

Every process that sees the URL and the standard ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for a
non-AWS server, ``AWS_ALLOW_HTTP=true`` for an http one; the client library reads them) shares one
store, with the guarantees of a local folder, kept by the server's own conditional writes rather
than a local lock:

* ``write`` is one PutObject, atomic on S3: readers see the old object or the new one.
* ``create`` is PutObject with ``If-None-Match: *``. Each object it makes carries a writer nonce
  in its metadata, so a request retried after its first response was lost (the server answers 412
  to the retry) recognises its own object and reports success, and only then.
* ``publish`` uploads a folder's files after a ``.pending`` marker, then creates ``.published``
  exclusively; ``list``/``walk``/``exists`` hide a folder whose ``.pending`` has no
  ``.published`` beside it, so no reader sees half a folder and a crash leaves it invisible (the
  next publish of the same content-addressed folder completes it).
* ``lock`` is a lease held in an object: taken by an exclusive create, kept alive by conditional
  updates (``If-Match`` on its ETag), released by a delete, and taken over (again by ``If-Match``)
  once its ETag has not changed for the lease time, so a killed holder blocks others only that
  long. No clock is compared across machines: a waiter measures staleness on its own clock.
  The lease's body names its holder's nonce, so a create whose response was lost is taken.
* Before its first conditional write, a process probes that the server honours ``If-None-Match``
  (a second exclusive create of one key must fail) and refuses a server that does not.

``obstore`` is imported here only, on first use: ``pipeline --help`` never pays for it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.errors import StoreError, StoreUnavailable
from pipeline.store import KeyedStore, key_name, s3_cache, s3_client, store_error
from pipeline.store.s3_client import PLAIN_HTTP, fault_of, open_client, parse_uri, unsigned_hint

if TYPE_CHECKING:
    from obstore import UpdateVersion
    from obstore.store import S3Store as Client

T = TypeVar("T")

PENDING = ".pending"  # a folder being published: present until PUBLISHED is
PUBLISHED = ".published"  # the exclusive create that makes a folder visible
NONCE = "pipeline-writer"  # object metadata: which create() made the object
LEASE_S = 10.0  # a lock whose ETag has not changed for this long was abandoned
# Servers verified per process: (endpoint, bucket) -> None once the probe passed.
_PROBED: set[tuple[str, str]] = set()
_PROBE_GUARD = threading.Lock()


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def _invisible(keys: set[str]) -> set[str]:
    """The folders among ``keys`` (full keys, recursive) that are pending, not yet published."""
    pending = {k.removesuffix(f"/{PENDING}") for k in keys if k.endswith(f"/{PENDING}")}
    return {f for f in pending if f"{f}/{PUBLISHED}" not in keys}


def _inside(key: str, folders: set[str]) -> bool:
    return any(key.startswith(f"{f}/") for f in folders)


class S3Store(KeyedStore):
    """A store in an S3 bucket, under an optional prefix; safe to share between processes."""

    def __init__(
        self,
        uri: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        allow_http: bool = False,
        s3: Mapping[str, str] | None = None,
        cache_bytes: int = s3_cache.CACHE_BYTES,
    ) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_uri(uri)
        self.timeout, self.retries, self.allow_http = timeout, retries, allow_http
        self.cache_bytes = cache_bytes  # the local download cache's cap (``s3_cache``)
        self.s3 = dict(s3 or {})
        s3_client.check_options(allow_http, self.s3)  # exit 3 now, not 9 after a refusal
        self.lease_s = LEASE_S
        self._client: Client | None = None
        # Local scratch (staging folders): a LocalStore in the system temp folder, so a run
        # killed with SIGKILL has its folder swept by the next one, as on a local store.
        from pipeline.store.local import LocalStore

        self._scratch = LocalStore(_private_scratch())

    # --- the client and its errors ------------------------------------------------------------

    def client(self) -> Client:
        """The obstore client, made on first use (credentials and endpoint from ``AWS_*``)."""
        if self._client is None:
            self._client = open_client(
                self.bucket, self.prefix, timeout=self.timeout, retries=self.retries,
                allow_http=self.allow_http, s3=self.s3,
            )  # fmt: skip
        return self._client

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """``fn()``, with any failure of the server or the connection as a one-line error.

        FileNotFoundError (a missing object) passes through for the caller to read as absent.
        """
        try:
            return fn()
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self._no_bucket() from None
            raise
        except Exception as exc:
            from obstore.exceptions import BaseError

            if not isinstance(exc, BaseError):
                raise
            raise self._error(exc, what, key) from None

    def _no_bucket(self) -> StoreError:
        return StoreError(
            f"bucket '{self.bucket}' does not exist on the S3 server (AWS_ENDPOINT_URL) "
            f"(PIPELINE_STORE={self.uri}): create it, or point PIPELINE_STORE at an existing bucket"
        )

    def _error(self, exc: Exception, what: str, key: str) -> StoreError:
        """The one-line error for a failed request: refused (9) or unreachable (10)."""
        kind, code = fault_of(exc)
        where = f"{what} {self.location(key) if key else self.uri}"
        tries = f"after {self.retries + 1} {'try' if self.retries == 0 else 'tries'}"
        if kind == "no_bucket":
            return self._no_bucket()
        if kind == "credentials":
            return StoreError(
                f"cannot {where}: the S3 server refused the credentials ({code or 'denied'}); "
                "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION)"
                + unsigned_hint(self.s3)
            )
        if kind == "plain_http":
            return StoreError(f"cannot {where}: {PLAIN_HTTP}")
        if kind == "timeout":
            return StoreUnavailable(
                f"cannot {where}: the S3 server did not answer within {self.timeout:g} s "
                f"({tries}); check that it is healthy, or raise PIPELINE_STORE_TIMEOUT"
            )
        if kind == "connect":
            if not self.s3.get("endpoint"):  # AWS itself: no AWS_ENDPOINT_URL to fix
                return StoreUnavailable(
                    f"cannot {where}: AWS's S3 endpoint does not answer ({tries}: connection "
                    "refused or unreachable); check the network, or set AWS_ENDPOINT_URL to "
                    "your S3-compatible server"
                )
            return StoreUnavailable(
                f"cannot {where}: no S3 server answers at AWS_ENDPOINT_URL ({tries}: connection "
                "refused or unreachable); start it or fix AWS_ENDPOINT_URL, then run again"
            )
        if kind == "busy":
            return StoreUnavailable(
                f"cannot {where}: the S3 server kept failing ({code or 'a 5xx status'}, "
                f"{tries}); run again later, or raise PIPELINE_STORE_RETRIES"
            )
        return StoreError(
            f"cannot {where}: the S3 server answered {code or 'an error'}{unsigned_hint(self.s3)}"
        )

    # --- conditional writes -------------------------------------------------------------------

    def _probe(self) -> None:
        """StoreError unless the server refuses a second exclusive create of one key.

        A server that ignores ``If-None-Match: *`` would let two writers both "win" a release
        number; it is refused once, before this process's first conditional write.
        """
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        server = (str(self.client().config.get("endpoint", "aws")), self.bucket)
        with _PROBE_GUARD:
            if server in _PROBED:
                return
            self._check_bucket()
            key = f".probe/{uuid.uuid4().hex}"
            client = self.client()
            self._call("write", key, lambda: obstore.put(client, key, b"1", mode="create"))
            try:
                try:
                    obstore.put(client, key, b"2", mode="create")
                except (AlreadyExistsError, PreconditionError):
                    _PROBED.add(server)
                    return
                except Exception as exc:  # any other answer: mapped to its one-line error
                    self._call("write", key, functools.partial(_raise, exc))
                raise StoreError(
                    f"the S3 server of {self.uri} ignores If-None-Match (a second exclusive "
                    "create of one key succeeded): it cannot keep release numbers unique; "
                    "use a server with conditional writes (AWS S3, SeaweedFS, MinIO)"
                )
            finally:
                with contextlib.suppress(Exception):
                    obstore.delete(client, key)

    def _check_bucket(self) -> None:
        """StoreError if the bucket is missing: some servers create one on the first put."""
        import obstore

        client = self.client()
        self._call("list", "", lambda: obstore.list_with_delimiter(client, None))

    def _create(self, key: str, data: bytes, nonce: str) -> bool:
        """Exclusive create under ``key`` by the writer ``nonce``; see ``create``."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        client = self.client()
        try:
            obstore.put(client, key, data, mode="create", attributes={NONCE: nonce})
        except (AlreadyExistsError, PreconditionError):
            # Ours if a retry of this very request found the object its first attempt made.
            try:
                found = self._call("read", key, lambda: obstore.get(client, key))
            except FileNotFoundError:
                return False  # deleted meanwhile: taken and given up by another writer
            return found.attributes.get(NONCE) == nonce
        except Exception as exc:
            self._call("write", key, functools.partial(_raise, exc))
        return True

    # --- the Store interface ------------------------------------------------------------------

    def _keys(self, prefix: str) -> set[str]:
        """Every full key below ``prefix`` (a name, or '' for the whole store)."""
        import obstore

        client = self.client()
        start = f"{prefix}/" if prefix else None

        def listing() -> set[str]:
            return {str(meta["path"]) for page in obstore.list(client, start) for meta in page}

        return self._call("list", prefix, listing)

    def read_bytes(self, key: str) -> bytes:
        import obstore

        name, client = key_name(key), self.client()
        try:
            return bytes(self._call("read", name, lambda: obstore.get(client, name).bytes()))
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        import obstore

        name, client = key_name(key), self.client()
        with contextlib.suppress(FileNotFoundError):
            self._call("read", name, lambda: obstore.head(client, name))
            return True
        keys = self._keys(name)  # a folder: there once published (or never published at all)
        return bool(keys) and name not in _invisible(keys)

    def _hidden_keys(self, keys: set[str]) -> set[str]:
        """The keys of ``keys`` that lie in folders not yet published."""
        folders = _invisible(keys)
        return {k for k in keys if _inside(k, folders)}

    def walk(self, prefix: str) -> list[str]:
        start = f"{key_name(prefix)}/" if prefix else ""
        keys = self._keys(key_name(prefix) if prefix else "")
        shown = keys - self._hidden_keys(keys)
        return sorted(k for k in shown if not _hidden(k[len(start) :]))

    def list(self, prefix: str) -> list[str]:
        name = key_name(prefix)
        keys = self._keys(name)
        if name in _invisible(keys):  # the folder itself is still being published
            return []
        start = f"{name}/"
        shown = keys - self._hidden_keys(keys)
        names = {k[len(start) :].split("/")[0] for k in shown}
        return sorted(n for n in names if not _hidden(n))

    def write(self, key: str, data: bytes) -> None:
        import obstore

        name, client = key_name(key), self.client()
        self._call("write", name, lambda: obstore.put(client, name, data))

    def delete(self, key: str) -> None:
        import obstore

        name, client = key_name(key), self.client()
        with contextlib.suppress(FileNotFoundError):
            self._call("delete", name, lambda: obstore.delete(client, name))

    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        # ``immutable``: records are only ever created, never rewritten, by this code; an
        # object lock (WORM) on the bucket is the server-side guard, configured by its owner.
        self._probe()
        return self._create(key_name(key), data, uuid.uuid4().hex)

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        # Compare the bytes read, then PutObject with If-Match on the ETag they came with: a
        # writer in between changes the ETag (callers' bytes carry a sequence: no ABA).
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        if expected is None:
            return self.create(key, data)
        self._probe()
        name, client = key_name(key), self.client()
        try:
            found = self._call("read", name, lambda: obstore.get(client, name))
        except FileNotFoundError:
            return False
        if bytes(found.bytes()) != expected:
            return False
        update: UpdateVersion = {"e_tag": found.meta["e_tag"]}
        try:
            obstore.put(client, name, data, mode=update)
        except (AlreadyExistsError, PreconditionError, FileNotFoundError):
            return False  # changed meanwhile (or our own retried put: the caller reads again)
        except Exception as exc:
            self._call("write", name, functools.partial(_raise, exc))
        return True

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        return self._scratch.staging()

    def publish(self, staged: Path, key: str) -> bool:
        import obstore

        name, client = key_name(key), self.client()
        self._probe()
        files = sorted(p for p in staged.rglob("*") if p.is_file())
        if self._published(name):
            return False
        self._call("write", name, lambda: obstore.put(client, f"{name}/{PENDING}", b""))
        for file in files:
            target = f"{name}/{file.relative_to(staged).as_posix()}"
            try:
                with file.open("rb") as fh:
                    self._call("write", target, functools.partial(_put_file, client, target, fh))
            except OSError as exc:
                raise store_error(exc, file) from exc
        listing = canonical_listing(name, files, staged)
        won = self._create(f"{name}/{PUBLISHED}", listing, uuid.uuid4().hex)
        with contextlib.suppress(StoreError, FileNotFoundError):
            self._call("delete", name, lambda: obstore.delete(client, f"{name}/{PENDING}"))
        return won

    def _published(self, name: str) -> bool:
        import obstore

        client = self.client()
        try:
            self._call("read", name, lambda: obstore.head(client, f"{name}/{PUBLISHED}"))
        except FileNotFoundError:
            return False
        return True

    def local_file(self, key: str, *, again: bool = False) -> Path:
        """A read-only local copy, cached by the object's ETag under the system temp folder
        (downloaded ``again`` when a copy of that ETag failed a check: it was damaged here)."""
        import obstore

        name, client = key_name(key), self.client()
        try:
            meta = self._call("read", name, lambda: obstore.head(client, name))
        except FileNotFoundError:
            raise KeyError(key) from None
        tag = hashlib.sha256(f"{self.uri}/{name}@{meta['e_tag']}".encode()).hexdigest()
        files = self._scratch.root / "files"
        path = files / tag / name.rsplit("/", 1)[-1]
        with contextlib.suppress(OSError):
            if not again and path.stat().st_size == meta["size"]:  # a cut copy is fetched again
                return s3_cache.used(path)

        def download() -> Path:
            got = obstore.get(client, name)  # FileNotFoundError: no such object
            try:
                return s3_cache.stream_copy(path, got.stream())
            except OSError as exc:  # the local disk: full, or not writable
                raise store_error(exc, path) from exc

        try:
            self._call("read", name, download)
        except FileNotFoundError:
            raise KeyError(key) from None
        s3_cache.used(path)
        s3_cache.prune(files, self.cache_bytes)
        return path

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """A lease on the object ``key``: see the module docstring."""
        from pipeline.store.s3_lease import Lease

        lease = Lease(self, key_name(key))
        lease.acquire(on_wait)
        try:
            yield
        finally:
            lease.release()

    def check_writable(self) -> None:
        self._probe()  # an exclusive create and a refused second one: writable and trusted


def _raise(exc: Exception) -> Any:
    raise exc


def _put_file(client: Client, key: str, fh: Any) -> Any:
    """Upload an open file; a large one in parts (aborted by the client if a part fails)."""
    import obstore

    return obstore.put(client, key, fh)


def canonical_listing(name: str, files: list[Path], staged: Path) -> bytes:
    """The ``.published`` marker's content: the folder's files and sizes (for people)."""
    listed = {f.relative_to(staged).as_posix(): f.stat().st_size for f in files}
    return (json.dumps({"folder": name, "files": listed}, sort_keys=True) + "\n").encode()


def _private_scratch() -> Path:
    """This user's scratch folder in the system temp folder, readable by this user only: it
    holds copies of the bucket's datasets and models, and one folder shared by every user of
    the machine (0755, files 0444) let any of them read another's private bucket."""
    folder = Path(tempfile.gettempdir()) / f"pipeline-s3-scratch-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
    except OSError as exc:
        raise StoreError(
            f"cannot make the s3:// store's local scratch folder {folder}: "
            f"{exc.strerror or exc}; set TMPDIR to a folder this user can write"
        ) from exc
    return folder
