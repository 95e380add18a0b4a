"""bench/serve_load.py still runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_bench_quick


def test_serve_load_benchmark_runs_quick_and_loses_no_request(tmp_path: Path) -> None:
    """`serve_load.py --quick` exits 0: no errors under load, nothing lost across SIGTERM."""
    work, out, _ = run_bench_quick(tmp_path, "serve_load.py")
    report = (out / "serve_load-quick.md").read_text()
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| ")]
    load = next(r for r in rows if r[0].strip() == "steady load")
    sent, ok, errors = int(load[3]), int(load[4]), int(load[5])
    assert (sent, ok, errors) == (40, 40, 0)
    assert float(load[7]) > 0 and float(load[9]) >= float(load[8]) > 0  # req/s, p99 >= p50
    sigterm = rows[rows.index(next(r for r in rows if r[0].strip() == "clients")) + 1]
    answered, lost, unanswered, code = int(sigterm[4]), int(sigterm[6]), sigterm[7], sigterm[8]
    assert answered > 0 and lost == 0 and unanswered.strip() == "0" and code.strip() == "0"
    assert "Result: PASS" in report
    assert list(work.iterdir()) == []  # the temporary store and logs are gone
