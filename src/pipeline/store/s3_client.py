"""The S3 client and the reading of its errors, shared by the store and the ``s3://`` datasets.

``open_client`` makes an ``obstore`` client whose credentials, region and endpoint come from the
standard ``AWS_*`` variables, with bounded timeouts and retries; ``fault_of`` sorts a failed
request into the kinds the callers word as one-line errors. ``obstore`` is imported on use only.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.log import without_userinfo

if TYPE_CHECKING:
    from obstore.store import S3Store as Client

_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_URI = re.compile(r"^(?i:s3)://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


def split_uri(uri: str) -> tuple[str, str] | None:
    """``(bucket, key or prefix)`` of ``s3://bucket/rest``, or None when it is no such URI."""
    match = _URI.match(uri.strip())
    rest = (match["prefix"] or "").strip("/") if match else ""
    if match is None or "//" in rest or any(p in (".", "..") for p in rest.split("/")):
        return None
    return match["bucket"], rest


def parse_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix``; ConfigError for a malformed URI."""
    if "?" in uri or "#" in uri:
        # An object store takes them literally: a query's "token" would become part of every
        # key's name, visible to whoever lists the bucket.
        cut = min(uri.find(c) for c in "?#" if c in uri)  # what follows is not shown
        raise ConfigError(
            f"PIPELINE_STORE='{without_userinfo(uri[:cut])}{uri[cut]}...' has a '?' or '#', "
            "which an object store would take into every key: give s3://bucket/optional/prefix "
            "alone (credentials go in AWS_* variables)"
        )
    parsed = split_uri(uri)
    rest = uri.strip().partition("://")[2].partition("/")[2]
    if parsed is None and rest.strip("/") and {".", "..", ""} & set(rest.strip("/").split("/")):
        raise ConfigError(
            f"PIPELINE_STORE='{without_userinfo(uri)}' has an empty, '.' or '..' part in its "
            "prefix, which an object store takes literally: write the prefix plainly "
            "(s3://bucket/a/b)"
        )
    if parsed is None:
        raise ConfigError(
            f"PIPELINE_STORE='{without_userinfo(uri)}' is no S3 URI: expected "
            "s3://bucket/optional/prefix with a bucket name of 3-63 lowercase letters, digits, "
            "'.' or '-'; fix the URI"
        )
    return parsed


def unsigned_hint(s3: dict[str, Any] | None) -> str:
    """What an S3 refusal adds when no key pair is set: the requests went with whatever the
    machine provides (often nothing), which the server's bare error did not say."""
    if (s3 or {}).get("access_key_id"):
        return ""
    return (
        "; no AWS_ACCESS_KEY_ID is set (environment or .env), so the machine's own credentials "
        "were used, if it has any: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def open_client(
    bucket: str,
    prefix: str = "",
    *,
    timeout: float,
    retries: int,
    allow_http: bool,
    s3: Mapping[str, str] | None = None,
) -> Client:
    """An obstore client on ``bucket``: ``s3`` (credentials, endpoint, region, as the settings
    read them from the environment or .env) over what the client finds itself.

    Shared by the store and the ``s3://`` dataset source, so both bound their requests alike:
    ``timeout`` seconds per request and per connect, ``retries`` retries with backoff. Half a
    key pair is a ConfigError naming the missing variable (it was the client's traceback).
    """
    from obstore.store import S3Store as Client

    config = dict(s3 or {})
    check_key_pair(config)
    span = datetime.timedelta(seconds=timeout)
    return Client(
        bucket,
        prefix=prefix or None,
        config=config or None,  # type: ignore[arg-type]
        client_options={"timeout": span, "connect_timeout": span, "allow_http": allow_http},
        retry_config={
            "max_retries": retries,
            "retry_timeout": span * (retries + 1),
            "backoff": {
                "init_backoff": datetime.timedelta(milliseconds=100),
                "max_backoff": datetime.timedelta(seconds=2),
            },
        },
    )


def check_options(allow_http: bool, s3: Mapping[str, str]) -> None:
    """ConfigError (exit 3) for an ``http://`` endpoint without ``AWS_ALLOW_HTTP`` or half a
    key pair: said before any request, not as 9 after a refused one."""
    if str(s3.get("endpoint", "")).lower().startswith("http://") and not allow_http:
        raise ConfigError(PLAIN_HTTP)
    check_key_pair(s3)


def check_key_pair(config: Mapping[str, str]) -> None:
    """ConfigError naming the missing half of a key pair (it was the client's traceback)."""
    pair = {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key"}
    missing = [name for name, key in pair.items() if not config.get(key)]
    if len(missing) == 1:
        raise ConfigError(
            f"{missing[0]} is not set, but {next(n for n in pair if n not in missing)} is: an S3 "
            "key pair needs "
            "both; set it (in the environment or .env), or unset the other to use the "
            "machine's own credentials"
        )


def fault_of(exc: Exception) -> tuple[str, str]:
    """``(kind, S3 code)`` of a failed request, for a caller to word as its own error.

    ``kind`` is ``no_bucket``, ``not_found`` (no such key), ``credentials`` (refused),
    ``plain_http`` (an http:// endpoint without AWS_ALLOW_HTTP), ``timeout``, ``connect``
    (nothing answers), ``busy`` (5xx or dropped connections after the retries) or ``other``.
    The store and the dataset source share this reading of the client's errors and differ only
    in what they tell the user (which setting to fix, which exit code).
    """
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = str(exc)  # the client's text: URLs and codes, never the secret key
    code = next(iter(_CODE.findall(text)), "")
    if code == "NoSuchBucket" or "NoSuchBucket" in text:
        return "no_bucket", "NoSuchBucket"
    if isinstance(exc, FileNotFoundError):
        return "not_found", code or "NoSuchKey"
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or code in (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
    ):
        return "credentials", code
    if "builder error" in text and "http://" in text:  # refused by the client, never sent
        return "plain_http", code
    if "kind: Timeout" in text or "TimedOut" in text:
        return "timeout", code
    if "kind: Connect" in text:  # refused at some try: a server that went away
        return "connect", code
    # A request that got no answer at all (the connection closed, reset, or not ready): the
    # transport's failure, retried like a 5xx.
    if not code and any(m in text for m in ("IncompleteMessage", "reset by peer", "kind: Request")):
        return "busy", "connections dropped"
    if code in ("SlowDown", "ServiceUnavailable", "InternalError") or " 50" in text:
        return "busy", code
    return "other", code


# What to do about an http:// endpoint the client refuses (both callers say it).
PLAIN_HTTP = (
    "AWS_ENDPOINT_URL is http:// and AWS_ALLOW_HTTP is not true: set AWS_ALLOW_HTTP=true for "
    "a local or test server, or use its https:// address"
)
