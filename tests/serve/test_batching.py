"""The micro-batcher on its own: what shares a pass, and the queue's limits (milliseconds)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pipeline.serve.batching import Batcher, Job
from pipeline.serve.contract import RequestError


class Scorer:
    """A score function that records each pass and can be held until released."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []  # the first record of each job, per pass
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, jobs: list[Job]) -> list[Any]:
        self.gate.wait(10)
        self.passes.append([job.records[0]["n"] for job in jobs])
        if self.fail:
            raise RuntimeError("broken scorer")
        return [f"answer {job.records[0]['n']} of {len(job.records)}" for job in jobs]


def _batcher(scorer: Scorer, **limits: Any) -> Batcher:
    options = {"scorers": 1, "max_rows": 100, "max_queued_rows": 1000, "deadline": 10.0}
    return Batcher(scorer, **{**options, **limits})


def _records(n: int, rows: int = 1) -> list[dict[str, Any]]:
    return [{"n": n}] * rows


async def _submit(batcher: Batcher, n: int, rows: int = 1, gone: Any = None) -> Any:
    return await batcher.submit(_records(n, rows), None, gone or (lambda: False))


def test_a_lone_request_is_scored_at_once_and_queued_ones_share_the_next_pass() -> None:
    """The first request does not wait for company; those that arrive while it is scored are
    scored together next, each getting its own answer."""
    scorer = Scorer()

    async def main() -> list[Any]:
        batcher = _batcher(scorer)
        scorer.gate.clear()
        first = asyncio.ensure_future(_submit(batcher, 0))
        await asyncio.sleep(0.05)  # the first pass has started and is held
        rest = [asyncio.ensure_future(_submit(batcher, n)) for n in (1, 2, 3)]
        await asyncio.sleep(0.05)
        scorer.gate.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    assert answers == [f"answer {n} of 1" for n in range(4)]
    assert scorer.passes == [[0], [1, 2, 3]]


def test_a_pass_holds_at_most_max_rows_and_at_least_one_request() -> None:
    scorer = Scorer()

    async def main() -> None:
        batcher = _batcher(scorer, max_rows=5)
        scorer.gate.clear()
        tasks = [asyncio.ensure_future(_submit(batcher, n, rows)) for n, rows in
                 [(0, 1), (1, 3), (2, 2), (3, 9), (4, 1)]]  # fmt: skip
        await asyncio.sleep(0.05)
        scorer.gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    # 1+3 rows; 2 (with the next 9 it would be 11); 9 rows alone, over the cap; the last one.
    assert scorer.passes == [[0, 1], [2], [3], [4]]


def test_a_full_queue_is_503_a_late_answer_504_and_a_gone_client_is_dropped_unscored() -> None:
    scorer = Scorer()

    async def main() -> None:
        batcher = _batcher(scorer, max_queued_rows=4, deadline=0.3)
        scorer.gate.clear()
        held = asyncio.ensure_future(_submit(batcher, 0))  # being scored, held
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(_submit(batcher, 1, rows=3))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestError) as full:
            await _submit(batcher, 2, rows=2)  # 3 + 2 > 4 rows waiting
        assert full.value.status == 503 and full.value.headers == {"Retry-After": "1"}
        gone = asyncio.ensure_future(_submit(batcher, 3, gone=lambda: True))
        for task, status in ((held, 504), (queued, 504), (gone, 504)):
            with pytest.raises(RequestError) as late:
                await task
            assert late.value.status == status
        scorer.gate.set()
        await asyncio.sleep(0.1)
        # After the deadline nobody waits for them: the queued jobs are dropped, not scored.
        assert scorer.passes == [[0]]
        hung_up = asyncio.ensure_future(_submit(batcher, 4, gone=lambda: True))
        assert (await _submit(batcher, 5)) == "answer 5 of 1"
        with pytest.raises(RequestError) as dropped:
            await hung_up
        assert dropped.value.status == 499
        assert scorer.passes == [[0], [5]]

    asyncio.run(main())


def test_a_failing_pass_fails_its_requests_and_the_next_pass_works() -> None:
    scorer = Scorer()

    async def main() -> None:
        batcher = _batcher(scorer)
        scorer.fail = True
        with pytest.raises(RuntimeError, match="broken scorer"):
            await _submit(batcher, 0)
        scorer.fail = False
        assert await _submit(batcher, 1) == "answer 1 of 1"

    asyncio.run(main())
