"""The search on Ray: trials per minute with 1 and 2 at a time, and Ray's overhead.

Three fresh processes run the same trials of the same search (the built-in house prices, the
default space, seed 0):

- the reference: a plain loop in one process, no Ray: prepare the data as `tune` does, then
  ``search.run_trial`` for each trial one after another;
- `pipeline tune` with one trial at a time (PIPELINE_TUNE__CONCURRENCY=1), embedded Ray;
- `pipeline tune` with two at a time.

Each figure is a whole process's wall time, start-up, data preparation and Ray's start and
stop included. Targets: Ray's overhead at most 10% of the trials' time ((tune with 1 at a
time - plain loop) / plain loop), and 2 at a time at least 1.6x the throughput of 1. The two
searches must also agree: the same tune id.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _common import Ratio, Report, checked, clean_env, events, measured, pipeline_cmd, table

SETTINGS = {"PIPELINE_SEED": "0"}
QUICK = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "4"}


def run(quick: bool, workdir: Path) -> Report:
    trials = 2 if quick else 8
    extra = {**SETTINGS, **(QUICK if quick else {})}
    env = clean_env(workdir / "tune", **extra)
    loop = checked(measured([sys.executable, __file__, str(trials)], env), "plain loop")
    runs = {}
    for concurrency in (1, 2):
        env_c = clean_env(
            workdir / f"tune-{concurrency}", PIPELINE_TUNE__CONCURRENCY=str(concurrency), **extra
        )
        child = measured([*pipeline_cmd(), "tune", "--trials", str(trials)], env_c)
        runs[concurrency] = checked(child, f"pipeline tune (concurrency {concurrency})")
    summaries = {c: events(r.output, "tune.summary")[-1] for c, r in runs.items()}
    loop_result = json.loads(loop.output.strip().splitlines()[-1])
    trial_seconds = loop_result["trial_seconds"]
    per_min = {c: trials / r.seconds * 60 for c, r in runs.items()}
    rows = [
        ("plain loop, one process (no Ray)", f"{loop.seconds:.1f}", f"{trials / loop.seconds * 60:.1f}", "—"),  # noqa: E501
        *(
            (f"`pipeline tune`, {c} at a time", f"{r.seconds:.1f}", f"{per_min[c]:.1f}",
             summaries[c]["tune_id"][:12])
            for c, r in runs.items()
        ),
    ]  # fmt: skip
    overhead = (runs[1].seconds - loop.seconds) / loop.seconds
    speedup = runs[2].seconds and runs[1].seconds / runs[2].seconds
    same = summaries[1]["tune_id"] == summaries[2]["tune_id"]
    body = (
        f"{trials} trials of the default space on "
        f"{'Titanic (4 epochs)' if quick else 'house prices'}, seed 0; wall seconds of each "
        "whole process.\n\n"
        + table(["run", "seconds", "trials/min", "tune id"], rows)
        + f"\n\nTrials alone (plain loop): {sum(trial_seconds):.1f} s, "
        f"{sum(trial_seconds) / trials:.2f} s each. Ray overhead (1 at a time vs the loop): "
        f"{overhead:+.1%}. 2 at a time: {speedup:.2f}x the throughput of 1. Same tune id with "
        f"1 and 2 at a time: {'yes' if same else 'NO'}.\n"
    )
    ratios = [
        Ratio("tune", "Ray overhead: tune (1 at a time) ÷ plain loop", f"{runs[1].seconds:.1f} s",
              f"{loop.seconds:.1f} s", runs[1].seconds / loop.seconds, "<=", 1.10),
        Ratio("tune", "throughput: 2 at a time ÷ 1 at a time", f"{per_min[2]:.1f}/min",
              f"{per_min[1]:.1f}/min", speedup, ">=", 1.6),
    ]  # fmt: skip
    if not same:
        raise RuntimeError("the searches with 1 and 2 trials at a time disagree")
    return Report("tune", body, ratios)


def _plain_loop(trials: int) -> None:
    """The reference: the same trials in this process, one after another, without Ray."""
    from pipeline import log as logging_
    from pipeline import search
    from pipeline import tune as stage
    from pipeline.prepare import prepare
    from pipeline.settings import load
    from pipeline.store import Store

    logging_.configure("json", "warning")
    settings = load().settings
    store = Store.from_uri(settings.store, **settings.store_options())
    log = logging_.get_logger()
    data = prepare(settings, store, log)
    metric = search.metric_for(settings, data.schema.task, data.schema.target_transform)
    configs = search.trial_configs(settings, trials)
    folds = search.folds_for(settings, len(data.split.train) + len(data.split.val))
    payload = stage._payload(settings, data, metric, folds, configs)
    seconds = []
    for i in range(trials):
        t0 = time.perf_counter()
        search.run_trial(payload, i)
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"trial_seconds": seconds}))


if __name__ == "__main__":
    _plain_loop(int(sys.argv[1]))
