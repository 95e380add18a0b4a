"""A real multi-node Ray cluster on this machine, for the tests marked `ray`.

Two ``ray start`` nodes of one CPU each: a head, and a worker node that joins it, each with a
temporary folder of its own. They run inside a PID namespace of their own (``unshare --pid
--fork --mount-proc --kill-child``) whose first process is a shell waiting on its stdin, so the
cluster also ends when the test process dies and the pipe closes. Where ``unshare`` is not
allowed they run without one. Either way they form a process group of their own, which
``stop`` kills. Nothing outside the processes started here is touched: never
``ray stop``, which kills Ray processes by name across the whole machine.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
# Ray's sockets live under each node's temp folder: it must stay short (107-byte socket paths).
_ROOT = Path("/tmp")


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (all held at once, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _isolation() -> list[str]:
    """The ``unshare`` prefix that gives the cluster a PID namespace, or [] where none works."""
    if shutil.which("unshare") is None:
        return []
    base = ["--pid", "--fork", "--mount-proc", "--kill-child"]
    for prefix in (["unshare", *base], ["unshare", "--user", "--map-root-user", *base]):
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False, timeout=30)
        if probe.returncode == 0:
            return prefix
    return []


def ray_env() -> dict[str, str]:
    """This environment for a Ray process: no RAY_ADDRESS, no usage report, no auth token."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    return env


@dataclass
class LocalCluster:
    """A running head + worker node; ``address`` is what RAY_ADDRESS takes."""

    address: str
    root: Path
    process: subprocess.Popen[bytes]
    isolated: bool
    started_s: float = field(default=0.0)

    def log(self) -> str:
        """The tail of the ``ray start`` output, for a failure message."""
        path = self.root / "start.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """Kill every process started for the cluster, then remove its folder.

        SIGKILL goes to the process group started here (a session of its own, so only this
        cluster's processes) and to their descendants (Ray's workers take groups of their own),
        before the leader is reaped so that no id can have been reused. In a namespace, the
        kernel also kills whatever is left in it when its first process dies.
        """
        for pid in _group_and_descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        if self.process.stdin is not None:
            self.process.stdin.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _group_and_descendants(pgid: int) -> list[int]:
    """The processes of group ``pgid`` and every process descended from them (from /proc)."""
    parent, group = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the fields after the ")" that ends the command name: state ppid pgrp ...
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited meanwhile
            parent[int(entry.name)], group[int(entry.name)] = int(fields[1]), int(fields[2])
    found = {pid for pid, g in group.items() if g == pgid}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def start(timeout: float = 90.0) -> LocalCluster:
    """Start a head and a worker node (1 CPU each); return once both are alive in the cluster."""
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="rc-", dir=_ROOT))
    gcs, dash, agent_head, agent_worker = _free_ports(4)
    ray = shlex.quote(str(RAY))
    common = "--num-cpus=1 --disable-usage-stats"
    script = textwrap.dedent(f"""\
        set -e
        {ray} start --head --port={gcs} \\
            --include-dashboard=false --dashboard-port={dash} \\
            --dashboard-agent-listen-port={agent_head} {common} --temp-dir={root}/h
        {ray} start --address=127.0.0.1:{gcs} --dashboard-agent-listen-port={agent_worker} \\
            {common} --temp-dir={root}/w
        echo CLUSTER-READY
        read -r _ || true
        """)
    prefix = _isolation()
    with (root / "start.log").open("wb") as out:
        process = subprocess.Popen(
            [*prefix, "bash", "-c", script],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ray_env(),
            start_new_session=True,
        )
    cluster = LocalCluster(f"127.0.0.1:{gcs}", root, process, isolated=bool(prefix))
    try:
        while "CLUSTER-READY" not in cluster.log():
            if process.poll() is not None:
                raise RuntimeError(
                    f"ray start failed (exit {process.returncode}):\n{cluster.log()}"
                )
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"ray start took over {timeout:g} s:\n{cluster.log()}")
            time.sleep(0.2)
        wait_for_nodes(cluster.address, 2, timeout - (time.monotonic() - t0))
    except BaseException:
        cluster.stop()
        raise
    cluster.started_s = time.monotonic() - t0
    return cluster


def wait_for_nodes(address: str, count: int, timeout: float) -> None:
    """Return once ``count`` nodes are alive at ``address`` (asked from a short-lived driver)."""
    code = textwrap.dedent(f"""\
        import logging, time, ray
        ray.init(address={address!r}, log_to_driver=False, logging_level=logging.ERROR)
        deadline = time.monotonic() + {max(timeout, 1.0)!r}
        while sum(n["Alive"] for n in ray.nodes()) < {count} and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = sum(n["Alive"] for n in ray.nodes())
        ray.shutdown()
        raise SystemExit(0 if alive >= {count} else f"{{alive}} of {count} nodes alive")
        """)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=ray_env(),
        capture_output=True,
        text=True,
        timeout=max(timeout, 1.0) + 30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the cluster at {address} is not ready:\n{done.stderr[-3000:]}")


def descendants_named(driver: int, prefix: str) -> list[int]:
    """Processes whose title starts with ``prefix`` and whose parent chain reaches ``driver``."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True
    ).stdout
    parent, named = {}, []
    for line in listing.splitlines():
        fields = line.split(None, 2)
        if len(fields) == 3:
            parent[int(fields[0])] = int(fields[1])
            if fields[2].startswith(prefix):
                named.append(int(fields[0]))
    found = []
    for pid in named:
        up = pid
        while up > 1 and up != driver:
            up = parent.get(up, 0)
        if up == driver:
            found.append(pid)
    return found
