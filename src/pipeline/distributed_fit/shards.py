"""What travels to the workers: each worker's rows, and what every worker is told."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline import fit
from pipeline.features import TargetState
from pipeline.model import ModelConfig
from pipeline.settings import TrainSettings
from pipeline.split import Seeds


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
class Parts:
    """One worker's rows as the column tasks left them (``columns``): one object per group of
    columns, gathered by the worker itself, and the rest of its ``Shard``."""

    pieces: list[Any]  # Ray object refs, one per group, in file order
    target: np.ndarray
    train: np.ndarray
    val: np.ndarray

    def shard(self) -> Shard:
        """The worker's ``Shard``: its pieces fetched and laid side by side."""
        import ray

        return Shard(gathered(ray.get(self.pieces), self.target), self.train, self.val)


def gathered(pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]], target: np.ndarray) -> Rows:
    """Rows from each group's piece, in the in-process layout: every group's value columns,
    then every group's missing indicators, then the categorical codes."""
    n = len(target)
    numeric = np.concatenate(
        [np.empty((n, 0), np.float32), *(p[0] for p in pieces), *(p[1] for p in pieces)], axis=1
    )
    categorical = np.concatenate([np.empty((n, 0), np.int64), *(p[2] for p in pieces)], axis=1)
    return Rows(numeric, categorical, target)


@dataclass(frozen=True)
class Job:
    """What every worker is told besides its shard."""

    cfg: ModelConfig
    target: TargetState
    train: TrainSettings
    seeds: Seeds
    threads: int
    use_gpu: bool
