"""The column tasks of `pipeline train --workers` (``distributed_fit.columns``), called directly.

Each task reads some input columns of the file alone, types, fits and encodes them; laid side
by side, their results must be the in-process preprocessing bytes and encoded rows, also when
rows lack a target, for CSV and Parquet; the driver's read must hold the target column only;
and a task's mistakes must be the in-process error, the first met in the in-process order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import structlog

from pipeline import features
from pipeline.distributed_fit.columns import Reading, first_error, groups, read_group
from pipeline.distributed_fit.shards import gathered
from pipeline.errors import DataError
from pipeline.features.preprocessor import Preprocessor, fit_target
from pipeline.prepare import prepare, with_columns
from pipeline.settings import load
from pipeline.store import Store, canonical_json

HOUSE_PRICES = Path(__file__).parents[1] / "src" / "pipeline" / "datasets" / "house-prices.csv"
LOG = structlog.get_logger()


def _settings(source: Path) -> Any:
    env = {"PIPELINE_ENV_FILE": os.devnull, "PIPELINE_PRESET": "house-prices",
           "PIPELINE_DATA__SOURCE": str(source)}  # fmt: skip
    return load(env).settings


def _on_tasks(settings: Any, store: Store, count: int) -> tuple[Preprocessor, Any, Any]:
    """What ``lay_out`` does, without Ray: ``count`` tasks, every row as one destination."""
    data = prepare(settings, store, LOG, target_only=True)
    assert list(data.frame.columns) == ["SalePrice"]  # the driver's read: the target alone
    todo = [(p, n) for p, n in enumerate(data.header, 1) if n not in ("SalePrice", "Id")]
    reading = Reading(str(data.fetched.path), data.fetched.path.stat().st_size, data.label,
                      settings.data, settings.features, 1000)  # fmt: skip
    index = data.frame.index
    kept = None if isinstance(index, pd.RangeIndex) else index.to_numpy()
    everything = np.arange(data.rows)
    train = data.split.train
    runs = [read_group(reading, g, kept, train, [everything]) for g in groups(todo, count)]
    error = first_error([r[0] for r in runs])
    if error is not None:  # as lay_out raises it
        raise error
    columns = [c for r in runs for _, c, _ in r[0].columns if c is not None]
    dropped = [n for r in runs for n, c, _ in r[0].columns if c is None]
    data = with_columns(data, columns, dropped, settings, LOG)
    target = fit_target(data.frame["SalePrice"].take(data.split.train), data.schema, data.label,
                        settings.features.bound_rows)  # fmt: skip
    numeric = tuple(s for r in runs for s in r[0].numeric)
    categorical = tuple(s for r in runs for s in r[0].categorical)
    pre = Preprocessor(numeric, categorical, target)
    widths = [r[0].widths for r in runs]
    rows = gathered((r[1] for r in runs), widths, pre.encode_target(data.frame, data.label))
    return pre, rows, data


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_column_tasks_give_the_in_process_statistics_and_rows(fmt: str, tmp_path: Path) -> None:
    table = pd.read_csv(HOUSE_PRICES)
    table.loc[[3, 50, 700], "SalePrice"] = None  # rows the split never sees, in both paths
    source = tmp_path / f"gaps.{fmt}"
    table.to_csv(source, index=False) if fmt == "csv" else table.to_parquet(source, index=False)
    settings = _settings(source)
    store = Store.from_uri(str(tmp_path / "store"))
    data = prepare(settings, store, LOG)
    pre = features.fit(features.RowsOf(data.frame, data.split.train), data.schema,
                       settings.features, data.label)  # fmt: skip
    enc = pre.transform(data.frame, data.label, with_target=True)
    for count in (1, 3):
        on_tasks, rows, laid = _on_tasks(settings, store, count)
        assert laid.schema == data.schema and laid.rows == data.rows == 1457
        assert canonical_json(on_tasks.to_json()) == canonical_json(pre.to_json())
        assert rows.numeric.tobytes() == enc.numeric.tobytes()
        assert rows.numeric.shape == enc.numeric.shape
        assert rows.categorical.tobytes() == enc.categorical.tobytes()
        assert rows.target.tobytes() == enc.target.tobytes()


def test_the_first_error_is_the_one_the_in_process_path_meets(tmp_path: Path) -> None:
    """An infinity in an early column (met when fitting) loses to a stray word in a later one
    (met when typing): the in-process read types every column before fitting any."""
    table = pd.read_csv(HOUSE_PRICES)
    table["LotArea"] = table["LotArea"].astype(float)
    table.loc[1000, "LotArea"] = float("inf")
    table["GarageArea"] = table["GarageArea"].astype(object)
    table.loc[900, "GarageArea"] = "abc"
    table.to_csv(tmp_path / "bad.csv", index=False)
    settings = _settings(tmp_path / "bad.csv")
    store = Store.from_uri(str(tmp_path / "store"))
    with pytest.raises(DataError) as in_process:
        prepare(settings, store, LOG)
    with pytest.raises(DataError) as on_tasks:
        _on_tasks(settings, store, 4)
    assert str(on_tasks.value) == str(in_process.value)
    assert "'GarageArea'" in str(in_process.value) and "row 901" in str(in_process.value)


def test_a_file_the_task_cannot_see_is_named_with_what_to_do(tmp_path: Path) -> None:
    from pipeline.settings import DataSettings, FeatureSettings

    reading = Reading(str(tmp_path / "gone.csv"), 10, "s3://bucket/gone.csv", DataSettings(),
                      FeatureSettings(), 1000)  # fmt: skip
    found = read_group(reading, [(1, "a")], None, np.arange(1), [np.arange(1)])[0]
    assert isinstance(found.error, DataError)
    assert "s3://bucket/gone.csv" in str(found.error) and "without --workers" in str(found.error)
