"""Adaptive micro-batching: the records of concurrent requests scored in one forward pass.

A request's records are validated on its own (a bad record fails only that request), then
queued. A scorer that is free takes everything queued, up to ``max_rows`` rows, and scores it
in a worker thread; it never waits for more to arrive, so a lone request is scored at once and
a busy server scores several requests per pass. At most ``scorers`` passes run at a time. A
small pass (at most ``inline_rows`` rows: a few forward blocks, well under a millisecond of
model time) runs on the event loop's own thread: handing it to a worker thread would cost more
than the pass, and a worker thread holding the GIL makes the loop wait for the interpreter's
switch interval (5 ms) before it can answer anyone.
Scoring is batch-invariant (``pipeline.model.in_blocks``): which requests share a pass cannot
change any prediction. The queue is bounded in rows (a full queue is a 503), each request has a
deadline (504), and a request whose client went away is dropped before it is scored.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from pipeline.serve.contract import RequestError

_DROPPED = object()  # the answer of a job whose client went away before it was scored
_HERE = threading.local()  # .inline: this thread is running a pass on the event loop's thread


def scoring_inline() -> bool:
    """Whether the calling ``score`` runs on the event loop's thread (a small pass)."""
    return getattr(_HERE, "inline", False)


@dataclass
class Job:
    """One request's validated records, and where its answer goes."""

    records: list[Any]  # the request's validated records (Contract.records: tuples)
    extra: Any  # what ``score`` needs besides the records (e.g. the keys the model ignores)
    future: asyncio.Future[Any]
    gone: Callable[[], bool] = lambda: False  # whether the client hung up meanwhile


def _expire(job: Job) -> None:
    """The deadline passed: the request gets its 504, and the job, if still queued, is dropped
    rather than scored (a pass already running finishes, and its answer is discarded)."""
    if not job.future.done():
        job.gone = lambda: True
        job.future.set_exception(TimeoutError())


def deadline_exceeded(seconds: float) -> RequestError:
    """A request's 504: not scored within PIPELINE_SERVE__DEADLINE seconds."""
    return RequestError(
        504,
        "deadline_exceeded",
        f"the prediction took longer than {seconds:g} s (PIPELINE_SERVE__DEADLINE): retry, or "
        "send fewer records",
    )


class Batcher:
    """Queues jobs and scores them in batches with ``score(jobs) -> [answer per job]``."""

    def __init__(
        self,
        score: Callable[[list[Job]], list[Any]],
        *,
        scorers: int,
        max_rows: int,
        max_queued_rows: int,
        deadline: float,
        inline_rows: int = 0,
    ) -> None:
        self.score = score
        self.scorers, self.max_rows, self.inline_rows = scorers, max_rows, inline_rows
        self.max_queued_rows, self.deadline = max_queued_rows, deadline
        self.queue: collections.deque[Job] = collections.deque()
        self.queued_rows = 0
        self.running = 0
        self.batches = 0  # passes scored, for the stop event
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done (asyncio's rule)

    async def submit(self, records: list[Any], extra: Any, gone: Callable[[], bool]) -> Any:
        """The answer for ``records``, scored with whatever else is queued; ``gone`` says
        whether the client has hung up (such a job is dropped unscored: 499)."""
        if self.queued_rows + len(records) > self.max_queued_rows and self.queue:
            raise RequestError(
                503,
                "overloaded",
                f"{self.queued_rows} rows are already waiting to be scored: retry later",
                headers={"Retry-After": "1"},
            )
        job = Job(records, extra, asyncio.get_running_loop().create_future(), gone)
        self.queue.append(job)
        self.queued_rows += len(records)
        if self.running < self.scorers:
            self.running += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A timer on the loop rather than wait_for(shield(...)): no task per request.
        timer = asyncio.get_running_loop().call_later(self.deadline, _expire, job)
        try:
            answer = await job.future
        except TimeoutError:
            raise deadline_exceeded(self.deadline) from None
        finally:
            timer.cancel()
        if answer is _DROPPED:
            raise RequestError(
                499, "client_closed_request", "the client closed the connection before its "
                "records were scored"
            )  # fmt: skip
        return answer

    def _take(self) -> list[Job]:
        """Queued jobs up to ``max_rows`` rows (at least one job), skipping abandoned ones."""
        jobs: list[Job] = []
        rows = 0
        while self.queue:
            job = self.queue[0]
            if jobs and rows + len(job.records) > self.max_rows:
                break
            self.queue.popleft()
            self.queued_rows -= len(job.records)
            if job.gone():
                if not job.future.done():
                    job.future.set_result(_DROPPED)
                continue
            jobs.append(job)
            rows += len(job.records)
        return jobs

    async def _drain(self) -> None:
        try:
            while self.queue:
                jobs = self._take()
                if not jobs:
                    continue
                self.batches += 1
                try:
                    if sum(len(job.records) for job in jobs) <= self.inline_rows:
                        _HERE.inline = True
                        try:
                            answers = self.score(jobs)
                        finally:
                            _HERE.inline = False
                    else:
                        answers = await anyio.to_thread.run_sync(self.score, jobs)
                except Exception as exc:  # a bug: every request of the pass gets the 500
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                for job, answer in zip(jobs, answers, strict=True):
                    if not job.future.done():
                        job.future.set_result(answer)
                await asyncio.sleep(0)  # let the loop read what arrived meanwhile: the next pass
        finally:
            self.running -= 1
