"""Dataset sources, addressed by URI, and the content-addressed cache in the store.

``fetch`` is the one entry point: it resolves a URI to a local file whose sha256 is known.
Local files (a path, ``file://``, ``builtin://``) are read in place; remote ones (``http(s)://``,
``s3://``, ``kaggle://``) are downloaded into ``datasets/<sha256>/`` in the store. With
``PIPELINE_DATA__SHA256`` set, a cached copy is used without touching the network and any
mismatch is an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse, urlunparse

from pipeline.errors import DataError, SourceError, StoreError
from pipeline.log import is_masked, masked_query, redacted_uri
from pipeline.settings import Settings
from pipeline.store import Store, atomic_write_json, sha256_file

BUILTIN = ("house-prices", "titanic")
_T = TypeVar("_T")
RECORD = "source.json"  # the cache's own record beside each cached dataset


@dataclass(frozen=True)
class Fetched:
    """A dataset available as a local file, with its digest and where it came from."""

    uri: str  # redacted: no credentials
    path: Path
    sha256: str
    size: int
    cached: bool
    location: str = ""  # where a person finds the store's copy (an s3:// URI), if it has one
    warning: str | None = None  # what the download could not check, said as a data.warning


def redact_uri(uri: str) -> str:
    """``uri`` without user info and without values of credential-like query parameters.

    http(s) URIs are rebuilt (host, port, path, masked query). Other URIs with an authority
    (``s3://KEY:SECRET@bucket/key``, a query with ``?token=``) lose the user info and the
    secret values, and are otherwise kept as written; the rest (paths) are kept as they are.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return redacted_uri(uri)
    try:
        port = parsed.port
    except ValueError:
        written = parsed.netloc.rpartition("@")[2].rpartition(":")[2]  # no user info shown
        raise SourceError(
            f"'{parsed.scheme}://{parsed.hostname}:{written}...' has an invalid port "
            f"({written!r}: expected 1-65535): fix PIPELINE_DATA__SOURCE"
        ) from None
    host = parsed.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    if "@" in parsed.netloc:  # user info masked, as ``log.redacted_uri`` writes it
        netloc = f"***@{netloc}"
    return urlunparse(parsed._replace(netloc=netloc, query=masked_query(parsed.query), fragment=""))


def cache_name(name: str) -> str:
    """``name`` unless it would collide with the cache's record, then ``dataset-<name>``."""
    return f"dataset-{name}" if name == RECORD else name


def scheme_of(uri: str) -> str:
    """The URI's scheme, with plain paths (and Windows-less relative paths) as ``file``."""
    scheme = urlparse(uri).scheme
    return scheme.lower() if len(scheme) > 1 else "file"


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme.lower() == "builtin":
        name = (parsed.netloc + parsed.path).strip("/")
        if name not in BUILTIN:
            raise SourceError(
                f"unknown built-in dataset '{uri}': set PIPELINE_DATA__SOURCE to one of "
                + ", ".join(f"builtin://{n}" for n in BUILTIN)
            )
        if uri.strip() != f"builtin://{name}":  # builtin:///house-prices: another build id
            raise SourceError(
                f"'{uri}' is another spelling of builtin://{name}: write it so (one spelling "
                "per dataset, so that one dataset gives one build id)"
            )
        return Path(__file__).parents[2] / "datasets" / f"{name}.csv"
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise SourceError(
                f"'{uri}' names a remote host: file:// URIs must be local; use "
                "file:///abs/path, or http(s):// for a remote file"
            )
        from urllib.parse import unquote

        if not parsed.path.strip("/"):  # Path("") is "." (the working folder)
            raise SourceError(f"'{uri}' names no file: write file:///absolute/path/to/data.csv")
        return Path(unquote(parsed.path))
    return Path(uri).expanduser()


class PinMismatch(DataError):
    """The dataset's digest is not the pinned one (``fetched``, ``pin``: the two sha256)."""

    def __init__(self, message: str, uri: str, fetched: str, pin: str) -> None:
        super().__init__(message)
        self.uri, self.fetched, self.pin = uri, fetched, pin


def _verify_pin(fetched_sha: str, settings: Settings, uri: str) -> None:
    pin = settings.data.sha256
    if pin and pin.lower() != fetched_sha:
        raise PinMismatch(
            f"dataset {uri} has sha256 {fetched_sha} but PIPELINE_DATA__SHA256 expects {pin}: "
            "the data changed; update the pin if the change is intended",
            uri,
            fetched_sha,
            pin,
        )


def local_source(uri: str) -> Path | None:
    """The local file a path, ``file://`` or ``builtin://`` URI names (existing or not); None
    for a remote URI or one that names no file."""
    if scheme_of(uri) not in ("file", "builtin"):
        return None
    try:
        return _local_path(uri)
    except (SourceError, DataError, ValueError, RuntimeError):
        return None


def _local_file(uri: str) -> Path:
    """The existing local file a path, ``file://`` or ``builtin://`` URI names."""
    path = _local_path(uri)
    if not path.exists():
        if any(c in str(path) for c in "*?["):  # a glob, as predict --workers takes
            raise DataError(
                f"dataset file {path} does not exist: a glob is not a dataset; training reads "
                "one CSV or Parquet file: join the parts into one, or point "
                "PIPELINE_DATA__SOURCE at one of them"
            )
        raise DataError(f"dataset file {path} does not exist: check PIPELINE_DATA__SOURCE")
    if not path.is_file():
        raise DataError(
            f"dataset {path} is not a file: point PIPELINE_DATA__SOURCE at a CSV or Parquet file"
        )
    return path


def _digest(path: Path) -> str:
    """``sha256_file``, a file that cannot be read being the user's ``DataError``."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DataError(
            f"dataset file {path} cannot be read: {exc.strerror}; check its permissions"
        ) from exc


def fetch(settings: Settings, store: Store) -> Fetched:
    """Resolve ``settings.data.source`` to a local file with a verified digest."""
    uri = settings.data.source
    if is_masked(uri):
        # A build's record of a source given with credentials: its pinned bytes may be cached
        # (`evaluate` of such a build needs no credentials then); else they are needed.
        pinned = _pinned_copy(settings, store, uri)
        if pinned is not None:
            return pinned
        raise SourceError(
            f"PIPELINE_DATA__SOURCE={uri!r} has its credentials masked (***), as builds and "
            "presets record a source given with them: set PIPELINE_DATA__SOURCE to the URI "
            "with its credentials"
        )
    scheme = scheme_of(uri)
    if scheme in ("file", "builtin"):
        path = _local_file(uri)
        digest = _digest(path)
        _verify_pin(digest, settings, uri)
        return Fetched(uri, path, digest, path.stat().st_size, cached=False)

    if scheme in ("http", "https"):
        from pipeline.data.sources import http as remote
    elif scheme == "kaggle":
        from pipeline.data.sources import kaggle as remote  # type: ignore[no-redef]
    elif scheme == "s3":
        from pipeline.data.sources import s3 as remote  # type: ignore[no-redef]
    else:
        raise SourceError(
            f"unknown URI scheme '{scheme}://' in PIPELINE_DATA__SOURCE={redact_uri(uri)!r}: "
            "expected a path, "
            "file://, http(s)://, s3://bucket/key, kaggle://competitions/<name>/<file>, "
            "kaggle://datasets/<owner>/<name>/<file> or builtin://<name>"
        )
    shown = redact_uri(uri)
    name = remote.filename(uri)  # already safe, and never the cache's RECORD name
    pinned = _pinned_copy(settings, store, shown)
    if pinned is not None:
        return pinned
    with store.staging() as staging:
        target = staging / name
        warning = remote.download(uri, target, settings)
        digest = sha256_file(target)
        _verify_pin(digest, settings, shown)
        # Bytes that are plainly not a table (an HTML page, binary garbage) are refused before
        # they reach the cache: a failed run writes nothing to the store.
        from pipeline.data.read import detect_format

        detect_format(target, settings.data.format, shown)
        atomic_write_json(staging / RECORD, {"uri": shown, "sha256": digest, "file": name})
        if not store.publish(staging, f"datasets/{digest}"):
            _repair(store, staging, digest)
    # If the same bytes were cached before under another name, that copy is the one kept.
    key = _cached(store, digest)
    if key is None:
        raise StoreError(f"dataset {digest} vanished from store {store.uri} right after caching")
    kept = store.local_file(key)
    return Fetched(
        shown, kept, digest, kept.stat().st_size, cached=False, location=store.location(key),
        warning=warning,
    )  # fmt: skip


def fetch_and_read(
    settings: Settings, store: Store, read: Callable[[Path, str], _T]
) -> tuple[Fetched, _T]:
    """``fetch``, then ``read(path, uri)`` of the fetched file. A local file is hashed in a
    thread while ``read`` reads it (1M rows of Parquet: 0.18 s to hash, 0.2 s to read), so its
    digest costs no time. ``fetch``'s errors come first: a file that does not match its pin is
    that error even when it cannot be read either."""
    uri = settings.data.source
    if scheme_of(uri) not in ("file", "builtin"):
        fetched = fetch(settings, store)
        return fetched, read(fetched.path, fetched.uri)
    path = _local_file(uri)
    hashed: list[str | BaseException] = []

    def digest() -> None:
        try:
            hashed.append(_digest(path))
        except BaseException as exc:  # re-raised in the caller's thread
            hashed.append(exc)

    # A daemon thread: Ctrl-C during the read does not wait for the hash to finish.
    hashing = threading.Thread(target=digest, name="sha256", daemon=True)
    hashing.start()
    failed: Exception | None = None
    try:
        result = read(path, uri)
    except Exception as exc:  # the digest's errors first (see above)
        failed = exc
    hashing.join()
    if isinstance(hashed[0], BaseException):
        raise hashed[0]
    _verify_pin(hashed[0], settings, uri)
    if failed is not None:
        raise failed
    return Fetched(uri, path, hashed[0], path.stat().st_size, cached=False), result


def _pinned_copy(settings: Settings, store: Store, shown: str) -> Fetched | None:
    """The cached copy of the dataset ``PIPELINE_DATA__SHA256`` pins, when the store holds it
    intact; None without a pin or such a copy."""
    pin = (settings.data.sha256 or "").lower()
    if not pin:
        return None
    key = _cached(store, pin)
    recorded = _cached_from(store, pin)
    if key is None or (recorded is not None and redact_uri(recorded) != redact_uri(shown)):
        # Cached from another URI: a pin copied from another dataset trained on those bytes
        # and recorded this URI as their source. This URI is fetched, and the pin checked.
        return None
    if sha256_file(cached := store.local_file(key)) != pin:
        return None
    size = cached.stat().st_size
    return Fetched(shown, cached, pin, size, cached=True, location=store.location(key))


def _repair(store: Store, staged: Path, digest: str) -> None:
    """The bytes of ``digest`` were cached already: the cached copy is checked, and one that no
    longer has that digest (bit rot, a stray edit of the store) is replaced by the download
    just ``staged``. Training used the damaged copy while recording the download's digest."""
    key = _cached(store, digest)
    if key is not None and sha256_file(store.local_file(key)) == digest:
        return
    store.delete_all(f"datasets/{digest}")
    store.publish(staged, f"datasets/{digest}")


def _cached_from(store: Store, digest: str) -> str | None:
    """The (redacted) URI a cached dataset was downloaded from, by its record; None without
    a readable record."""
    import json

    try:
        return str(json.loads(store.read_bytes(f"datasets/{digest}/{RECORD}"))["uri"])
    except (KeyError, ValueError, TypeError):
        return None


def _cached(store: Store, digest: str) -> str | None:
    """The key of a dataset digest's cached file, whatever name it was cached under."""
    names = [n for n in store.list(f"datasets/{digest}") if n != RECORD]
    return f"datasets/{digest}/{names[0]}" if names else None
