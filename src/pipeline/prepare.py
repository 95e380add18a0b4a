"""The dataset as training sees it: fetched, read, typed, split. One function for every stage.

``prepare`` is what `train`, `evaluate` and the benchmarks all do before any fitting: resolve
the source (by digest when one is pinned), read the table, check the target, infer the schema
(or take a build's), and split the rows with the split's seed stream. It logs one event for
each step, so every stage that reads data says what it read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.data import read, sources, verdicts
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
    schema: Schema  # with ``target_only``: no input columns yet (``with_columns`` adds them)
    seeds: Seeds
    split: Split
    read_as: str  # the format the file was read as: ``csv`` or ``parquet`` (``auto`` resolved)
    header: tuple[str, ...] = ()  # every column name in the file, with ``target_only``
    head: schema_mod.Head | None = None  # ``schema.infer_target``'s result, with ``target_only``

    @property
    def label(self) -> str:
        """How messages name the dataset: its (redacted) URI."""
        return self.fetched.uri

    @property
    def resolved(self) -> dict[str, str]:
        """What the data settings' ``auto`` values resolved to on this data: the format the
        file was read as, the task and the target's transform (``Settings.build_config``)."""
        return {
            "format": self.read_as,
            "task": self.schema.task,
            "target_transform": self.schema.target_transform,
        }


# Fewer test rows than this (a table under about 100 rows, at the default fractions): the
# split's metrics are noise, and a user is told so rather than shown a score (5 rows trained
# and reported an R² of one row without a word).
FEW_TEST_ROWS = 20


def prepare(
    settings: Settings,
    store: Store,
    log: Any,
    schema: Schema | None = None,
    *,
    target_only: bool = False,
) -> Prepared:
    """Fetch, read and split the dataset of ``settings``; infer its schema unless given one.

    ``target_only`` reads the header and the target column alone: the input columns are read,
    typed and fitted elsewhere (`pipeline train --workers`: ``distributed_fit.columns``), and
    the schema has no input columns until ``with_columns`` adds them.
    """

    def load(path: Path, label: str) -> tuple[str, list[str], pd.DataFrame]:
        # What the reads below decide first too (their errors for a file that is no table).
        fmt = read.detect_format(path, settings.data.format, label)
        if not target_only:
            return fmt, [], read.read_table(path, settings.data, label=label)
        header = read.header(path, settings.data, label=label)
        if settings.data.target not in header:  # prepare_target says so, naming the columns
            return fmt, header, pd.DataFrame(columns=header)
        wanted = [settings.data.target]
        return fmt, header, read.read_table(path, settings.data, label=label, columns=wanted)

    # A local file is hashed while it is read.
    fetched, (fmt, header, frame) = sources.fetch_and_read(settings, store, load)
    log.info("data.fetched", uri=fetched.uri, sha256=fetched.sha256, bytes=fetched.size,
             cached=fetched.cached)  # fmt: skip
    if fetched.warning:
        log.warning("data.warning", message=fetched.warning)
    verdicts.refuse_summary_row(frame, fetched.uri)  # before the target is judged by it
    read_rows = len(frame)
    frame = schema_mod.prepare_target(frame, settings.data.target, settings.data.task, fetched.uri)
    _say_left_out(read_rows, len(frame), settings.data.target, fetched.uri, log)
    head = None
    if target_only:
        head = _infer_target(frame, header, settings, fetched.uri, log)
        schema = Schema((), settings.data.target, head.task, head.transform, ())
    elif schema is None:
        schema = _infer(frame, settings, fetched.uri, log)
    seeds = Seeds.from_seed(settings.seed)
    t = settings.train
    labels = class_labels(frame, schema)
    split = split_rows(len(frame), labels, t.val_fraction, t.test_fraction, seeds.split)
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        if round(len(frame) * min(t.val_fraction, t.test_fraction)) >= 1:
            _check_classes(labels, schema.target, fetched.uri)  # enough rows: it is the classes
        raise _empty_part(len(frame), settings, split, fetched.uri)
    if schema.task == "binary":
        _check_test_classes(labels, split, schema.target, fetched.uri)
    log.info(
        "data.split",
        train=len(split.train),
        val=len(split.val),
        test=len(split.test),
        digest=split.digest(),
    )
    if len(split.test) < FEW_TEST_ROWS:
        rest = len(split.train) + len(split.val)
        folds = min(5, rest // 2)  # evaluate needs 2 rows a fold
        cv = (
            f"`pipeline evaluate --folds {folds}` scores each training and validation row once"
            if folds >= 2
            else "too few rows to cross-validate"
        )
        log.warning(
            "data.warning",
            message=f"{fetched.uri} has {len(frame)} rows: {len(split.train)} to train on, "
            f"{len(split.val)} to validate and {len(split.test)} to test; metrics of so few "
            f"rows change from one seed's split to the next: {cv}, and more rows make a "
            "better model",
            few_rows=len(frame),
        )
    return Prepared(fetched, frame, len(frame), schema, seeds, split, fmt, tuple(header), head)


def _infer_target(
    frame: pd.DataFrame, header: list[str], settings: Settings, label: str, log: Any
) -> schema_mod.Head:
    """``schema.infer_target`` of the header and the target; its warnings logged."""
    head = schema_mod.infer_target(
        header,
        frame[settings.data.target],  # prepare_target has refused a file without it
        settings.data,
        settings.train.target_transform,
        label,
        drop_declared=settings.is_set("data", "drop"),
    )
    for message in head.warnings:
        log.warning("data.warning", message=message)
    head.warnings.clear()  # said
    return head


def with_columns(
    data: Prepared, columns: list[schema_mod.Column], dropped: list[str], settings: Settings,
    log: Any,
) -> Prepared:  # fmt: skip
    """``data`` (read with ``target_only``) with its input columns, inferred elsewhere in file
    order, and the columns dropped on the way; logs ``data.schema`` as ``prepare`` does."""
    assert data.head is not None
    head = schema_mod.Head(data.head.task, data.head.transform, [*data.head.dropped, *dropped], [])
    schema = schema_mod.finish(head, columns, settings.data, data.label)
    _schema_event(schema, data.rows, log)
    return dataclasses.replace(data, schema=schema)


def _schema_event(schema: Schema, rows: int, log: Any) -> None:
    numeric = len(schema.names("numeric"))
    log.info(
        "data.schema",
        rows=rows,
        task=schema.task,
        target=schema.target,
        target_transform=schema.target_transform,
        numeric=numeric,
        categorical=len(schema.columns) - numeric,
        dropped=list(schema.dropped),
    )


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


def _say_left_out(read_rows: int, kept: int, target: str, uri: str, log: Any) -> None:
    """Said once, as a warning: a user must not learn it from a count."""
    if left_out := read_rows - kept:
        log.warning(
            "data.warning",
            message=f"{left_out} of {read_rows} rows of {uri} have no value in target column "
            f"'{target}': they are left out (not trained on, validated or tested)",
            rows_without_target=left_out,
        )


def _check_test_classes(labels: Any, split: Split, target: str, label: str) -> None:
    """A binary target whose rarer class has no test row: accuracy and F1 of 1.0 scored one
    class, ROC AUC was null, and an accuracy gate passed a model never tested on the class
    that matters (one "yes" among 300 rows: it went to the training rows)."""
    import numpy as np

    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or len(np.unique(labels[split.test])) >= 2:
        return
    rare, rows = str(classes[int(np.argmin(counts))]), int(counts.min())
    raise DataError(
        f"dataset {label}: target column '{target}' has {rows} row(s) of class '{rare}' in "
        f"{len(labels):,}, and none is among the {len(split.test)} test rows: the build could "
        f"not be scored on that class. A binary target needs rows of both classes in the "
        f"training, validation and test rows (3 of '{rare}' at least): add rows of it, or "
        "check the target column",
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
    for message in [*warnings, *_spaced_twins([str(c) for c in frame.columns], label)]:
        log.warning("data.warning", message=message)
    _schema_event(schema, len(frame), log)
    if schema.task in ("binary", "multiclass"):
        _rare_classes(frame[schema.target], schema.target, log)
    return schema


def _spaced_twins(names: list[str], label: str) -> list[str]:
    """A warning per group of column names that differ only by surrounding spaces (`s5` and
    ` s5`): two columns, two features, where the file's writer likely meant one."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.strip(), []).append(name)
    return [
        f"columns {', '.join(repr(n) for n in group)} of {label} differ only by surrounding "
        "spaces: they are different columns; rename one if they were meant to be one"
        for group in groups.values()
        if len(group) > 1
    ]


# A class with fewer rows than this is named in a warning: a typo ("yes", "no" and one "maybe")
# makes a class of its own, and a binary table a multiclass one.
RARE_CLASS_ROWS = 5


def _rare_classes(target: pd.Series, name: str, log: Any) -> None:
    counts = target.astype("string").value_counts(dropna=True)
    rare = counts[counts < RARE_CLASS_ROWS]
    rows = int(counts.sum())
    if rows >= 20 and len(counts) > rows / 2:  # SalePrice as multiclass: 218 classes in 300
        raise DataError(
            f"target column {name!r} has {len(counts):,} classes in {rows:,} rows, fewer than "
            "2 rows per class: too few to learn them or to hold out validation and test "
            "rows; is it an id? set PIPELINE_DATA__TARGET to the column to predict (or "
            "PIPELINE_DATA__TASK=regression for a numeric target)",
            column=name,
        )
    if len(rare) and len(rare) < len(counts):
        log.warning(
            "data.rare_classes", column=name, classes=len(counts),
            rare={str(k): int(v) for k, v in rare.head(10).items()},
            message=f"target column {name!r} has {len(rare)} class(es) with fewer than "
            f"{RARE_CLASS_ROWS} rows, each a class of its own: fix or drop those rows if they "
            "are mistakes",
        )  # fmt: skip


def _empty_part(n: int, settings: Settings, split: Split, uri: str) -> DataError:
    """The error for a split with an empty part: the fraction that rounds to no row, with the
    smallest that gives one; fractions that leave no training row; a table too small."""
    t = settings.train
    empty = [(name, fraction) for name, fraction, part in (
        ("VAL", t.val_fraction, split.val), ("TEST", t.test_fraction, split.test))
        if not len(part)]  # fmt: skip
    if not empty:  # the fractions leave no training row
        return DataError(
            f"dataset {uri} has {n} rows and PIPELINE_TRAIN__VAL_FRACTION="
            f"{t.val_fraction:g} with PIPELINE_TRAIN__TEST_FRACTION={t.test_fraction:g} "
            "leave none to train on: lower them"
        )
    name, fraction = empty[0]
    if 1 / n > 0.25:  # no fraction helps: every part needs rows
        return DataError(
            f"dataset {uri} has {n} rows, too few to split into train/validation/"
            "test: use more rows"
        )
    return DataError(
        f"dataset {uri} has {n} rows, and PIPELINE_TRAIN__{name}_FRACTION="
        f"{fraction:g} of them rounds to no {name.lower().replace('val', 'validation')} row: "
        f"raise it to at least {1 / n:.2g}, or use more rows"
    )


def say_idle(pre: Any, data: Prepared, min_frequency: int, log: Any) -> None:
    """A data.warning naming the input columns that give the model nothing on the training
    rows: one value in every row, or (a text column) no value seen ``min_frequency`` times,
    so every row "unknown". They were kept without a word, and predict then required them
    (Titanic's names, 399 distinct in 400 rows: one repeated, so no identifier)."""
    from pipeline.features import RowsOf

    rows = RowsOf(data.frame, data.split.train)
    idle = [
        f"'{s.name}' (one value in every training row)"
        for s in pre.numeric
        if s.low == s.high and not s.indicator
    ]
    for s in pre.categorical:
        if len(s.vocab) > 1:
            continue
        series = rows[s.name]
        if not s.vocab and not series.isna().any():
            idle.append(f"'{s.name}' (no value seen {min_frequency} times or more)")
        elif s.vocab and series.nunique(dropna=False) == 1:
            idle.append(f"'{s.name}' (one value in every training row)")
    if idle:
        log.warning(
            "data.warning", idle_columns=[name.split("'")[1] for name in idle],
            message=f"{len(idle)} input column(s) give the model nothing: "
            f"{', '.join(idle[:5])}{' and more' if len(idle) > 5 else ''}; add them to "
            "PIPELINE_DATA__DROP, or predict will require them for nothing",
        )  # fmt: skip
