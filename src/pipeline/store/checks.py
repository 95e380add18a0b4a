"""The checks opening a store makes of its settings, without opening anything.

`pipeline config show` runs them: it printed values that every store command refuses (an
``ftp://`` store, ``s3://`` without a bucket, half an S3 key pair, an ``http://`` endpoint
without ``AWS_ALLOW_HTTP``) and exited 0, so a CI job that checked its configuration with it
passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_uri(
    uri: str, *, allow_http: bool = False, s3: Mapping[str, str] | None = None, **_: Any
) -> None:
    """ConfigError (exit 3) for the store settings ``Store.from_uri`` would refuse; the same
    keyword arguments (``Settings.store_options``)."""
    if uri.strip().lower().startswith("s3://"):
        from pipeline.store import s3_client

        s3_client.parse_uri(uri.strip())
        s3_client.check_options(allow_http, s3 or {})
        return
    from pipeline.store.local import root_of

    root_of(uri)
