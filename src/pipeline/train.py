"""The training stage, step by step as the README's "What training does" tells it.

1. split the rows (``prepare``), 2. fit preprocessing on the training rows, 3. train with early
stopping on the validation rows, 4. refit on train + validation for the chosen epoch count,
5. test once, then write the build. The pieces live in the library (``prepare``, ``features``,
``fit``, ``checkpoints``, ``artifacts``); this module only puts them in order, reports progress
and turns a stop signal into a checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import artifacts, curves, features, metrics
from pipeline.errors import Interrupted, OutputClosed
from pipeline.log import EpochProgress
from pipeline.prepare import Prepared, prepare, say_idle
from pipeline.settings import Settings
from pipeline.store import Store, canonical_json

if TYPE_CHECKING:  # torch comes with these: imported once the data has been read (see run)
    from pipeline import bagging, fit, linear
    from pipeline.checkpoints import Checkpoints
    from pipeline.model import TabularMLP


@dataclass(frozen=True)
class TrainResult:
    """What `pipeline train` produced."""

    build_id: str
    metrics: dict[str, Any]
    best_epoch: int
    epochs: int


@dataclass
class _Trained:
    """The selection run (epoch count, validation metrics) and the final network."""

    selected: fit.Fitted
    final: TabularMLP
    refit_history: list[dict[str, Any]]
    seconds: float
    bagged: bagging.Run | None = None  # K-fold bagging's run, in place of select-then-refit


def run(settings: Settings, store: Store, log: Any, *, resume: bool = False) -> TrainResult:
    """The whole build stage: fetch, read, infer, split, fit, test, write the build.

    With ``resume``, continue from the checkpoint an interrupted run with the same inputs left.
    With ``train.workers`` set, steps 2 to 4 run on Ray (``distributed_fit``): Ray tasks read
    and fit the input columns, Ray Train's workers train.
    """
    started_at, t0 = datetime.now(UTC), time.perf_counter()
    if settings.train.device != "cpu":  # a CUDA device asked for and absent: before any data
        _runtime(settings)
    if settings.train.workers is None:
        # 1. split. A mistake in the data is refused before torch is imported: in under a second.
        data = prepare(settings, store, log)
        rt = _runtime(settings)
        # 2. preprocess: every statistic is fitted on the training rows only
        # A column of the training rows at a time, not a copy of the frame's training rows
        pre = features.fit(
            features.RowsOf(data.frame, data.split.train), data.schema, settings.features,
            data.label,
        )  # fmt: skip
        say_idle(pre, data, settings.features.min_frequency, log)
        from pipeline.tensors import encode_all

        tensors = encode_all(data, pre, rt["device"])
        laid = _Laid(data, pre, tensors.select, rt)
        return _built(settings, store, log, laid, resume, started_at, t0)
    from pipeline import bagging, distributed_fit
    from pipeline.distributed_fit.columns import lay_out

    data = prepare(settings, store, log, target_only=True)  # the target column alone
    bagging.say_unbagged(settings, len(data.split.train) + len(data.split.val), log)
    rt = _runtime(settings)
    # A missing checkpoint is said before Ray starts (its key needs the split, not the columns).
    ck = _checkpoints(store, data, settings).load(log) if resume else None
    with distributed_fit.connected(settings, log) as connection:
        on_ray = lay_out(settings, data, connection, rt["device"], log)
        laid = _Laid(on_ray.data, on_ray.pre, on_ray.part, rt, (connection, on_ray.parts, ck))
        return _built(settings, store, log, laid, resume, started_at, t0)


@dataclass
class _Laid:
    """The data ready to train on: the rows of a part of the split as tensors (``part``), and
    on Ray the session and each worker's rows."""

    data: Prepared
    pre: features.Preprocessor
    part: Callable[[np.ndarray], Any]  # fit.Tensors; on Ray, maybe tensors.Elsewhere
    rt: dict[str, Any]
    on_ray: tuple[Any, list[Any], dict[str, Any] | None] | None = None  # session, parts, ck


def _built(
    settings: Settings,
    store: Store,
    log: Any,
    laid: _Laid,
    resume: bool,
    started_at: datetime,
    t0: float,
) -> TrainResult:
    """Steps 3 to 5 and the build's files, on the laid-out data."""
    from pipeline import fit
    from pipeline.checkpoints import Checkpoints
    from pipeline.signals import finishing

    data, pre, part, rt = laid.data, laid.pre, laid.part, laid.rt
    inputs = artifacts.build_inputs(data, settings.seed)
    checkpoints = Checkpoints.of_run(store, inputs, settings, data.resolved)
    # 3. train with early stopping, 4. refit on train + validation
    if laid.on_ray is None:
        trained = _train(settings, data, pre, part, rt["device"], checkpoints, log, resume)
    else:
        trained = _train_on_ray(settings, data, pre, laid.on_ray, rt["device"], checkpoints, log)
    with finishing(log, "train", "training is done: writing the build first"):
        bid, blend, result_metrics = _finish(settings, store, laid, trained, inputs, started_at, t0)
    checkpoints.discard()
    split = data.split
    rows_seen = len(split.train) * len(trained.selected.history)
    rows_seen += (len(split.train) + len(split.val)) * len(trained.refit_history)
    if (bagged := trained.bagged) is not None:
        rows_seen = bagged.rows_seen()
    if (warning := metrics.one_class(result_metrics["test"], "test rows")) is not None:
        log.warning("train.warning", message=warning)
    fitted_on = len(split.train) + (
        len(split.val) if settings.train.refit or bagged is not None else 0
    )
    if (warning := fit.ridge_too_large(settings, pre, fitted_on)) is not None:
        log.warning("train.warning", linear=None, message=warning)
    log.info(
        "train.summary",
        build_id=bid,
        task=data.schema.task,
        epochs=len(trained.selected.history),
        best_epoch=trained.selected.best_epoch,
        stopped_early=trained.selected.stopped_early,
        ridge_share=None if blend is None else round(1.0 - blend.weight, 6),
        bag_folds=None if bagged is None else len(bagged.folds),
        validation=metrics.bounded(result_metrics["validation"]),
        test=metrics.bounded(result_metrics["test"]),
        train_seconds=round(trained.seconds, 3),
        rows_per_second=round(rows_seen / trained.seconds) if trained.seconds > 0 else None,
        seconds=round(time.perf_counter() - t0, 3),
        **rt,
    )
    selected = trained.selected
    return TrainResult(bid, result_metrics, selected.best_epoch, len(selected.history))


def _finish(
    settings: Settings,
    store: Store,
    laid: _Laid,
    trained: _Trained,
    inputs: dict[str, Any],
    started_at: datetime,
    t0: float,
) -> tuple[str, Any, dict[str, Any]]:
    """Steps 3b and 5 after training: the ridge blend, the validation and test metrics, the
    build written; its id, the blend and the metrics."""
    from pipeline import fit

    data, pre, part, rt = laid.data, laid.pre, laid.part, laid.rt
    # 3b. a linear model beside the network, blended in when the validation rows say so
    blend = _blend(settings, data, trained, part, pre)
    if (bagged := trained.bagged) is not None:  # validation: each row from the fold held out
        validation = bagged.validation(part, pre.target)
    else:
        validation = fit.evaluate_rows(trained.selected.model, part(data.split.val), pre.target)
    # 5. test once, on rows no decision has seen
    test, test_curves = curves.of_test(trained.final, part(data.split.test), pre.target)
    result_metrics: dict[str, Any] = {
        "task": data.schema.task,
        "best_epoch": trained.selected.best_epoch,
        "refit": settings.train.refit and bagged is None,
        "bagging": None if bagged is None else bagged.to_json(),
        "linear": None if blend is None else blend.to_json(),
        "validation": validation,
        "test": test,
    }
    files = _build_files(settings, data, pre, trained, result_metrics)
    files.update({curves.file_name(k): canonical_json(v) for k, v in test_curves.items()})
    files["run.json"] = canonical_json(
        {
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "seconds": round(time.perf_counter() - t0, 3),
            "train_seconds": round(trained.seconds, 3),
        }
    )
    files["environment"] = canonical_json(artifacts.environment(rt))
    bid = artifacts.write_build(store, files, inputs)
    return bid, blend, result_metrics


def _blend(
    settings: Settings,
    data: Prepared,
    trained: _Trained,
    part: Callable[[np.ndarray], fit.Tensors],
    pre: features.Preprocessor,
) -> linear.Blend | None:
    """``fit.blend_linear`` on the selection network (chosen on the validation rows) and, after
    a refit, the final one; None when ``model.linear_blend`` is off or the design too large."""
    from pipeline import fit

    split = data.split
    if trained.bagged is not None:
        return trained.bagged.blended(part, pre) if settings.model.linear_blend else None
    # Said before any row is asked for: on Ray, the driver holds the training rows only then.
    if not fit.ridge_fitted(settings, pre, split):
        return None
    refit = None
    if settings.train.refit:
        rows = np.sort(np.concatenate([split.train, split.val]))
        refit = (trained.final, part(rows))
    train, val = part(split.train), part(split.val)
    return fit.blend_linear(trained.selected.model, train, val, pre, refit)


def _runtime(settings: Settings) -> dict[str, Any]:
    """torch set up for training (deterministic, its threads, the device): what was chosen."""
    from pipeline import runtime

    return runtime.configure_for(settings, settings.train.batch_size)


def _checkpoints(store: Store, data: Prepared, settings: Settings) -> Checkpoints:
    """Where this run's checkpoints go: keyed by its inputs and build config."""
    from pipeline.checkpoints import Checkpoints

    return Checkpoints.of_run(
        store, artifacts.build_inputs(data, settings.seed), settings, data.resolved
    )


def _build_files(
    settings: Settings,
    data: Prepared,
    pre: features.Preprocessor,
    trained: _Trained,
    result_metrics: dict[str, Any],
) -> dict[str, bytes]:
    """The model files of the build (``artifacts.ID_FILES``), as canonical bytes."""
    state = {k: v.detach().cpu() for k, v in trained.final.state_dict().items()}
    history = {"selection": trained.selected.history, "refit": trained.refit_history}
    if trained.bagged is not None:  # every fold's curve; the selection shown is the first's
        history["folds"] = trained.bagged.bagged.histories  # type: ignore[assignment]
    return {
        "weights.pt": artifacts.weights_bytes(state),
        "model.json": canonical_json(trained.final.cfg.to_json()),
        "preprocessing.json": canonical_json(pre.to_json()),
        "schema.json": canonical_json(data.schema.to_json()),
        "history.json": canonical_json(history),
        "metrics.json": canonical_json(result_metrics),
        "config.json": canonical_json(settings.build_config(resolved=data.resolved)),
    }


def _train(
    settings: Settings,
    data: Prepared,
    pre: features.Preprocessor,
    part: Callable[[np.ndarray], fit.Tensors],
    device: str,
    checkpoints: Checkpoints,
    log: Any,
    resume: bool,
) -> _Trained:
    """Steps 3 and 4: select the epoch count with early stopping, then refit (or, on a small
    table, bag: ``_bagged``).

    A stop signal in either phase saves a checkpoint and raises ``Interrupted``; a resumed run
    continues in the phase it was stopped in and ends with the same weights.
    """
    from pipeline import bagging, fit
    from pipeline.model import TabularMLP

    ck = checkpoints.load(log) if resume else None
    if bagging.folds_for(settings, len(data.split.train) + len(data.split.val)):
        return _bagged(settings, data, pre, part, device, checkpoints, log, ck)
    cfg = fit.network_config(pre, settings)
    split, t = data.split, settings.train
    progress = EpochProgress(t.max_epochs, log)
    t0 = time.perf_counter()
    phase, selection = "selection", None
    try:
        if ck is not None and ck["phase"] == "refit":  # the selection phase had finished
            selection = ck["selection"]
            model = TabularMLP(cfg).to(device)
            model.load_state_dict(selection["model"])
            selected = fit.Fitted(
                model, selection["history"], selection["best_epoch"], selection["stopped_early"]
            )
        else:
            selected = fit.fit(
                cfg,
                part(split.train),
                part(split.val),
                pre.target,
                t,
                data.seeds,
                device,
                on_epoch=progress.selection_epoch,
                resume=None if ck is None else ck["loop"],
                on_checkpoint=lambda s: checkpoints.save(log, "selection", s, None),
            )
        final, refit_history = selected.model, []
        if t.refit:
            # Chollet's recipe for small data: the validation rows chose the epoch count; now
            # they become training rows too. Preprocessing stays fitted on the training rows.
            phase = "refit"
            selection = selected.selection()
            progress.bar.reset(total=selected.best_epoch)
            progress.bar.set_description("refit")
            progress.bar.set_postfix()
            refitted = fit.fit(
                cfg,
                part(np.sort(np.concatenate([split.train, split.val]))),
                None,
                pre.target,
                t,
                data.seeds,
                device,
                on_epoch=progress.refit_epoch,
                epochs=selected.best_epoch,
                resume=ck["loop"] if ck is not None and ck["phase"] == "refit" else None,
                on_checkpoint=lambda s: checkpoints.save(log, "refit", s, selection),
            )
            final, refit_history = refitted.model, refitted.history
    except fit.Stopped as stopped:
        raise _interrupted(stopped, phase, selection, checkpoints, log) from None
    finally:
        progress.bar.close()
    return _Trained(selected, final, refit_history, time.perf_counter() - t0)


def _bagged(
    settings: Settings,
    data: Prepared,
    pre: features.Preprocessor,
    part: Callable[[np.ndarray], fit.Tensors],
    device: str,
    checkpoints: Checkpoints,
    log: Any,
    ck: dict[str, Any] | None,
) -> _Trained:
    """Steps 3 and 4 bagged (``bagging``): a network per fold, merged into one ensemble."""
    from pipeline import bagging, fit

    t0 = time.perf_counter()
    hooks = {
        "save": lambda phase, state, done: checkpoints.save(log, phase, state, done),
        "stopped": lambda stop, phase, done: _interrupted(stop, phase, done, checkpoints, log),
    }
    run = bagging.run(settings, data, pre, part, device, log, hooks, ck)
    b = run.bagged  # the learning curve shown is the first fold's
    first = fit.Fitted(run.model, b.histories[0], b.best_epochs[0], b.stopped_early[0])
    return _Trained(first, run.model, [], time.perf_counter() - t0, run)


def _train_on_ray(
    settings: Settings,
    data: Prepared,
    pre: features.Preprocessor,
    on_ray: tuple[Any, list[Any], dict[str, Any] | None],
    device: str,
    checkpoints: Checkpoints,
    log: Any,
) -> _Trained:
    """Steps 3 and 4 on Ray Train's workers, each with its shard of the rows; the driver gets
    rank 0's networks back and measures the validation rows as the in-process path does.

    Checkpoints hold every worker's state; a stop signal saves one and raises ``Interrupted``,
    and a resumed run continues each worker where it stopped, as in process."""
    from pipeline import distributed_fit, fit

    connection, parts, ck = on_ray  # ck: the checkpoint to resume from, loaded
    cfg = fit.network_config(pre, settings)
    names = {"selection": "train.epoch", "refit": "train.refit_epoch"}

    def save(phase: str, states: list[fit.FitState], selection: dict[str, Any] | None) -> None:
        checkpoints.save(log, phase, states[0], selection, others=states[1:])

    try:
        ray_trained = distributed_fit.train_on_ray(
            settings, connection, parts, cfg, pre.target, data.seeds, log,
            on_epoch=lambda phase, row: log.info(names[phase], **row),
            resume=ck, on_checkpoint=save,
        )  # fmt: skip
    except distributed_fit.StoppedOnRay as stopped:
        raise _interrupted(
            stopped, stopped.phase, stopped.selection, checkpoints, log, stopped.others
        ) from None
    selected = ray_trained.selected
    import resource

    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    log.info("train.workers", workers=ray_trained.workers, driver_peak_rss_mib=round(driver, 1))
    selected.model.to(device)
    final = ray_trained.final.to(device)
    return _Trained(selected, final, ray_trained.refit_history, ray_trained.seconds)


def _interrupted(
    stopped: fit.Stopped,
    phase: str,
    selection: dict[str, Any] | None,
    checkpoints: Checkpoints,
    log: Any,
    others: list[fit.FitState] | None = None,
) -> Interrupted | OutputClosed:
    """Save the stopped loop's state (and the other workers', on Ray) and say how to resume.

    SIGPIPE stands for stdout's reader going away (``pipeline train | head``): the events
    that cannot be written are dropped and the command ends 141, as a Unix tool cut off by its
    reader does, with the checkpoint saved like a SIGTERM's."""
    closed = stopped.signum == signal.SIGPIPE
    events_lost = contextlib.suppress(BrokenPipeError) if closed else contextlib.nullcontext()
    name, epoch = signal.Signals(stopped.signum).name, stopped.state.epoch
    workers = "" if others is None else f" --workers {len(others) + 1}"
    with events_lost:
        checkpoints.save(log, phase, stopped.state, selection, others=others)
    with events_lost:
        log.warning("train.interrupted", signal=name, phase=phase, epoch=epoch,
                    checkpoint=checkpoints.key,
                    resume=f"pipeline train{workers} --resume")  # fmt: skip
    where = (
        f"checkpoint saved as {checkpoints.key} in store {checkpoints.store.uri}: run "
        f"`pipeline train{workers} --resume` with the same data, settings and seed to continue"
    )
    if closed:
        return OutputClosed(f"training stopped in {phase} epoch {epoch}: stdout's reader went "
                            f"away (SIGPIPE); {where}")  # fmt: skip
    return Interrupted(f"training stopped by {name} in {phase} epoch {epoch}; {where}")
