"""Whether a ``RAY_ADDRESS`` is a Ray cluster, asked within a timeout before Ray is.

``ray.init`` given an address where something else listens (a web server, a listener that
never speaks, an HTTP/2 proxy that answers 404) retried for 20 s to minutes whatever the
timeout, printing Ray's own errors. ``probe`` connects, speaks HTTP/2 as Ray's gRPC client
does and asks for the cluster's id (``NodeInfoGcsService/GetClusterId``); only a server that
answers it as Ray's GCS does passes. The HTTP/2 is written by hand (a preface, three frames,
a few HPACK literals): Ray does not ship Python's gRPC.
"""

from __future__ import annotations

import os
import socket
import time

from pipeline.errors import ConfigError, SourceError

_DEFAULT_PORTS = {"": 6379, "ray": 10001}  # the GCS, and the Ray Client server


# An HTTP/2 client's first bytes and an empty SETTINGS frame: a gRPC server (Ray's GCS, and
# its client server behind ray://) answers with a SETTINGS frame of its own at once.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def probe(address: str, shown: str, timeout: float, call: bool = True) -> None:
    """Raise ``SourceError`` unless ``host:port`` (or ``ray://host:port``) takes a connection
    and answers as a gRPC server does within ``timeout`` seconds in all: ``ray.init`` to a
    port where something else listens retried for minutes, whatever the timeout. (With
    ``RAY_USE_TLS`` the connection alone is checked: the server expects a TLS handshake.)
    With ``call``, a ``host:port`` must also answer Ray's own first request
    (``_cluster_id_call``); the watch of a joined cluster checks the answer alone."""
    if address == "auto":
        return
    scheme, _, rest = address.rpartition("://")
    if scheme.lower() in ("http", "https"):  # the dashboard's or the job server's URL
        raise ConfigError(
            f"RAY_ADDRESS={shown} is a web address (Ray's dashboard or job submission, "
            "port 8265): expected the head's address, host:6379, ray://host:10001 for Ray "
            "Client, or auto"
        )
    hostport = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    number = _port(port, scheme, shown)
    # Without a port, the one tried is the scheme's default: "Connection refused" alone left
    # a user of RAY_ADDRESS=10.0.0.5 guessing which port was closed.
    tried = "" if port else f" at {host}:{number}, the default port"
    deadline = time.monotonic() + timeout
    connected = False
    try:
        with socket.create_connection((host.strip("[]"), number), timeout=timeout) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            connected = True
            sock.sendall(_HTTP2_HELLO)
            answer = b""
            while len(answer) < 9:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(9 - len(answer))
                if not chunk:
                    break
                answer += chunk
            if len(answer) == 9 and answer[3] == 4 and call and scheme != "ray":
                settings = int.from_bytes(answer[:3], "big")
                answer = _cluster_id_call(sock, hostport, deadline, settings)
    except TimeoutError as exc:
        why = "it took the connection but sent nothing" if connected else first_line(exc)
        raise unreachable(shown, timeout, why + tried) from None
    except (OSError, ValueError) as exc:
        why = first_line(exc) or type(exc).__name__
        raise unreachable(shown, timeout, why + tried) from None
    if len(answer) < 9 or answer[3] != 4:
        raise SourceError(
            f"RAY_ADDRESS={shown} is not a Ray cluster: something there answers, but not as "
            "Ray's gRPC server does; give the head's address (host:6379, or ray://host:10001 "
            "for Ray Client), or unset RAY_ADDRESS to run embedded"
        )


def _port(text: str, scheme: str, shown: str) -> int:
    """The port of a ``RAY_ADDRESS`` (its scheme's default when none is given); ConfigError
    when it is not one: "127.0.0.1:notaport" was reported as a cluster that cannot be reached
    (exit 5), after the data was read."""
    if not text:
        return _DEFAULT_PORTS.get(scheme, 6379)
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise ConfigError(
        f"RAY_ADDRESS={shown} has no valid port ({text!r}): expected host:port (the head's "
        "address, e.g. 10.0.0.5:6379), ray://host:10001 for Ray Client, or auto"
    )


def _literal(index: int, value: str, name: str = "") -> bytes:
    """An HPACK header field "literal without indexing" (no Huffman coding): its name is
    static table entry ``index`` (below 15), or ``name`` when ``index`` is 0."""

    def text(t: str) -> bytes:
        return bytes([len(t)]) + t.encode()

    return (b"\x00" + text(name) if index == 0 else bytes([index])) + text(value)


def _cluster_id_call(sock: socket.socket, authority: str, deadline: float, unread: int) -> bytes:
    """Ask the server for Ray's cluster id (``NodeInfoGcsService/GetClusterId``, an empty
    request) on HTTP/2 stream 1: ``answer`` as a SETTINGS frame's header when it answers as
    Ray's GCS does (a response that opens with status 200 and goes on to a reply), else b"".

    Any HTTP/2 server sends SETTINGS first: a proxy that answers every request with 404 passed
    the first check, and ray.init then retried it for 20 s whatever the timeout, printing 20
    lines of Ray's gRPC errors. A gRPC server without Ray's service answers 200 with the
    status in the same frame, ending the stream (a "trailers-only" error): refused too.
    ``unread``: the bytes of the server's first SETTINGS frame not read yet (its payload)."""
    path = "/ray.rpc.NodeInfoGcsService/GetClusterId"
    block = b"\x83\x86" + _literal(4, path) + _literal(1, authority)  # POST, http, path, host
    block += b"\x0f\x10" + bytes([16]) + b"application/grpc"  # content-type (static 31)
    block += _literal(0, "trailers", name="te")
    frames = [
        bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]),  # SETTINGS ack of the server's
        len(block).to_bytes(3, "big") + bytes([1, 4, 0, 0, 0, 1]) + block,  # HEADERS
        bytes([0, 0, 5, 0, 1, 0, 0, 0, 1]) + bytes(5),  # DATA: an empty message, END_STREAM
    ]
    sock.sendall(b"".join(frames))
    buffer = b""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        skipped = min(unread, len(buffer))
        buffer, unread = buffer[skipped:], unread - skipped
        while not unread and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            size, kind, flags = int.from_bytes(buffer[:3], "big"), buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload, buffer = buffer[9 : 9 + size], buffer[9 + size :]
            if kind == 7 or (kind == 3 and stream == 1):  # GOAWAY, RST_STREAM
                return b""
            if kind == 1 and stream == 1:  # the response's first HEADERS
                start = (1 + payload[0] if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                ok = payload[start : start + 1] == b"\x88" and not flags & 0x1
                return bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]) if ok else b""
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b""
        buffer += chunk


def unreachable(shown: str, timeout: float, reason: str) -> SourceError:
    return SourceError(
        f"Ray cluster at RAY_ADDRESS={shown} cannot be reached ({reason}; waited at most "
        f"{timeout:g} s): start it, or unset RAY_ADDRESS to run embedded"
    )


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
