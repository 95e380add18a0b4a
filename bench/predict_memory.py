"""Peak memory and speed of `pipeline predict` on large CSVs, beside references without a model.

Trains and packages the default house-prices model (5 epochs: speed, not accuracy), generates
CSVs with the house-prices test.csv schema at two sizes, and runs ``pipeline predict`` on each at
several chunk sizes (``PIPELINE_RUN__CHUNK_ROWS``) in a child process whose peak RSS is the
kernel's ``ru_maxrss`` of exactly that child (started by ``_rusage.py``, so this process's own
memory is not counted; ``bench/memory.py`` runs it within ``make bench``). The references run
in the same session on the same files: pyarrow streaming the CSV and writing one output row
per input row with no model (the I/O floor), and whole-file ``pyarrow.csv.read_csv`` /
``pandas.read_csv`` (what an unchunked loader costs).

Checks (exit 1 when one fails): at each chunk size, predict's peak RSS on the large file is within
25% + 50 MiB of the small file's (bounded by the chunk size, not the file size); and on the small
file, a chunked run's output is byte-identical to a single-chunk run's.

    .venv/bin/python bench/predict_memory.py                 # 200 MB and 2 GB (minutes)
    .venv/bin/python bench/predict_memory.py --quick         # 5 MB and 20 MB (smoke run)
    .venv/bin/python bench/predict_memory.py --sizes-mb 200,1500 --chunk-rows 10000,100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "house-prices-test.csv"
OUT_DIR = Path(__file__).resolve().parent / "out"
MIB = 1 << 20
# Integer columns without missing values in test.csv, scaled by up to ±5% per generated row.
PERTURBED = ("LotArea", "GrLivArea", "1stFlrSF", "OpenPorchSF")
REL_TOLERANCE, ABS_SLACK_MIB = 0.25, 50.0


@dataclass
class Measure:
    """One child process: what ran, on what, and what it cost."""

    label: str
    file: Path
    file_mb: float
    rows: int
    chunk: str
    rss_mib: float
    seconds: float
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def measured(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """Run ``argv``; its exit code, peak RSS in MiB and wall seconds; its output goes to ``log``.

    Through ``_common.measured``: a small helper process starts the command, so this
    process's own memory (generated tables) is not counted in the child's ``ru_maxrss``.
    """
    from _common import measured as run_measured

    child = run_measured(argv, env)
    log.write_text(child.output)
    return child.code, child.rss_mib, child.seconds


def clean_env(root: Path) -> dict[str, str]:
    """The parent's environment without PIPELINE_*/KAGGLE_* variables, plus an isolated store."""
    env = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("PIPELINE_", "KAGGLE_"))
    }
    env.update(
        PIPELINE_STORE=str(root / "store"),
        PIPELINE_LOG_FORMAT="json",
        PIPELINE_ENV_FILE=os.devnull,
        PIPELINE_CONFIG_DIR=str(REPO / "config"),
        PIPELINE_SEED="0",
    )
    return env


def pipeline_cmd() -> list[str]:
    """The venv's `pipeline` script beside this interpreter, else ``python -m pipeline``."""
    script = Path(sys.executable).with_name("pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline"]


def train_and_package(root: Path, env: dict[str, str], epochs: int = 5) -> Path:
    """Train (``epochs``) and package the default house-prices model; the archive's path.

    A package already in ``root``'s store is reused: the benchmarks run by ``bench/run.py``
    share one workdir, and the model is the same for all of them.
    """
    done_before = sorted((root / "store" / "packages").rglob("*.tar.gz"))
    if done_before:
        return done_before[0]
    quick = {**env, "PIPELINE_TRAIN__MAX_EPOCHS": str(epochs)}
    for stage in ("train", "package"):
        done = subprocess.run(
            [*pipeline_cmd(), stage], env=quick, cwd=root, capture_output=True, check=False
        )
        if done.returncode != 0:
            sys.exit(f"pipeline {stage} failed:\n{done.stdout[-2000:]!r}\n{done.stderr[-2000:]!r}")
    (archive,) = (root / "store" / "packages").rglob("*.tar.gz")
    return archive


def generate_csv(path: Path, target_bytes: int, seed: int) -> int:
    """Write a CSV of about ``target_bytes`` from test.csv's rows; the number of data rows.

    Rows are drawn at random from the fixture, Ids are unique and a few area columns are scaled
    by up to ±5%, so chunks differ; every cell stays text, "NA" included, as in test.csv.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    header = FIXTURE.read_text(encoding="utf-8").splitlines()[0].split(",")
    base = pacsv.read_csv(
        FIXTURE,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header}, strings_can_be_null=False
        ),
    )
    numbers = {c: pc.cast(base[c], pa.int64()).to_numpy() for c in PERTURBED}
    rng = np.random.default_rng(seed)
    # Unquoted, as Kaggle's file is (no cell holds a comma or a quote).
    options = pacsv.WriteOptions(quoting_style="none")
    rows = 0
    block = min(100_000, max(1, target_bytes // (FIXTURE.stat().st_size // base.num_rows)))
    with path.open("wb") as fh, pacsv.CSVWriter(fh, base.schema, write_options=options) as writer:
        while True:
            written = fh.tell()
            if written >= target_bytes:
                break
            if rows:  # size the last block from the bytes per row so far
                per_row = written / rows
                block = max(1, min(block, round((target_bytes - written) / per_row)))
            pick = rng.integers(0, base.num_rows, block)
            table = base.take(pa.array(pick))
            ids = pa.array(np.arange(1461 + rows, 1461 + rows + block, dtype=np.int64))
            table = table.set_column(0, "Id", pc.cast(ids, pa.string()))
            for name in PERTURBED:
                scale = rng.uniform(0.95, 1.05, block)
                values = np.rint(numbers[name][pick] * scale).astype(np.int64)
                at = table.schema.get_field_index(name)
                table = table.set_column(at, name, pc.cast(pa.array(values), pa.string()))
            writer.write_table(table)
            rows += block
    return rows


# --- references: run as `python predict_memory.py --reference KIND IN OUT` in a child -----------


def reference(kind: str, source: Path, output: Path) -> None:
    """One reference run with no model; the child's RSS is measured by the parent."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if kind == "arrow-stream":
        # predict's reader settings (4 MiB blocks, every column text), one output row per row.
        header = source.open(encoding="utf-8").readline().rstrip("\n").split(",")
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}),
        )
        schema = pa.schema([("Id", pa.string()), ("prediction", pa.float64())])
        with pacsv.CSVWriter(output, schema) as writer:
            for batch in reader:
                zeros = pa.array([0.0] * batch.num_rows, pa.float64())
                writer.write_batch(pa.record_batch([batch.column(0), zeros], schema=schema))
    elif kind == "arrow-whole":
        table = pacsv.read_csv(source)
        zeros = pa.array([0.0] * table.num_rows, pa.float64())
        pacsv.write_csv(pa.table({"Id": table["Id"], "prediction": zeros}), output)
    elif kind == "pandas-whole":
        import pandas as pd

        frame = pd.read_csv(source)
        output.write_text(f"{len(frame)}\n")
    else:
        sys.exit(f"unknown reference {kind!r}")


REFERENCES = {
    "arrow-stream": "ref: pyarrow open_csv stream + write, no model",
    "arrow-whole": "ref: pyarrow.csv.read_csv whole file + write, no model",
    "pandas-whole": "ref: pandas.read_csv whole file (read only)",
}


# --- the benchmark ------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def summary(log: Path) -> dict[str, object]:
    """The predict.summary event of a JSON-lines log (empty when absent)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if '"predict.summary"' in line:
            event: dict[str, object] = json.loads(line)
            return event
    return {}


def mem_available_mib() -> float:
    """MemAvailable from /proc/meminfo (infinite where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def measure(
    root: Path,
    package: Path,
    sizes: list[float],
    chunks: list[int],
    whole_file_on_large: bool = True,
    references: tuple[str, ...] = tuple(REFERENCES),
) -> tuple[list[Measure], list[tuple[bool, str]]]:
    """Predict generated CSVs of ``sizes`` MB at each chunk size, beside the references.

    The results, and the checks: byte-identical chunked output, and at each chunk size a peak
    RSS on the large file within 25% + 50 MiB of the small file's. Without
    ``whole_file_on_large`` the whole-file references skip the large file (they need about
    4.5x its size in memory).
    """
    env = clean_env(root)
    results: list[Measure] = []
    failures: list[str] = []  # runs that failed outright
    checks: list[tuple[bool, str]] = []
    predict_env = {**env, "PIPELINE_RUN__ID_COLUMN": "Id"}

    def predict(source: Path, mb: float, rows: int, chunk: int, label: str, out: Path) -> None:
        log = root / "predict.log"
        code, rss, seconds = measured(
            [*pipeline_cmd(), "predict", str(source), "--package", str(package), "-o", str(out)],
            {**predict_env, "PIPELINE_RUN__CHUNK_ROWS": str(chunk)},
            log,
        )
        event = summary(log)
        if code != 0 or event.get("rows") != rows:
            failures.append(
                f"predict {source.name} chunk {chunk}: exit {code}, rows "
                f"{event.get('rows')} of {rows}: {log.read_text()[-1500:]}"
            )
        n = event.get("chunks")
        note = ("1 chunk" if n == 1 else f"{n:,} chunks") if isinstance(n, int) else "failed"
        results.append(Measure(label, source, mb, rows, f"{chunk:,}", rss, seconds, note))
        print(
            f"  {label} {mb:,.0f} MB chunk {chunk:,}: {rss:,.0f} MiB, {seconds:.1f} s", flush=True
        )

    # The fixed cost: load the package, predict the 1,459-row fixture.
    fixture_mb = FIXTURE.stat().st_size / 1e6
    predict(FIXTURE, fixture_mb, 1459, chunks[0], "predict (test.csv)", root / "fixture.out.csv")
    for index, mb in enumerate(sizes):
        source = root / f"houses-{mb:g}MB.csv"
        t0 = time.perf_counter()
        rows = generate_csv(source, int(mb * 1e6), seed=index)
        size_mb = source.stat().st_size / 1e6
        print(
            f"generated {source.name}: {size_mb:,.0f} MB, {rows:,} rows in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        outputs = {}
        for chunk in chunks:
            out = root / f"pred-{index}-{chunk}.csv"
            predict(source, size_mb, rows, chunk, "predict", out)
            outputs[chunk] = out
        if index == 0:  # the same file in one chunk: byte-identical predictions?
            single = root / "pred-single.csv"
            predict(source, size_mb, rows, rows, "predict (one chunk)", single)
            chunked = outputs[min(chunks)]
            same = single.exists() and sha256(single) == sha256(chunked)
            checks.append(
                (
                    same,
                    f"{source.name}: chunks of {min(chunks):,} rows give "
                    f"{'byte-identical' if same else 'DIFFERENT'} output to one chunk "
                    f"of {rows:,}",
                )
            )
            single.unlink(missing_ok=True)
        for out in outputs.values():
            out.unlink(missing_ok=True)
        for kind, label in REFERENCES.items():
            if kind not in references:
                continue
            if kind != "arrow-stream" and index == 1:
                # Guard the shared machine: extrapolate from the small file's measured RSS.
                small = next(r for r in results if r.label == label)
                estimate = small.rss_mib * size_mb / small.file_mb
                if not whole_file_on_large or estimate > 0.6 * mem_available_mib():
                    why = f"skipped: about {estimate / 1024:,.1f} GiB by extrapolation"
                    nan = float("nan")
                    results.append(Measure(label, source, size_mb, rows, "all", nan, nan, why))
                    continue
            out = root / f"ref-{kind}.csv"
            log = root / "ref.log"
            code, rss, seconds = measured(
                [sys.executable, __file__, "--reference", kind, str(source), str(out)], env, log
            )
            if code != 0:
                failures.append(f"{label} on {source.name}: exit {code}: {log.read_text()[-1500:]}")
            results.append(Measure(label, source, size_mb, rows, "all", rss, seconds))
            print(f"  {label} {size_mb:,.0f} MB: {rss:,.0f} MiB, {seconds:.1f} s", flush=True)
            out.unlink(missing_ok=True)
        source.unlink()

    for chunk in chunks:
        small, large = (r for r in results if r.label == "predict" and r.chunk == f"{chunk:,}")
        bound = REL_TOLERANCE * small.rss_mib + ABS_SLACK_MIB
        ok = abs(large.rss_mib - small.rss_mib) <= bound
        checks.append(
            (
                ok,
                f"chunks of {chunk:,} rows: peak RSS {small.rss_mib:,.0f} MiB on "
                f"{small.file_mb:,.0f} MB, {large.rss_mib:,.0f} MiB on "
                f"{large.file_mb:,.0f} MB (allowed difference {bound:,.0f} MiB)",
            )
        )
    checks += [(False, f) for f in failures]
    return results, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", help="two CSV sizes in MB, small first (default 200,2000)")
    parser.add_argument("--chunk-rows", help="chunk sizes in rows (default 10000,100000)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: default sizes 3,10 MB, chunks 2000,8000"
    )
    parser.add_argument(
        "--out", type=Path, help="markdown table (default bench/out/predict_memory.md)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="folder for the temporary files (default: system temp)"
    )
    parser.add_argument(
        "--reference", nargs=3, metavar=("KIND", "IN", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.reference:
        reference(args.reference[0], Path(args.reference[1]), Path(args.reference[2]))
        return 0
    # A chunk must be smaller than the small file for the size-independence check to mean much.
    sizes_mb = args.sizes_mb or ("3,10" if args.quick else "200,2000")
    chunk_rows = args.chunk_rows or ("2000,8000" if args.quick else "10000,100000")
    sizes = [float(s) for s in sizes_mb.split(",")]
    chunks = sorted(int(c) for c in chunk_rows.split(","))
    if len(sizes) != 2 or sizes[0] >= sizes[1]:
        parser.error("--sizes-mb takes two sizes, small first, e.g. 200,2000")
    out_md = args.out or OUT_DIR / (
        "predict_memory-quick.md" if args.quick else "predict_memory.md"
    )
    with tempfile.TemporaryDirectory(prefix="bench-predict-", dir=args.workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        package = train_and_package(root, clean_env(root))
        print(f"trained + packaged in {time.perf_counter() - t0:.1f} s: {package.name}", flush=True)
        results, checks = measure(root, package, sizes, chunks)
    table = render(results, checks)
    print("\n" + table)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(table)
    print(f"written to {out_md}")
    failed = [text for ok, text in checks if not ok]
    for text in failed:
        print(f"FAIL: {text}", file=sys.stderr)
    return 1 if failed else 0


def render(results: list[Measure], checks: list[tuple[bool, str]]) -> str:
    """The markdown report: the machine, the table, the checks."""
    import numpy
    import pandas
    import pyarrow
    import torch

    lines = [
        "# `pipeline predict`: peak memory and speed",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__}, pyarrow "
        f"{pyarrow.__version__}, pandas {pandas.__version__}, numpy {numpy.__version__}. "
        "Peak RSS is the child's `ru_maxrss`; seconds are wall time of the whole process "
        "(start, package load, read, predict, write).",
        "",
        "| run | file MB | rows | chunk rows | peak RSS MiB | seconds | rows/s | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        measured_ = r.rss_mib == r.rss_mib  # NaN when skipped
        lines.append(
            f"| {r.label} | {r.file_mb:,.1f} | {r.rows:,} | {r.chunk} | "
            + (
                f"{r.rss_mib:,.0f} | {r.seconds:,.1f} | {r.rows_per_second:,.0f}"
                if measured_
                else "— | — | —"
            )
            + f" | {r.note} |"
        )
    lines += ["", "Checks:", ""]
    lines += [f"- {'pass' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
