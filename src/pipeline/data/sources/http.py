"""The ``http(s)://`` dataset source: a streamed download with every failure made explicit.

``requests`` is imported inside ``download`` so that the CLI starts without it. Messages name the
URI only through ``redact_uri`` and never include a ``requests`` exception's text, which repeats
the URL with its query string (tokens included).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn
from urllib.parse import unquote, urlparse

import pipeline
from pipeline.data.sources import cache_name, redact_uri
from pipeline.errors import SourceError
from pipeline.store import store_error

if TYPE_CHECKING:
    from pipeline.settings import Settings

CHUNK = 1 << 20
DEFAULT_NAME = "dataset"
# ``fetch`` writes this file beside the download, so a download must never take its name.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 128  # well below every file system's limit of 255 bytes


def filename(uri: str) -> str:
    """The safe file name to cache ``uri`` under: its path's last segment, else ``dataset``."""
    segment = unquote(urlparse(uri).path.rsplit("/", 1)[-1])
    name = _UNSAFE.sub("", segment).lstrip(".")
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        keep = f".{ext}" if dot and stem and len(ext) <= 16 else ""
        name = name[: _MAX_NAME - len(keep)] + keep
    return cache_name(name) if name else DEFAULT_NAME


def download(uri: str, dest: Path, settings: Settings) -> str | None:
    """Stream ``uri`` into ``dest``; raise ``SourceError`` and leave no ``dest`` on any failure.
    A warning when the body's end could not be checked: no Content-Length, and not chunked (an
    HTTP/1.0 server ends the body by closing the connection, as it does when it fails)."""
    import requests

    shown = redact_uri(uri)
    timeout = settings.http_timeout
    headers = {"User-Agent": f"pipeline/{pipeline.__version__}"}
    try:
        with requests.get(uri, headers=headers, stream=True, timeout=(timeout, timeout)) as resp:
            if resp.status_code >= 400:
                reason = " ".join(str(resp.reason or "").split())[:80]
                raise SourceError(
                    f"cannot download {shown}: the server answered HTTP {resp.status_code}"
                    f"{' ' + reason if reason else ''}; check the URL and that you have access"
                )
            expected = _content_length(resp.headers.get("Content-Length"))
            written = 0
            try:
                with _open(dest) as fh:
                    for chunk in resp.iter_content(CHUNK):
                        _write(fh, chunk, dest)
                        written += len(chunk)
            except requests.exceptions.ChunkedEncodingError:
                # urllib3 2 enforces Content-Length itself and reports a short body this way.
                _truncated(shown, resp.raw.tell(), expected)
            # Content-Length counts the bytes on the wire (compressed, if Content-Encoding is
            # set), which is what ``raw.tell()`` counts, not the decoded bytes written.
            received = resp.raw.tell()
            if expected is not None and received != expected:
                _truncated(shown, received, expected)
            if written == 0:
                raise SourceError(
                    f"cannot download {shown}: the server returned an empty body; "
                    "check that the URL points at the dataset file"
                )
            chunked = "chunked" in resp.headers.get("Transfer-Encoding", "").lower()
            if expected is None and not chunked:
                return (
                    f"{shown} was sent without a Content-Length: a download cut short (the "
                    "connection closed early) cannot be told from a whole one; pin "
                    f"PIPELINE_DATA__SHA256 to the sha256 of the intended file"
                )
            return None
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if isinstance(exc, requests.RequestException):
            # ``from None``: the cause's text repeats the URL with its credentials.
            raise _request_error(exc, shown, timeout) from None
        raise


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # a malformed header proves nothing; the empty-body check still applies


# File errors are the store's, not the source's. They are caught around the file calls only:
# requests' exceptions are OSErrors too and must not be mistaken for them.
def _open(dest: Path) -> BinaryIO:
    try:
        return dest.open("wb")
    except OSError as exc:
        raise store_error(exc, dest) from exc


def _write(fh: BinaryIO, chunk: bytes, dest: Path) -> None:
    try:
        fh.write(chunk)
    except OSError as exc:
        raise store_error(exc, dest) from exc


def _truncated(shown: str, received: int, expected: int | None) -> NoReturn:
    of = f" of {expected}" if expected is not None else ""
    raise SourceError(
        f"cannot download {shown}: the body was truncated (received {received}{of} bytes); "
        "the connection was cut, try again"
    )


def _causes(exc: BaseException) -> list[object]:
    """``exc`` and what it wraps: args, urllib3's ``reason``, ``__cause__`` and ``__context__``."""
    seen: list[object] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 32:
        item = todo.pop()
        if any(item is s for s in seen):
            continue
        seen.append(item)
        if isinstance(item, BaseException):
            todo.extend(item.args)
            todo.extend(x for x in (item.__cause__, item.__context__) if x is not None)
            reason = getattr(item, "reason", None)
            if isinstance(reason, BaseException):
                todo.append(reason)
    return seen


def _request_error(exc: Exception, shown: str, timeout: float) -> SourceError:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    causes = _causes(exc)
    # A read timeout while streaming the body arrives as a ConnectionError wrapping urllib3's.
    if isinstance(exc, requests.Timeout) or any(
        isinstance(c, ReadTimeoutError | socket.timeout) for c in causes
    ):
        return SourceError(
            f"cannot download {shown}: the server did not answer within {timeout:g} seconds; "
            "try again later or raise PIPELINE_HTTP_TIMEOUT"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return SourceError(
            f"cannot download {shown}: the TLS handshake failed (certificate not trusted?); "
            "check the URL, or point REQUESTS_CA_BUNDLE at your CA certificates"
        )
    if isinstance(exc, requests.exceptions.ProxyError):
        return SourceError(
            f"cannot reach {shown} through the proxy: check HTTPS_PROXY/HTTP_PROXY and NO_PROXY"
        )
    if isinstance(exc, requests.ConnectionError):
        why = ""
        if any(isinstance(c, socket.gaierror) for c in causes):
            why = " (host name not found)"
        elif any(isinstance(c, ConnectionRefusedError) for c in causes):
            why = " (connection refused)"
        elif any(isinstance(c, ConnectionResetError) for c in causes):
            why = " (connection reset)"
        return SourceError(f"cannot reach {shown}{why}: check the URL and the network")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.URLRequired):
        return SourceError(
            f"'{shown}' is not a valid URL: fix PIPELINE_DATA__SOURCE (http(s)://host/path)"
        )
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return SourceError(
            f"cannot download {shown}: the server redirected too many times; check the URL"
        )
    return SourceError(
        f"cannot download {shown}: the request failed ({type(exc).__name__}); "
        "check the URL and try again"
    )
