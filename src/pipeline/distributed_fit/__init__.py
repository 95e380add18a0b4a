"""Data-parallel training on Ray Train: what `pipeline train --workers N` runs.

``connected`` opens the Ray session (embedded, or the cluster at ``RAY_ADDRESS``) for the whole
run. The driver reads the file's header and target column and splits the rows; Ray tasks read,
type, fit and encode the input columns (``columns.lay_out``: ``preprocessing.json`` is the
in-process bytes, and no process holds the whole table). Worker k's rows are training rows
``k::N`` and validation rows ``k::N`` of the split, in row order, laid out from the tasks'
results by a task of its own into one object that the worker maps as it is. Each worker scores
its validation rows after every epoch; rank 0 gathers the outputs back in order and computes
the early-stopping loss that every worker then uses (the bits one process scoring every row
gets, as a row's output does not depend on the rows scored with it).

Each worker runs the one fitting loop, ``fit.fit``, with a ``Parallel`` made of
torch.distributed (gloo on CPU, NCCL on GPUs): every step averages the gradients of all workers'
rows (on CPUs one flat all-reduce after the backward, polled rather than waited on: see
``Gloo.average_gradients``; on GPUs DistributedDataParallel), so every worker holds the same
weights. Rank 0 hands its weights and learning curves back through a small actor the driver
owns; the driver tests them and writes the build as for an in-process run.

Deterministic for a given N: the shards, each worker's shuffling and dropout streams (rank 0's
are the in-process ones) and the all-reduce order depend on the seed and N only. With N=1 the
weights are the in-process weights bit for bit. A worker that dies fails the run
(``SourceError``); nothing is written, since the build is only written once training is done.

Stop and resume work as in process: a SIGTERM/SIGINT in the driver goes to the workers through
the box (rank 0 asks it every ``STOP_EVERY`` steps and tells the others), every worker stops
after the same step and hands back its ``FitState``, and the driver saves the N states as one
checkpoint (``StoppedOnRay``); ``resume`` gives each rank its state back. Periodic checkpoints
(``checkpoint_every``) travel the same way, once every rank has reached them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import fit, scratch
from pipeline.cluster import class_names, exception_chain
from pipeline.distributed_fit.shards import Job
from pipeline.distributed_fit.worker import Box, train_loop
from pipeline.errors import ConfigError, IntegrityError, PipelineError, SourceError
from pipeline.features import TargetState
from pipeline.model import ModelConfig, TabularMLP
from pipeline.settings import Settings
from pipeline.split import Seeds

_LOST = frozenset(
    {"WorkerHealthCheckFailedError", "ActorDiedError", "RayActorError", "WorkerCrashedError",
     "NodeDiedError", "ActorUnavailableError", "ObjectLostError", "OwnerDiedError"}
)  # fmt: skip
# Ray Train's errors that say the workers could not be started or did not answer in time.
_STALLED = frozenset(
    {"WorkerGroupStartupTimeoutError", "WorkerGroupStartupFailedError",
     "InsufficientClusterResourcesError", "WorkerHealthCheckTimeoutError",
     "CollectiveTimeoutError"}
)  # fmt: skip


class StoppedOnRay(fit.Stopped):
    """The workers stopped at the driver's signal: every rank's state (rank 0's is ``state``),
    the phase, and in the refit phase the selection's result: what a checkpoint holds."""

    def __init__(
        self,
        signum: int,
        phase: str,
        states: list[fit.FitState],
        selection: dict[str, Any] | None,
    ) -> None:
        super().__init__(signum, states[0])
        self.phase, self.others, self.selection = phase, states[1:], selection


# What ``train_on_ray`` hands its ``on_checkpoint``: the phase, every rank's state, the selection.
OnCheckpoint = Callable[[str, list[fit.FitState], dict[str, Any] | None], None]


@dataclass
class Trained:
    """Rank 0's result, rebuilt in the driver."""

    selected: fit.Fitted
    final: TabularMLP
    refit_history: list[dict[str, Any]]
    seconds: float
    workers: list[dict[str, Any]]  # per rank: rows, peak RSS


@dataclass(frozen=True)
class Connection:
    """An open Ray session for training: N workers of ``cpus`` CPUs each, GPUs or not."""

    workers: int
    cpus: int
    use_gpu: bool
    cluster_cpus: int


@contextlib.contextmanager
def connected(settings: Settings, log: Any) -> Iterator[Connection]:
    """Ray for ``settings.train.workers`` workers for the duration of the block: embedded, or
    the cluster at ``RAY_ADDRESS``; a ``ConfigError`` when it has too few CPUs for them."""
    from pipeline import cluster

    n = settings.train.workers or 1
    t = settings.train
    if not (settings.ray_address or "").strip():
        _fits_in_memory(n)
    # Each worker holds one CPU and runs one torch thread, or as many as train.threads says: N
    # workers scale by adding CPUs, as Ray Train's resources_per_worker does.
    cpus = t.threads or 1
    with (
        cluster.prints_dropped(settings.log_level == "debug"),
        cluster.session(
            settings.ray_address,
            connect_timeout=settings.tune.connect_timeout,
            # Embedded: this machine's cores, or what the workers hold (oversubscribed, with
            # the warning below: --workers 2 with train.threads=2 on 2 cores was refused).
            cpus=max(n * cpus, len(os.sched_getaffinity(0))),
        ) as where,
    ):
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]
        use_gpu = t.device == "cuda" or (t.device == "auto" and gpus >= n)
        if where.fits(cpus) < n:
            each = f" of PIPELINE_TRAIN__THREADS={cpus} CPUs each" if cpus > 1 else ""
            has = (
                f"has {where.cpus}"
                if where.cpus < n * cpus
                else f"has {where.cpus} on nodes of {list(where.node_cpus)} CPUs, where "
                f"{where.fits(cpus)} such worker(s) fit (a worker runs on one node)"
            )
            raise ConfigError(
                f"PIPELINE_TRAIN__WORKERS={n} (--workers){each} needs {n * cpus} CPUs, and the "
                f"Ray cluster at {where.address} {has}: use fewer workers"
                + (" or threads" if cpus > 1 else "")
                + ", or a larger cluster"
            )
        log.info(
            "train.cluster", address=where.address, embedded=where.embedded, nodes=where.nodes,
            cpus=where.cpus, workers=n, backend="nccl" if use_gpu else "gloo",
        )  # fmt: skip
        cores = len(os.sched_getaffinity(0))
        if where.embedded and n * cpus > cores:  # allowed: N is part of the build's identity
            log.warning(
                "train.oversubscribed", workers=n, cores=cores,
                message=f"{n} workers of {cpus} CPU(s) each share this machine's {cores} cores "
                "(the embedded runtime): the build is the one a machine or cluster with "
                f"{n * cpus} CPUs trains, only slower; for speed here, use --workers "
                f"{max(1, cores // cpus)} or fewer",
            )  # fmt: skip
        yield Connection(n, cpus, use_gpu, where.cpus)


# A worker process's memory before any rows: the interpreter with torch, pandas and pyarrow
# (`train.workers`' rss_mib: 415-435 MiB on house prices, 2026-12-07).
WORKER_MIB = 430


def _fits_in_memory(n: int) -> None:
    """A ``ConfigError`` when ``n`` embedded workers cannot fit in this machine's available
    memory: `--workers 1000` on one machine started Ray worker processes until it swapped."""
    available = _available_mib()
    if available is None or n * WORKER_MIB <= available:
        return
    raise ConfigError(
        f"PIPELINE_TRAIN__WORKERS={n} (--workers) starts {n} worker processes on this machine "
        f"(Ray embedded), each about {WORKER_MIB} MiB before any rows ({n * WORKER_MIB:,} MiB), "
        f"and {available:,} MiB is available: use --workers {max(1, available // WORKER_MIB)} "
        "or fewer, or attach a cluster with RAY_ADDRESS"
    )


def _available_mib() -> int | None:
    """MiB this process may still use: the kernel's MemAvailable, capped by a cgroup v2
    limit (a container's); None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) // 1024)
    except (OSError, ValueError, IndexError):
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text(encoding="ascii").strip()
        used = int((cgroup / "memory.current").read_text(encoding="ascii"))
        if limit.isdigit():
            found.append((int(limit) - used) // (1 << 20))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def train_on_ray(
    settings: Settings,
    connection: Connection,
    parts: list[Any],
    cfg: ModelConfig,
    target: TargetState,
    seeds: Seeds,
    log: Any,
    on_epoch: Callable[[str, dict[str, Any]], None],
    *,
    resume: dict[str, Any] | None = None,
    on_checkpoint: OnCheckpoint | None = None,
) -> Trained:
    """Select the epoch count and refit on the workers of ``connection`` (open), worker k on
    the rows of ``parts[k]`` (``columns.lay_out``'s).

    ``on_epoch(phase, row)`` is told of each epoch of rank 0 (``selection`` or ``refit``), and
    ``on_checkpoint`` of each checkpoint that every rank has reached, in this thread's context,
    while the workers train. ``resume`` is a checkpoint (``Checkpoints.load``) of N states to
    continue from. A SIGTERM/SIGINT meanwhile stops every worker after the same step and
    raises ``StoppedOnRay`` with their states.
    """
    import ray

    n, cpus, use_gpu = connection.workers, connection.cpus, connection.use_gpu
    t = settings.train
    box: Any = ray.remote(num_cpus=0)(Box)
    box = box.remote(n)
    job = Job(cfg, target, t, seeds, cpus, use_gpu)
    config = {"job": job, "shards": parts, "box": box}
    if resume is not None:
        states = [resume["loop"], *resume.get("others", [])]
        if len(states) != n:
            raise IntegrityError(
                f"the checkpoint holds {len(states)} worker states and the run has {n} "
                "workers: resume with the --workers it was made with"
            )
        config["resume"] = [
            ray.put({"phase": resume["phase"], "state": s.to_dict(),
                     "selection": resume["selection"]})
            for s in states
        ]  # fmt: skip
    t0 = time.perf_counter()
    # SIGTERM/SIGINT asks the workers to stop (through the box, by _relayed's thread)
    # instead of tearing the runtime down: each hands its state back for the checkpoint.
    with fit.stop_on_signals(_UntilBegun()) as stop, _relayed(box, on_epoch, on_checkpoint, stop):
        _fit(config, n, cpus, use_gpu)
    seconds = time.perf_counter() - t0
    result = ray.get(box.get.remote())
    stopped = result.get("stopped")
    if stopped:
        first = stopped[0]
        states = [fit.FitState.from_dict(stopped[r]["state"]) for r in range(n)]
        raise StoppedOnRay(first["signum"], first["phase"], states, first["selection"])
    return _rebuild(cfg, result, seconds)


class _UntilBegun(fit.StopFlag):
    """SIGTERM/SIGINT before rank 0 has begun its loop (Ray Train starts its workers, 10 to 30
    seconds) stop the command at once, as in the steps before training (``KeyboardInterrupt``:
    nothing was written, the runtime's shutdown ends the workers); afterwards they ask the
    workers to stop after the same step and hand their states back (``fit.StopFlag``). A stop
    waited for the workers' start-up, then for their first steps."""

    def __init__(self) -> None:
        super().__init__()
        self.began = threading.Event()  # set by _relayed's thread from the box's answer

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.began.is_set():
            raise KeyboardInterrupt
        super().__call__(signum, frame)


def _fit(config: dict[str, Any], n: int, cpus: int, use_gpu: bool) -> None:
    """Run ``train_loop`` on ``n`` Ray Train workers; a failure becomes the project's error."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    class Trainer(TorchTrainer):
        def _register_sigint_handler(self, controller: Any) -> None:
            """Ctrl-C stays this process's, as SIGTERM is (``fit.stop_on_signals``: every
            worker stops after the same step, a checkpoint, exit 130). Ray Train's own handler
            replaced it for the run: before the workers were up it exited 1 without a word."""

    storage = str(scratch.make("pipeline-train-"))  # Ray Train's run state; removed
    try:
        trainer = Trainer(
            train_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=n, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}
            ),
            run_config=RunConfig(
                name="train",
                storage_path=storage,
                # A lost worker fails the run; it is not restarted from scratch.
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        try:
            trainer.fit()
        except TrainingFailedError as exc:
            raise _failure(exc) from None
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _failure(exc: BaseException) -> BaseException:
    """A worker's ``PipelineError`` as it was raised; a lost worker as a ``SourceError``;
    anything else (a bug) unchanged, with its traceback."""
    failures = getattr(exc, "worker_failures", None) or {}
    causes = [failures[rank] for rank in sorted(failures)] or [
        getattr(exc, "controller_failure", exc)
    ]
    for cause in causes:
        for link in exception_chain(cause):
            if isinstance(link, PipelineError):
                return link
    for cause in causes:
        lost = next((c for c in exception_chain(cause) if _LOST & class_names(c)), None)
        if lost is not None:
            return SourceError(
                f"a Ray training worker was lost ({type(lost).__name__}): the run failed and "
                "nothing was written to the store; run it again, or without --workers to train "
                "in this process"
            )
        stalled = next((c for c in exception_chain(cause) if _STALLED & class_names(c)), None)
        if stalled is not None:
            first = (str(stalled).strip().splitlines() or [""])[0][:200]
            return SourceError(
                f"Ray Train could not run its workers ({type(stalled).__name__}: {first}): "
                "nothing was written to the store; check the cluster's free CPUs, or train "
                "without --workers"
            )
    return exc


def _rebuild(cfg: ModelConfig, result: dict[str, Any], seconds: float) -> Trained:
    selected_model = TabularMLP(cfg)
    selected_model.load_state_dict(result["selected"])
    final = selected_model
    if result["final"] is not None:
        final = TabularMLP(cfg)
        final.load_state_dict(result["final"])
    selected = fit.Fitted(
        selected_model, result["history"], result["best_epoch"], result["stopped_early"]
    )
    workers = [result["workers"][rank] for rank in sorted(result["workers"])]
    return Trained(selected, final, result["refit_history"], seconds, workers)


@contextlib.contextmanager
def _relayed(
    box: Any,
    on_epoch: Callable[[str, dict[str, Any]], None],
    on_checkpoint: OnCheckpoint | None = None,
    stop: fit.StopFlag | None = None,
) -> Iterator[None]:
    """Hand rank 0's epochs to ``on_epoch`` and complete checkpoints to ``on_checkpoint`` as
    they arrive, and the driver's stop request to the box (a thread polls it every quarter
    second, in a copy of this context: the events keep their run id); the last ones at the
    end."""
    import contextvars
    import threading

    import ray

    done = threading.Event()
    closed = threading.Event()  # stdout's reader went away: its events are dropped

    def relay() -> None:
        signum = stop.signal if stop is not None and stop.signal is not None else 0
        epochs, ck, began = ray.get(box.poll.remote(signum))
        if began and isinstance(stop, _UntilBegun):
            stop.began.set()
        for phase, row in epochs:
            if not closed.is_set():
                with reader_gone():
                    on_epoch(phase, row)
        if ck is not None and on_checkpoint is not None:
            states = [fit.FitState.from_dict(s) for s in ck["states"]]
            with reader_gone():  # the checkpoint is stored before its event is written
                on_checkpoint(ck["phase"], states, ck["selection"])

    @contextlib.contextmanager
    def reader_gone() -> Iterator[None]:
        """`pipeline train --workers 2 | head`: when stdout's reader goes away, the workers
        stop after the same step, as for SIGTERM, and the run ends 141 with a checkpoint, as
        in process (the relay ended there, and the run trained to its end, then died 141
        without a word or a checkpoint)."""
        try:
            yield
        except BrokenPipeError:
            closed.set()
            if stop is not None and stop.signal is None:
                stop.signal = signal.SIGPIPE

    def poll() -> None:
        while not done.wait(0.25):
            try:
                relay()
            except Exception:  # the runtime is going down with a failed run: the error says it
                return

    thread = threading.Thread(target=contextvars.copy_context().run, args=(poll,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    relay()
