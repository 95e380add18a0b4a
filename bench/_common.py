"""What every benchmark shares: child processes measured by the kernel, medians, ratios, tables.

Each benchmark module exposes ``run(quick: bool, workdir: Path) -> Report``: its detail table and
the ratios it checks against the issue's targets. ``bench/run.py`` runs them all and prints one
summary; each module also runs on its own (``python bench/startup.py --quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
MIB = 1 << 20


@dataclass(frozen=True)
class Child:
    """One finished child process: exit code, peak RSS of exactly that child, wall seconds."""

    code: int
    rss_mib: float
    seconds: float
    output: str


RUSAGE = Path(__file__).resolve().parent / "_rusage.py"


def measured(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Child:
    """Run ``argv`` to completion: its exit code, peak RSS (``ru_maxrss``), wall seconds, output.

    The command is started by ``_rusage.py``, a small process of its own, so that this
    process's memory is not counted in the child's peak; the seconds are the helper's, from
    spawn to exit, so they leave out the helper's own start.
    """
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as out:
        result = Path(tmp) / "rusage.json"
        helper = [sys.executable, "-S", str(RUSAGE), str(result), *argv]
        subprocess.run(helper, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
        out.seek(0)
        text = out.read().decode(errors="replace")
        if not result.exists():
            raise RuntimeError(f"could not run {argv[0]}:\n{text[-3000:]}")
        usage = json.loads(result.read_text())
    return Child(usage["code"], usage["rss_kib"] / 1024, usage["seconds"], text)


def checked(child: Child, what: str) -> Child:
    """``child`` when it exited 0; otherwise stop the benchmark with its output's tail."""
    if child.code != 0:
        raise RuntimeError(f"{what} exited {child.code}:\n{child.output[-3000:]}")
    return child


def clean_env(root: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without PIPELINE_*/KAGGLE_*, plus an isolated store and config."""
    env = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("PIPELINE_", "KAGGLE_"))
    }
    # What `pipeline` sets for itself before torch loads (cli.main); references get it too, so
    # both sides run their OpenMP threads alike (spinning threads collapse on a busy machine).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(
        PIPELINE_STORE=str(root / "store"),
        PIPELINE_LOG_FORMAT="json",
        PIPELINE_ENV_FILE=os.devnull,
        PIPELINE_CONFIG_DIR=str(REPO / "config"),
        PIPELINE_SEED="0",
    )
    env.update(extra)
    return env


def pipeline_cmd() -> list[str]:
    """The venv's `pipeline` script beside this interpreter (what users run), else ``-m``."""
    script = Path(sys.executable).with_name("pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline"]


def events(text: str, name: str) -> list[dict[str, Any]]:
    """The JSON log events called ``name`` in a child's output (other lines are skipped)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def median(values: Iterable[float]) -> float:
    """The median (NaN for no values)."""
    items = list(values)
    return statistics.median(items) if items else float("nan")


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each run ``repeats`` times, round-robin, so machine noise hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            samples[name].append(fn())
    return samples


@dataclass(frozen=True)
class Ratio:
    """One checked figure: project / reference against the issue's target."""

    benchmark: str
    name: str
    project: str  # the project's figure, formatted with its unit
    reference: str
    ratio: float
    op: str  # "<=" or ">="
    target: float

    @property
    def met(self) -> bool:
        return self.ratio <= self.target if self.op == "<=" else self.ratio >= self.target


@dataclass
class Report:
    """A benchmark's outcome: a markdown body (tables, notes) and its checked ratios.

    ``data``, when a benchmark gives it, is every raw sample behind the tables (JSON-able):
    written beside the markdown so that figures can be recomputed or compared across runs.
    """

    name: str
    body: str
    ratios: list[Ratio] = field(default_factory=list)
    data: dict[str, Any] | None = None


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table; ``align`` has one character per column, 'l' or 'r' (default 'r')."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_table(ratios: Sequence[Ratio]) -> str:
    """Every ratio with its target and whether it is met."""
    return table(
        ["benchmark", "figure", "project", "reference", "ratio", "target", "met"],
        (
            (
                r.benchmark,
                r.name,
                r.project,
                r.reference,
                f"{r.ratio:.2f}",
                f"{r.op} {r.target:g}",
                "yes" if r.met else "**no**",
            )
            for r in ratios
        ),
        align="llrrrll",
    )


def machine() -> str:
    """One line naming the machine and the library versions."""
    import numpy
    import pandas
    import pyarrow
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} CPUs "
        f"(load average {load:.1f} at the end), Python {platform.python_version()}, "
        f"torch {torch.__version__}, pyarrow {pyarrow.__version__}, pandas {pandas.__version__}, "
        f"numpy {numpy.__version__}"
    )


def write_report(report: Report, quick: bool, out_dir: Path = OUT_DIR) -> Path:
    """Write ``<out_dir>/<name>[-quick].md`` (default bench/out/); its path.

    A report with ``data`` also gets ``<name>[-quick].json``: the machine line, the ratios and
    the data.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report.name}{'-quick' if quick else ''}"
    path = out_dir / f"{stem}.md"
    about = machine()
    text = f"# {report.name}\n\n{about}\n\n{report.body}\n"
    if report.ratios:
        text += "\n" + ratio_table(report.ratios) + "\n"
    path.write_text(text)
    if report.data is not None:
        raw = {
            "benchmark": report.name,
            "quick": quick,
            "machine": about,
            "ratios": [{**asdict(r), "met": r.met} for r in report.ratios],
            **report.data,
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n")
    return path


def standalone(name: str, run: Callable[[bool, Path], Report]) -> int:
    """``main`` of a benchmark module run on its own: parse --quick, run, print, write."""
    parser = argparse.ArgumentParser(description=f"The {name} benchmark.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke run)")
    parser.add_argument("--workdir", type=Path, help="folder for temporary files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-", dir=args.workdir) as tmp:
        report = run(args.quick, Path(tmp))
    print(report.body)
    if report.ratios:
        print("\n" + ratio_table(report.ratios))
    print(f"\nwritten to {write_report(report, args.quick)}")
    return 0


# --- synthetic data ------------------------------------------------------------------------------

CARDINALITIES = (5, 12, 30, 100, 400)  # categorical columns cycle through these vocabulary sizes


def synthetic(
    path: Path, rows: int, n_numeric: int, n_categorical: int, seed: int = 0, fmt: str = "parquet"
) -> int:
    """Write a regression table (``x0..``, ``c0..`` as text, target ``y``); its size in bytes.

    Written in blocks of at most 1M rows so the parent's memory stays small at 10M rows.
    Numeric columns are float32 normal draws (rounded to 4 decimals in CSV so the file stays
    near 8 bytes a cell); ``y`` is a noisy linear function of a few columns.
    """
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=n_numeric).astype(np.float32)
    writer = None
    try:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            x = rng.standard_normal((n, n_numeric), dtype=np.float32)
            cols: dict[str, pa.Array] = {}
            for j in range(n_numeric):
                col = np.round(x[:, j], 4) if fmt == "csv" else x[:, j]
                cols[f"x{j}"] = pa.array(col)
            y = x @ weights + 0.1 * rng.standard_normal(n, dtype=np.float32)
            for j in range(n_categorical):
                card = CARDINALITIES[j % len(CARDINALITIES)]
                codes = rng.integers(0, card, n)
                y += (codes % 3 - 1).astype(np.float32) * 0.5
                vocab = pa.array([f"v{k}" for k in range(card)])
                cols[f"c{j}"] = pa.DictionaryArray.from_arrays(pa.array(codes), vocab).cast(
                    pa.string()
                )
            cols["y"] = pa.array(y.astype(np.float32))
            block = pa.table(cols)
            if writer is None:
                writer = _writer(path, block.schema, fmt)
            writer.write_table(block)
    finally:
        if writer is not None:
            writer.close()
    return path.stat().st_size


def _writer(path: Path, schema: Any, fmt: str) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return pq.ParquetWriter(path, schema)
    return pacsv.CSVWriter(path, schema)


def mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def secs(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def rate(value: float) -> str:
    return f"{value:,.0f} rows/s"


def worker_ratios(name: str, what: str, one: float, two: float, loop: float) -> list[Ratio]:
    """The two Ray scale-out ratios of ``what`` (rows/s): 2 workers >= 1.5x one, and one
    worker >= 0.85x the in-process loop (issue 17's targets)."""
    return [
        Ratio(name, f"{what}: 2 Ray workers ÷ 1 Ray worker", rate(two), rate(one),
              two / one, ">=", 1.5),
        Ratio(name, f"{what}: 1 Ray worker ÷ in-process loop", rate(one), rate(loop),
              one / loop, ">=", 0.85),
    ]  # fmt: skip
