"""The served JSON path encodes records without a frame: bit for bit what `pipeline predict` does.

`pipeline predict` validates a frame cell by cell and encodes it column by column
(``Predictor.encode_frame``); `pipeline serve` turns validated JSON records into columns and
encodes all numeric columns side by side (``Preprocessor.encode_values``). Both must give the
same arrays, the same unseen-category counts and the same prediction bytes, on real rows and on
values chosen to reach every branch (missing, unseen, negative under a log, near float64's
largest, booleans and their nulls).
"""

from __future__ import annotations

import csv
import json
import random
from typing import Any

import numpy as np
import pytest
from tests.serve.conftest import TEST_CSV

from pipeline.serve.app import Loaded
from pipeline.serve.batching import Job
from pipeline.serve.predicting import score_records
from pipeline.serve.server import load_release
from pipeline.settings import load


def _loaded(release: dict[str, Any]) -> Loaded:
    return load_release(load(release["env"]).settings, None, release["package"])


def _csv_records(loaded: Loaded, path: Any, missing: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every row of a CSV file as a JSON record typed by the served schema."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            record: dict[str, Any] = {}
            for column in loaded.predictor.schema.columns:
                value = row[column.name]
                if column.kind == "numeric":
                    record[column.name] = None if value in missing else float(value)
                elif column.kind == "boolean":
                    record[column.name] = None if value in missing else value == "true"
                else:
                    record[column.name] = value
            out.append(record)
    return out


EXTREMES = [0.0, -0.0, -1.0, -5e5, 1e-300, 3.5, 1e15, -1e300, 1.7e308, -1.7e308, None]


def _mutated(loaded: Loaded, records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Copies of ``records`` with cells replaced by values that reach every branch."""
    rng = random.Random(seed)
    out = []
    for record in records:
        record = dict(record)
        for column in loaded.predictor.schema.columns:
            if rng.random() < 0.3:
                if column.kind == "numeric":
                    record[column.name] = rng.choice(EXTREMES)
                elif column.kind == "boolean":
                    record[column.name] = rng.choice([True, False, None])
                else:
                    record[column.name] = rng.choice([None, "NA", "?", "never seen", ""])
        out.append(record)
    return out


def _both(loaded: Loaded, records: list[dict[str, Any]]) -> None:
    contract, predictor, run = loaded.contract, loaded.predictor, loaded.run
    body = json.dumps({"records": records}).encode()
    frame, _ = contract.records_frame(body)
    errors = np.full(len(frame), "", dtype=object)
    by_frame = predictor.encode_frame(frame, run, "the request", errors)
    assert not errors.any()
    validated, ignored = contract.records(body)
    columns = contract.columns(validated)
    by_records = predictor.pre.encode_values(len(validated), columns, columns)
    assert by_frame.numeric.tobytes() == by_records.numeric.tobytes()
    assert np.array_equal(by_frame.categorical, by_records.categorical)
    assert by_frame.unknown_counts == by_records.unknown_counts
    # The served answer is `pipeline predict`'s frame path, byte for byte, however the records
    # are split into requests that share a scoring pass.
    expected = contract.predictions(predictor.predict_frame(frame, run, label="the request"))
    cut = len(validated) // 3
    jobs = [Job(validated[:cut], ignored, None), Job(validated[cut:], ignored, None)]  # type: ignore[arg-type]
    served = [json.loads(answer)["predictions"] for answer in score_records(loaded, jobs)]
    assert served[0] + served[1] == json.loads(json.dumps(expected))


@pytest.mark.parametrize("seed", [0, 1])
def test_house_prices_records_encode_like_the_frame_path(house: dict[str, Any], seed: int) -> None:
    """All 1,459 real test rows, then the same rows with extreme and missing cells."""
    loaded = _loaded(house)
    records = _csv_records(loaded, TEST_CSV, ("", "NA"))
    assert len(records) == 1459
    _both(loaded, records if seed == 0 else _mutated(loaded, records, seed))


def test_titanic_and_boolean_records_encode_like_the_frame_path(
    titanic: dict[str, Any], flags: dict[str, Any]
) -> None:
    """A classifier whose training read '?' as missing, and a model with a boolean column."""
    for release in (titanic, flags):
        loaded = _loaded(release)
        rng = random.Random(3)
        records = []
        for _ in range(300):
            record: dict[str, Any] = {}
            for column in loaded.predictor.schema.columns:
                if column.kind == "numeric":
                    record[column.name] = rng.choice([*EXTREMES, 1.0, 2.0, 30.0, 7.25])
                elif column.kind == "boolean":
                    record[column.name] = rng.choice([True, False, None])
                else:
                    vocab = next(
                        c.vocab for c in loaded.predictor.pre.categorical if c.name == column.name
                    )
                    record[column.name] = rng.choice([*vocab, None, "?", "unseen"])
            records.append(record)
        _both(loaded, records)
