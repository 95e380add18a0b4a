"""Run every benchmark and print one table of every ratio against the issue's targets.

    .venv/bin/python bench/run.py            # full sizes (make bench; about 10-15 minutes)
    .venv/bin/python bench/run.py --quick    # tiny sizes, every code path (make bench-smoke)
    .venv/bin/python bench/run.py --only startup,prediction

All benchmarks share one temporary folder (the house-prices package and the 10M-row training
run are made once); it is removed at the end. Reports go to bench/out/ (git-ignored):
one markdown file per benchmark and ``summary[-quick].md``. The exit status is 0 when every
benchmark ran, whether or not its targets are met: the ratios are figures to read, and the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import ingestion
import memory
import predict_ray
import prediction
import s3
import scaling
import startup
import train_ray
import training
import tune
from _common import OUT_DIR, Ratio, machine, ratio_table, write_report

# Order matters: scaling reuses memory's 10M-row run. `s3` starts its own SeaweedFS server
# (`weed` from the dev dependencies) and stops it before it returns.
BENCHMARKS = {
    "startup": startup.run,
    "training": training.run,
    "ingestion": ingestion.run,
    "prediction": prediction.run,
    "memory": memory.run,
    "scaling": scaling.run,
    "tune": tune.run,
    "predict_ray": predict_ray.run,
    "train_ray": train_ray.run,
    "s3": s3.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke run)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    ratios: list[Ratio] = []
    failed: list[str] = []
    timings: list[str] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=args.workdir) as tmp:
        for name in names:
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                report = BENCHMARKS[name](args.quick, Path(tmp))
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            seconds = time.perf_counter() - t0
            timings.append(f"{name} {seconds:.0f} s")
            print(report.body, flush=True)
            print(f"({seconds:.0f} s; {write_report(report, args.quick, args.out)})\n", flush=True)
            ratios += report.ratios
    total = time.perf_counter() - t_all
    summary = (
        f"# Benchmarks{' (quick)' if args.quick else ''}\n\n{machine()}\n\n"
        f"{ratio_table(ratios)}\n\n"
        f"Ran in {total:.0f} s ({', '.join(timings)}).\n"
    )
    if failed:
        summary += f"\nFailed to run: {', '.join(failed)}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"summary{'-quick' if args.quick else ''}.md").write_text(summary)
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
