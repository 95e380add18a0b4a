"""Logging as an event stream: structlog, configured once, JSON lines on stdout off a terminal.

This module owns the process-wide logging state; ``configure`` is idempotent and tests may call
it again (or use ``structlog.testing.capture_logs``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, TextIO


def _without_rich() -> bool:
    """Make ``import rich`` fail until ``structlog`` is imported, if nothing imported rich yet.

    When rich is installed (typer brings it), ``structlog.dev`` imports rich's console and
    traceback modules and pygments at structlog's import: about 0.1 s of every process start,
    for exception rendering this project does not use (its console renderer is its own). Rich
    itself stays importable afterwards, for typer's help pages.
    """
    if "rich" in sys.modules:
        return False
    sys.modules["rich"] = None  # type: ignore[assignment]  # the import system's "not found"
    return True


_hidden = _without_rich()
try:
    import structlog
finally:
    if _hidden and sys.modules.get("rich", ...) is None:
        del sys.modules["rich"]

_secrets: set[str] = set()


# The stdout that events keep while ``stdout_for_events_only`` sends other prints to stderr.
_reserved: TextIO | None = None


@contextlib.contextmanager
def stdout_for_events_only(sink: TextIO | None = None) -> Iterator[None]:
    """Inside the block, events still go to stdout and anything else printed goes to stderr
    (or to ``sink``).

    For libraries that print to stdout (Ray Tune's tables and hints): stdout is the event
    stream, and one stray line would break a consumer that reads it as JSON lines.
    """
    global _reserved
    before = _reserved
    _reserved = before or sys.stdout  # nested: the events keep the stdout the outer one kept
    try:
        with contextlib.redirect_stdout(sink or sys.stderr):
            yield
    finally:
        _reserved = before


class _StreamLogger:
    """Writes each rendered event to the *current* ``sys.stdout`` (CliRunner swaps it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or _reserved or sys.stdout
        tqdm = sys.modules.get("tqdm")  # a progress bar can only be drawing if tqdm was imported
        if tqdm is not None and stream.isatty():
            # Clear the bars on stderr while the event is written and draw them again below it:
            # on a terminal the event gets its own line and the bar stays on the last one.
            with tqdm.tqdm.external_write_mode(file=sys.stderr):
                stream.write(message + "\n")
                stream.flush()
            return
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


# Query parameters whose values are credentials (``?token=``, ``X-Amz-Signature=``...).
SECRET_PARAM = re.compile(
    r"token|key|sig|secret|pass|pwd|auth|credential|session|cookie", re.IGNORECASE
)


def redacted_uri(uri: str) -> str:
    """``uri`` without its user info (``***@``) and with the values of credential-like query
    parameters as ``***``; the same text when it carries neither (a path, an ordinary URL)."""
    from urllib.parse import parse_qsl

    head, question, query = without_userinfo(uri).partition("?")
    if any(SECRET_PARAM.search(k) for k, _ in parse_qsl(query, True)):
        query = masked_query(query)
    return f"{head}{question}{query}"


def masked_query(query: str) -> str:
    """A query string with the values of credential-like parameters as ``***``."""
    from urllib.parse import parse_qsl, urlencode

    pairs = parse_qsl(query, True)
    return urlencode([(k, "***" if SECRET_PARAM.search(k) else v) for k, v in pairs])


def is_masked(uri: str) -> bool:
    """Whether ``uri`` is a ``redacted_uri`` whose credentials were masked (a build's or a
    preset's record of a source given with them)."""
    from urllib.parse import parse_qsl

    _, sep, rest = uri.partition("://")
    if sep and rest.partition("/")[0].startswith("***@"):
        return True
    query = uri.partition("?")[2]
    return any(v == "***" and SECRET_PARAM.search(k) for k, v in parse_qsl(query, True))


def uri_secrets(uri: str | None) -> list[str]:
    """The credentials written into ``uri``: its user info (and the password in it) and the
    values of credential-like query parameters, as written (for ``register_secrets``)."""
    if not uri:
        return []
    userinfo, found = _credentials(uri)
    return [f for f in (userinfo, *found) if f]


def carries_credentials(uri: str) -> bool:
    """Whether ``uri`` holds a password (``user:pass@``) or a credential-like query value
    (``?token=``): a user name alone is none, nor a URI a record masked (``***@``)."""
    return not is_masked(uri) and bool(_credentials(uri)[1])


def _credentials(uri: str) -> tuple[str | None, list[str]]:
    """``uri``'s user info (None without one), and its password and credential-like query
    values, as written (empty ones left out)."""
    _, sep, rest = uri.partition("://")
    authority = rest.partition("/")[0].partition("?")[0]
    userinfo = authority.rsplit("@", 1)[0] if sep and "@" in authority else None
    found = [userinfo.partition(":")[2]] if userinfo is not None else []
    query = uri.partition("?")[2].partition("#")[0]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if value and SECRET_PARAM.search(key):
            found.append(value)
    return userinfo, [f for f in found if f]


def without_userinfo(uri: str) -> str:
    """``uri`` with the user info of its authority (``user:password@``, everything before the
    last ``@`` of it) shown as ``***@``; anything else unchanged."""
    scheme, sep, rest = uri.partition("://")
    authority, slash, tail = rest.partition("/")
    if not sep or "@" not in authority:
        return uri
    return f"{scheme}{sep}***@{authority.rsplit('@', 1)[1]}{slash}{tail}"


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null so every line stays parseable."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(obj: Any, **kw: Any) -> str:
    """One event as JSON; only an event that holds NaN or an infinity pays for ``_finite``'s
    walk through every value (the access log writes one event per request)."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(_finite(obj), allow_nan=False, **kw)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


# Context every event carries that a person at a terminal does not need to read on each line.
_CONSOLE_HIDDEN = ("run_id", "stage", "timestamp", "level", "event")
_LEVEL_STYLE = {"debug": "2", "info": "32", "warning": "33", "error": "31;1", "critical": "31;1"}


def _short(value: Any, limit: int = 100) -> str:
    """A value as a person reads it: 4 significant digits, nested data compact, long text cut."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "-"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_short(v, 24)}" for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_short(v, 24) for v in value[:8])
        text += f", ... {len(value)} items]" if len(value) > 8 else "]"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConsoleRenderer:
    """Events as short, aligned lines for a person: ``12:03:04 info  train.epoch  k=v k=v``.

    Fields wrap onto indented continuation lines at the terminal's width; floats show 4
    significant digits, long values are cut (the JSON format keeps everything, exactly).
    """

    def __init__(self, colors: bool, width: int | None = None) -> None:
        self.colors, self.width = colors, width

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colors else text

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> str:
        import shutil

        # Wrapped at the width of a terminal; one line per event into a file or a pipe.
        width = self.width or (
            max(60, min(shutil.get_terminal_size((100, 24)).columns, 140))
            if self.colors
            else 1 << 30
        )
        level = str(event.get("level", "info"))
        stamp = str(event.get("timestamp", ""))[11:19]
        head = f"{stamp} {self._style(f'{level:<7}', _LEVEL_STYLE.get(level, '0'))} "
        head += self._style(f"{event.get('event', '')!s:<20}", "1")
        plain_head = len(stamp) + 1 + 8 + max(20, len(str(event.get("event", ""))))
        fields, tables = [], []
        for k, v in event.items():
            if k in _CONSOLE_HIDDEN:
                continue
            if _is_table(v):  # a list of records (release list): a table under the line
                tables.append(_table(v))
            elif isinstance(v, dict) and v:  # one level flattened: validation.rmse=0.13
                fields += [f"{k}.{k2}={_short(v2, 60)}" for k2, v2 in v.items()]
            else:
                fields.append(f"{k}={_short(v)}")
        lines, line, used = [], head, plain_head
        indent = " " * (len(stamp) + 9)
        for n, field in enumerate(fields):
            if n and used + 1 + len(field) > width:
                lines.append(line)
                line, used = indent + field, len(indent) + len(field)
            else:
                line, used = f"{line} {field}", used + 1 + len(field)
        lines.append(line)
        lines += [indent + row for table in tables for row in table]
        return "\n".join(lines)


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """Records as aligned columns under a header (the console's view of a list event)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[_short(row.get(c), 40) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return out


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for the process. ``fmt`` is auto, json or console."""
    global _JSON, _ANSWER
    out = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    _JSON = fmt == "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps, default=_json_default)
    else:
        renderer = ConsoleRenderer(colors=out.isatty())
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
        renderer,
    ]
    _ANSWER = structlog.wrap_logger(
        _StreamLogger(stream),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *args: _StreamLogger(stream),
        cache_logger_on_first_use=False,
    )
    if warnings.showwarning is _SHOW_WARNING:
        warnings.showwarning = _warning_event


# Python's own: replaced by ``configure`` only while still in place, so that a test runner's
# recorder (pytest.warns, catch_warnings) keeps the warnings it is waiting for.
_SHOW_WARNING = warnings.showwarning


def _warning_event(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A Python warning (numpy's, a library's) as a ``python.warning`` event, not stray text on
    stderr: shown as Python shows it (once per place, by its filters)."""
    structlog.get_logger().warning(
        "python.warning",
        category=category.__name__,
        message=_short(str(message), 300),
        where=f"{Path(filename).name}:{lineno}",
    )


_JSON = False  # whether ``configure`` chose JSON lines
_ANSWER: Any = None  # ``configure``'s renderer and stream, without the level's filter


def answer(event: str, **fields: Any) -> None:
    """The command's answer (``release list``, ``release show``, ``tune show``) as an info
    event, whatever PIPELINE_LOG_LEVEL: the level quiets the log, not what was asked for
    (at ``warning`` those commands printed nothing and exited 0)."""
    (_ANSWER or structlog.get_logger()).info(event, **fields)


def json_events() -> bool:
    """Whether events are JSON lines (a CLI error is then an ``error`` event too)."""
    return _JSON


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


class EpochProgress:
    """`pipeline train`'s epochs: one ``train.epoch`` / ``train.refit_epoch`` event each, and a
    bar on stderr when it is a terminal."""

    def __init__(self, total: int, log: Any) -> None:
        from tqdm import tqdm

        self.log = log
        self.bar = tqdm(
            total=total,
            desc="train",
            unit="epoch",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            leave=False,
        )

    def selection_epoch(self, row: dict[str, Any]) -> None:
        self.log.info("train.epoch", **row)
        self.bar.update(1)
        self.bar.set_postfix(val_loss=f"{row['val_loss']:.4f}")

    def refit_epoch(self, row: dict[str, Any]) -> None:
        self.log.info("train.refit_epoch", **row)
        self.bar.update(1)
