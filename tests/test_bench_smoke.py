"""The benchmarks in bench/ still run end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Every figure the issue asks for, by benchmark (the summary table's first two columns).
EXPECTED = {
    "start-up": ["--help ÷ import torch", "--version ÷ import torch"],
    "training": ["train rows/s ÷ raw loop"],
    "ingestion": [
        "csv: read + preprocess ÷ pyarrow read",
        "parquet: read + preprocess ÷ pyarrow read",
    ],
    "prediction": [
        "predict rows/s ÷ pyarrow read+write",
        "forward rows/s ÷ raw torch",
        "cold start one row ÷ import torch",
    ],
    "memory": ["train peak RSS ÷ float32 data", "predict peak RSS 3 MB ÷ 1 MB file (chunk 1,000)"],
    "scaling": ["log-log slope of s/epoch vs rows"],
}


def test_every_benchmark_runs_at_tiny_sizes_and_reports_every_ratio(tmp_path: Path) -> None:
    """`bench/run.py --quick` exits 0, reports each ratio as a positive number, cleans up."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--workdir", str(work),
         "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary-quick.md").read_text()
    rows = [line.split("|")[1:-1] for line in summary.splitlines() if line.startswith("| ")]
    found: dict[str, list[str]] = {}
    for cells in rows[1:]:  # rows[0] is the header
        benchmark, figure, ratio = cells[0].strip(), cells[1].strip(), float(cells[4])
        assert math.isfinite(ratio) and ratio > 0, cells
        found.setdefault(benchmark, []).append(figure)
    assert found == EXPECTED
    # One report per benchmark, and the temporary data (tables, CSVs, the store) is gone.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}-quick.md" for n in ("startup", "training", "ingestion", "prediction", "memory",
                                   "scaling")] + ["summary-quick.md"]
    )  # fmt: skip
    assert list(work.iterdir()) == []
