"""bench/serve_load.py still runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_bench_quick


def test_serve_load_benchmark_runs_quick_and_loses_no_request(tmp_path: Path) -> None:
    """`serve_load.py --quick` exits 0: no errors under load (one-record and 100-record
    requests, beside the trivial app's ceiling), nothing lost across SIGTERM."""
    work, out, _ = run_bench_quick(tmp_path, "serve_load.py")
    report = (out / "serve_load-quick.md").read_text()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in report.splitlines() if line.startswith("| ")]  # fmt: skip
    served = [r for r in rows if r[0] == "pipeline serve"]
    assert [(r[1], r[2]) for r in served] == [("2", "1"), ("8", "1"), ("2", "100")]
    for row in served:  # requests == ok, no error, req/s > 0, p99 >= p50 > 0
        assert int(row[4]) == int(row[5]) > 0 and row[6] == "0", row
        assert float(row[7]) > 0 and float(row[10]) >= float(row[9]) > 0, row
    assert sum(r[0] == "trivial ASGI app (ceiling)" for r in rows) == 2  # the ceiling beside it
    sigterm = rows[rows.index(next(r for r in rows if r[0].strip() == "clients")) + 1]
    answered, lost, unanswered, code = int(sigterm[4]), int(sigterm[6]), sigterm[7], sigterm[8]
    assert answered > 0 and lost == 0 and unanswered.strip() == "0" and code.strip() == "0"
    assert "Result: PASS" in report
    assert list(work.iterdir()) == []  # the temporary store and logs are gone
