"""Ingestion: reading and preprocessing a 1M-row table, CSV and Parquet, beside pyarrow alone.

The project's path is what `pipeline train` runs before its first epoch: ``read.read_table``
(pyarrow, then a pandas frame), ``schema.prepare_target`` and ``schema.infer``, then
``features.fit`` and ``Preprocessor.transform`` to the float32/int64 arrays the network gets
(fitted on every row here, where training fits on its training rows). The reference is
``pyarrow.csv.read_csv`` / ``pyarrow.parquet.read_table`` of the same file and nothing else.
Both run in one child process, alternating, several times; the table gives medians.
Target: the project's path takes at most 2x pyarrow alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import Ratio, Report, checked, measured, median, secs, synthetic, table


def child(path: Path, fmt: str, repeats: int) -> None:
    """Alternate the project's path and pyarrow's reader; one JSON line per timing."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from pipeline.data import read, schema
    from pipeline.features import fit
    from pipeline.settings import DataSettings, FeatureSettings

    data = DataSettings(target="y", drop=[], format=fmt)

    def project() -> int:
        frame = read.read_table(path, data, label=str(path))
        frame = schema.prepare_target(frame, "y", "auto", str(path))
        inferred, _ = schema.infer(frame, data, "auto", str(path))
        encoded = fit(frame, inferred, FeatureSettings(), str(path)).transform(
            frame, str(path), with_target=True
        )
        return int(encoded.numeric.shape[0])

    def reference() -> int:
        table_ = pacsv.read_csv(path) if fmt == "csv" else pq.read_table(path)
        return int(table_.num_rows)

    for _ in range(repeats):
        for name, fn in (("project", project), ("pyarrow", reference)):
            t0 = time.perf_counter()
            rows = fn()
            seconds = time.perf_counter() - t0
            print(json.dumps({"event": "ingest", "who": name, "rows": rows, "seconds": seconds}))


def run(quick: bool, workdir: Path) -> Report:
    """Both formats; the report and a ratio for each."""
    rows = 20_000 if quick else 1_000_000
    repeats = 2 if quick else 3
    lines, ratios = [], []
    for fmt in ("csv", "parquet"):
        path = workdir / f"ingest.{fmt}"
        size = synthetic(path, rows, 50, 5, seed=2, fmt=fmt)
        done = checked(
            measured([sys.executable, __file__, "--child", str(path), fmt, str(repeats)]),
            f"ingestion child ({fmt})",
        )
        samples: dict[str, list[float]] = {"project": [], "pyarrow": []}
        for line in done.output.splitlines():
            if line.startswith('{"event": "ingest"'):
                event = json.loads(line)
                assert event["rows"] == rows, event
                samples[event["who"]].append(event["seconds"])
        p, r = median(samples["project"]), median(samples["pyarrow"])
        lines.append((fmt, f"{size / 1e6:,.0f} MB", secs(p), secs(r), f"{p / r:.2f}"))
        ratios.append(
            Ratio(
                "ingestion",
                f"{fmt}: read + preprocess ÷ pyarrow read",
                secs(p),
                secs(r),
                p / r,
                "<=",
                2.0,
            )
        )
        path.unlink()
    body = (
        f"{rows:,} rows x 50 numeric + 5 categorical (+ target); median of {repeats} "
        "alternating runs in one process.\n\n"
        + table(["format", "file", "read + preprocess", "pyarrow read alone", "ratio"], lines)
    )
    return Report("ingestion", body, ratios)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("PATH", "FORMAT", "REPEATS"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], int(args.child[2]))
        sys.exit(0)
    from _common import standalone

    sys.exit(standalone("ingestion", run))
