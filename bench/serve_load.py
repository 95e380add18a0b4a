"""Load test of `pipeline serve` over loopback beside a trivial app, then SIGTERM mid-load.

    .venv/bin/python bench/serve_load.py                     # 5 s per load (about 2 minutes)
    .venv/bin/python bench/serve_load.py --baseline 923af4c  # and the server of that commit
    .venv/bin/python bench/serve_load.py --quick             # 1 s per load (the smoke run)

A house-prices release is built in a temporary store. Phase 1: a raw-socket load generator
(``_loadgen``: asyncio keep-alive connections, one per client) first measures a trivial ASGI app
on the same uvicorn stack (``_trivial_app``): the ceiling of the generator and HTTP stack on this
machine. Then a real `pipeline serve` process gets 8 and 64 clients posting one JSON record per
request (the first 100 rows of tests/fixtures/house-prices-test.csv, in turn), and 8 clients
posting 100 records per request; throughput, p50/p99 latency and errors are reported, and with
``--baseline REF`` the same loads go to the server of commit REF (a temporary git worktree) in
the same run. Phase 2: a fresh server gets 8 clients (threads with httpx2 connections, each
request with its own id) and a SIGTERM after a few seconds; every request the server logged as
answered must have reached its client, the server must report no unanswered request, every
client-side failure must be a refused or closed connection for a request the server never
logged, and the server must exit 0. Exits 1 when phase 1 had errors or phase 2 lost a request.
The clients share the machine with the server: on 2 cores they compete for CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _loadgen
import httpx2
from _common import OUT_DIR, REPO, Report, clean_env, pipeline_cmd, table, write_report

TEST_CSV = REPO / "tests" / "fixtures" / "house-prices-test.csv"
MISSING = {"", "NA"}


@dataclass
class Outcome:
    """What one client saw: latencies of answered requests, and every request's fate by id."""

    latencies: list[float] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # id -> status or error class
    sent: int = 0


def _build_release(root: Path, epochs: int, source: Path | None = None) -> dict[str, str]:
    """A house-prices release in ``root``'s store (the model's quality is not measured here),
    made by the code in ``source`` when given (an older commit may refuse a newer package or
    release record, so a baseline serves one of its own making)."""
    root.mkdir(parents=True, exist_ok=True)
    env = clean_env(root, PIPELINE_TRAIN__MAX_EPOCHS=str(epochs), PIPELINE_RUN__ID_COLUMN="Id")
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    for args in (["train"], ["package", "--id-file", str(root / "package.id")]):
        subprocess.run([*pipeline_cmd(), *args], env=env, cwd=root, check=True,
                       capture_output=True)  # fmt: skip
    package = (root / "package.id").read_text().strip()
    subprocess.run([*pipeline_cmd(), "release", "create", package], env=env, cwd=root,
                   check=True, capture_output=True)  # fmt: skip
    return env


def _records(url: str) -> list[dict[str, Any]]:
    """One JSON record per test row (the first 100), typed by the served model's input schema."""
    kinds = {
        c["name"]: c["kind"]
        for c in httpx2.get(f"{url}/v1/model").json()["input_schema"]["columns"]
    }
    records = []
    with TEST_CSV.open(newline="") as fh:
        for _, row in zip(range(100), csv.DictReader(fh), strict=False):
            record: dict[str, Any] = {"Id": int(row["Id"])}
            for name, kind in kinds.items():
                value = row[name]
                if kind == "numeric":
                    record[name] = None if value in MISSING else float(value)
                else:
                    record[name] = value
            records.append(record)
    return records


def _bodies_of(records: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps({"records": [r]}).encode() for r in records]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`pipeline serve` on a free loopback port, its JSON log in a file."""

    def __init__(self, env: dict[str, str], root: Path, name: str) -> None:
        self.log_path = root / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*pipeline_cmd(), "serve", "--release", "house-prices@current"],
            env={**env, "PIPELINE_SERVE__PORT": "0", "PIPELINE_SERVE__HOST": "127.0.0.1"},
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait("serve.ready")
        self.url = f"http://127.0.0.1:{self.wait('serve.listening')['port']}"
        # Every worker process has loaded once /readyz says so (the first serve.ready is one's).
        deadline = time.monotonic() + 180
        while httpx2.get(f"{self.url}/readyz").status_code != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"not ready: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.ready_seconds = max(e["seconds"] for e in self.events("serve.ready"))
        self.workers = len(self.events("serve.ready"))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out

    def wait(self, name: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        raise RuntimeError(f"no {name} event within {timeout}s")

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.log.close()
        return code


def _client(url: str, bodies: list[bytes], me: int, count: int | None, out: Outcome,
            stop_on_error: bool) -> None:  # fmt: skip
    """Post ``count`` requests (until the server goes away when None) on one keep-alive link."""
    headers = {"Content-Type": "application/json"}
    with httpx2.Client(base_url=url, timeout=120) as client:
        i = 0
        while count is None or i < count:
            rid = f"c{me}-{i}"
            out.sent += 1
            t0 = time.perf_counter()
            try:
                response = client.post("/v1/predict", content=bodies[(me * 7 + i) % len(bodies)],
                                       headers={**headers, "X-Request-ID": rid})  # fmt: skip
            except httpx2.TransportError as exc:
                out.failed[rid] = type(exc).__name__
                if stop_on_error:
                    return
                continue
            finally:
                i += 1
            if response.status_code == 200 and len(response.json()["predictions"]) == 1:
                out.latencies.append(time.perf_counter() - t0)
                out.answered.add(rid)
            else:
                out.failed[rid] = str(response.status_code)


def _run_clients(
    url: str,
    bodies: list[bytes],
    clients: int,
    count: int | None,
    stop_on_error: bool,
    after_start: Any = None,
) -> tuple[list[Outcome], float]:
    outcomes = [Outcome() for _ in range(clients)]
    threads = [
        threading.Thread(target=_client, args=(url, bodies, k, count, outcomes[k], stop_on_error))
        for k in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    if after_start is not None:
        after_start()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0


Row = tuple[object, ...]
# (clients, records per request) of phase 1; the trivial app gets the one-record loads.
LOADS = [(8, 1), (64, 1), (8, 100)]
QUICK_LOADS = [(2, 1), (8, 1), (2, 100)]
TARGETS = "targets: >= 2,000 req/s with p99 <= 20 ms at 8 clients; >= 50,000 rows/s at 100 records"


def _measure(name: str, port: int, records: list[dict[str, Any]], loads: list[tuple[int, int]],
             seconds: float) -> list[Row]:  # fmt: skip
    """One table row per load against the server on ``port``."""
    rows: list[Row] = []
    for clients, per_request in loads:
        bodies = [
            json.dumps({"records": [records[(i + k) % len(records)] for k in range(per_request)]})
            for i in range(len(records))
        ]
        requests = [_loadgen.request("/v1/predict", b.encode()) for b in bodies]
        load = _loadgen.run("127.0.0.1", port, requests, clients, seconds)
        done = len(load.latencies)
        rows.append((
            name, clients, per_request, f"{load.seconds:.1f}", done, load.ok, load.errors,
            f"{done / load.seconds:.1f}", f"{done * per_request / load.seconds:.0f}",
            f"{_loadgen.percentile(load.latencies, 50) * 1000:.2f}",
            f"{_loadgen.percentile(load.latencies, 99) * 1000:.2f}",
        ))  # fmt: skip
    return rows


def _trivial(workdir: Path, records: list[dict[str, Any]], loads: list[tuple[int, int]],
             seconds: float) -> list[Row]:  # fmt: skip
    port = _free_port()
    log = (workdir / "trivial.log").open("w")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_trivial_app.py")),
                             str(port)], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the trivial app did not start") from None
                time.sleep(0.05)
        return _measure("trivial ASGI app (ceiling)", port, records, loads, seconds)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _served(env: dict[str, str], workdir: Path, name: str, records: list[dict[str, Any]] | None,
            loads: list[tuple[int, int]],
            seconds: float) -> tuple[list[Row], int, list[dict[str, Any]]]:  # fmt: skip
    server = Server(env, workdir, name.replace(" ", "-").replace("@", ""))
    try:
        records = records or _records(server.url)
        port = int(server.url.rsplit(":", 1)[1])
        rows = _measure(name, port, records, loads, seconds)
    finally:
        code = server.stop()
    return rows, code, records


def _baseline(ref: str, workdir: Path) -> Path:
    """A git worktree of ``ref`` in ``workdir``; its ``src`` folder."""
    tree = workdir / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref],
                   check=True, capture_output=True)  # fmt: skip
    return tree / "src"


def run(
    quick: bool, workdir: Path, baseline: str | None = None, seconds: float | None = None
) -> tuple[Report, bool]:
    """Both phases; the report and whether every check passed."""
    clients = 2 if quick else 8
    seconds = seconds or (1.0 if quick else 5.0)
    loads = QUICK_LOADS if quick else LOADS
    sigterm_after = 1.5 if quick else 5.0
    env = _build_release(workdir, 3 if quick else 20)

    # Phase 1: the ceiling, this server, and the baseline's, under the same loads.
    served, load_exit, records = _served(env, workdir, "pipeline serve", None, loads, seconds)
    one_record = [load for load in loads if load[1] == 1]
    rows = _trivial(workdir, records, one_record, seconds) + served
    if baseline:
        source = _baseline(baseline, workdir)
        try:
            base_env = _build_release(workdir / "baseline-run", 3 if quick else 20, source)
            rows += _served(base_env, workdir, f"pipeline serve @ {baseline}", records, loads,
                            seconds)[0]  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(source.parent)], check=False, capture_output=True)  # fmt: skip
    errors = sum(int(str(r[6])) for r in served)
    bodies = _bodies_of(records)

    # Phase 2: the same load, SIGTERM after a few seconds; clients stop when the server is gone.
    server = Server(env, workdir, "sigterm")

    def terminate() -> None:
        time.sleep(sigterm_after)
        server.proc.send_signal(signal.SIGTERM)

    outcomes2, _ = _run_clients(server.url, bodies, clients, None, stop_on_error=True,
                                after_start=terminate)  # fmt: skip
    term_exit = server.proc.wait(120)
    server.log.close()
    answered = set().union(*(o.answered for o in outcomes2))
    failed = {k: v for o in outcomes2 for k, v in o.failed.items()}
    accepted = {
        e["request_id"] for e in server.events("serve.request") if e["path"] == "/v1/predict"
    }
    stopped = server.events("serve.stopped")  # one per worker process
    unanswered = sum(e["unanswered"] for e in stopped) if len(stopped) == server.workers else None
    draining = server.events("serve.draining")
    in_flight = sum(e["in_flight"] for e in draining) if draining else None
    lost = sorted(accepted - answered)  # answered by the server, never received by its client
    wrong = sorted(rid for rid in failed if rid in accepted or failed[rid].isdigit())
    sent = sum(o.sent for o in outcomes2)
    term_rows = [(
        clients, f"{sigterm_after:g}", in_flight, sent, len(answered), len(failed),
        len(lost) + len(wrong), unanswered, term_exit,
    )]  # fmt: skip

    passed = (
        errors == 0 and load_exit == 0 and not lost and not wrong and unanswered == 0
        and term_exit == 0 and len(answered) > 0
    )  # fmt: skip
    body = "\n\n".join([
        f"Server of {server.workers} worker process(es) ready in {server.ready_seconds:.2f} s "
        "(serve.ready). Keep-alive connections, "
        "one per client, on the same machine as the server; each load runs for "
        f"{seconds:g} s. {TARGETS}.",
        table(["server", "clients", "records/request", "seconds", "requests", "ok", "errors",
               "req/s", "rows/s", "p50 ms", "p99 ms"], rows),
        table(["clients", "SIGTERM after s", "in flight at SIGTERM", "sent", "answered",
               "refused (never accepted)", "lost", "unanswered (server)", "exit"], term_rows),
        "lost = requests the server answered (or failed with an HTTP status) that did not reach "
        "their client; refused = connection refused or closed before the server read the "
        f"request. Result: {'PASS' if passed else 'FAIL'}.",
    ])  # fmt: skip
    return Report("serve_load", body), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per load, 2 and 8 clients")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 5)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also load the server of this git commit (e.g. 923af4c)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=args.workdir) as tmp:
        report, passed = run(args.quick, Path(tmp), args.baseline, args.seconds)
    print(report.body)
    print(f"\nwritten to {write_report(report, args.quick, args.out)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
