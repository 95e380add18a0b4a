"""Logging as an event stream: structlog, configured once, JSON lines on stdout off a terminal.

This module owns the process-wide logging state; ``configure`` is idempotent and tests may call
it again (or use ``structlog.testing.capture_logs``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_secrets: set[str] = set()


class _StreamLogger:
    """Writes each rendered event to the *current* ``sys.stdout`` (CliRunner swaps it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = msg


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: no registered secret value survives into a rendered event."""
    if not _secrets:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            for secret in _secrets:
                if secret in value:
                    value = value.replace(secret, "**********")
            event[key] = value
    return event


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so that they are masked if they ever reach an event."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def mask(text: str) -> str:
    """``text`` with every registered secret masked (for error messages)."""
    for secret in _secrets:
        text = text.replace(secret, "**********")
    return text


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null so every line stays parseable."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for the process. ``fmt`` is auto, json or console."""
    out = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda obj, **kw: json.dumps(_finite(obj), allow_nan=False, **kw),
            default=_json_default,
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *args: _StreamLogger(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A logger with ``context`` bound to every event it writes.

    Lazy: each event uses the configuration current when it is written, so a logger made before
    the settings set the level and format still honours them.
    """
    return structlog.get_logger(**context)


def bind(**context: Any) -> None:
    """Bind context (run id, stage, build id) to every later event of this process."""
    structlog.contextvars.bind_contextvars(**context)


def reset() -> None:
    """Forget bound context and registered secrets (tests, and between CLI invocations)."""
    structlog.contextvars.clear_contextvars()
    _secrets.clear()
