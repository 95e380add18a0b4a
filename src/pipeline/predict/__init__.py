"""The run stage: a release (or a package) predicting rows, streamed in chunks.

One file per job: ``predictor`` (a verified package loaded for inference; frames in,
predictions out), ``readers`` (CSV, Parquet and JSON-lines input as bounded chunks),
``writers`` (crash-safe output files), ``stage`` (``load`` a release into a ``Ready`` and
``run`` a file through it). ``pipeline serve`` uses the same ``Ready``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.predict.stage import Ready, check_reference, load, run

if TYPE_CHECKING:
    from pipeline.predict.predictor import Predictor, Stats

__all__ = ["Predictor", "Ready", "Stats", "check_reference", "load", "run"]


def __getattr__(name: str) -> Any:
    """``Predictor`` and ``Stats`` on first use: they bring torch and pandas, which ``load``
    imports only once the package it is given has verified."""
    if name in ("Predictor", "Stats"):
        from pipeline.predict import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
