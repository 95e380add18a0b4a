"""The search stage: `pipeline tune` runs the trials of ``search`` on Ray Tune, records the result.

1. prepare the data exactly as `train` does (same split, same seed), and keep the test rows
   out of the search; 2. draw every trial's configuration from the seed; 3. run the trials on a
   Ray cluster (an embedded one unless ``RAY_ADDRESS`` names one), each trial's result written
   to the store as it arrives, so an interrupted search resumes (``--resume``) where it
   stopped; 4. rank the trials, write the tune result under its content id (``tunes/<id>/``)
   and, if asked, the winner as a preset that `train` builds.

Ray is only the engine: it schedules the trials and retries one whose worker died. What the
trials are, and what wins, is decided here from the seed and the results, never from timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import __version__, artifacts, fold_checks, halving, search, signals, trials
from pipeline.errors import ConfigError, IntegrityError, Interrupted, NotFoundError, TrialsFailed
from pipeline.prepare import Prepared, prepare
from pipeline.settings import Settings, preset_toml, space
from pipeline.store import Store, canonical_json

LATEST = "latest-tune"
FORMAT = 1


@dataclass(frozen=True)
class TuneResult:
    """What `pipeline tune` produced."""

    tune_id: str
    trials: list[dict[str, Any]]
    winner: dict[str, Any]


def run(
    settings: Settings,
    store: Store,
    log: Any,
    *,
    resume: bool = False,
    preset_out: Path | None = None,
) -> TuneResult:
    """The whole search: prepare, draw, run on Ray, rank, record; see the module docstring."""
    t0 = time.perf_counter()
    n = settings.tune.trials
    space.check_fits(settings)
    search.check_trials(settings, n)
    data = prepare(settings, store, log)
    metric = search.metric_for(settings, data.schema.task, data.schema.target_transform)
    folds = search.folds_for(settings, len(data.split.train) + len(data.split.val))
    schedule = _schedule(settings, folds)
    configs = search.trial_configs(settings, n)
    inputs = _inputs(settings, data, metric, folds, configs) | {"schedule": schedule}
    partial = trials.Partial(store, inputs)
    done = partial.load(log) if resume else partial.clear()
    log.info(
        "tune.start", trials=n, resumed=len(done), metric=metric,
        scoring="validation" if folds is None else f"{folds}-fold cv",
        schedule=None if len(schedule) == 1 else schedule, space=sorted(settings.tune.space),
    )  # fmt: skip
    payload = _payload(settings, data, metric, folds, configs)
    fold_checks.check_folds(payload)
    finished = "every trial has finished: writing the search's record first"
    try:
        results = _search(settings, payload, schedule, done, partial, log)
    except KeyboardInterrupt:
        # Stopped as Ray shut down after the last trial: the kept trials make the whole search.
        if (whole := _whole(settings, payload, schedule, partial, log)) is None:
            raise _interrupted(store, partial, n, log) from None
        log.warning("tune.stop_deferred", signal=signals.last_name() or "SIGINT", message=finished)
        results = whole
    with signals.finishing(log, "tune", finished):  # a stop now waits for the record
        ranked = _rank([results[i] | {"config": configs[i]} for i in range(n)], metric)
        winner = next((t for t in ranked if t["status"] == "ok"), None)
        if winner is None:
            first = next(t for t in ranked if t.get("error"))
            budget = "TIME_BUDGET ran out" in str(first["error"])
            raise TrialsFailed(
                f"all {n} trials failed; the first (trial {first['trial']}): {first['error']}"
                + ("; raise PIPELINE_TUNE__TIME_BUDGET or unset it" if budget else "")
            )
        tid = _write(store, inputs, ranked, winner, metric, time.perf_counter() - t0)
        partial.discard()
        if preset_out is not None:
            write_preset(preset_out, settings, winner, tid, metric)
    log.info(
        "tune.summary",
        tune_id=tid,
        metric=metric,
        winner=winner["trial"],
        score=winner["score"],
        baseline=results[0].get("score") if results[0]["status"] == "ok" else None,
        config=winner["config"],
        trials=n,
        failed=sum(t["status"] == "failed" for t in ranked),
        stopped=sum(t["status"] == "stopped" for t in ranked),
        preset=str(preset_out) if preset_out else None,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return TuneResult(tid, ranked, winner)


def _interrupted(store: Store, partial: trials.Partial, n: int, log: Any) -> Interrupted:
    """What a stop mid-search says: how many trials are kept for ``--resume``."""
    if not (kept := len(partial.load(log)) if store.list(partial.prefix) else 0):
        return Interrupted("tune interrupted before any trial finished: nothing kept; run it again")
    return Interrupted(
        f"tune interrupted: the results of {kept} trial(s) of {n} are kept; `pipeline tune "
        "--resume` with the same settings runs the rest"
    )


def _whole(
    settings: Settings, payload: search.Payload, schedule: list[int | None],
    partial: trials.Partial, log: Any,
) -> dict[int, dict[str, Any]] | None:  # fmt: skip
    """Every trial's result from the kept records alone; None when a trial is missing, or when
    none was kept (a stop as Ray started said "no interrupted search to resume", exit 8)."""
    try:
        return _search(settings, payload, schedule, partial.load(log), partial, log, offline=True)
    except (_Missing, NotFoundError):
        return None


class _Missing(Exception):
    """``_search`` without Ray (``offline``) met a trial that has yet to run."""


def _schedule(settings: Settings, folds: int | None) -> list[int | None]:
    """The folds scored by the end of each rung: all of them at once, or successive halving's
    rungs (``halving``); [None] with validation scoring (one run per trial)."""
    if settings.tune.scheduler == "none":
        return [folds]
    if folds is None:
        raise ConfigError(
            "PIPELINE_TUNE__SCHEDULER=halving spends cross-validation folds, but this search "
            "scores on the validation split: set PIPELINE_TUNE__SCORING=cv (or auto, up to "
            "10,000 rows), or PIPELINE_TUNE__SCHEDULER=none"
        )
    return list(halving.rungs(folds, settings.tune.reduction))


def _inputs(
    settings: Settings,
    data: Prepared,
    metric: str,
    folds: int | None,
    configs: list[dict[str, Any]],
) -> dict[str, Any]:
    """What the search's result depends on: data, split, seed, recipe, space, trials, code."""
    return {
        "dataset": {"uri": data.fetched.uri, "sha256": data.fetched.sha256, "rows": data.rows},
        "split": {"digest": data.split.digest()},
        "seed": settings.seed,
        "recipe": settings.build_config(resolved=data.resolved),
        "space": settings.tune.space,
        "metric": metric,
        "folds": folds,
        "configs": configs,
        "code": {"version": __version__, "digest": artifacts.code_digest()},
    }


def _payload(
    settings: Settings,
    data: Prepared,
    metric: str,
    folds: int | None,
    configs: list[dict[str, Any]],
) -> search.Payload:
    """The trials' data: training and validation rows only, renumbered from 0."""
    split = data.split
    keep = np.sort(np.concatenate([split.train, split.val]))
    frame = data.frame.iloc[keep].reset_index(drop=True)
    position = {int(row): i for i, row in enumerate(keep)}
    train = np.array([position[int(r)] for r in split.train], dtype=np.int64)
    val = np.array([position[int(r)] for r in split.val], dtype=np.int64)
    return search.Payload(
        settings=Settings.model_validate(settings.public()),  # no secret travels to the cluster
        configs=configs,
        frame=frame,
        schema=data.schema,
        label=data.label,
        train=train,
        val=val,
        seeds=data.seeds,
        metric=metric,
        folds=folds,
        threads=settings.tune.cpus_per_trial,
    )


def _search(
    settings: Settings,
    payload: search.Payload,
    schedule: list[int | None],
    done: dict[int, dict[str, Any]],
    partial: trials.Partial,
    log: Any,
    offline: bool = False,
) -> dict[int, dict[str, Any]]:
    """Every trial's result: the runs of each rung on one Ray session, and between rungs
    successive halving's decisions (``halving``), from the scores alone. ``offline``: from
    ``done`` alone, ``_Missing`` if a trial must run."""
    from pipeline import cluster

    t, n = settings.tune, len(payload.configs)
    state = {trial: dict(result) for trial, result in done.items()}
    failed: dict[int, dict[str, Any]] = {}
    stopped_at: dict[int, int] = {}
    alive, first = list(range(n)), 0
    # One budget for the whole search: each rung runs on what the rungs before it left.
    deadline = None if t.time_budget is None else time.monotonic() + t.time_budget
    with contextlib.ExitStack() as stack:
        opened: list[tuple[Path, int]] = []

        def ray() -> tuple[Path, int]:
            """The Ray session (Ray's prints off stdout), started at the first run (a resumed
            search that has every result starts none): its folder and trials at a time."""
            if not opened:
                address, timeout = settings.ray_address, t.connect_timeout
                kept = "the finished trials are kept (`pipeline tune --resume` runs the rest)"
                stack.enter_context(cluster.prints_dropped(settings.log_level == "debug"))
                where = stack.enter_context(
                    cluster.session(address, connect_timeout=timeout, kept=kept)
                )
                storage = stack.enter_context(trials.experiment_dir())
                _check_cpus(where, t.cpus_per_trial)
                fits = max(1, where.fits(t.cpus_per_trial))  # Ray runs no more at once
                concurrency = min(t.concurrency, fits) if t.concurrency else fits
                log.info(
                    "tune.cluster", address=where.address, embedded=where.embedded,
                    nodes=where.nodes, cpus=where.cpus, concurrency=concurrency,
                    asked=t.concurrency or None,
                )  # fmt: skip
                opened.append((storage, concurrency))
            return opened[0]

        for rung, end in enumerate(schedule):
            span = None if end is None else (first, end)
            jobs = [trial for trial in alive if not _ran(state.get(trial), span)]
            if jobs and offline:
                raise _Missing
            if jobs:  # what is left once Ray is up: its start (5-10 s) is part of the budget
                storage, concurrency = ray()
                left = None if deadline is None else deadline - time.monotonic()
            if jobs and left is not None and left <= 0:
                failed |= {j: trials.failed(j, trials.BUDGET_UNSTARTED) for j in jobs}
            elif jobs:
                for result in trials.run(
                    settings, payload, jobs, span, concurrency, storage, f"rung{rung}",
                    partial.record, log, left,
                ).values():  # fmt: skip
                    if result["status"] == "ok":
                        trials.merge(state, result)
                    else:
                        failed[int(result["trial"])] = result
            alive = [trial for trial in alive if trial not in failed]
            if end is not None and end != schedule[-1]:
                keep = _halve(state, alive, end, payload.metric, t.reduction)
                stopped_at |= {trial: end for trial in alive if trial not in keep}
                log.info(
                    "tune.rung", rung=rung, folds=end, kept=keep,
                    stopped=[trial for trial in alive if trial not in keep],
                ) if not offline else None  # fmt: skip
                alive = keep
            first = end or 0
    return {
        trial: _final(state, failed, stopped_at, trial, schedule, payload.metric)
        for trial in range(n)
    }


def _halve(
    state: dict[int, dict[str, Any]], alive: list[int], end: int, metric: str, reduction: int
) -> list[int]:
    """Successive halving's decision after folds 0 to ``end - 1``: the trials kept, from their
    scores alone; trial 0, the current configuration, always goes on (so the winner is never
    worse than it on every fold)."""
    scores = {trial: _rung_score(state[trial], end, metric) for trial in alive}
    maximise = search.better(metric) == "max"
    keep = halving.survivors(scores, halving.kept(len(alive), reduction), maximise)
    return [0, *keep] if 0 in alive and 0 not in keep else keep


def _rung_score(known: dict[str, Any], end: int, metric: str) -> float | None:
    """A trial's score on folds 0 to ``end - 1``, which the rung compares: a resumed search
    may also hold a survivor's later folds, run before the interruption."""
    per_fold = {f: r for f, r in known["per_fold"].items() if int(f) < end}
    return search.fold_summary(per_fold)[0].get(metric)


def _ran(known: dict[str, Any] | None, span: tuple[int, int] | None) -> bool:
    """Whether a trial's stored results already cover ``span`` (the whole trial when None)."""
    if known is None:
        return False
    if span is None:
        return True
    return all(str(f) in known.get("per_fold", {}) for f in range(*span))


def _final(
    state: dict[int, dict[str, Any]],
    failed: dict[int, dict[str, Any]],
    stopped_at: dict[int, int],
    trial: int,
    schedule: list[int | None],
    metric: str,
) -> dict[str, Any]:
    """A trial's row of the trials table: its scores over the folds it ran; ``stopped`` when
    successive halving stopped it, and how many folds each trial ran (``folds``)."""
    if trial in failed:
        row = {k: failed[trial].get(k) for k in trials.RESULT_KEYS}
    elif trial not in state:
        row = trials.failed(trial, trials.BUDGET_UNSTARTED)
    else:
        known = state[trial]
        row = {k: known.get(k) for k in trials.RESULT_KEYS}
        row["score"] = known["metrics"].get(metric)
    if len(schedule) > 1:  # halving
        row["folds"] = len(state[trial].get("per_fold", {})) if trial in state else 0
        if trial in stopped_at and trial not in failed:
            row["status"] = "stopped"
    return row


def _rank(trials: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first: trials scored on every fold, then those successive halving stopped (the
    more folds the earlier), failed trials last; ties by trial number (never by finishing
    order)."""
    sign = -1.0 if search.better(metric) == "max" else 1.0
    order = {"ok": 0, "stopped": 1}

    def key(t: dict[str, Any]) -> tuple[int, int, float, int]:
        scored = t["status"] in order and t["score"] is not None
        return (
            order.get(t["status"], 2),
            -int(t.get("folds") or 0),
            sign * t["score"] if scored else 0.0,
            t["trial"],
        )

    return [{**t, "rank": r + 1} for r, t in enumerate(sorted(trials, key=key))]


# -- the record -------------------------------------------------------------------------------


def _write(
    store: Store,
    inputs: dict[str, Any],
    ranked: list[dict[str, Any]],
    winner: dict[str, Any],
    metric: str,
    seconds: float,
) -> str:
    """Write the tune result under its content id: what it covers is deterministic; the
    seconds each trial took are recorded beside it, not hashed."""
    covered = [{k: v for k, v in t.items() if k != "seconds"} for t in ranked]
    files = {
        "trials.json": canonical_json(covered),
        "winner.json": canonical_json({"metric": metric, **_winner_fields(winner)}),
        "inputs.json": canonical_json(inputs),
    }
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    tid = hashlib.sha256(canonical_json(digests)).hexdigest()
    files["run.json"] = canonical_json(
        {"seconds": round(seconds, 3), "trial_seconds": {t["trial"]: t["seconds"] for t in ranked}}
    )
    manifest = {
        "kind": "tune",
        "tune_id": tid,
        "format": FORMAT,
        "id_covers": sorted(digests),
        "files": {
            n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
            for n, d in sorted(files.items())
        },
    }
    artifacts.publish(store, f"tunes/{tid}", files, manifest, (LATEST, tid))
    return tid


def _winner_fields(winner: dict[str, Any]) -> dict[str, Any]:
    return {k: winner[k] for k in ("trial", "score", "config")}


def load(store: Store, ref: str | None) -> tuple[str, dict[str, Any]]:
    """A tune result by id, unique prefix or latest: (id, {file name: parsed JSON}), verified
    against its manifest and its id."""
    tid = artifacts.resolve_in(store, "tunes", ref, LATEST, "tune", "pipeline tune")
    files = artifacts.read_verified(store, "tunes", tid, "tune", "run `pipeline tune` again")
    manifest = json.loads(files.pop("manifest.json"))
    covered = {n: manifest["files"][n]["sha256"] for n in manifest.get("id_covers", [])}
    if not covered or hashlib.sha256(canonical_json(covered)).hexdigest() != tid:
        raise IntegrityError(f"tune {tid} does not hash to its id: the tune was modified")
    return tid, {name: json.loads(data) for name, data in files.items()}


# -- the winner as a preset ------------------------------------------------------------------


def _check_cpus(where: Any, cpus_per_trial: int) -> None:
    """ConfigError when no node has the CPUs one trial needs: it would wait forever."""
    if where.fits(cpus_per_trial) >= 1:
        return
    has = (
        f"this machine has {where.cpus} (Ray runs embedded): lower it, or set RAY_ADDRESS"
        if where.embedded
        else f"the Ray cluster has {where.cpus}: lower it, or use a larger cluster"
        if where.cpus < cpus_per_trial
        else f"the largest node of the Ray cluster has {where.largest()} (of {where.cpus} in "
        "all), and a trial runs on one node: lower it, or add a larger node"
    )
    what = f"PIPELINE_TUNE__CPUS_PER_TRIAL={cpus_per_trial} needs that many CPUs for one trial"
    raise ConfigError(f"{what}, and {has}")


def write_preset(
    path: Path, settings: Settings, winner: dict[str, Any], tid: str, metric: str
) -> None:
    """The winning recipe as a preset: ``PIPELINE_PRESET=<path> pipeline train`` builds it."""
    from pipeline.store import write_output

    chosen = search.apply(settings, winner["config"])
    recipe, public = chosen.build_config(), chosen.public()
    model = public["model"]
    recipe["model"] = {"name": model["name"], "version": model["version"], **recipe["model"]}
    # The data as the user gave it (a sha256 pin kept, which the build config leaves out): it
    # trains to the same build config, so to the same build id.
    recipe["data"] = public["data"]
    header = [
        f"# Written by `pipeline tune`: tune {tid}, trial {winner['trial']} of the search,",
        f"# {metric} {winner['score']:.6g} on the training rows. Train it with",
        f"#   PIPELINE_PRESET={path} pipeline train",
    ]
    if recipe["data"]["source"] != settings.data.source:  # credentials: never written
        header.append("# with PIPELINE_DATA__SOURCE set: its credentials are masked (***) here")
    text = "\n".join(header) + "\n" + preset_toml(recipe)
    write_output(path, text.encode(), "choose another --preset-out path")
