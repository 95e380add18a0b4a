"""What travels to the workers: each worker's rows, and what every worker is told."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import fit
from pipeline.features import TargetState
from pipeline.model import ModelConfig
from pipeline.settings import TrainSettings
from pipeline.split import Seeds, Split


@dataclass(frozen=True)
class Rows:
    """Encoded rows as numpy arrays: what travels through the object store."""

    numeric: np.ndarray  # [n, F] float32
    categorical: np.ndarray  # [n, C] int64
    target: np.ndarray  # [n]

    def tensors(self, device: str) -> fit.Tensors:
        """The rows as the loop's tensors; on CPU they share the (read-only) arrays."""
        import warnings

        with warnings.catch_warnings():  # the object store's arrays are read-only; never written
            warnings.simplefilter("ignore", UserWarning)
            numeric, categorical, target = (
                torch.from_numpy(a).to(device)
                for a in (self.numeric, self.categorical, self.target)
            )
        rows = torch.arange(len(self.target), device=device)
        return fit.Tensors(numeric, categorical, target, rows)


@dataclass(frozen=True)
class Shard:
    """One worker's rows: its training rows and its share of the validation rows (which it
    scores for early stopping, and trains on in the refit)."""

    rows: Rows
    train: np.ndarray  # positions in ``rows`` of the training rows, in the split's order
    val: np.ndarray  # positions in ``rows`` of the validation rows, in the split's order


@dataclass(frozen=True)
class Job:
    """What every worker is told besides its shard."""

    cfg: ModelConfig
    target: TargetState
    train: TrainSettings
    seeds: Seeds
    threads: int
    use_gpu: bool


def shards(tensors: fit.Tensors, split: Split, workers: int) -> Iterator[Shard]:
    """The rows of each worker, one at a time (the driver holds one shard's copy at most):
    training rows ``k::N`` and validation rows ``k::N``, in row order. With N=1: exactly the
    in-process rows (the refit's rows are the training and validation rows in row order)."""
    for k in range(workers):
        train, val = split.train[k::workers], split.val[k::workers]
        block = np.sort(np.concatenate([train, val]))
        yield Shard(
            rows_at(tensors, block), np.searchsorted(block, train), np.searchsorted(block, val)
        )


def rows_at(tensors: fit.Tensors, at: np.ndarray) -> Rows:
    """A copy of the rows at positions ``at``, as numpy arrays."""
    index = torch.from_numpy(np.ascontiguousarray(at, dtype=np.int64))
    numeric, categorical, target = (
        t.cpu()[index].numpy() for t in (tensors.numeric, tensors.categorical, tensors.target)
    )
    return Rows(numeric, categorical, target)
