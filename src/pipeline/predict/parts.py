"""The worker side of `pipeline predict --workers N`: the jobs, and the Ray Data actor
(``PartWriter``) that predicts each job's rows into its part files.

A ``PipelineError`` on a worker comes back as data (``FIELDS``' ``failure``), which the driver
raises again as the same class and message (``reported_error``), so that the error raised is
the first in input order, as single-process `pipeline predict` gives it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, PipelineError
from pipeline.predict.predictor import Predictor, Stats
from pipeline.predict.readers import detect_format
from pipeline.settings import RunSettings

EXTENSIONS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


# What each actor returns per part (the manifest's entries, and the figures of the summary).
FIELDS = ("name", "input", "rows", "errors", "chunks", "size", "sha256", "unknown", "extra",
           "failure")  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One actor call: a whole file into part ``number``, or every ``step``-th chunk of it from
    chunk ``number`` on, each chunk into its own part (``split``)."""

    number: int
    source: str  # as the user gave it (or as the folder listing joined it): the label messages use
    stem: str
    split: bool
    step: int


def _failure(exc: PipelineError) -> str:
    """A ``PipelineError`` raised on a worker, as data the driver raises again (``reported_error``).

    Returned rather than raised: Ray Data hands the driver a raised error without its cause,
    and the error raised must be the first in input order, not the first to happen.
    """
    return json.dumps(
        {"module": type(exc).__module__, "class": type(exc).__name__, "message": exc.message}
    )


def reported_error(failure: dict[str, str]) -> PipelineError:
    """The ``PipelineError`` a worker reported: the class and message single-process gives."""
    import importlib

    cls: Any = PipelineError
    if failure["module"].split(".")[0] == "pipeline":
        found = getattr(importlib.import_module(failure["module"]), failure["class"], None)
        if isinstance(found, type) and issubclass(found, PipelineError):
            cls = found
    error: PipelineError = cls(failure["message"])
    return error


class PartWriter:
    """A Ray Data actor: the release's predictor, loaded once, writing the parts of each job."""

    def __init__(
        self, shipped: list[Any], run_settings: RunSettings, staging: str, fmt: str, cwd: str
    ) -> None:
        import ray
        import torch

        # One CPU per actor (num_cpus=1): more torch threads would only contend. The thread
        # count never changes a prediction (tests/test_threads.py).
        torch.set_num_threads(1)
        # Relative input paths, and the labels messages give them, mean what they meant to the
        # user: the worker reads from the driver's working folder (shared storage on a cluster).
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise ConfigError(
                f"a Ray worker cannot enter the working folder {cwd} ({exc.strerror}): the "
                "input and -o must be on storage every node mounts at the same path"
            ) from exc
        self.predictor: Predictor = ray.get(shipped[0])
        self.run, self.staging, self.fmt = run_settings, Path(staging), fmt

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: [] for k in FIELDS}
        for i in range(len(batch["number"])):
            job = Job(**{k: _plain(batch[k][i]) for k in ("number", "source", "stem", "split",
                                                            "step")})  # fmt: skip
            at = [job.number]  # the part being written, named by a failure
            started(self.staging, job.number)
            try:
                parts = self._job(job, at)
            except PipelineError as exc:
                name = f"part-{at[0]:05d}-{job.stem}"
                parts = [{k: "" if k in ("unknown", "extra") else 0 for k in FIELDS}]
                parts[0].update(name=name, input=job.source, sha256="", failure=_failure(exc))
            for part in parts:
                for k in FIELDS:
                    out[k].append(part[k])
        return out

    def _job(self, job: Job, at: list[int]) -> list[dict[str, Any]]:
        """Predict one job's rows into its part file(s); what each part holds."""
        from pipeline.predict.readers import iter_chunks
        from pipeline.predict.stage import predict_into
        from pipeline.predict.writers import Writer

        source = Path(job.source)
        read_stats = Stats()  # the reader's view: extra columns
        chunks = iter_chunks(
            source, detect_format(source, "auto"), self.run.chunk_rows, self.predictor,
            self.run, read_stats,
        )  # fmt: skip
        if not job.split:
            name = f"part-{job.number:05d}-{job.stem}{EXTENSIONS[self.fmt]}"
            stats = Stats(extra_columns=read_stats.extra_columns)
            predict_into(
                Writer(self.staging / name, self.fmt), _sharing(chunks, stats, read_stats),
                self.predictor, self.run, str(source), stats,
            )  # fmt: skip
            return [self._part(name, job, stats)]
        parts = []
        # The id column's kind as single-process predict's writer holds it at each chunk: JSON
        # lines' ids are Python values, and the file's first decides (each part took its own
        # first chunk's: text ids then numbers were written as numbers, or numbers then text
        # not refused).
        kinds = Writer(None, self.fmt)
        for number, chunk in enumerate(chunks):
            if number % job.step != job.number:
                kinds.follow(chunk, self.run.id_column)
                continue  # another worker's chunk: read past, not predicted
            at[0] = number
            name = f"part-{number:05d}-{job.stem}{EXTENSIONS[self.fmt]}"
            stats = Stats(extra_columns=read_stats.extra_columns)
            writer = Writer(self.staging / name, self.fmt).kinds_of(kinds)
            kinds.follow(chunk, self.run.id_column)
            predict_into(writer, [chunk], self.predictor, self.run, str(source), stats)
            parts.append(self._part(name, job, stats))
        return parts

    def _part(self, name: str, job: Job, stats: Stats) -> dict[str, Any]:
        from pipeline.store import sha256_file

        path = self.staging / name
        return {
            "name": name,
            "input": job.source,
            "rows": stats.rows,
            "errors": stats.errors,
            "chunks": stats.chunks,
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
            "unknown": json.dumps(stats.unknown_categories, sort_keys=True),
            "extra": json.dumps(stats.extra_columns),
            "failure": "",
        }


# A job's starts, one byte each, in a hidden folder of the staging folder: a job started more
# than once ran again on a restarted worker (Ray restarts a dead actor without a word).
STARTS = ".starts"


def started(staging: Path, number: int) -> None:
    """Note that job ``number`` starts (again, if its worker died in an earlier start)."""
    folder = staging / STARTS
    folder.mkdir(exist_ok=True)
    with (folder / f"{number:05d}").open("ab") as fh:
        fh.write(b".")


def restarted(staging: Path) -> list[int]:
    """The jobs started more than once, and the notes gone (they are not output)."""
    import shutil

    folder = staging / STARTS
    if not folder.is_dir():
        return []
    again = sorted(int(p.name) for p in folder.iterdir() if p.stat().st_size > 1)
    shutil.rmtree(folder)
    return again


def _sharing(chunks: Iterator[Any], stats: Stats, read_stats: Stats) -> Iterator[Any]:
    """``chunks``, with the extra columns the reader finds (at its first chunk) copied over."""
    for chunk in chunks:
        stats.extra_columns = read_stats.extra_columns
        yield chunk


def _plain(value: Any) -> Any:
    """A numpy scalar from a Ray Data batch as the Python value."""
    return value.item() if hasattr(value, "item") else value
