"""uvicorn's httptools connection, with bounds on what comes before a request's body.

uvicorn bounds neither the time nor the size of a request's line and headers on its httptools
path: a connection that opened and sent nothing, or half a header, was held for as long as the
client liked (so idle sockets could hold every connection slot, and the server then answers
503 to everyone, probes included), and a header line of 50 MB was buffered whole (50 MB of
memory per connection). Here each request's head must arrive within ``header_timeout`` seconds
of the connection opening or of the request's first byte (else 408 and the connection closes;
a connection that sent nothing is just closed), and its bytes up to the blank line after the
headers may number at most ``max_header_bytes`` (else 431 and the connection closes, before
the parser buffers more). Idle time between requests stays bounded by uvicorn's keep-alive
timeout; the body by ``body_timeout`` (``predicting``).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

END = b"\r\n\r\n"


class BoundedHeadProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose request heads are bounded in time and size (module doc)."""

    header_timeout: float = 30.0
    max_header_bytes: int = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request's line and headers (or waiting for them)
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: END may straddle two reads
        self._head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def bounded(cls, header_timeout: float, max_header_bytes: int) -> type[BoundedHeadProtocol]:
        """This protocol with these bounds (uvicorn makes one instance per connection)."""
        attrs = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes}
        return type(cls.__name__, (cls,), attrs)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused: what else arrives is not read
            return
        if self._in_head:
            seen = self._tail + data
            end = seen.find(END)
            # Only the head's bytes count: a body that arrives with them is the body's business.
            self._head_bytes += len(data) if end < 0 else max(0, end + len(END) - len(self._tail))
            if self._head_bytes > self.max_header_bytes:
                limit = self.max_header_bytes
                too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                self._refuse(too_large, f"request line and headers over {limit} bytes")
                return
            self._tail = seen[-(len(END) - 1) :]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next request's bytes; uvicorn's keep-alive timer runs now

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if not self._head_bytes and not self._tail:  # nothing sent: no request to answer
            self.transport.close()
            return
        within = f"{self.header_timeout:g} s"
        self._refuse(HTTPStatus.REQUEST_TIMEOUT, f"request line and headers took over {within}")

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer ``status`` with ``message`` as text, log it (a ``serve.uvicorn`` warning, as
        uvicorn's own 400 for a malformed request is) and close the connection."""
        self.logger.warning("%d %s: %s", status.value, status.phrase, message)
        self._stop_head_timer()
        self._in_head = False
        body = f"{status.phrase}: {message}".encode("ascii")
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
