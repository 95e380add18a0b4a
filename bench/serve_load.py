"""Load test of `pipeline serve` over loopback, then SIGTERM in the middle of the load.

    .venv/bin/python bench/serve_load.py            # 8 clients x 2,000 requests (minutes)
    .venv/bin/python bench/serve_load.py --quick    # 2 clients x 20 requests (the smoke run)

A house-prices release is built in a temporary store and served by a real `pipeline serve`
process. Phase 1: each client is a thread with its own keep-alive connection (httpx2) posting
one JSON record per request (the first 100 rows of tests/fixtures/house-prices-test.csv, in
turn); throughput, p50/p99 latency and the error count are reported. Phase 2: a fresh server
gets the same load and a SIGTERM after a few seconds; every request the server logged as
answered must have reached its client, the server must report no unanswered request, every
client-side failure must be a refused or closed connection for a request the server never
logged, and the server must exit 0. Exits 1 when phase 1 had errors or phase 2 lost a request.
The client threads share the machine with the server: on 2 cores they compete for CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _build_release(root: Path, epochs: int) -> dict[str, str]:
    """A house-prices release in ``root``'s store (the model's quality is not measured here)."""
    env = clean_env(root, PIPELINE_TRAIN__MAX_EPOCHS=str(epochs), PIPELINE_RUN__ID_COLUMN="Id")
    for args in (["train"], ["package", "--id-file", str(root / "package.id")]):
        subprocess.run([*pipeline_cmd(), *args], env=env, cwd=root, check=True,
                       capture_output=True)  # fmt: skip
    package = (root / "package.id").read_text().strip()
    subprocess.run([*pipeline_cmd(), "release", "create", package], env=env, cwd=root,
                   check=True, capture_output=True)  # fmt: skip
    return env


def _bodies(url: str) -> list[bytes]:
    """One JSON body per test row, typed by the served model's input schema."""
    kinds = {
        c["name"]: c["kind"]
        for c in httpx2.get(f"{url}/v1/model").json()["input_schema"]["columns"]
    }
    bodies = []
    with TEST_CSV.open(newline="") as fh:
        for _, row in zip(range(100), csv.DictReader(fh), strict=False):
            record: dict[str, Any] = {"Id": int(row["Id"])}
            for name, kind in kinds.items():
                value = row[name]
                if kind == "numeric":
                    record[name] = None if value in MISSING else float(value)
                else:
                    record[name] = value
            bodies.append(json.dumps({"records": [record]}).encode())
    return bodies


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
        ready = self.wait("serve.ready")
        self.ready_seconds = ready["seconds"]
        self.url = f"http://127.0.0.1:{self.wait('serve.listening')['port']}"

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


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)
    )


def run(
    quick: bool, workdir: Path, clients: int | None = None, requests: int | None = None
) -> tuple[Report, bool]:
    """Both phases; the report and whether every check passed."""
    clients = clients or (2 if quick else 8)
    requests = requests or (20 if quick else 2000)
    sigterm_after = 1.5 if quick else 5.0
    env = _build_release(workdir, 3 if quick else 20)

    # Phase 1: steady load.
    server = Server(env, workdir, "load")
    bodies = _bodies(server.url)
    outcomes, seconds = _run_clients(server.url, bodies, clients, requests, stop_on_error=False)
    load_exit = server.stop()
    latencies = sorted(x for o in outcomes for x in o.latencies)
    errors = sum(len(o.failed) for o in outcomes)
    ok = len(latencies)
    logged = [e for e in server.events("serve.request") if e["path"] == "/v1/predict"]
    server_ms = sorted(e["duration_ms"] for e in logged)
    load_rows = [(
        "steady load", clients, requests, clients * requests, ok, errors, f"{seconds:.1f}",
        f"{ok / seconds:.1f}", f"{_percentile(latencies, 50) * 1000:.1f}",
        f"{_percentile(latencies, 99) * 1000:.1f}", f"{_percentile(server_ms, 50):.1f}",
        load_exit,
    )]  # fmt: skip

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
    stopped = server.events("serve.stopped")
    unanswered = stopped[0]["unanswered"] if stopped else None
    draining = server.events("serve.draining")
    in_flight = draining[0]["in_flight"] if draining else None
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
        f"Server ready in {server.ready_seconds:.2f} s (serve.ready). One JSON record per "
        "request, keep-alive connections, client threads on the same machine as the server.",
        table(["phase", "clients", "requests each", "sent", "ok", "errors", "seconds", "req/s",
               "p50 ms", "p99 ms", "server p50 ms", "exit"], load_rows),
        table(["clients", "SIGTERM after s", "in flight at SIGTERM", "sent", "answered",
               "refused (never accepted)", "lost", "unanswered (server)", "exit"], term_rows),
        "lost = requests the server answered (or failed with an HTTP status) that did not reach "
        "their client; refused = connection refused or closed before the server read the "
        f"request. Result: {'PASS' if passed else 'FAIL'}.",
    ])  # fmt: skip
    return Report("serve_load", body), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 clients x 20 requests")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, help="requests per client (default 2,000)")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=args.workdir) as tmp:
        report, passed = run(args.quick, Path(tmp), args.clients, args.requests)
    print(report.body)
    print(f"\nwritten to {write_report(report, args.quick, args.out)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
