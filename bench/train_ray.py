"""Data-parallel training: rows/s of `pipeline train --workers 1` and `--workers 2` on Ray Train
beside the in-process loop, and the peak RSS of each Ray worker.

A synthetic regression table (``_common.synthetic``: 10M rows x 20 numeric + 2 categorical
columns, Parquet, by default; ``--rows`` changes it) is trained three times with the default
model, batch 1024 (a large table's batch: at 128 rows a step is a few hundred microseconds of
arithmetic and the all-reduce dominates), two selection epochs and no refit
(``PIPELINE_TRAIN__REFIT=false``), each run a fresh
`pipeline train` process on embedded Ray (``RAY_ADDRESS`` is dropped: the figures are this
machine's):

- in-process: `pipeline train` (what a user without Ray runs);
- `pipeline train --workers 1`;
- `pipeline train --workers 2`.

Rows/s are the training rows over the median ``seconds`` of the ``train.epoch`` events: an
epoch's steps and its validation pass, without the start of Ray, its workers or the data's
preparation, which the whole command's wall time (shown beside) includes. Peak RSS per worker is
what each worker reports in the ``train.workers`` event (``ru_maxrss``), beside the
`pipeline train` process's own (the driver: with workers it reads the target column alone,
Ray tasks the rest); the in-process run's is its process's. Targets (issue 17): 2 workers >=
1.5x one; one worker >= 0.85x the in-process loop. The three runs share the split and the
preprocessing statistics (checked).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _common import (
    Report,
    checked,
    clean_env,
    events,
    measured,
    mib,
    pipeline_cmd,
    rate,
    synthetic,
    worker_ratios,
)
from _common import table as md_table

WORKERS = (1, 2)
HEADER = ["run", "rows/s (median epoch)", "whole command", "peak RSS per worker",
          "peak RSS of `pipeline train`"]  # fmt: skip


def run(quick: bool, workdir: Path, rows: int | None = None) -> Report:
    """The three runs; the report and the two ratios."""
    rows = rows or (20_000 if quick else 10_000_000)
    data = workdir / "train-ray.parquet"
    size = synthetic(data, rows, 20, 2, seed=3)
    env = clean_env(workdir)
    env.pop("RAY_ADDRESS", None)
    env |= {
        "RAY_AUTH_MODE": "disabled",
        "PIPELINE_DATA__SOURCE": str(data),
        "PIPELINE_DATA__TARGET": "y",
        "PIPELINE_DATA__DROP": "[]",
        "PIPELINE_TRAIN__MAX_EPOCHS": "1" if quick else "2",
        "PIPELINE_TRAIN__REFIT": "false",
        "PIPELINE_TRAIN__BATCH_SIZE": "1024",
    }
    results: dict[int, tuple[float, float, list[float]]] = {}
    drivers: dict[int, float] = {}  # the `pipeline train` process's own peak RSS
    statistics_bytes: set[bytes] = set()
    train_rows = 0
    for workers in (0, *WORKERS):
        argv = [*pipeline_cmd(), "train"] + (["--workers", str(workers)] if workers else [])
        done = checked(measured(argv, env), " ".join(argv[-3:]))
        epochs = [float(e["seconds"]) for e in events(done.output, "train.epoch")]
        summary = events(done.output, "train.summary")[-1]
        build = Path(env["PIPELINE_STORE"]) / "builds" / summary["build_id"]
        statistics_bytes.add((build / "preprocessing.json").read_bytes())
        train_rows = int(events(done.output, "data.split")[-1]["train"])
        if workers:
            told = events(done.output, "train.workers")[-1]
            peaks = sorted(float(r["peak_rss_mib"]) for r in told["workers"])
            drivers[workers] = float(told["driver_peak_rss_mib"])
        else:
            peaks = [done.rss_mib]
            drivers[workers] = done.rss_mib
        results[workers] = (statistics.median(epochs), done.seconds, peaks)
    if len(statistics_bytes) != 1:
        raise RuntimeError("the runs fitted different preprocessing statistics")
    data.unlink()  # the other benchmarks share the workdir (and its disk)

    labels = {0: "in-process: `pipeline train`"}
    labels |= {w: f"`pipeline train --workers {w}` (embedded Ray)" for w in WORKERS}
    lines = []
    for key, (epoch, wall, peaks) in results.items():
        lines.append((labels[key], rate(train_rows / epoch), f"{wall:.1f} s",
                      ", ".join(mib(p) for p in peaks) if key else "–",
                      mib(drivers[key])))  # fmt: skip
    loop, one, two = (train_rows / results[k][0] for k in (0, 1, 2))
    body = (
        f"Input: {rows:,} rows x 20 numeric + 2 categorical columns, Parquet "
        f"({size / 1e6:,.0f} MB); {train_rows:,} training rows; default model, batch 1024, "
        f"{env['PIPELINE_TRAIN__MAX_EPOCHS']} selection epoch(s), no refit; one run each. "
        "The three builds have byte-identical preprocessing statistics.\n\n"
        + md_table(HEADER, lines)
        + f"\n\n2 workers: {two / one:.2f}x one worker; one worker: {one / loop:.2f}x the "
        "in-process loop.\n"
    )
    ratios = worker_ratios("train_ray", "train", one, two, loop)
    return Report("train_ray", body, ratios)


if __name__ == "__main__":
    from _common import standalone

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="rows of the generated table (default 10M)")
    known, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    sys.exit(standalone("train_ray", lambda quick, workdir: run(quick, workdir, known.rows)))
