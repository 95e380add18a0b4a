"""The benchmarks in bench/ still run end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_predict_memory_benchmark_runs_at_tiny_sizes(tmp_path: Path) -> None:
    """`predict_memory.py --quick` exits 0 and reports a table of predict and reference rows."""
    report = tmp_path / "predict_memory.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "predict_memory.py"), "--quick", "--out", str(report),
         "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in report.read_text().splitlines() if line.startswith("| ")]
    labels = [line.split("|")[1].strip() for line in rows[1:]]  # rows[0] is the header
    assert labels.count("predict") == 4  # two files x two chunk sizes
    assert sum(label.startswith("ref: ") for label in labels) == 6
    assert "FAIL" not in report.read_text()
    assert list(tmp_path.iterdir()) == [report]  # the temporary CSVs are gone
