"""Access log middleware: one ``serve.request`` event per request, and a request id on each.

Pure ASGI, so it sees every request, including the ones the app refuses, and it turns a bug
that escaped a route into a 500 without internals (the traceback goes to the log).
"""

from __future__ import annotations

import asyncio
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from pipeline.serve.contract import dumps


class Counted(Protocol):
    """What the middleware needs of the server's state: the log, two request counters, and the
    fraction of successful requests to log."""

    log: Any
    started: int
    completed: int
    access_sample: float


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLOSING = [
    (b"content-type", b"application/json"), (b"connection", b"close"), (b"retry-after", b"1"),
]  # fmt: skip
_SHUT_DOWN = dumps({
    "error": "shutting_down",
    "message": "the server stopped before this request was answered: send it again",
})  # fmt: skip
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class AccessLog:
    """Pure ASGI middleware: one ``serve.request`` event per request, and a request id.

    The id comes from the client's ``X-Request-ID`` when it is a sane token, else a new one; it
    goes back in the response header. Requests are counted when they start and when they end, so
    a shutdown can say whether any accepted request was left unanswered.
    """

    def __init__(self, app: Any, state: Counted) -> None:
        self.app, self.state = app, state
        self._credit = 0.0  # logged successes lag the sampled fraction by less than one

    def _sampled(self) -> bool:
        """Whether to log this successful request: every one at fraction 1, else evenly spread
        (deterministic: no random draw)."""
        self._credit += self.state.access_sample
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        extra = scope.setdefault("state", {})
        extra["request_id"] = request_id
        status = 500  # what the client gets if the app fails before answering
        log = self.state.log
        self.state.started += 1
        log.debug("serve.request_start", method=scope["method"], path=scope["path"],
                  request_id=request_id)  # fmt: skip

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        cancelled = False
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The shutdown's grace (PIPELINE_SERVE__GRACEFUL_TIMEOUT) ran out with this request
            # in flight: uvicorn cancels it, and would answer a 500 and log a traceback. A 503
            # says what happened instead, and the request counts as unanswered.
            cancelled = True
            if status == 500:
                status = 503
                await send_with_id(
                    {"type": "http.response.start", "status": 503, "headers": _CLOSING}
                )
                await send({"type": "http.response.body", "body": _SHUT_DOWN})
        except Exception as exc:
            # A bug, never the client's fault: a 500 without internals, the traceback in the log.
            log.error("serve.internal_error", path=scope["path"], request_id=request_id,
                      error=f"{type(exc).__name__}: {exc}",
                      traceback="".join(traceback.format_exception(exc)))  # fmt: skip
            if status == 500:
                json_type = [(b"content-type", b"application/json")]
                await send_with_id(
                    {"type": "http.response.start", "status": 500, "headers": json_type}
                )
                body = {"error": "internal", "message": "internal error: a bug, please report it"}
                await send({"type": "http.response.body", "body": dumps(body)})
        finally:
            self.state.completed += not cancelled
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
                "rows": extra.get("rows"),
                "request_id": request_id,
            }
            names, count = extra.get("ignored_columns") or ([], 0)
            if count:  # bounded: the first names, each cut short (contract.ignored_names)
                fields["ignored_columns"], fields["ignored_columns_count"] = names, count
            if cancelled:
                fields["cancelled"] = "the server stopped before answering (graceful timeout)"
            if status == 500:
                log.error("serve.request", **fields)
            elif status >= 400:
                log.warning("serve.request", **fields)
            elif self._sampled():
                log.info("serve.request", **fields)
