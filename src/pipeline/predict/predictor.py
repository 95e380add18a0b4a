"""The predictor: a verified package loaded for inference, and frames in, predictions out.

A ``Predictor`` is built from a verified package and nothing else: preprocessing state, schema
and network config are JSON, weights load with ``weights_only=True``. ``predict_frame``
validates a frame against the package's input schema (cell by cell, with the rules of
``pipeline.data.cells``), encodes it, runs the folded network and lays out the prediction
columns (``pipeline.outputs``).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import features, outputs
from pipeline.data import cells, csv_errors
from pipeline.data.schema import Schema
from pipeline.errors import DataError
from pipeline.features.categories import MISSING
from pipeline.model import FoldedNetwork, TabularMLP, load_model
from pipeline.package import OpenedPackage, open_package
from pipeline.predict.spelling import Unseen
from pipeline.settings import RunSettings


@dataclass
class Stats:
    """What a prediction run saw, for its summary event."""

    rows: int = 0
    chunks: int = 0
    errors: int = 0
    unknown_categories: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)
    unseen: Unseen = field(default_factory=Unseen)  # unknown values of the first rows
    known: set[str] = field(default_factory=set)  # categorical columns with a known value

    def add_unknown(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.unknown_categories[name] = self.unknown_categories.get(name, 0) + n


@dataclass
class Predictor:
    """A loaded, verified model ready to predict frames."""

    name: str
    version: str
    package_id: str
    build_id: str
    schema: Schema
    pre: features.Preprocessor
    model: TabularMLP
    missing_values: list[str]
    delimiter: str
    metrics: dict[str, Any] = field(default_factory=dict)  # what the build measured (metrics.json)
    network: FoldedNetwork = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.network = FoldedNetwork(self.model)

    @classmethod
    def from_opened(cls, opened: OpenedPackage) -> Predictor:
        """Build from a package whose files were verified by ``open_package``."""
        model = load_model(opened.json("model.json"), opened.files["weights.pt"])
        data = opened.json("config.json")["data"]
        return cls(
            name=opened.name,
            version=opened.version,
            package_id=opened.package_id,
            build_id=opened.build_id,
            schema=Schema.from_json(opened.json("schema.json")),
            pre=features.Preprocessor.from_json(opened.json("preprocessing.json")),
            model=model,
            missing_values=list(data["missing_values"]),
            delimiter=data["delimiter"],
            metrics=opened.json("metrics.json"),
        )

    @classmethod
    def from_package(cls, path: Path) -> Predictor:
        """Open, verify and load a package archive."""
        return cls.from_opened(open_package(path))

    @property
    def required(self) -> list[str]:
        """The input columns the model needs."""
        return [c.name for c in self.schema.columns]

    @functools.cached_property
    def vocabs(self) -> dict[str, frozenset[str]]:
        """Each categorical (or boolean) column's vocabulary, as a set."""
        return {c.name: frozenset(c.vocab) for c in self.pre.categorical}

    def check_columns(self, columns: list[Any], label: str) -> None:
        """A ``DataError`` naming the required columns that ``columns`` lacks, if any."""
        missing = [c for c in self.required if c not in columns]
        if missing:
            if csv_errors.excel_sep_line([str(c) for c in columns]):
                raise DataError(
                    f"{label} starts with Excel's 'sep=' line, which is not the header: remove "
                    "line 1 (Excel writes it to name the delimiter)"
                )
            hint = csv_errors.delimiter_hint([str(c) for c in columns], self.delimiter)
            if hint:  # one column read: every name is missing, and the file is the problem
                raise DataError(f"{label} lacks the model's columns: {hint.removesuffix('; ')}")
            _refuse_headless(columns, missing, self.required, label)
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            near = _renames(missing, [str(c) for c in columns], set(self.required))
            fix = "add them (empty cells are allowed)"
            if near:
                others = " and the others" if len(near) > 5 else ""
                rest = (
                    "; add the others (empty cells are allowed)" if len(near) < len(missing) else ""
                )
                fix = f"rename {', '.join(near[:5])}{others} (names match exactly){rest}"
            raise DataError(
                f"{label} lacks required column(s) {missing[:10]}{more}: the model was trained "
                f"on {len(self.required)} columns; {fix}"
            )

    def encode_frame(
        self, frame: pd.DataFrame, run: RunSettings, label: str, errors: np.ndarray
    ) -> features.Encoded:
        """``frame``'s schema columns validated cell by cell (a bad cell fails, or is noted in
        ``errors`` by PIPELINE_RUN__ON_ERROR) and encoded."""
        on_error = run.on_error
        # Validated columns go to the encoder as they are: building a frame of them (one
        # insert per column) cost more than everything else for a one-row request.
        clean: dict[str, pd.Series] = {}
        for column in self.schema.columns:
            series = cells.single_values(frame[column.name], column.name, label, on_error, errors)
            if column.kind == "numeric":
                numbers = cells.numbers(series, column.name, label, on_error, errors)
                clean[column.name] = pd.Series(numbers, index=frame.index, copy=False)
            elif column.kind == "boolean":
                clean[column.name] = cells.booleans(series, column.name, label, on_error, errors)
            else:
                clean[column.name] = series
        return self.pre.transform(clean, label, with_target=False, rows=len(frame))

    def values(self, enc: features.Encoded) -> np.ndarray:
        """The network's outputs for encoded rows, in target units (``outputs.to_values``)."""
        out = self.network(torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical))
        return outputs.to_values(out.numpy(), self.pre.target)

    def columns(
        self, values: np.ndarray, run: RunSettings, bad: np.ndarray, ids: Any = None
    ) -> dict[str, Any]:
        """The output columns for ``values``: the id column first when ``run`` names one."""
        result: dict[str, Any] = {}
        if run.id_column:
            result[run.id_column] = ids
        result.update(outputs.prediction_columns(values, self.pre.target, run.threshold, bad))
        return result

    def predict_frame(
        self,
        frame: pd.DataFrame,
        run: RunSettings,
        *,
        label: str = "input",
        stats: Stats | None = None,
    ) -> pd.DataFrame:
        """Predictions for ``frame`` (one row per input row), validated against the schema.

        ``frame``'s index is the 0-based data row in the file, used in error messages.
        """
        stats = stats if stats is not None else Stats()
        self.check_columns(list(frame.columns), label)
        if not frame.columns.is_unique:
            counts = Counter(frame.columns)
            dupes = [c for c in self.required if counts[c] > 1]
            if dupes:
                raise DataError(
                    f"{label} has more than one column named {dupes}: give every column a "
                    "unique name"
                )
        if run.id_column and run.id_column not in frame.columns:
            import difflib

            names = [str(c) for c in [*frame.columns, *stats.extra_columns]]  # what was read
            near = difflib.get_close_matches(run.id_column, names, n=1) or [
                c for c in names if c.lower() == run.id_column.lower()
            ]
            meant = f" (did you mean '{near[0]}'?)" if near else ""
            raise DataError(
                f"{label} has no id column '{run.id_column}'{meant} (PIPELINE_RUN__ID_COLUMN): "
                "set it to an existing column or unset it"
            )
        errors = np.full(len(frame), "", dtype=object)
        if run.id_column and run.id_column not in self.required and run.on_error == "fail":
            # An id that is a JSON object or array is not one value: refused, as serve refuses
            # it (422 id_type); it was written as the text '[1]'. In column mode it is echoed.
            cells.single_values(frame[run.id_column], run.id_column, label, "fail", errors)
        enc = self.encode_frame(frame, run, label, errors)
        stats.add_unknown(enc.unknown_counts)
        if enc.unknown_counts:
            stats.unseen.note(frame, enc.unknown_counts, self.vocabs)
        if len(stats.known) < len(self.pre.categorical):  # until every column had one
            # Codes past MISSING are known values (spelling.warn_all_unknown).
            known = np.count_nonzero(enc.categorical > MISSING, axis=0)
            stats.known.update(self.pre.categorical[j].name for j in np.flatnonzero(known))
        # ``.array``: a nullable integer column (Parquet ids) stays integers.
        ids = frame[run.id_column].array if run.id_column else None
        bad = errors != ""
        result = self.columns(self.values(enc), run, bad, ids)
        if run.on_error == "column":
            result[outputs.ERROR] = errors
        stats.errors += int(bad.sum())
        stats.rows += len(frame)
        stats.chunks += 1
        return pd.DataFrame(result, index=frame.index, copy=False)


def _renames(missing: list[str], present: list[str], known: set[str]) -> list[str]:
    """``'X' to 'Y'`` for each present column that is a missing one misspelt: but for case
    and surrounding spaces (`' sex'`, `SEX`), or a letter or two (`LotAre`); columns the model
    knows are never taken. The advice to add the missing columns, empty, scored every row
    with those features missing."""
    import difflib

    spare = [name for name in present if name not in known]
    found = []
    for name in missing:
        folded = [p for p in spare if p.strip().casefold() == name.strip().casefold()]
        near = folded or difflib.get_close_matches(name, spare, n=1, cutoff=0.8)
        if near:
            found.append(f"'{near[0]}' to '{name}'")
            spare.remove(near[0])
    return found


def _refuse_headless(
    columns: list[Any], missing: list[str], required: list[str], label: str
) -> None:
    """A ``DataError`` for a file whose first line is a row, not a header (a CSV exported
    without one): none of the model's columns is there, it has as many fields as the model
    has columns or more, and a quarter of its names or more (2 at least) are numbers; it was
    "lacks required column(s) [...] and 69 more"."""
    names = [str(c).strip() for c in columns]
    # As many fields as the model's columns, or more (an id): another table's real header
    # with years for names ('region,2019,2020') is no row of this model's data.
    if len(missing) < len(required) or len(names) < max(2, len(required)):
        return
    numbers = 0
    for name in names:
        try:
            float(name)
            numbers += 1
        except ValueError:
            pass
    if numbers < max(2, len(names) / 4):
        return
    first = ", ".join(repr(n) for n in names[:4])
    raise DataError(
        f"{label} has no header line: its first line holds values ({first}, ...), not column "
        f"names; add the header the model reads ({', '.join(required[:5])}, ... "
        f"{len(required)} columns) as line 1"
    )
