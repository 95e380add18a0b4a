"""The URI settings' one check, shared by the sections and the settings tree."""

from __future__ import annotations

from pydantic_core import PydanticCustomError


def parsable_uri(value: str) -> str:
    """``value`` when Python's URL parser reads it; else the one-line error naming why (an
    unclosed ``[`` of an IPv6 host raised ValueError, a traceback, in every command that read
    the setting). The value is not echoed: it may hold credentials."""
    from urllib.parse import urlsplit

    if "://" in value and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PydanticCustomError(  # urllib drops a newline or tab; the request kept it
            "bad_uri", "holds a control character (a newline or tab?): remove it"
        )
    try:
        urlsplit(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "bad_uri", f"is not a valid URI or path ({exc}): check its brackets and characters"
        ) from None
    return value
