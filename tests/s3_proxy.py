"""A fault-injecting HTTP proxy in front of the suite's real S3 server, for tests marked `s3`.

It exists because the real server cannot be made to fail on demand: SeaweedFS answers 503
SlowDown only under real overload, never drops a response it has computed, and does not stall
one request while answering the next. The proxy forwards every request unchanged (the Host
header included, so the client's SigV4 signature still verifies) and, when told to:

* ``slow_down(n)``: answers the next ``n`` requests itself with 503 SlowDown, as S3 does when
  throttling, without forwarding them;
* ``lose(pattern)``: forwards the next PUT whose path matches ``pattern`` (the server applies it)
  and then closes the connection without sending the response: a lost response;
* ``stall(seconds)``: holds every request that long before forwarding it (a server that hangs);
* ``deny(pattern)``: answers every request whose path (with its query) matches ``pattern`` with
  403 AccessDenied, an error no client retries (a part of a multipart upload refused);
* ``die_on(pattern, kill)``: on the first PUT whose path matches, calls ``kill`` (the test
  SIGKILLs the real server), resets that connection mid-request and stops listening, so every
  later connection is refused: to the client the server died in the middle of an upload.

Each forwarded or refused request is counted in ``seen`` (method and path), so a test can tell
that a retry really happened.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """The proxy's state, shared by its handler threads (see the module docstring)."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.guard = threading.Lock()
        self.slow_downs = 0
        self.lose_pattern: re.Pattern[str] | None = None
        self.stall_s = 0.0
        self.deny_pattern: re.Pattern[str] | None = None
        self.die_pattern: re.Pattern[str] | None = None
        self.kill: Callable[[], None] | None = None
        self.died: list[str] = []
        self.seen: list[tuple[str, str]] = []
        self.lost: list[str] = []
        self.answers: list[tuple[str, str, int]] = []  # forwarded: method, path, server status
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def slow_down(self, n: int) -> None:
        """Answer the next ``n`` requests with 503 SlowDown."""
        with self.guard:
            self.slow_downs = n

    def lose(self, pattern: str) -> None:
        """Forward the next PUT whose path matches ``pattern``, then drop its response."""
        with self.guard:
            self.lose_pattern = re.compile(pattern)

    def stall(self, seconds: float) -> None:
        """Hold every request ``seconds`` before forwarding it (0: no stall)."""
        with self.guard:
            self.stall_s = seconds

    def deny(self, pattern: str) -> None:
        """Answer every request whose path matches ``pattern`` with 403 AccessDenied."""
        with self.guard:
            self.deny_pattern = re.compile(pattern)

    def die_on(self, pattern: str, kill: Callable[[], None]) -> None:
        """At the first PUT whose path matches ``pattern``: ``kill()``, then act dead."""
        with self.guard:
            self.die_pattern, self.kill = re.compile(pattern), kill

    def decide(self, method: str, path: str) -> str:
        """What to do with this request: ``slow``, ``deny``, ``lose`` or ``forward``."""
        with self.guard:
            self.seen.append((method, path))
            if self.deny_pattern and self.deny_pattern.search(path):
                return "deny"
            if self.slow_downs > 0:
                self.slow_downs -= 1
                return "slow"
            if self.died:  # a connection opened before the death: it dies with the server
                return "die"
            if method == "PUT" and self.die_pattern and self.die_pattern.search(path):
                self.die_pattern = None
                self.died.append(path)
                return "die"
            if method == "PUT" and self.lose_pattern and self.lose_pattern.search(path):
                self.lose_pattern = None
                self.lost.append(path)
                return "lose"
            return "forward"


def _handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            action = proxy.decide(self.command, self.path)
            if action == "die":
                self._die()
                return
            if proxy.stall_s:
                time.sleep(proxy.stall_s)
            if action in ("slow", "deny"):
                status, body = (503, SLOW_DOWN) if action == "slow" else (403, ACCESS_DENIED)
                self._reply(status, [("Content-Type", "application/xml")], body)
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    if name.lower() not in _HOP:
                        upstream.putheader(name, value)
                upstream.endheaders(body or None)
                response = upstream.getresponse()
                data = response.read()
                with proxy.guard:
                    proxy.answers.append((self.command, self.path, response.status))
                headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
            finally:
                upstream.close()
            if action == "lose":  # the server applied the request; the client never hears so
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._reply(response.status, headers, data)

        def _die(self) -> None:
            """The server is killed while this request is in flight: it never answers."""
            with proxy.guard:
                kill, proxy.kill = proxy.kill, None
            if kill is not None:  # the first: kill the server, stop listening
                kill()
                threading.Thread(target=proxy.server.shutdown, daemon=True).start()
                proxy.server.socket.close()  # new connections are refused, as by a dead server
            self.close_connection = True
            # A reset, not a clean close: what a client sees of a process that vanished.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

        def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response_only(status)
            head = self.command == "HEAD"  # its Content-Length is the object's: kept as is
            for name, value in headers:
                if head or name.lower() != "content-length":
                    self.send_header(name, value)
            if not head:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        def log_message(self, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def running(upstream: str) -> Iterator[FaultProxy]:
    """A proxy to ``upstream`` serving in a thread until the block ends."""
    proxy = FaultProxy(upstream)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
        thread.join(timeout=10)
