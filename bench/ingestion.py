"""Ingestion: reading and preprocessing a 1M-row table, CSV and Parquet, beside pyarrow alone.

The project's path is what `pipeline train` runs before its first epoch: ``prepare.prepare``
(the file's sha256, ``read.read_table`` with pyarrow then a pandas frame, the target check,
``schema.infer`` and the split), then ``features.fit`` on the training rows (a column at a
time, ``RowsOf``) and ``Preprocessor.transform`` of every row to the float32/int64 arrays the
network gets (``tensors.encode_all`` itself: each column read once, column-major above 256 MB,
shared with torch as training does). The
reference is ``pyarrow.csv.read_csv`` / ``pyarrow.parquet.read_table`` of the same file and
nothing else. Both run in one child process, alternating, several times; the table gives medians.
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
    import structlog

    import pipeline.fit  # noqa: F401  (torch: imported before the first timed run, not in it)
    from pipeline.features import RowsOf, fit
    from pipeline.prepare import prepare
    from pipeline.settings import DataSettings, Settings
    from pipeline.store import Store
    from pipeline.tensors import encode_all

    settings = Settings(data=DataSettings(source=str(path), target="y", drop=[], format=fmt))
    store = Store.from_uri(str(path.parent / "store"))
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # its events: silent
    log = structlog.get_logger()

    def project() -> int:
        data = prepare(settings, store, log)
        pre = fit(RowsOf(data.frame, data.split.train), data.schema, settings.features, data.label)
        return int(encode_all(data, pre, "cpu").numeric.shape[0])

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
