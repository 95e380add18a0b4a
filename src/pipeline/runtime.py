"""Process-wide torch state: threads, determinism, device; set once per stage, recorded."""

from __future__ import annotations

import os
from typing import Any

import torch

from pipeline.errors import ConfigError


def configure(threads: int, device: str) -> dict[str, Any]:
    """Make torch deterministic, set its thread count, pick the device; return what was chosen.

    ``threads=0`` means one per available core, at most 4: beyond that the small matrices of a
    tabular MLP gain nothing and results would vary with the machine.
    """
    if threads == 0:
        threads = max(1, min(4, len(os.sched_getaffinity(0))))
    torch.set_num_threads(threads)
    # cuBLAS needs this before its first use to be deterministic (ignored on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms(True) also imports torch._inductor (about 2.4 s here) to
    # set a flag for a compiler we do not use; the underlying switch is the same.
    torch._C._set_deterministic_algorithms(True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "PIPELINE_TRAIN__DEVICE=cuda but no CUDA device is available: use cpu or auto"
        )
    return {"threads": threads, "device": device}
