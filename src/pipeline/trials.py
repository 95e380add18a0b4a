"""`pipeline tune`'s trials on Ray Tune: one run of some trials (whole, or on some folds) in an
open Ray session, every result told to the driver as it arrives.

Ray Tune is only the engine: a grid over trial numbers, a retry for a worker that died, warm
(reused) workers. Which trials run, on which folds, and what is made of their results is
``tune``'s and ``halving``'s business, decided from results only.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline import scratch, search
from pipeline.errors import NotFoundError
from pipeline.settings import Settings
from pipeline.store import Store, canonical_json

RESULT_KEYS = ("trial", "status", "score", "metrics", "epochs", "seconds", "error")
# A trial whose worker dies while it runs is run again, at most this many times.
MAX_FAILURES = 2


def run(
    settings: Settings,
    payload: search.Payload,
    trials: list[int],
    span: tuple[int, int] | None,
    concurrency: int,
    storage: Path,
    name: str,
    record: Callable[[dict[str, Any]], None],
    log: Any,
    budget: float | None = None,
) -> dict[int, dict[str, Any]]:
    """Run ``trials`` (on the folds ``span``, or whole) on Ray Tune, in the session open;
    every result, failures included, by trial; ``record`` gets each finished one. ``budget``:
    the seconds left of PIPELINE_TUNE__TIME_BUDGET (None: no limit)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/TensorBoard files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the reporter that verbose=0 silences
    # Ctrl-C stops the command (exit 130; --resume continues), not only Tune's loop, which
    # would otherwise return as if the search were done.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    from ray import tune
    from tqdm import tqdm

    results: dict[int, dict[str, Any]] = {}
    # A bar on a terminal only; it goes to stderr (stdout is the event stream) and is cleared.
    bar = tqdm(total=len(trials), desc="tune", unit="trial", file=sys.stderr,
               disable=not sys.stderr.isatty(), leave=False)  # fmt: skip
    # With halving, each run is one trial on some folds: its event names them by number from 0
    # ([1, 2]: folds 1 and 2; it gave the span, [1, 3], which read as folds 1 and 3).
    folds = {} if span is None or settings.tune.scheduler == "none" else {"folds": [*range(*span)]}

    def finished(result: dict[str, Any]) -> None:
        results[int(result["trial"])] = result
        bar.update(1)
        if result["status"] == "ok":
            record(result)
        log.info(
            "tune.trial", **{k: result.get(k) for k in ("trial", "status", "score", "epochs",
                                                        "seconds", "error")},
            **folds,
            config=payload.configs[int(result["trial"])], done=len(results), of=len(trials),
        )  # fmt: skip

    started: set[int] = set()

    class Recorder(tune.Callback):
        """Told in the driver of each trial's start, and of its one report as it finishes."""

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **_: Any) -> None:
            started.add(int(trial.config["trial"]))

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[Any, Any], **_: Any
        ) -> None:
            finished({k: result[k] for k in (*RESULT_KEYS, "per_fold") if k in result})

        def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **_: Any) -> None:
            _retried(log, trial, folds)  # its worker died while it ran: Ray runs it again

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **_: Any) -> None:
            # Its retries spent (a worker that died twice): recorded failed, the search goes on.
            number = int(trial.config["trial"])
            if number not in results:
                finished(failed(number, _trial_error(trial)))

    tuner = _tuner(payload, trials, span, concurrency, storage, name, Recorder(), settings, budget)
    # Tune prints tables to stdout and logs each failed trial's traceback: the events carry
    # both (a tune.trial with its error); PIPELINE_LOG_LEVEL=debug shows Ray's own.
    try:
        _fit(tuner, quiet=settings.log_level != "debug")
    finally:
        bar.close()
    for number in trials:  # what the time budget cut: Ray Tune stops the trials still running
        if number not in results:
            finished(failed(number, BUDGET_CUT if number in started else BUDGET_UNSTARTED))
    return results


# A trial's error when PIPELINE_TUNE__TIME_BUDGET ran out while it ran, or before it started.
BUDGET_CUT = "stopped: PIPELINE_TUNE__TIME_BUDGET ran out while it ran"
BUDGET_UNSTARTED = "not run: PIPELINE_TUNE__TIME_BUDGET ran out before it started"


def _fit(tuner: Any, quiet: bool) -> None:
    """``tuner.fit()`` with stdout kept for events and, when ``quiet``, Ray Tune's own log off."""
    from pipeline.cluster import exception_chain

    ray_tune_log = logging.getLogger("ray.tune")
    level = ray_tune_log.level
    if quiet:
        ray_tune_log.setLevel(logging.CRITICAL)
    try:
        tuner.fit()  # Ray's prints: `cluster.prints_dropped`, for the whole session
    except Exception as exc:
        # An event written to a stdout whose reader went away (`pipeline tune | head`), inside
        # Tune's callback, comes out wrapped in a TuneError: the CLI's exit 141, not a traceback.
        if any(isinstance(e, BrokenPipeError) for e in exception_chain(exc)):
            raise BrokenPipeError(32, "stdout's reader went away") from None
        raise
    finally:
        ray_tune_log.setLevel(level)


def _tuner(payload: search.Payload, trials: list[int], span: tuple[int, int] | None,
           concurrency: int, storage: Path, name: str, recorder: Any, settings: Settings,
           budget: float | None) -> Any:  # fmt: skip
    """The Ray Tune run of ``trials``, one grid point each, reporting to ``recorder``."""
    from ray import tune

    t = settings.tune
    trainable = tune.with_resources(
        tune.with_parameters(search.trainable, payload=payload), {"cpu": t.cpus_per_trial}
    )
    space: dict[str, Any] = {"trial": tune.grid_search(trials)}
    if span is not None:
        space["folds"] = list(span)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency,
            time_budget_s=budget,
            reuse_actors=True,  # warm workers: no Python start and imports per trial
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            verbose=0,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        ),
    )


def _retried(log: Any, trial: Any, folds: dict[str, Any]) -> None:
    """The warning for a trial whose worker died while it ran (killed, out of memory): Ray
    runs it again, up to ``MAX_FAILURES`` times."""
    log.warning(
        "tune.trial_retried", trial=int(trial.config["trial"]), **folds,
        failures=int(getattr(trial, "num_failures", 1)), of=MAX_FAILURES,
        error=_trial_error(trial),
    )  # fmt: skip


def failed(trial: int, error: str) -> dict[str, Any]:
    """A failed trial's result."""
    return {"trial": trial, "status": "failed", "score": None, "metrics": {}, "epochs": 0,
            "seconds": 0.0, "error": error}  # fmt: skip


def _trial_error(trial: Any) -> str:
    """A failed trial's error as one line (Ray keeps it in the trial's storage)."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
        local = Path(str(getattr(trial, "error_file", "") or ""))
        if error is None and local.is_file():  # a retry's: written here, not yet in storage
            return failure_text(local.read_text(errors="replace")) or WORKER_FAILED
    except Exception:  # the message is all we want here; without it the trial still failed
        error = None
    return one_line(error) if error is not None else WORKER_FAILED


WORKER_FAILED = "the trial's worker failed"


@contextlib.contextmanager
def experiment_dir() -> Iterator[Path]:
    """A private folder for Ray Tune's own experiment state (removed afterwards)."""
    with scratch.folder("pipeline-tune-") as path:
        yield path


def one_line(error: BaseException) -> str:
    """The root cause of a trial's failure as one line (not Ray's wrapper and traceback)."""
    cause = getattr(error, "cause", None) or error
    return _clipped(" ".join(f"{type(cause).__name__}: {cause}".split()))


def failure_text(record: str) -> str:
    """The last failure of a Ray error file as one line: its message, without Ray's header
    (``Failure # N (occurred at ...)``), the ``ray::ImplicitFunc.train()`` line, the traceback
    (``Traceback``, indented frames, ``^^^^`` marks) or terminal colours, which the
    ``tune.trial_retried`` warning carried."""
    last = _ANSI.sub("", record.rsplit("Failure #", 1)[-1].split("\n", 1)[-1])
    kept = [
        line.strip()
        for line in last.splitlines()
        if line.strip() and not line[:1].isspace()
        and not line.startswith(("ray::", "Traceback", "^"))
    ]  # fmt: skip
    return _clipped(" ".join(" ".join(kept).split()))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _clipped(text: str) -> str:
    """At most 300 characters of a trial's error, an ellipsis where it was cut (terminal
    colours removed)."""
    text = _ANSI.sub("", text)
    return (text[:300] + "…") if len(text) > 300 else text


class Partial:
    """Finished runs of an unfinished search (a trial's folds, or the trial), one file each,
    keyed by the search's inputs."""

    def __init__(self, store: Store, inputs: dict[str, Any]) -> None:
        self.store = store
        self.prefix = "tune-partial/" + hashlib.sha256(canonical_json(inputs)).hexdigest()[:32]

    def load(self, log: Any) -> dict[int, dict[str, Any]]:
        """What an interrupted run of this very search finished, by trial, its folds merged
        (failed runs run again); NotFoundError when none was interrupted (as `train --resume`
        without a checkpoint: starting over is the user's call, not a warning's)."""
        if not self.store.exists(self.prefix):
            mine = self.prefix.rsplit("/", 1)[1]
            others = [n for n in self.store.list("tune-partial") if n != mine]
            raise NotFoundError(
                f"no interrupted search with these data, settings, seed and --trials in store "
                f"{self.store.uri} to resume"
                + (f" ({len(others)} other interrupted search(es) in tune-partial/: resume one "
                   "with the settings, seed and --trials it was started with)" if others else "")
                + "; run `pipeline tune` without --resume"
            )  # fmt: skip
        done: dict[int, dict[str, Any]] = {}
        for name in sorted(self.store.list(self.prefix)):
            key = f"{self.prefix}/{name}"
            try:
                result = _verified(self.store.read_json(key), name)
                merged = copy.deepcopy(done)  # kept only if the whole record merges
                merge(merged, result)
                done = merged
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # A damaged record (cut short, edited, of an earlier version) is work to do
                # again, as if never finished. Runs are deterministic, so the result holds.
                log.warning(
                    "tune.resume_record_damaged", key=key,
                    message=f"{key} in store {self.store.uri} is not a finished run's result "
                    f"({_reason(exc)}): that run is repeated",
                )  # fmt: skip
        if not done:
            log.warning("tune.resume", message="no finished trial of this search to resume")
        return done

    def clear(self) -> dict[int, dict[str, Any]]:
        self.discard()
        return {}

    def record(self, result: dict[str, Any]) -> None:
        """Keep a finished run's result, with the sha256 of its canonical JSON (``load``
        checks it, as the store checks a build's files against its manifest)."""
        kept = json.loads(canonical_json(result))  # as it reads back: the digest's input
        kept[DIGEST] = _digest(kept)
        self.store.write_json(f"{self.prefix}/{_record_name(kept)}", kept)

    def discard(self) -> None:
        self.store.delete_all(self.prefix)


# A kept record's field holding the sha256 of the canonical JSON of the rest of it.
DIGEST = "sha256"


def _digest(result: dict[str, Any]) -> str:
    return hashlib.sha256(
        canonical_json({k: v for k, v in result.items() if k != DIGEST})
    ).hexdigest()


def _record_name(result: dict[str, Any]) -> str:
    """The file a run's result is kept in: its trial and its first fold (0 when whole)."""
    first = min((int(f) for f in result.get("per_fold", {})), default=0)
    return f"{int(result['trial']):05d}-{first:02d}.json"


def _verified(record: Any, name: str) -> dict[str, Any]:
    """The finished run's result kept in file ``name``, its digest removed; ValueError or
    TypeError (the reason) unless its content is what was written there: its digest matches
    (a record of an earlier version has none: it is run again), it is an ok run's result of
    the shape a run reports, and it is kept under its own trial's and fold's name."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    if not isinstance(record.get(DIGEST), str):
        raise ValueError(f"no {DIGEST} of its content: written by an earlier version or edited")
    if record[DIGEST] != _digest(record):
        raise ValueError(f"its content does not match its {DIGEST}: edited or damaged")
    result = {k: v for k, v in record.items() if k != DIGEST}
    number: tuple[type, ...] = (int, float)
    shapes: dict[str, tuple[type, ...]] = {
        "trial": (int,), "score": number, "metrics": (dict,), "epochs": (int,), "seconds": number,
    }  # fmt: skip
    wrong = [k for k, t in shapes.items() if isinstance(result.get(k), bool)
             or not isinstance(result.get(k), t)]  # fmt: skip
    if wrong or result.get("status") != "ok":
        raise ValueError(f"not an ok run's result: {', '.join(wrong) or 'status'}")
    folds = result.get("per_fold", {})
    if not isinstance(folds, dict) or not all(
        isinstance(f, str) and f.isdigit() and isinstance(r, dict) for f, r in folds.items()
    ):
        raise ValueError("its per_fold is not each fold's result by number")
    if _record_name(result) != name:
        raise ValueError(f"it is the result of another run ({_record_name(result)})")
    return result


def _reason(exc: Exception) -> str:
    """Why a kept record was refused, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return "not JSON: cut short or damaged"
    return str(exc) if isinstance(exc, ValueError | TypeError) else f"{type(exc).__name__}: {exc}"


def merge(state: dict[int, dict[str, Any]], result: dict[str, Any]) -> None:
    """A run's result into its trial's: folds added (cv), or the result itself."""
    trial = int(result["trial"])
    if "per_fold" not in result or trial not in state:
        state[trial] = dict(result)
        return
    known = state[trial]
    known["per_fold"] = {**known["per_fold"], **result["per_fold"]}
    known["seconds"] = round(known["seconds"] + result["seconds"], 3)
    metrics, epochs = search.fold_summary(known["per_fold"])
    known.update(metrics=metrics, epochs=epochs)
