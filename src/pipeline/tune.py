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

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import __version__, artifacts, search
from pipeline.errors import IntegrityError, Interrupted, TrialsFailed
from pipeline.prepare import Prepared, prepare
from pipeline.settings import Settings
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
    trials: int | None = None,
    resume: bool = False,
    preset_out: Path | None = None,
) -> TuneResult:
    """The whole search: prepare, draw, run on Ray, rank, record; see the module docstring."""
    t0 = time.perf_counter()
    n = trials or settings.tune.trials
    data = prepare(settings, store, log)
    metric = search.metric_for(settings, data.schema.task, data.schema.target_transform)
    folds = search.folds_for(settings, len(data.split.train) + len(data.split.val))
    configs = search.trial_configs(settings, n)
    inputs = _inputs(settings, data, metric, folds, configs)
    partial = _Partial(store, inputs)
    done = partial.load(log) if resume else partial.clear()
    todo = [i for i in range(n) if i not in done]
    log.info(
        "tune.start", trials=n, to_run=len(todo), resumed=len(done), metric=metric,
        scoring="validation" if folds is None else f"{folds}-fold cv",
        space=sorted(settings.tune.space),
    )  # fmt: skip
    payload = _payload(settings, data, metric, folds, configs)
    results = dict(done)
    if todo:
        try:
            results.update(_run_on_ray(settings, store, payload, todo, partial, log))
        except KeyboardInterrupt:
            kept = len(partial.load(log)) if store.list(partial.prefix) else 0
            raise Interrupted(
                f"tune interrupted: {kept} finished trial(s) of {n} are kept; `pipeline tune "
                "--resume` with the same settings runs the rest"
            ) from None
    ranked = _rank([results[i] | {"config": configs[i]} for i in range(n)], metric)
    winner = next((t for t in ranked if t["status"] == "ok"), None)
    if winner is None:
        first = next(t for t in ranked if t.get("error"))
        raise TrialsFailed(
            f"all {n} trials failed; the first (trial {first['trial']}): {first['error']}"
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
        baseline=results[0].get("score"),
        config=winner["config"],
        trials=n,
        failed=sum(t["status"] != "ok" for t in ranked),
        preset=str(preset_out) if preset_out else None,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return TuneResult(tid, ranked, winner)


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
        "recipe": settings.build_config(),
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


class _Partial:
    """Trial results of an unfinished search, one file each, keyed by the search's inputs."""

    def __init__(self, store: Store, inputs: dict[str, Any]) -> None:
        self.store = store
        self.prefix = "tune-partial/" + hashlib.sha256(canonical_json(inputs)).hexdigest()[:32]

    def load(self, log: Any) -> dict[int, dict[str, Any]]:
        """Finished trials of an interrupted run of this very search (failed ones run again)."""
        done = {}
        for name in self.store.list(self.prefix):
            result = self.store.read_json(f"{self.prefix}/{name}")
            if isinstance(result, dict) and result.get("status") == "ok":
                done[int(result["trial"])] = result
        if not done:
            log.warning("tune.resume", message="no finished trial of this search to resume")
        return done

    def clear(self) -> dict[int, dict[str, Any]]:
        self.discard()
        return {}

    def record(self, result: dict[str, Any]) -> None:
        self.store.write_json(f"{self.prefix}/{int(result['trial']):05d}.json", result)

    def discard(self) -> None:
        for name in self.store.list(self.prefix):
            self.store.delete(f"{self.prefix}/{name}")


def _run_on_ray(
    settings: Settings,
    store: Store,
    payload: search.Payload,
    todo: list[int],
    partial: _Partial,
    log: Any,
) -> dict[int, dict[str, Any]]:
    """Run the trials ``todo`` on Ray Tune; every result, failures included, by trial."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/TensorBoard files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the reporter that verbose=0 silences
    # Ctrl-C stops the command (exit 130; --resume continues), not only Tune's loop, which
    # would otherwise return as if the search were done.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    from ray import tune
    from tqdm import tqdm

    from pipeline import cluster
    from pipeline import log as logging_

    t = settings.tune
    results: dict[int, dict[str, Any]] = {}
    # A bar on a terminal only; it goes to stderr (stdout is the event stream) and is cleared.
    bar = tqdm(total=len(todo), desc="tune", unit="trial", file=sys.stderr,
               disable=not sys.stderr.isatty(), leave=False)  # fmt: skip

    def finished(result: dict[str, Any]) -> None:
        results[int(result["trial"])] = result
        bar.update(1)
        if result["status"] == "ok":
            partial.record(result)
        log.info(
            "tune.trial", **{k: result.get(k) for k in ("trial", "status", "score", "epochs",
                                                        "seconds", "error")},
            config=payload.configs[int(result["trial"])], done=len(results), of=len(todo),
        )  # fmt: skip

    class Recorder(tune.Callback):
        """Told in the driver of each trial's one report, as trials finish."""

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[Any, Any], **_: Any
        ) -> None:
            finished({k: result.get(k) for k in _RESULT_KEYS})

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **_: Any) -> None:
            # Its retries spent (a worker that died twice): recorded failed, the search goes on.
            number = int(trial.config["trial"])
            if number not in results:
                finished(_failed(number, _trial_error(trial)))

    with (
        cluster.session(address=settings.ray_address, connect_timeout=t.connect_timeout) as where,
        _experiment_dir() as storage,
    ):
        concurrency = t.concurrency or max(1, where.cpus // t.cpus_per_trial)
        log.info(
            "tune.cluster", address=where.address, embedded=where.embedded, nodes=where.nodes,
            cpus=where.cpus, concurrency=concurrency,
        )  # fmt: skip
        tuner = _tuner(settings, payload, todo, concurrency, storage, Recorder())
        # Tune prints tables to stdout and logs each failed trial's traceback: the events
        # carry both (a tune.trial with its error); PIPELINE_LOG_LEVEL=debug shows Ray's own.
        quiet = settings.log_level != "debug"
        ray_tune_log = logging.getLogger("ray.tune")
        level = ray_tune_log.level
        if quiet:
            ray_tune_log.setLevel(logging.CRITICAL)
        try:
            with logging_.stdout_for_events_only():
                tuner.fit()
        finally:
            ray_tune_log.setLevel(level)
            bar.close()
        for number in todo:
            if number not in results:  # never started: the time budget ran out first
                finished(_failed(number, "not run (PIPELINE_TUNE__TIME_BUDGET ran out)"))
    return results


def _tuner(settings: Settings, payload: search.Payload, todo: list[int], concurrency: int,
           storage: Path, recorder: Any) -> Any:  # fmt: skip
    """The Ray Tune run of the trials ``todo``, one grid point each, reporting to ``recorder``."""
    from ray import tune

    t = settings.tune
    trainable = tune.with_resources(
        tune.with_parameters(search.trainable, payload=payload), {"cpu": t.cpus_per_trial}
    )
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency,
            time_budget_s=t.time_budget,
            reuse_actors=True,  # warm workers: no Python start and imports per trial
        ),
        run_config=tune.RunConfig(
            name="search",
            storage_path=str(storage),
            verbose=0,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )


def _failed(trial: int, error: str) -> dict[str, Any]:
    return {"trial": trial, "status": "failed", "score": None, "metrics": {}, "epochs": 0,
            "seconds": 0.0, "error": error}  # fmt: skip


def _trial_error(trial: Any) -> str:
    """A failed trial's error as one line (Ray keeps it in the trial's storage)."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # the message is all we want here; without it the trial still failed
        error = None
    return _one_line(error) if error is not None else "the trial's worker failed"


_RESULT_KEYS = ("trial", "status", "score", "metrics", "epochs", "seconds", "error")


def _experiment_dir() -> Any:
    """A private folder for Ray Tune's own experiment state (removed afterwards)."""
    import tempfile

    return _TempPath(tempfile.mkdtemp(prefix="pipeline-tune-"))


class _TempPath:
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *_: Any) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def _one_line(error: BaseException) -> str:
    """The root cause of a trial's failure as one line (not Ray's wrapper and traceback)."""
    cause = getattr(error, "cause", None) or error
    text = " ".join(f"{type(cause).__name__}: {cause}".split())
    return (text[:300] + "…") if len(text) > 300 else text


def _rank(trials: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first; failed trials last; ties by trial number (never by finishing order)."""
    sign = -1.0 if search.better(metric) == "max" else 1.0

    def key(t: dict[str, Any]) -> tuple[int, float, int]:
        ok = t["status"] == "ok"
        return (0 if ok else 1, sign * t["score"] if ok else 0.0, t["trial"])

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


def write_preset(
    path: Path, settings: Settings, winner: dict[str, Any], tid: str, metric: str
) -> None:
    """The winning recipe as a preset: ``PIPELINE_PRESET=<path> pipeline train`` builds it."""
    from pipeline.store import atomic_write_bytes

    chosen = search.apply(settings, winner["config"])
    recipe = chosen.build_config()
    model = chosen.public()["model"]
    recipe["model"] = {"name": model["name"], "version": model["version"], **recipe["model"]}
    header = [
        f"# Written by `pipeline tune`: tune {tid}, trial {winner['trial']} of the search,",
        f"# {metric} {winner['score']:.6g} on the training rows. Train it with",
        f"#   PIPELINE_PRESET={path} pipeline train",
    ]
    text = "\n".join(header) + "\n" + to_toml(recipe)
    atomic_write_bytes(path, text.encode(), "choose another --preset-out path")


def to_toml(tree: dict[str, Any]) -> str:
    """A settings tree as TOML: top-level values first, then one table per section."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if not isinstance(v, dict)]
    for section, values in tree.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")
