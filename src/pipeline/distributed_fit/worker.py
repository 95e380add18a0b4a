"""In each Ray Train worker: its shard through ``fit.fit`` with DDP, rank 0's result boxed."""

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
    """The actor that carries rank 0's result (and every rank's figures) back to the driver."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {"workers": {}}
        self.epochs: list[tuple[str, dict[str, Any]]] = []

    def epoch(self, phase: str, row: dict[str, Any]) -> None:
        self.epochs.append((phase, row))

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        epochs, self.epochs = self.epochs, []
        return epochs

    def put(self, rank: int, result: dict[str, Any]) -> None:
        workers = self.result["workers"]
        workers[rank] = result.pop("worker")
        if rank == 0:
            self.result.update(result)

    def get(self) -> dict[str, Any]:
        return self.result


class Gloo:
    """``fit.Parallel`` over torch.distributed's default process group (set up by Ray Train)."""

    def __init__(self, rank: int, world: int, device: str) -> None:
        self.rank, self.world, self.device = rank, world, device

    def wrap(self, model: TabularMLP) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        ddp = DistributedDataParallel(_Members(model), device_ids=ids, broadcast_buffers=False)
        return ddp

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
    """The function each Ray Train worker runs: its shard through ``fit.fit`` with DDP."""
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
    val = ray.get(config["val"][0]).tensors(device) if rank == 0 else None
    parallel = Gloo(rank, world, device)
    seeds = seeds_of(job.seeds, rank)
    box = config["box"]

    def told(phase: str) -> Callable[[dict[str, Any]], None] | None:
        return (lambda row: box.epoch.remote(phase, row)) if rank == 0 else None  # no wait

    args = (job.cfg, rows.select(shard.train), val, job.target, job.train, seeds, device)
    selected = fit.fit(*args, parallel=parallel, on_epoch=told("selection"))
    final, refit_history = None, []
    if job.train.refit:
        refitted = fit.fit(
            job.cfg, rows, None, job.target, job.train, seeds, device,
            epochs=selected.best_epoch, parallel=parallel, on_epoch=told("refit"),
        )  # fmt: skip
        final, refit_history = _cpu_state(refitted.model), refitted.history
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    figures = {"rank": rank, "rows": len(rows), "peak_rss_mib": round(peak / 1024, 1),
               "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}  # fmt: skip
    result: dict[str, Any] = {"worker": figures}
    if rank == 0:
        result |= {
            "selected": _cpu_state(selected.model),
            "history": selected.history,
            "best_epoch": selected.best_epoch,
            "stopped_early": selected.stopped_early,
            "final": final,
            "refit_history": refit_history,
        }
    ray.get(box.put.remote(rank, result))


def _cpu_state(model: TabularMLP) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
