"""The dataset as training sees it: fetched, read, typed, split. One function for every stage.

``prepare`` is what `train`, `evaluate` and the benchmarks all do before any fitting: resolve
the source (by digest when one is pinned), read the table, check the target, infer the schema
(or take a build's), and split the rows with the split's seed stream. It logs one event for
each step, so every stage that reads data says what it read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.data import read, sources
from pipeline.data import schema as schema_mod
from pipeline.data.schema import Schema
from pipeline.errors import DataError
from pipeline.settings import Settings
from pipeline.split import Seeds, Split, class_labels, split_rows
from pipeline.store import Store


@dataclass
class Prepared:
    """A dataset ready to fit on: the frame (target checked), its schema, seeds and split."""

    fetched: sources.Fetched
    frame: pd.DataFrame
    rows: int  # of the whole dataset (the frame may be dropped once encoded)
    schema: Schema
    seeds: Seeds
    split: Split

    @property
    def label(self) -> str:
        """How messages name the dataset: its (redacted) URI."""
        return self.fetched.uri


def prepare(settings: Settings, store: Store, log: Any, schema: Schema | None = None) -> Prepared:
    """Fetch, read and split the dataset of ``settings``; infer its schema unless given one."""
    fetched = sources.fetch(settings, store)
    log.info(
        "data.fetched",
        uri=fetched.uri,
        sha256=fetched.sha256,
        bytes=fetched.size,
        cached=fetched.cached,
    )
    frame = read.read_table(fetched.path, settings.data, label=fetched.uri)
    read_rows = len(frame)
    frame = schema_mod.prepare_target(frame, settings.data.target, settings.data.task, fetched.uri)
    left_out = read_rows - len(frame)
    if left_out:  # said once, as a warning: a user must not learn it from a count
        log.warning(
            "data.warning",
            message=f"{left_out} of {read_rows} rows of {fetched.uri} have no value in target "
            f"column '{settings.data.target}': they are left out (not trained on, validated or "
            "tested)",
            rows_without_target=left_out,
        )
    if schema is None:
        schema = _infer(frame, settings, fetched.uri, log)
    seeds = Seeds.from_seed(settings.seed)
    t = settings.train
    labels = class_labels(frame, schema)
    split = split_rows(len(frame), labels, t.val_fraction, t.test_fraction, seeds.split)
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        if round(len(frame) * min(t.val_fraction, t.test_fraction)) >= 1:
            _check_classes(labels, schema.target, fetched.uri)  # enough rows: it is the classes
        raise DataError(
            f"dataset {fetched.uri} has {len(frame)} rows, too few to split into train/validation/"
            "test with PIPELINE_TRAIN__VAL_FRACTION and PIPELINE_TRAIN__TEST_FRACTION"
        )
    log.info(
        "data.split",
        train=len(split.train),
        val=len(split.val),
        test=len(split.test),
        digest=split.digest(),
    )
    return Prepared(fetched, frame, len(frame), schema, seeds, split)


def _check_classes(labels: Any, target: str, label: str) -> None:
    """A stratified split that came out empty: say it is the classes, not the row count."""
    if labels is None:
        return
    import numpy as np

    counts = np.unique(labels, return_counts=True)[1]
    raise DataError(
        f"dataset {label}: target column {target!r} has {len(counts)} classes and the largest "
        f"holds {int(counts.max())} rows, too few per class to hold out validation and test "
        "rows; is it an id? set PIPELINE_DATA__TARGET to the column to predict (or "
        "PIPELINE_DATA__TASK=regression for a numeric target)",
        column=target,
    )


def _infer(frame: pd.DataFrame, settings: Settings, label: str, log: Any) -> Schema:
    """The schema of ``frame`` under the settings' overrides; warnings and a summary logged."""
    schema, warnings = schema_mod.infer(
        frame,
        settings.data,
        settings.train.target_transform,
        label,
        max_cardinality=settings.features.max_categorical_cardinality,
        drop_declared=settings.is_set("data", "drop"),
    )
    for message in warnings:
        log.warning("data.warning", message=message)
    numeric = len(schema.names("numeric"))
    log.info(
        "data.schema",
        rows=len(frame),
        task=schema.task,
        target=schema.target,
        target_transform=schema.target_transform,
        numeric=numeric,
        categorical=len(schema.columns) - numeric,
        dropped=list(schema.dropped),
    )
    return schema
