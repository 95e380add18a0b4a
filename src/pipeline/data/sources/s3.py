"""The ``s3://bucket/key`` dataset source: an object of an S3-compatible bucket, streamed to disk.

It uses the artifact store's client (``pipeline.store.s3_client.open_client``): the same ``AWS_*``
credentials, region and endpoint, the same ``PIPELINE_STORE_TIMEOUT`` / ``PIPELINE_STORE_RETRIES``
bounds, and the same reading of the client's errors (``fault_of``). Only the wording differs:
every failure here is a ``SourceError`` (exit 5), as for http(s) data, because it is the dataset
that could not be fetched. The store's own codes (9 refused, 10 unavailable) would send a user to
PIPELINE_STORE, which may well be a local folder that is fine. Each message says whether to fix
something (the key, the bucket, the credentials) or to run again later (down, hanging, 5xx).

Caching by sha256 and ``PIPELINE_DATA__SHA256`` pinning are ``sources.fetch``'s, shared with
http(s): this module only downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.sources import redact_uri
from pipeline.data.sources.http import filename as filename
from pipeline.errors import SourceError
from pipeline.store import store_error

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["download", "filename"]


def _parse(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; SourceError for anything else."""
    from pipeline.store.s3_client import split_uri

    parsed = split_uri(uri)
    if parsed is not None and uri.split("?", 1)[0].endswith("/"):  # "no object 'data'" said
        raise SourceError(
            f"'{redact_uri(uri)}' names a folder (a prefix), not an object: a dataset is one "
            "file; name it (s3://bucket/path/to/data.csv or .parquet) in PIPELINE_DATA__SOURCE"
        )
    if parsed is None or not parsed[1]:
        raise SourceError(
            f"'{redact_uri(uri)}' is no S3 object URI: expected s3://bucket/path/to/data.csv "
            "(or .parquet) with a bucket name of 3-63 lowercase letters, digits, '.' or '-'; "
            "fix PIPELINE_DATA__SOURCE"
        )
    return parsed


def download(uri: str, dest: Path, settings: Settings) -> str | None:
    """Stream the object ``uri`` into ``dest``; SourceError and no ``dest`` on any failure."""
    import obstore
    from obstore.exceptions import BaseError

    from pipeline.store.s3_client import open_client

    bucket, key = _parse(uri)
    options = settings.store_options()
    del options["cache_bytes"]  # the store's download cache: a dataset source streams to dest
    client = open_client(bucket, **options)
    try:
        try:
            fh = dest.open("wb")
        except OSError as exc:
            raise store_error(exc, dest) from exc
        with fh:
            for chunk in obstore.get(client, key).stream():
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise store_error(exc, dest) from exc
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if isinstance(exc, FileNotFoundError | BaseError):
            raise _error(exc, uri, settings) from None
        raise
    if dest.stat().st_size == 0:
        dest.unlink()
        raise SourceError(
            f"cannot download {redact_uri(uri)}: the object is empty; check that the key names "
            "the dataset"
        )
    return None  # the object's size is S3's own: a short read is an error already


def _error(exc: Exception, uri: str, settings: Settings) -> SourceError:
    """The one-line SourceError for a failed request (see the module docstring)."""
    from pipeline.store.s3_client import PLAIN_HTTP, fault_of, unsigned_hint

    kind, code = fault_of(exc)
    bucket, key = _parse(uri)
    tries = f"after {settings.store_retries + 1} tries"
    messages = {
        "no_bucket": f"bucket '{bucket}' does not exist on the S3 server (AWS_ENDPOINT_URL): "
        "fix the bucket in PIPELINE_DATA__SOURCE",
        "not_found": f"there is no object '{key}' in bucket '{bucket}': check the key in "
        "PIPELINE_DATA__SOURCE (the bucket exists)",
        "credentials": f"the S3 server refused the credentials ({code or 'denied'}); check "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION)",
        "timeout": f"the S3 server did not answer within {settings.store_timeout:g} s ({tries}); "
        "try again later, or raise PIPELINE_STORE_TIMEOUT",
        "connect": f"no S3 server answers at AWS_ENDPOINT_URL ({tries}: connection refused or "
        "unreachable); start it or fix AWS_ENDPOINT_URL, then run again",
        "busy": f"the S3 server kept failing ({code or 'a 5xx status'}, {tries}); try again "
        "later, or raise PIPELINE_STORE_RETRIES",
        "plain_http": PLAIN_HTTP,
    }
    why = messages.get(kind, f"the S3 server answered {code or 'an error'}")
    if kind not in ("no_bucket", "not_found", "timeout", "connect", "busy", "plain_http"):
        why += unsigned_hint(settings.store_options()["s3"])
    return SourceError(f"cannot download {redact_uri(uri)}: {why}")
