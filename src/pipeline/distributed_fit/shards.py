"""What travels to the workers: each worker's rows, and what every worker is told."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


# One group's piece of some rows: value columns [n, f] float32, missing indicators [n, i]
# float32, categorical codes [n, c] int64 (``columns.read_group``'s return values).
Piece = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Parts:
    """One worker's rows as the column tasks left them (``columns``): one object per group of
    columns, and the rest of its ``Shard``."""

    pieces: list[Any]  # Ray object refs, one per group, in file order
    widths: list[tuple[int, int, int]]  # each group's (values, indicators, codes) columns
    target: np.ndarray
    train: np.ndarray
    val: np.ndarray

    def shard(self) -> Shard:
        """The worker's ``Shard``: its pieces fetched one at a time and copied into place."""

        return Shard(gathered(fetched(self.pieces), self.widths, self.target), self.train, self.val)


def fetched(refs: list[Any]) -> Iterator[Piece]:
    """Each piece of ``refs`` (Ray object refs) in turn, fetched as it is asked for."""
    import ray

    for ref in refs:
        yield ray.get(ref)


def gathered(
    pieces: Iterable[Piece], widths: list[tuple[int, int, int]], target: np.ndarray
) -> Rows:
    """Rows from each group's piece (``widths`` says their columns), in the in-process layout:
    every group's value columns, then every group's missing indicators, then the categorical
    codes. Each piece is let go once copied."""
    n = len(target)
    values, indicators = (sum(w[k] for w in widths) for k in (0, 1))
    numeric = np.empty((n, values + indicators), np.float32)
    categorical = np.empty((n, sum(w[2] for w in widths)), np.int64)
    at = [0, values, 0]  # where the next group's values, indicators and codes go
    for piece, width in zip(pieces, widths, strict=True):
        numeric[:, at[0] : at[0] + width[0]] = piece[0]
        numeric[:, at[1] : at[1] + width[1]] = piece[1]
        categorical[:, at[2] : at[2] + width[2]] = piece[2]
        at = [at[0] + width[0], at[1] + width[1], at[2] + width[2]]
        del piece
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
