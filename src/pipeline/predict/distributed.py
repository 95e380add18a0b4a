"""Distributed batch prediction: `pipeline predict --workers N` maps a release over Ray Data.

The input is a file, a folder or a glob of CSV, Parquet or JSON-lines files. Its files, in
sorted name order, become *jobs*: one per file, or, for a single file, one per worker, each
taking every N-th chunk of ``PIPELINE_RUN__CHUNK_ROWS`` rows. Ray Data maps the jobs over N
actors, each holding the release's ``Predictor`` (shipped once through the object store) and
running the in-process loop (``stage.predict_into``: the same reader, validation, network and
writer), one chunk at a time. So every part holds exactly the bytes that single-process
`pipeline predict` writes for the same rows, whatever N, and memory per worker is one chunk.

Output is a folder: ``part-<NNNNN>-<stem>.<ext>`` per input file (NNNNN its place in the sorted
input) or per chunk of a single file (NNNNN the chunk's number), and ``manifest.json`` (every
part's input, rows, errors, size and sha256; the package and release). The parts are written
into a hidden staging folder beside the output, locked while the run lives, and renamed into
place at the end: a failed run, or a killed one, leaves no output at all (the next run sweeps
its staging folder). Workers and the driver must see the same file system (one machine, or
shared storage on a cluster).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DataError, SourceError, StoreError
from pipeline.predict.inputs import SUFFIXES, inputs, listed, warn_about
from pipeline.predict.parts import EXTENSIONS as EXTENSIONS
from pipeline.predict.parts import FIELDS, Job, PartWriter, reported_error, restarted
from pipeline.predict.stage import Ready, warn_extra
from pipeline.settings import Settings
from pipeline.store import canonical_json, fsync_dir, store_error

FORMAT = 1
MANIFEST = "manifest.json"


def run(
    ready: Ready, sources: list[Path], output: Path | None, settings: Settings, log: Any
) -> None:
    """Predict ``sources`` (a file, folder or glob; or several files, as a shell expands an
    unquoted glob) on Ray into the folder ``output``."""
    t0 = time.perf_counter()
    workers = ready.run.workers or 1
    where = settings.source_of("run", "workers")
    asked = (
        f"--workers {workers}"
        if where == "option --workers"
        else f"PIPELINE_RUN__WORKERS={workers} ({where})"
        if where.startswith("env var ")
        else f"PIPELINE_RUN__WORKERS={workers}"  # the error's end says where it came from
    )
    folder = _output_folder(output, asked, where)
    source = sources[0] if len(sources) == 1 else Path(f"{len(sources)} files")
    files = inputs(sources[0]) if len(sources) == 1 else listed(sources)
    warn_about(sources, source, log)
    from pipeline.predict.headers import check_input
    from pipeline.predict.readers import named_format, output_format
    from pipeline.predict.writers import sweep, temp_name

    for path in files:  # predict's own errors, before Ray starts: Parquet bytes named .csv (a
        # worker's UnicodeDecodeError traceback, exit 1); an empty file, a column missing
        check_input(path, named_format(path), ready.predictor, ready.run)
    jobs = _jobs(files, workers)

    # The parts' format: declared, else the folder's suffix (-o out.parquet/: Parquet parts,
    # as Spark and Ray write them; -o out.xlsx is refused as it is without --workers), else CSV.
    fmt = output_format(folder, ready.run.output_format)
    sweep(folder)  # staging folders of killed runs
    staging = temp_name(folder)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise store_error(exc, staging, "choose another -o folder") from exc
    lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a live run's staging folder is never swept
    try:
        parts, where = _map(ready, jobs, staging, fmt, workers, settings, log)
        if sum(p["rows"] for p in parts) == 0:
            raise DataError(
                f"input {source} has no rows: nothing to predict; check that the file is complete"
            )
        manifest = _manifest(ready, fmt, parts)
        _publish(staging, folder, canonical_json(manifest))
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    seconds = time.perf_counter() - t0
    rows = manifest["rows"]
    log.info(
        "predict.summary",
        model=ready.predictor.name,
        version=ready.predictor.version,
        package_id=ready.predictor.package_id,
        build_id=ready.predictor.build_id,
        input=str(source),
        output=str(folder),
        files=len(files),
        parts=len(parts),
        rows=rows,
        errors=manifest["errors"],
        workers=workers,
        address=where.address,
        embedded=where.embedded,
        nodes=where.nodes,
        seconds=round(seconds, 3),
        rows_per_second=round(rows / seconds) if seconds > 0 else None,
    )


def _stem(path: Path) -> str:
    """The input's name without its format suffixes (``a.csv.gz`` -> ``a``)."""
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _jobs(files: list[Path], workers: int) -> list[Job]:
    """One job per file; a single file is shared out chunk by chunk among the workers."""
    if len(files) == 1:
        stem = _stem(files[0])
        return [Job(i, str(files[0]), stem, True, workers) for i in range(workers)]
    return [Job(i, str(p), _stem(p), False, 1) for i, p in enumerate(files)]


# Names that say "a file": -o was made a folder of parts when the workers came from the
# environment (a script's `predict x.csv -o preds.csv` on a machine that sets them).
_FILE_SUFFIXES = (".csv", ".gz", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def _output_folder(output: Path | None, asked: str, where: str) -> Path:
    """``-o`` as the output folder: required, and absent or empty (never merged into). ``asked``
    says where the workers came from; when ``where`` is not the option, a file's name for it
    is refused (a folder named ``preds.parquet`` holds Parquet parts when asked for)."""
    if output is None:
        raise ConfigError(
            f"{asked} writes one file per input part: pass -o FOLDER (absent or empty)"
        )
    if output.is_symlink():
        # The folder is published by renaming over it: a link was replaced by the folder (or
        # refused, "Not a directory", exit 9 after all the work). Its target is the folder.
        if not output.is_dir():
            raise ConfigError(
                f"-o {output} is a link to {output.readlink()}, which is not a folder: pass "
                "a new or empty folder"
            )
        output = output.resolve()
    if output.exists() and not output.is_dir():
        raise ConfigError(
            f"-o {output} is a file, but {asked} writes a folder of parts: pass the path of "
            "a new or empty folder"
        )
    if where != "option --workers" and output.suffix.lower() in _FILE_SUFFIXES:
        raise ConfigError(
            f"-o {output} names a file, but {asked} writes a folder of parts: pass --workers "
            f"to write a folder of that name, or {_undo(where)} to write one file"
        )
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(
            f"-o {output} is a folder that is not empty: {asked} writes a fresh folder of "
            "parts and a manifest; pass a new or empty folder, or remove this one"
        )
    return output


def _undo(where: str) -> str:
    """How to take back PIPELINE_RUN__WORKERS where ``where`` says it was set."""
    if where.startswith("env var "):
        return "unset PIPELINE_RUN__WORKERS"
    return "remove it from the preset" if where.startswith("preset ") else "remove its line"


def _map(
    ready: Ready,
    jobs: list[Job],
    staging: Path,
    fmt: str,
    workers: int,
    settings: Settings,
    log: Any,
) -> tuple[list[dict[str, Any]], Any]:
    """Run ``jobs`` on ``workers`` Ray Data actors; every part written, sorted by name."""
    from pipeline import cluster

    # Embedded, at most one actor per core: the parts are the same whatever the actors, and
    # each holds a loaded predictor (--workers 16 on 2 cores held 7.4 GB for nothing).
    cores = min(workers, len(os.sched_getaffinity(0)))
    with (
        cluster.native_lines_dropped(),  # for the whole session: a stop's teardown logs too
        cluster.prints_dropped(settings.log_level == "debug"),  # a restart's notice came late
        cluster.session(
            settings.ray_address, connect_timeout=settings.tune.connect_timeout, cpus=cores
        ) as where,
    ):
        import ray

        actors = max(1, min(workers, len(jobs), where.cpus or workers))
        log.info(
            "predict.cluster", address=where.address, embedded=where.embedded,
            nodes=where.nodes, cpus=where.cpus, workers=actors, asked=workers, jobs=len(jobs),
        )  # fmt: skip
        if actors < min(workers, len(jobs)):
            _warn_fewer(workers, actors, where, log)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        items = ray.data.from_items([vars(j) for j in jobs], override_num_blocks=len(jobs))
        # ray_remote_args_fn is the only way Ray Data 2.60 takes the actors' max_restarts; it is
        # deprecated for 2.64 (pinned below that), with no replacement named yet.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = items.map_batches(
                PartWriter,
                fn_constructor_kwargs={
                    "shipped": [ray.put(ready.predictor)],  # in a list: handed over as a reference
                    "run_settings": ready.run,
                    "staging": str(staging),
                    "fmt": fmt,
                    "cwd": str(Path.cwd()),
                },
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                ray_remote_args_fn=_recovery,
            )
        try:
            with _quiet(settings):
                rows = dataset.take_all()
        except Exception as exc:
            lost = _worker_lost(exc)
            if lost is None:
                raise  # a bug: its traceback stays
            raise SourceError(
                f"a Ray prediction worker was lost ({lost}) more often than it is restarted: "
                "nothing was written; run it again, or without --workers to predict in this "
                "process"
            ) from None
    _warn_restarted(restarted(staging), jobs, log)
    failed = sorted((r for r in rows if r["failure"]), key=lambda r: str(r["name"]))
    if failed:  # the first failing part in input order, whatever finished first
        raise reported_error(json.loads(failed[0]["failure"]))
    parts = sorted(({k: row[k] for k in FIELDS} for row in rows), key=lambda p: p["name"])
    for part in parts:
        part["unknown"], part["extra"] = json.loads(part["unknown"]), json.loads(part["extra"])
        for key in ("rows", "errors", "chunks", "size"):
            part[key] = int(part[key])
    _warn_extra_once(parts, log)
    return parts, where


def _warn_fewer(asked: int, actors: int, where: Any, log: Any) -> None:
    """Fewer workers than asked (one a CPU): said, not only counted in ``predict.cluster``
    (train refuses, N being part of its build; here the parts are the same for any N)."""
    log.warning(
        "predict.fewer_workers", asked=asked, workers=actors, cpus=where.cpus,
        hint=f"{'this machine' if where.embedded else 'the Ray cluster'} has {where.cpus} "
        "CPU(s), one a worker: the same parts, written by fewer workers",
    )  # fmt: skip


def _warn_restarted(again: list[int], jobs: list[Job], log: Any) -> None:
    """Jobs run again on a restarted worker: the parts are right (rewritten whole), but a
    flaky node should not go unseen."""
    if again:
        sources = list(dict.fromkeys(jobs[n].source for n in again))
        log.warning(
            "predict.worker_restarted", jobs=len(again), inputs=sources[:5],
            hint="a Ray worker died during these inputs and was restarted; they were "
            "predicted again from the start (a worker lost three times fails the run)",
        )  # fmt: skip


def _recovery() -> dict[str, Any]:
    """The actors' fault tolerance: a worker that dies is restarted and its job run again from
    the start (its part files are rewritten whole); a job that kills its worker three times
    fails the run. (Ray Data's default retries without end.)"""
    return {"max_restarts": 2, "max_task_retries": 2}


def _warn_extra_once(parts: list[dict[str, Any]], log: Any) -> None:
    """``predict.extra_columns`` once per set of ignored columns, naming the first input that
    has it and how many do (a folder of a thousand alike files makes one event, not 1,000)."""
    inputs: dict[tuple[str, ...], list[str]] = {}
    for part in parts:
        if part["extra"]:
            found = inputs.setdefault(tuple(part["extra"]), [])
            if part["input"] not in found:
                found.append(part["input"])
    for names, where in inputs.items():
        warn_extra(log, list(names), input=where[0], inputs=len(where))


@contextlib.contextmanager
def _quiet(settings: Settings) -> Iterator[None]:
    """Ray Data's own log lines off, except with PIPELINE_LOG_LEVEL=debug: the events say it."""
    import logging

    logger = logging.getLogger("ray.data")
    level = logger.level
    if settings.log_level != "debug":
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _worker_lost(exc: BaseException) -> str | None:
    """The name of the Ray error in ``exc``'s chain that says a worker, actor or node died."""
    lost = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "NodeDiedError",
            "ObjectLostError", "OwnerDiedError", "ActorUnavailableError")  # fmt: skip
    from pipeline.cluster import class_names, exception_chain

    found = next((c for c in exception_chain(exc) if class_names(c) & set(lost)), None)
    return type(found).__name__ if found is not None else None


def _manifest(ready: Ready, fmt: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """What the folder holds, independent of N and of timing (so it is identical across N)."""
    p = ready.predictor
    unknown: dict[str, int] = {}
    for part in parts:
        for name, n in part["unknown"].items():
            unknown[name] = unknown.get(name, 0) + n
    return {
        "kind": "predictions",
        "format": FORMAT,
        "model": p.name,
        "version": p.version,
        "package_id": p.package_id,
        "build_id": p.build_id,
        "release": ready.release,
        "output_format": fmt,
        "chunk_rows": ready.run.chunk_rows,
        "rows": sum(part["rows"] for part in parts),
        "errors": sum(part["errors"] for part in parts),
        "unknown_categories": dict(sorted(unknown.items())),
        "files": [
            {k: part[k] for k in ("name", "input", "rows", "errors", "size", "sha256")}
            for part in parts
        ],
    }


def _publish(staging: Path, folder: Path, manifest: bytes) -> None:
    """The manifest written, then the staging folder renamed to ``folder`` (absent or empty)."""
    try:
        with (staging / MANIFEST).open("xb") as fh:
            fh.write(manifest)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(staging)
        if folder.is_dir():  # an empty folder given: its permissions stay
            staging.chmod(folder.stat().st_mode & 0o7777)
        staging.replace(folder)  # over an empty folder too; a non-empty one fails: ENOTEMPTY
        fsync_dir(folder.parent)
    except OSError as exc:
        raise StoreError(
            f"cannot write {folder}: {exc.strerror or exc}; pass a new or empty -o folder"
        ) from exc
