"""Process-wide torch state: threads, determinism, device; set once per stage, recorded."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

# Below this many rows a step's matrices are too small to share between threads (measured on
# 2 cores, idle: batch 64 ran 1.25x faster on 1 thread than on 2; batch 256 1.25x slower).
PARALLEL_BATCH = 256


def configure(
    threads: int, device: str, batch_size: int | None = None, *, device_from: str | None = None
) -> dict[str, Any]:
    """Make torch deterministic, set its thread count, pick the device; return what was chosen.

    ``threads=0`` chooses: one thread unless ``batch_size`` is known and at least
    ``PARALLEL_BATCH`` rows, else one per available core, at most 4 (beyond that the small
    matrices of a tabular MLP gain nothing). One thread also has no barrier to wait at, so a
    busy machine slows it down in proportion, where 2 threads at batch 64 ran 20-50x slower
    beside other processes. The count never changes results (tests/test_threads.py).
    ``device_from`` says where the device setting came from (``Settings.source_of``), for the
    message when CUDA is asked for and absent.
    """
    if threads == 0:
        parallel = batch_size is not None and batch_size >= PARALLEL_BATCH
        threads = _cores() if parallel else 1
    torch.set_num_threads(threads)
    # cuBLAS needs this before its first use to be deterministic (ignored on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms(True) also imports torch._inductor (about 2.4 s here) to
    # set a flag for a compiler we do not use; the underlying switch is the same.
    torch._C._set_deterministic_algorithms(True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        where = device_from or "PIPELINE_TRAIN__DEVICE or train --device"
        raise ConfigError(
            f"train.device is cuda (from {where}) but no CUDA device is available: use cpu, or "
            "auto to use CUDA only when present"
        )
    # Recorded beside the thread count: the CLI makes idle OpenMP threads sleep (cli.main).
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")
    return {"threads": threads, "device": device, "omp_wait_policy": wait_policy}


def for_inference() -> int:
    """Set torch up for a process that scores a file: one thread per kernel (128-row blocks are
    far below ``PARALLEL_BATCH``) and, returned, how many blocks to score at once: one per
    available core, at most 4. Neither changes a prediction (tests/test_predict.py)."""
    torch.set_num_threads(1)
    return _cores()


def _cores() -> int:
    """One per available core, at most 4 (beyond that a tabular MLP's small matrices gain
    nothing)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def configure_for(settings: Settings, batch_size: int) -> dict[str, Any]:
    """``configure`` with ``settings``' threads and device (and where the device came from),
    for a run whose batches are ``batch_size`` rows: what was chosen."""
    t = settings.train
    return configure(
        t.threads, t.device, batch_size, device_from=settings.source_of("train", "device")
    )
