"""The run stage: a release (or a package) predicting rows, streamed in chunks.

One file per job: ``predictor`` (a verified package loaded for inference; frames in,
predictions out), ``readers`` (CSV, Parquet and JSON-lines input as bounded chunks),
``writers`` (crash-safe output files), ``stage`` (``load`` a release into a ``Ready`` and
``run`` a file through it). ``pipeline serve`` uses the same ``Ready``.
"""

from pipeline.predict.predictor import Predictor, Stats
from pipeline.predict.stage import Ready, load, run

__all__ = ["Predictor", "Ready", "Stats", "load", "run"]
