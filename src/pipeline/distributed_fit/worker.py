"""In each Ray Train worker: its shard through ``fit.fit`` with DDP, rank 0's result boxed;
the driver's stop request in, every rank's state out at checkpoints and on stopping."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import fit, runtime
from pipeline.distributed_fit.shards import Job, Shard
from pipeline.model import TabularMLP
from pipeline.split import Seeds


class Box:
    """The actor between the driver and the workers: rank 0's epochs and result (and every
    rank's figures) go to the driver; the driver's stop request goes to the workers; each
    rank's state goes to the driver at every checkpoint and when the run stops."""

    def __init__(self, world: int = 1) -> None:
        self.world = world
        self.result: dict[str, Any] = {"workers": {}}
        self.epochs: list[tuple[str, dict[str, Any]]] = []
        self.signum = 0
        self.pending: dict[tuple[str, int], dict[int, Any]] = {}
        self.complete: dict[str, Any] | None = None
        self.began = False

    def begin(self) -> None:
        """Rank 0 is in its loop: from now on it asks whether to stop."""
        self.began = True

    def epoch(self, phase: str, row: dict[str, Any]) -> None:
        self.epochs.append((phase, row))

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        epochs, self.epochs = self.epochs, []
        return epochs

    def poll(
        self, signum: int
    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any] | None, bool]:
        """The driver's call: the signal it got (0: none) in, rank 0's epochs since the last
        call, the latest complete checkpoint not yet taken out, and whether rank 0 began."""
        self.signum = self.signum or signum
        complete, self.complete = self.complete, None
        return self.drain(), complete, self.began

    def stopping(self) -> int:
        """The signal the driver got, or 0."""
        return self.signum

    def checkpoint(
        self, phase: str, rank: int, state: dict[str, Any], selection: dict[str, Any] | None
    ) -> None:
        """Rank ``rank``'s state at a checkpoint (rank 0's with the selection result in the
        refit phase); complete once every rank's state of that epoch is here."""
        key = (phase, int(state["epoch"]))
        states = self.pending.setdefault(key, {})
        states[rank] = (state, selection)
        if len(states) == self.world:
            del self.pending[key]
            self.complete = {
                "phase": phase,
                "states": [states[r][0] for r in range(self.world)],
                "selection": states[0][1],
            }

    def stopped(
        self,
        rank: int,
        phase: str,
        signum: int,
        state: dict[str, Any],
        selection: dict[str, Any] | None,
    ) -> None:
        """Rank ``rank`` stopped at the driver's request, in ``phase``, with ``state``."""
        stops = self.result.setdefault("stopped", {})
        stops[rank] = {"phase": phase, "signum": signum, "state": state, "selection": selection}

    def put(self, rank: int, result: dict[str, Any]) -> None:
        workers = self.result["workers"]
        workers[rank] = result.pop("worker")
        if rank == 0:
            self.result.update(result)

    def get(self) -> dict[str, Any]:
        return self.result


# Workers ask whether to stop every this many steps (rank 0 asks the driver's box, then tells
# the others): a round trip and a broadcast each time, under 1 ms, so a stop lands within a
# few dozen steps and costs the loop nothing measurable.
STOP_EVERY = 32


class Gloo:
    """``fit.Parallel`` over torch.distributed's default process group (set up by Ray Train).

    ``ask`` (rank 0's) says which signal the driver got, 0 for none: every ``STOP_EVERY``
    steps rank 0 asks it and broadcasts the answer, and every worker stops after that step.
    """

    def __init__(
        self, rank: int, world: int, device: str, ask: Callable[[], int] | None = None
    ) -> None:
        self.rank, self.world, self.device = rank, world, device
        self.ask = ask
        self.steps = 0

    def wrap(self, model: TabularMLP) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """On GPUs (NCCL), DistributedDataParallel; on CPUs the plain forward, whose gradients
        ``average_gradients`` all-reduces (and with one worker there is nothing to average)."""
        if self.world == 1 or not self.device.startswith("cuda"):
            return model.members_forward
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index]
        ddp = DistributedDataParallel(_Members(model), device_ids=ids, broadcast_buffers=False)
        return ddp

    def average_gradients(self, model: TabularMLP) -> None:
        """On CPUs, every gradient as one flat buffer, scaled by 1/N and summed over the
        workers (DDP's arithmetic: the same weights, bit for bit), waiting for the sum with
        ``polled``. DDP blocks in gloo's wait instead, and on a virtual machine whose idle vCPU
        halts (this project's 2-core machines), waking it again cost 3-4 ms on about a third
        of the steps: two gloo processes all-reducing 173,000 floats took 2.0 ms on average
        blocked, 0.9 ms polled; `make bench-train-ray`'s figures are in the README."""
        if self.world == 1 or self.device.startswith("cuda"):
            return
        import torch.distributed as dist

        params = [p for p in model.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(1.0 / self.world)
        polled(dist.all_reduce(flat, async_op=True))
        parts = torch.split(flat, [p.numel() for p in params])
        for param, part in zip(params, parts, strict=True):
            param.grad = part.view_as(param)

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = value.detach().clone().to(self.device)
        dist.all_reduce(out)
        return out.cpu()

    def from_first(self, value: float) -> float:
        import torch.distributed as dist

        out = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(out, src=0)
        return float(out.cpu()[0])

    def gather_dealt(self, value: torch.Tensor) -> torch.Tensor | None:
        if self.world == 1:
            return value
        import torch.distributed as dist

        counts = torch.zeros(self.world, dtype=torch.int64)
        counts[self.rank] = len(value)
        sizes = [int(n) for n in self.all_sum(counts)]
        # Every worker sends as many rows (gather's rule): its own, padded to the longest share.
        padded = value.new_zeros((max(sizes), *value.shape[1:]))
        padded[: len(value)] = value
        parts = [torch.empty_like(padded) for _ in sizes] if self.rank == 0 else None
        dist.gather(padded, gather_list=parts, dst=0)
        if parts is None:
            return None
        out = value.new_empty((sum(sizes), *value.shape[1:]))
        for k, (part, size) in enumerate(zip(parts, sizes, strict=True)):
            out[k :: self.world] = part[:size]
        return out

    def stop_signal(self) -> int | None:
        self.steps += 1
        if self.steps % STOP_EVERY:
            return None
        asked = self.ask() if self.rank == 0 and self.ask is not None else 0
        return int(self.from_first(float(asked))) or None


def polled(work: Any) -> None:
    """Wait for a collective by asking whether it is done, yielding the CPU between asks:
    the worker's CPU stays awake for gloo's threads, which do the sending and summing. A
    failed collective (a lost peer) raises here, as a blocking wait would."""
    while not work.is_completed():
        os.sched_yield()
    work.wait()


class _Members(nn.Module):
    """``members_forward`` as a module's ``forward``: what DDP wraps."""

    def __init__(self, model: TabularMLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.model.members_forward(numeric, categorical)


def seeds_of(seeds: Seeds, rank: int) -> Seeds:
    """Worker ``rank``'s seeds: the same initialisation everywhere; its own shuffling and
    dropout streams (rank 0 keeps the in-process ones)."""
    if rank == 0:
        return seeds

    def mixed(seed: int) -> int:
        state = np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)
        return int(state[0] >> 1)

    return replace(seeds, shuffle=mixed(seeds.shuffle), dropout=mixed(seeds.dropout))


def train_loop(config: dict[str, Any]) -> None:
    """The function each Ray Train worker runs: its shard through ``fit.fit`` with DDP.

    With ``config["resume"]``, each rank continues from its own state in the checkpoint; every
    ``checkpoint_every`` epochs each rank's state goes to the box; a stop asked by the driver
    stops every rank after the same step, and each hands its state to the box and returns.
    """
    import ray
    import ray.train
    import ray.train.torch

    job: Job = config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = str(ray.train.torch.get_device()) if job.use_gpu else "cpu"
    runtime.configure(job.threads, device)
    shard: Shard = ray.get(config["shards"][rank])
    rows = shard.rows.tensors(device)
    val = rows.select(shard.val)  # its share: rank 0 gathers every worker's outputs
    box = config["box"]
    parallel = Gloo(rank, world, device, ask=lambda: int(ray.get(box.stopping.remote())))
    seeds = seeds_of(job.seeds, rank)
    resume = ray.get(config["resume"][rank]) if config.get("resume") else None
    if rank == 0:
        ray.get(box.begin.remote())  # a stop is asked for from here on, not before

    def told(phase: str) -> Callable[[dict[str, Any]], None] | None:
        return (lambda row: box.epoch.remote(phase, row)) if rank == 0 else None  # no wait

    def saved(phase: str, selection: Any) -> Callable[[fit.FitState], None]:
        return lambda state: ray.get(box.checkpoint.remote(phase, rank, state.to_dict(), selection))

    def resumed(phase: str) -> fit.FitState | None:
        if resume is None or resume["phase"] != phase:
            return None
        return fit.FitState.from_dict(resume["state"])

    phase, selection = "selection", None
    try:
        if resume is not None and resume["phase"] == "refit":  # the selection had finished
            selection = resume["selection"]
        else:
            args = (job.cfg, rows.select(shard.train), val, job.target, job.train, seeds, device)
            selected = fit.fit(
                *args, parallel=parallel, on_epoch=told("selection"),
                resume=resumed("selection"), on_checkpoint=saved("selection", None),
            )  # fmt: skip
            selection = selected.selection()
        final, refit_history = None, []
        if job.train.refit:
            phase = "refit"
            refitted = fit.fit(
                job.cfg, rows, None, job.target, job.train, seeds, device,
                epochs=selection["best_epoch"], parallel=parallel, on_epoch=told("refit"),
                resume=resumed("refit"),
                on_checkpoint=saved("refit", selection if rank == 0 else None),
            )  # fmt: skip
            final, refit_history = _cpu_state(refitted.model), refitted.history
    except fit.Stopped as stopped:
        mine = selection if rank == 0 else None
        ray.get(box.stopped.remote(rank, phase, stopped.signum, stopped.state.to_dict(), mine))
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    figures = {"rank": rank, "rows": len(rows), "peak_rss_mib": round(peak / 1024, 1),
               "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}  # fmt: skip
    result: dict[str, Any] = {"worker": figures}
    if rank == 0:
        result |= {
            "selected": selection["model"],
            "history": selection["history"],
            "best_epoch": selection["best_epoch"],
            "stopped_early": selection["stopped_early"],
            "final": final,
            "refit_history": refit_history,
        }
    ray.get(box.put.remote(rank, result))


def _cpu_state(model: TabularMLP) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
