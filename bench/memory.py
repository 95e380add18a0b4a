"""Memory: peak RSS of training on 10M rows x 20 numeric columns, and of predicting large CSVs.

1. Training: `pipeline train` on a synthetic Parquet table of 10M rows x 20 float32 columns
   (800 MB of feature data as float32) plus the target, with the default flow (a selection
   epoch, then the refit epoch on train + validation rows) and batches of 1,024 rows so the two
   epochs stay short. Peak RSS is the child's ``ru_maxrss``. Target: at most 2.5x the float32
   size of the feature data. The same run gives ``scaling.py`` its 10M-row epoch time.
2. Prediction: ``predict_memory.measure`` on generated house-prices CSVs of 200 MB and 2 GB at
   the default chunk of 100,000 rows, beside pyarrow references. Target: the 2 GB file's peak
   RSS is within 25% + 50 MiB of the 200 MB file's (bounded by the chunk, not the file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from _common import (
    Ratio,
    Report,
    checked,
    events,
    measured,
    mib,
    pipeline_cmd,
    secs,
    synthetic,
    table,
)

BIG_BATCH = 1024


def big_training_run(workdir: Path, quick: bool) -> dict[str, Any]:
    """Train once on the large table (cached in ``workdir``): rows, RSS, epoch events."""
    from training import train_env

    cache = workdir / "big-train.json"
    if cache.exists():
        result: dict[str, Any] = json.loads(cache.read_text())
        return result
    rows, cols = (20_000, 20) if quick else (10_000_000, 20)
    data = workdir / "big.parquet"
    synthetic(data, rows, cols, 0, seed=4)
    env = train_env(workdir, data, BIG_BATCH, 1)
    env["PIPELINE_TRAIN__REFIT"] = "true"  # the default flow, refit included
    child = checked(
        measured([*pipeline_cmd(), "train"], env, cwd=workdir), "pipeline train (large)"
    )
    data.unlink()
    split = events(child.output, "data.split")[0]
    result = {
        "rows": rows,
        "columns": cols,
        "data_bytes": rows * cols * 4,
        "rss_mib": child.rss_mib,
        "seconds": child.seconds,
        "train_rows": split["train"],
        "refit_rows": split["train"] + split["val"],
        "epochs": [e["seconds"] for e in events(child.output, "train.epoch")],
        "refit_epochs": [e["seconds"] for e in events(child.output, "train.refit_epoch")],
    }
    cache.write_text(json.dumps(result))
    return result


def run(quick: bool, workdir: Path) -> Report:
    """Training and prediction memory; the report and the ratios."""
    from predict_memory import clean_env, measure, render, train_and_package

    big = big_training_run(workdir, quick)
    data_mib = big["data_bytes"] / (1 << 20)
    ratio_train = big["rss_mib"] / data_mib
    body = (
        f"Training: {big['rows']:,} rows x {big['columns']} float32 columns "
        f"({big['data_bytes'] / 1e6:,.0f} MB), batch {BIG_BATCH}, one selection epoch and one "
        "refit epoch.\n\n"
        + table(
            ["run", "peak RSS", "feature data (float32)", "ratio", "whole process"],
            [
                (
                    "`pipeline train`",
                    mib(big["rss_mib"]),
                    mib(data_mib),
                    f"{ratio_train:.2f}",
                    secs(big["seconds"]),
                )
            ],
        )
    )
    ratios = [
        Ratio(
            "memory",
            "train peak RSS ÷ float32 data",
            mib(big["rss_mib"]),
            mib(data_mib),
            ratio_train,
            "<=",
            2.5,
        )
    ]

    package = train_and_package(workdir, clean_env(workdir))
    sizes, chunks = ([1.0, 3.0], [1_000]) if quick else ([200.0, 2000.0], [100_000])
    # Quick: only the streaming reference (each reference is one more process start).
    refs = ("arrow-stream",) if quick else ("arrow-stream", "arrow-whole", "pandas-whole")
    results, checks = measure(
        workdir, package, sizes, chunks, whole_file_on_large=False, references=refs
    )
    body += "\n\nPrediction (`predict_memory.py`):\n\n" + render(results, checks).split("\n", 2)[2]
    for chunk in chunks:
        small, large = (r for r in results if r.label == "predict" and r.chunk == f"{chunk:,}")
        ratios.append(
            Ratio(
                "memory",
                f"predict peak RSS {large.file_mb:,.0f} MB ÷ {small.file_mb:,.0f} MB file "
                f"(chunk {chunk:,})",
                mib(large.rss_mib),
                mib(small.rss_mib),
                large.rss_mib / small.rss_mib,
                "<=",
                1.25 + 50 / small.rss_mib,
            )
        )
    failed = [text for ok, text in checks if not ok]
    if failed:
        raise RuntimeError("predict memory checks failed: " + "; ".join(failed))
    return Report("memory", body, ratios)


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone("memory", run))
