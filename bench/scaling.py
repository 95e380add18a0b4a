"""Scaling: seconds per training epoch at 100k, 1M and 10M rows (20 numeric columns).

`pipeline train` runs on synthetic Parquet tables of the same shape (batches of 1,024 rows, two
selection epochs, no refit); the 10M-row point is the training run of ``memory.py`` (one
selection epoch and one refit epoch, shared so the largest table is trained once). Linear
growth means a constant time per row: the check is the slope of log(seconds per epoch) against
log(training rows) across the three sizes, at most 1.1 (1.0 is linear; fixed costs per epoch
make small tables look sub-linear).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from _common import Ratio, Report, checked, events, measured, median, pipeline_cmd, synthetic, table
from memory import BIG_BATCH, big_training_run
from training import train_env


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(ys) on log(xs)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def run(quick: bool, workdir: Path) -> Report:
    """Three sizes; the report and the slope."""
    points: list[tuple[int, int, float, str]] = []  # rows, training rows, s/epoch, source
    for rows in (1_000, 5_000) if quick else (100_000, 1_000_000):
        data = workdir / f"scale-{rows}.parquet"
        synthetic(data, rows, 20, 0, seed=5)
        child = checked(
            measured(
                [*pipeline_cmd(), "train"], train_env(workdir, data, BIG_BATCH, 2), cwd=workdir
            ),
            f"pipeline train ({rows:,} rows)",
        )
        data.unlink()
        n_train = int(events(child.output, "data.split")[0]["train"])
        seconds = median(float(e["seconds"]) for e in events(child.output, "train.epoch"))
        points.append((rows, n_train, seconds, "2 selection epochs (median)"))
    big = big_training_run(workdir, quick)
    # The refit epoch covers more rows; per row, it is as good a sample as the selection epoch.
    per_row = [s / big["train_rows"] for s in big["epochs"]]
    per_row += [s / big["refit_rows"] for s in big["refit_epochs"]]
    points.append(
        (
            big["rows"],
            big["train_rows"],
            median(per_row) * big["train_rows"],
            "selection + refit epoch of memory.py (median per row)",
        )
    )
    b = slope([float(p[1]) for p in points], [p[2] for p in points])
    body = (
        f"20 float32 columns, batch {BIG_BATCH}.\n\n"
        + table(
            ["rows", "training rows", "s / epoch", "µs / row", "source"],
            [
                (f"{r:,}", f"{n:,}", f"{s:.2f}", f"{1e6 * s / n:.2f}", src)
                for r, n, s, src in points
            ],
            align="rrrrl",
        )
        + f"\n\nslope of log(s/epoch) on log(rows): {b:.3f} (1.0 is linear)"
    )
    first, last = points[0], points[-1]
    ratio = Ratio(
        "scaling",
        "log-log slope of s/epoch vs rows",
        f"{1e6 * last[2] / last[1]:.2f} µs/row at {last[0]:,}",
        f"{1e6 * first[2] / first[1]:.2f} µs/row at {first[0]:,}",
        b,
        "<=",
        1.1,
    )
    return Report("scaling", body, [ratio])


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone("scaling", run))
