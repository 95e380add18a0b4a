"""The ``kaggle://`` dataset source: one file of a competition or a dataset, via the real client.

Two forms: ``kaggle://competitions/<name>/<file>`` and ``kaggle://datasets/<owner>/<name>/<file>``,
where ``<file>`` may include folders. The ``kaggle`` package is imported inside ``download``: it
authenticates at import time and prints help to stdout, and our stdout is a JSON log stream, so
everything it prints is captured and dropped. Kaggle serves large files wrapped in a zip, so the
payload is recognised by its bytes and the requested member is extracted from it.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.sources import cache_name
from pipeline.errors import SourceError, StoreError
from pipeline.store import store_error

if TYPE_CHECKING:
    from pipeline.settings import Settings

CHUNK = 1 << 20
# An extracted member larger than this is refused (a zip bomb, or not a table we can train on).
MAX_MEMBER_BYTES = 10 << 30
COMPETITION_FORM = "kaggle://competitions/<name>/<file>"
DATASET_FORM = "kaggle://datasets/<owner>/<name>/<file>"
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_PREFIX = "kaggle://"
# ``fetch`` writes this file beside the download, so a download must never take its name.
_CREDENTIALS_HELP = "set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
# Where the client keeps state beside the file it downloads (resume bookkeeping).
_MARKER_SUFFIX = ".kaggle-partial"


@dataclass(frozen=True)
class _Ref:
    """A parsed ``kaggle://`` URI."""

    kind: str  # "competitions" or "datasets"
    slug: str  # "<name>" or "<owner>/<name>"
    file: str  # the file's path inside the competition or dataset

    @property
    def name(self) -> str:
        return self.file.rsplit("/", 1)[-1]


def filename(uri: str) -> str:
    """The base name of the file ``uri`` names (the last segment of ``<file>``)."""
    return cache_name(_parse(uri).name)


def download(uri: str, dest: Path, settings: Settings) -> str | None:
    """Fetch the one file ``uri`` names into ``dest``; raise ``SourceError``, leave no ``dest``."""
    ref = _parse(uri)
    shown = _shown(uri)
    creds = _credentials(settings)
    if not creds and not _credential_files(settings):
        raise SourceError(f"Kaggle credentials missing for {shown}: {_CREDENTIALS_HELP}")
    secrets = [creds[k] for k in ("key", "token") if creds.get(k)]
    # The private folder sits beside ``dest`` so the final step is a rename on one file system.
    try:
        private = tempfile.TemporaryDirectory(prefix=".kaggle-", dir=dest.parent)
    except OSError as exc:
        raise store_error(exc, dest.parent) from exc
    with private as tmp:
        folder = Path(tmp)
        try:
            _run_client(ref, folder, creds, settings.kaggle_timeout)
            payload = _payload(folder, shown)
            if _is_zip(payload):
                _extract(payload, ref, folder / ".extracted", shown)
                payload = folder / ".extracted"
            else:
                _check_raw(payload, shown)
            payload.replace(dest)
        except (SourceError, StoreError):
            raise
        except (Exception, SystemExit) as exc:
            # ``from None``: the client's exceptions repeat URLs and server text; the message
            # built here says what matters.
            raise _client_error(exc, ref, shown, secrets, settings.kaggle_timeout) from None
    return None  # the client checks the file it downloads


# --- the URI ---------------------------------------------------------------------------------


def _parse(uri: str) -> _Ref:
    if uri[: len(_PREFIX)].lower() != _PREFIX:
        raise SourceError(
            f"'{_shown(uri)}' is not a Kaggle URI: expected {COMPETITION_FORM} or {DATASET_FORM}"
        )
    kind, _, rest = uri[len(_PREFIX) :].partition("/")
    forms = {"competitions": (COMPETITION_FORM, 1), "datasets": (DATASET_FORM, 2)}
    if kind not in forms:
        raise SourceError(
            f"malformed Kaggle URI '{_shown(uri)}': expected {COMPETITION_FORM} or {DATASET_FORM}"
        )
    form, slug_parts = forms[kind]
    parts = rest.split("/")
    valid = len(parts) > slug_parts and all(
        _SEGMENT.fullmatch(part) and part.strip(".") for part in parts
    )
    if not valid:
        raise SourceError(
            f"malformed Kaggle URI '{_shown(uri)}': expected {form}, each part made of "
            "letters, digits, '.', '_' or '-' (no empty or '..' parts)"
        )
    return _Ref(kind, "/".join(parts[:slug_parts]), "/".join(parts[slug_parts:]))


def _shown(uri: str) -> str:
    """``uri`` as messages may show it: user info (``user:key@``) masked."""
    head, sep, rest = uri.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return head + sep + authority + slash + path


# --- credentials -----------------------------------------------------------------------------


def _credentials(settings: Settings) -> dict[str, str]:
    """The client's config values for the credentials in ``settings`` (empty when none)."""
    token = settings.kaggle_api_token.get_secret_value() if settings.kaggle_api_token else ""
    if token:
        # Like the client, KAGGLE_API_TOKEN may name a file that holds the token.
        with contextlib.suppress(OSError, ValueError):
            path = Path(token).expanduser()
            if path.is_file():
                token = path.read_text(encoding="utf-8").strip()
        return {"token": token} if token else {}
    key = settings.kaggle_key.get_secret_value() if settings.kaggle_key else ""
    if settings.kaggle_username and key:
        return {"username": settings.kaggle_username, "key": key}
    return {}


def _credential_files(settings: Settings) -> list[Path]:
    """The credential files the client would read that exist."""
    home = Path.home()
    config_dirs = [home / ".kaggle"]
    if settings.kaggle_config_dir:
        config_dirs.append(Path(settings.kaggle_config_dir))
    config_dirs.append(Path(settings.xdg_config_home or home / ".config") / "kaggle")
    candidates = [d / "kaggle.json" for d in config_dirs] + [
        home / ".kaggle" / name for name in ("access_token", "access_token.txt", "credentials.json")
    ]
    return [path for path in candidates if path.is_file()]


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "**********")
    return text


# --- the client ------------------------------------------------------------------------------


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Swallow what the client prints: help text, URLs, warnings (stdout is the log stream)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _bounded(api: Any, timeout: float) -> None:
    """Give every request ``api`` makes a ``timeout`` and take away its retries.

    The client sends its API calls with no timeout at all (a stalled server hangs the process
    forever) and retries a stalled download five times with backoff, 300 s per read. Each
    client ``api`` builds gets a session whose adapter fills in ``timeout`` where none is set,
    and the download runs once with the same bound: a failure is reported, and running the
    command again starts afresh.
    """
    import functools

    from requests.adapters import HTTPAdapter

    class _TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = (timeout, timeout)
            return super().send(request, *args, **kwargs)

    build = api.build_kaggle_client

    def build_bounded() -> Any:
        client = build()
        http = client.http_client()
        # What entering the client does; it keeps a session that exists. Private names of
        # kagglesdk 0.1.38: if they move, downloads still work, only without this bound.
        init = getattr(http, "_init_session", None)
        if init is not None:
            init()
        session = getattr(http, "_session", None)
        if session is not None:
            for prefix in ("http://", "https://"):
                session.mount(prefix, _TimeoutAdapter())
        return client

    api.build_kaggle_client = build_bounded
    api.download_file = functools.partial(api.download_file, max_retries=0, timeout=timeout)


def _run_client(ref: _Ref, folder: Path, creds: dict[str, str], timeout: float) -> None:
    """Download ``ref`` into ``folder`` with the real client, exactly as Kaggle serves it."""
    with _silenced():
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        _bounded(api, timeout)
        if creds:
            # Credentials from Settings (env or .env) win; the client itself only sees the
            # process environment, so they are handed over as its config values.
            api.config_values = dict(creds)
        else:
            api.authenticate()  # the client's own files: kaggle.json, access_token, OAuth
        if ref.kind == "competitions":
            api.competition_download_file(
                ref.slug, ref.file, path=str(folder), force=True, quiet=True
            )
        else:
            api.dataset_download_file(ref.slug, ref.file, path=str(folder), force=True, quiet=True)


def _client_error(
    exc: BaseException, ref: _Ref, shown: str, secrets: list[str], timeout: float
) -> Exception:
    """The project's error for what the client raised (its text is never trusted as is)."""
    if isinstance(exc, SystemExit):
        return SourceError(
            f"Kaggle credentials missing or unusable for {shown} (the client gave up): "
            f"{_CREDENTIALS_HELP}, or fix ~/.kaggle/kaggle.json"
        )
    if isinstance(exc, ImportError):
        return SourceError(
            f"cannot download {shown}: the kaggle client cannot be imported ({exc.name or exc}); "
            "reinstall the project's dependencies"
        )
    import requests
    from urllib3.exceptions import ReadTimeoutError

    from pipeline.data.sources.http import _causes

    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return SourceError(_http_message(status, ref, shown))
    # A read timeout while streaming the body arrives as a ConnectionError wrapping urllib3's.
    if isinstance(exc, requests.Timeout) or any(
        isinstance(c, ReadTimeoutError | TimeoutError) for c in _causes(exc)
    ):
        return SourceError(
            f"cannot reach Kaggle for {shown}: the server did not answer within {timeout:g} "
            "seconds; try again later or raise PIPELINE_KAGGLE_TIMEOUT"
        )
    if isinstance(exc, requests.RequestException):
        return SourceError(
            f"cannot reach Kaggle for {shown} ({type(exc).__name__}): check the network "
            "and any proxy settings (HTTPS_PROXY, NO_PROXY)"
        )
    if isinstance(exc, OSError):  # the client could not write its download into the store
        return StoreError(
            f"cannot write the download of {shown}: {exc.strerror or exc}; free space or point "
            "PIPELINE_STORE at a writable folder"
        )
    detail = _mask(" ".join(str(exc).split())[:160], secrets)
    return SourceError(
        f"cannot download {shown}: the kaggle client failed ({type(exc).__name__}: {detail}); "
        "check the URI and try again"
    )


def _http_message(status: int, ref: _Ref, shown: str) -> str:
    what = "competition" if ref.kind == "competitions" else "dataset"
    if status == 401:
        return (
            f"Kaggle rejected the request for {shown} (HTTP 401): credentials rejected: check "
            "KAGGLE_USERNAME/KAGGLE_KEY (or KAGGLE_API_TOKEN)"
        )
    if status == 403 and ref.kind == "competitions":
        return (
            f"Kaggle refused {shown} (HTTP 403): accept the competition's rules at "
            f"https://www.kaggle.com/competitions/{ref.slug}/rules with this account, or check "
            "KAGGLE_USERNAME/KAGGLE_KEY"
        )
    if status == 403:
        return (
            f"Kaggle refused {shown} (HTTP 403): credentials rejected or the dataset is private: "
            "check KAGGLE_USERNAME/KAGGLE_KEY"
        )
    if status == 404:
        return (
            f"Kaggle has no such {what} or file: {shown} (HTTP 404); check the {what} name and "
            f"the file path (`kaggle {ref.kind} files {ref.slug}` lists the files)"
        )
    if status == 429:
        return f"Kaggle is rate-limiting requests for {shown} (HTTP 429): wait and try again"
    return f"Kaggle answered HTTP {status} for {shown}: try again later"


# --- what arrived ----------------------------------------------------------------------------


def _payload(folder: Path, shown: str) -> Path:
    """The one file the client wrote under ``folder`` (under the name the server chose)."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(_MARKER_SUFFIX)]
    if len(files) != 1:
        raise SourceError(
            f"cannot download {shown}: Kaggle returned {len(files)} files instead of one; "
            "check the file path in the URI"
        )
    return files[0]


def _is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        magic = fh.read(4)
    return magic in (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive


def _check_raw(path: Path, shown: str) -> None:
    """Refuse a payload that is plainly not a data file: an empty body, an HTML or XML page,
    or binary bytes that are neither a zip archive nor Parquet (a damaged transfer)."""
    with path.open("rb") as fh:
        raw = fh.read(4096)
    head = raw[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    what = ""
    if not head:
        what = "an empty body"
    elif head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        what = "a web page"
    elif b"\x00" in raw and not raw.startswith(b"PAR1"):
        what = "binary data that is neither a zip archive nor Parquet"
    if what:
        raise SourceError(
            f"cannot download {shown}: Kaggle returned something that is not the file "
            f"({what}); check the URI and the credentials, then try again"
        )


def _safe_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return not name.startswith(("/", "\\")) and ".." not in parts and ":" not in parts[0]


def _extract(archive: Path, ref: _Ref, out: Path, shown: str) -> None:
    """Stream the member of ``archive`` that is ``ref``'s file into ``out``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            member = _member(zf, ref, shown)
            if member is None:
                # A file that is itself a zip may be served as is.
                if ref.name.lower().endswith(".zip"):
                    archive.replace(out)
                    return
                raise SourceError(
                    f"cannot download {shown}: Kaggle's archive does not contain {ref.name}; "
                    "check the file path in the URI"
                )
            if member.file_size > MAX_MEMBER_BYTES:
                raise SourceError(
                    f"cannot download {shown}: {ref.name} is {member.file_size} bytes "
                    f"uncompressed, over the {MAX_MEMBER_BYTES} byte limit; use a smaller file"
                )
            _copy_member(zf, member, out, shown)
    except zipfile.BadZipFile:
        raise SourceError(
            f"cannot download {shown}: Kaggle returned a damaged zip archive; try again"
        ) from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted or unsupported compression
        raise SourceError(
            f"cannot download {shown}: Kaggle's archive cannot be read ({type(exc).__name__}); "
            "download the file by hand and point PIPELINE_DATA__SOURCE at it"
        ) from None


def _member(zf: zipfile.ZipFile, ref: _Ref, shown: str) -> zipfile.ZipInfo | None:
    """The archive entry stored under the requested path, else the one under its base name."""
    files = [info for info in zf.infolist() if not info.is_dir()]
    exact = [info for info in files if info.filename.replace("\\", "/") == ref.file]
    by_name = [
        info for info in files if info.filename.replace("\\", "/").split("/")[-1] == ref.name
    ]
    matches = exact or by_name
    if len(matches) != 1:
        return None
    if not _safe_member(matches[0].filename):
        raise SourceError(
            f"cannot download {shown}: Kaggle's archive holds an unsafe entry "
            "(an absolute path or '..'); refusing to extract it"
        )
    return matches[0]


def _copy_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, out: Path, shown: str) -> None:
    written = 0
    with zf.open(member) as src:
        try:
            dst = out.open("wb")
        except OSError as exc:
            raise store_error(exc, out) from exc
        with dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > MAX_MEMBER_BYTES:  # the header's size can lie
                    raise SourceError(
                        f"cannot download {shown}: {member.filename} expands past the "
                        f"{MAX_MEMBER_BYTES} byte limit; refusing it"
                    )
                try:
                    dst.write(chunk)
                except OSError as exc:
                    raise store_error(exc, out) from exc
