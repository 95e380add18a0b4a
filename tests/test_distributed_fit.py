"""The fitting loop as two data-parallel workers, without Ray: two processes and gloo.

``distributed_fit`` runs ``fit.fit`` with a ``Parallel`` in each Ray Train worker; here two
spawned processes do the same over a file-initialised gloo group, on tiny tensors. The workers
must end with the same weights (also when one runs out of rows before the other), and a step's
gradient must be the mean over every worker's rows, as one process taking them all would get.
Ray Train's failures must become the project's errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline import distributed_fit, fit
from pipeline.distributed_fit.worker import Gloo, seeds_of
from pipeline.errors import ConfigError, SourceError
from pipeline.features import Encoded, TargetState
from pipeline.model import ModelConfig
from pipeline.settings import TrainSettings
from pipeline.split import Seeds

TARGET = TargetState(name="y", task="regression", transform="none")
CFG = ModelConfig(
    n_numeric=3, cardinalities=(5,), embedding_dims=(2,), hidden=(8,), dropout=0.0, n_outputs=1
)


def _data(n: int) -> fit.Tensors:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    c = rng.integers(0, 5, size=(n, 1)).astype(np.int64)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * c[:, 0] + rng.normal(0, 0.5, n)).astype(np.float32)
    return fit.Tensors.all(Encoded(x, c, y), "cpu")


def _worker(rank: int, world: int, runs: list[tuple[str, dict[str, Any]]]) -> None:
    """Each ``(folder, case)`` of ``runs`` in turn, in this one process: a spawned process
    spends seconds importing torch before its first step."""
    for folder, case in runs:
        _run(rank, world, folder, case)


def _run(rank: int, world: int, folder: str, case: dict[str, Any]) -> None:
    """One worker: its rows ``rank::world`` of the training and validation rows. With
    ``case["stop"]`` the driver stops the run (rank 0's ``ask`` says SIGTERM) and each rank
    saves its state as ``stopped<rank>.pt``; with ``case["resume_from"]``, each continues from
    the state it saved there."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        if case.get("gather"):  # what rank 0 gets back of rows dealt k::world, 7 of them
            rows = torch.arange(14, dtype=torch.float32).reshape(7, 2)
            back = Gloo(rank, world, "cpu").gather_dealt(rows[rank::world])
            torch.save({"back": back}, f"{folder}/rank{rank}.pt")
            return
        data = _data(case["rows"] + 8)
        train = data.select(np.arange(case["rows"])[rank::world])
        val = data.select(np.arange(case["rows"], case["rows"] + 8)[rank::world])
        t = TrainSettings(**case["train"])
        seeds = seeds_of(Seeds.from_seed(3), rank)
        ask = (lambda: 15) if rank == 0 and case.get("stop") else None
        parallel = (_DdpGloo if case.get("ddp") else Gloo)(rank, world, "cpu", ask=ask)
        resume = None
        if case.get("resume_from"):
            saved = torch.load(f"{case['resume_from']}/stopped{rank}.pt", weights_only=True)
            resume = fit.FitState.from_dict(saved["state"])
        try:
            fitted = fit.fit(CFG, train, val, TARGET, t, seeds, "cpu", parallel=parallel,
                             epochs=case.get("epochs"), resume=resume)  # fmt: skip
        except fit.Stopped as stopped:
            torch.save({"signum": stopped.signum, "state": stopped.state.to_dict()},
                       f"{folder}/stopped{rank}.pt")  # fmt: skip
            return
        torch.save(
            {"state": fitted.model.state_dict(), "history": fitted.history},
            f"{folder}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


class _DdpGloo(Gloo):
    """What the workers ran on CPUs before ``average_gradients``: DistributedDataParallel."""

    def wrap(self, model: Any) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        from pipeline.distributed_fit.worker import _Members

        return DistributedDataParallel(_Members(model), broadcast_buffers=False)

    def average_gradients(self, model: Any) -> None:
        """DDP's backward has averaged them."""


# The runs that tests only read, all in one pair of spawned workers.
UNEVEN = {"rows": 37, "train": {"batch_size": 4, "max_epochs": 3, "patience": 5}}
CASES = {
    "uneven": UNEVEN,
    "uneven_ddp": UNEVEN | {"ddp": True},
    "one_step": {"rows": 5, "train": {"batch_size": 6, "max_epochs": 5}, "epochs": 5},
    "gather": {"gather": True},
}


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each of ``CASES`` run by two workers: each rank's weights and curve, by case."""
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("spawned")
    runs = []
    for name, case in CASES.items():
        (root / name).mkdir()
        runs.append((str(root / name), case))
    mp.spawn(_worker, args=(2, runs), nprocs=2, join=True)
    return {
        name: [torch.load(root / name / f"rank{r}.pt", weights_only=True) for r in range(2)]
        for name in CASES
    }


@pytest.mark.slow
def test_rank_0_gets_every_workers_validation_outputs_back_in_order(
    spawned: dict[str, list[dict[str, Any]]],
) -> None:
    """Rows dealt 4 + 3 (``k::2``) come back to rank 0 as the 7 rows in their order; rank 1
    gets None. Early stopping's loss and the curve's metrics are computed on them."""
    ranks = spawned["gather"]
    assert torch.equal(ranks[0]["back"], torch.arange(14, dtype=torch.float32).reshape(7, 2))
    assert ranks[1]["back"] is None


@pytest.mark.slow
def test_two_workers_keep_the_same_weights_when_one_runs_out_of_rows(
    spawned: dict[str, list[dict[str, Any]]],
) -> None:
    """37 rows as 19 + 18, 2 rows per worker and step: the last step has one row, on rank 0
    alone; rank 1 joins it with none. Both end with the same weights; rank 0 has the curve."""
    ranks = spawned["uneven"]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert [row["epoch"] for row in ranks[0]["history"]] == [1, 2, 3]
    assert all(np.isfinite(row["val_loss"]) for row in ranks[0]["history"])
    # every worker reports the same training loss: the mean over all 37 rows
    assert [r["train_loss"] for r in ranks[0]["history"]] == [
        r["train_loss"] for r in ranks[1]["history"]
    ]


@pytest.mark.slow
def test_the_polled_all_reduce_gives_ddps_weights_bit_for_bit(
    spawned: dict[str, list[dict[str, Any]]],
) -> None:
    """On CPUs the workers average their gradients in one flat all-reduce whose wait is polled
    (``average_gradients``), not in DistributedDataParallel's blocking buckets: the same
    arithmetic (each gradient times 1/N, then summed), so the same weights to the bit, and the
    same build as before the change."""
    for rank in (0, 1):
        polled, ddp = spawned["uneven"][rank], spawned["uneven_ddp"][rank]
        assert polled["history"] == ddp["history"]
        for name, value in polled["state"].items():
            assert torch.equal(value, ddp["state"][name]), (rank, name)


@pytest.mark.slow
def test_a_step_averages_the_gradient_over_every_workers_rows(
    spawned: dict[str, list[dict[str, Any]]],
) -> None:
    """Five epochs of one step over 5 rows (3 on rank 0, 2 on rank 1) move the weights as one
    process taking the 5 rows in one batch does (to float rounding: the sums run in another
    order). AdamW's steps depend on the ratios of successive gradients, so a wrong weighting
    of the workers' losses (0.5/0.5 instead of 0.6/0.4) shows."""
    ranks = spawned["one_step"]
    data = _data(13)
    alone = fit.fit(CFG, data.select(np.arange(5)), None, TARGET,
                    TrainSettings(batch_size=6, max_epochs=5), Seeds.from_seed(3), "cpu",
                    epochs=5)  # fmt: skip
    for name, value in alone.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_stop_asked_of_rank_0_stops_every_worker_at_one_step_and_resuming_changes_nothing(
    tmp_path: Path,
) -> None:
    """What `pipeline train --workers N` does on SIGTERM: the driver's signal reaches rank 0's
    ``ask``; every worker stops after the same step (the 32nd: ``STOP_EVERY``) with its own
    state; both resumed from those states end with the uninterrupted run's weights and curve,
    bit for bit."""
    import torch.multiprocessing as mp

    from pipeline.distributed_fit.worker import STOP_EVERY

    train = {"batch_size": 4, "max_epochs": 6, "patience": 10}
    runs, cases = {}, []
    for name, stop, resume_from in (("whole", False, None), ("stopped", True, None),
                                    ("resumed", False, tmp_path / "stopped")):  # fmt: skip
        runs[name] = tmp_path / name
        runs[name].mkdir()
        cases.append((str(runs[name]), {"rows": 37, "train": train, "stop": stop,
                                        "resume_from": resume_from}))  # fmt: skip
    mp.spawn(_worker, args=(2, cases), nprocs=2, join=True)  # the three runs in turn
    stopped = [torch.load(runs["stopped"] / f"stopped{r}.pt", weights_only=True) for r in (0, 1)]
    assert [s["signum"] for s in stopped] == [15, 15]
    # 19 + 18 rows, 2 per worker and step: 10 steps an epoch; the 32nd step is epoch 4's 2nd
    assert STOP_EVERY == 32
    assert [(s["state"]["epoch"], s["state"]["position"]) for s in stopped] == [(4, 4), (4, 4)]
    assert not torch.equal(stopped[0]["state"]["shuffle_rng"], stopped[1]["state"]["shuffle_rng"])
    for r in (0, 1):
        whole = torch.load(runs["whole"] / f"rank{r}.pt", weights_only=True)
        resumed = torch.load(runs["resumed"] / f"rank{r}.pt", weights_only=True)
        assert whole["history"] == resumed["history"]
        for key, value in whole["state"].items():
            assert torch.equal(value, resumed["state"][key]), (r, key)


class WorkerGroupError(Exception):
    """Ray Train's error for failed workers, by name and shape (``worker_failures``)."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


class WorkerHealthCheckFailedError(Exception):
    pass


class WorkerGroupStartupTimeoutError(Exception):
    pass


def test_ray_train_failures_become_the_projects_errors() -> None:
    """A worker's own PipelineError comes out as raised (whatever wraps it); a dead worker is a
    SourceError (exit 5) saying nothing was written; workers that cannot start likewise, with
    Ray's first line; anything else is left as it is (a bug keeps its traceback)."""
    diverged = ConfigError("training diverged at epoch 1")
    wrapped = RuntimeError("the user's function raised")
    wrapped.__cause__ = diverged
    died = WorkerHealthCheckFailedError("A worker health check failed.")
    assert distributed_fit._failure(WorkerGroupError({0: wrapped, 1: died})) is diverged
    lost = distributed_fit._failure(WorkerGroupError({1: died}))
    assert isinstance(lost, SourceError) and lost.exit_code == 5
    assert "worker was lost (WorkerHealthCheckFailedError)" in lost.message
    assert "nothing was written" in lost.message
    slow = WorkerGroupStartupTimeoutError("no 2 CPUs within 60 s\nmore detail")
    stalled = distributed_fit._failure(WorkerGroupError({0: slow}))
    assert isinstance(stalled, SourceError) and "no 2 CPUs within 60 s)" in stalled.message
    bug = WorkerGroupError({0: KeyError("x")})
    assert distributed_fit._failure(bug) is bug


def test_more_embedded_workers_than_memory_holds_is_refused_before_ray_starts(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """`--workers 1000` on one machine started Ray worker processes of about 430 MiB each
    until it swapped: embedded, workers that cannot fit in the available memory are exit 3
    naming the count that fits, before Ray starts or the store is touched."""
    data = tmp_path / "tiny.csv"
    rows = [f"{i % 7},{i % 3 * 1.5},{i * 2.0}" for i in range(60)]
    data.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "RAY_ADDRESS": None}  # fmt: skip
    result = cli("train", "--workers", "4096", env=env)  # 1.7 TB of workers
    assert result.exit_code == 3, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "starts 4096 worker processes on this machine" in line, line
    assert "MiB is available: use --workers" in line and "RAY_ADDRESS" in line
    assert not any(p.is_file() for p in store.rglob("*"))
