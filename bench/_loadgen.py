"""A load generator fast enough to measure a server doing thousands of requests a second.

Each client is one keep-alive HTTP/1.1 connection on an asyncio (uvloop) event loop in this
process, sending a request and reading its response before sending the next: raw sockets and
a minimal response parser, no HTTP library in the way (httpx in threads tops out near 1,000
requests/s here, below what is measured). ``run`` returns every latency and every failure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Load:
    """What the clients saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + len(self.failures)


def request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """One POST request's bytes."""
    lines = [f"POST {path} HTTP/1.1", "Host: bench", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _client(
    host: str, port: int, requests: list[bytes], until: float, start: int, load: Load
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        load.failures.append(f"connect: {exc}")
        return
    try:
        i = 0
        while time.perf_counter() < until:
            i += 1
            t0 = time.perf_counter()
            writer.write(requests[(start + i) % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            load.latencies.append(time.perf_counter() - t0)
            load.statuses[status] = load.statuses.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        load.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


def run(host: str, port: int, requests: list[bytes], clients: int, seconds: float) -> Load:
    """``clients`` connections sending requests for ``seconds``, round-robin over ``requests``
    (client k starts at a different one); a request sent before the end is waited for."""
    import uvloop  # pinned with uvicorn

    load = Load()

    async def main() -> None:
        t0 = time.perf_counter()
        until = t0 + seconds
        await asyncio.gather(
            *(_client(host, port, requests, until, k * 7, load) for k in range(clients))
        )
        load.seconds = time.perf_counter() - t0

    uvloop.run(main())
    return load


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]
