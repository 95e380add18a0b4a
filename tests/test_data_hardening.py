"""Inference refuses to guess: formatted numbers, dates, Parquet types and JSON-lines cells.

Each rule is checked where it is made (``spellings``, ``columns``, ``schema``, the readers) and,
where it matters, that training's reader and prediction's readers apply it alike. The corpus
(tests/test_corpus.py) runs the same cases through the CLI.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import events

from pipeline.data import cells, columns, read, schema, spellings
from pipeline.errors import DataError
from pipeline.predict import readers
from pipeline.predict.predictor import Stats
from pipeline.settings import DEFAULT_MISSING, DataSettings, RunSettings

PRICES = [208500, 181500, 223500, 140000, 250000, 143000, 307000, 200000, 129900, 118000]


def _data(**overrides: Any) -> DataSettings:
    return DataSettings(**{"target": "y", "drop": [], **overrides})


def _train_frame(path: Path, **overrides: Any) -> tuple[pd.DataFrame, schema.Schema]:
    """``path`` read, its target prepared and its schema inferred, as `train` does."""
    data = _data(**overrides)
    frame = read.read_table(path, data, label=path.name)
    frame = schema.prepare_target(frame, data.target, data.task, path.name)
    return frame, schema.infer(frame, data, "none", path.name)[0]


def _refusal(path: Path, **overrides: Any) -> str:
    with pytest.raises(DataError) as caught:
        _train_frame(path, **overrides)
    return caught.value.message


def _csv(tmp_path: Path, header: str, rows: list[str]) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _parquet(tmp_path: Path, **cols: Any) -> Path:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def _kinds(found: schema.Schema) -> dict[str, str]:
    return {c.name: c.kind for c in found.columns}


# -- formatted numbers ----------------------------------------------------------------------

FORMATTED = [
    "208,500",
    "$208,500",
    "208,500 €",
    "USD 208,500",
    "12%",
    "12.5 %",
    "1.234,5",
    "3,5",
    "208 500",
    "208\u00a0500",
    "(5)",
    "($1,234.50)",
    "−5",
    "1_000",
]


@pytest.mark.parametrize("text", FORMATTED)
def test_formatted_numbers_are_told_from_plain_ones(text: str) -> None:
    """Thousands separators, currency and percent signs, decimal commas, accounting parentheses
    and a typographic minus make a formatted number; it is never a plain one."""
    found = spellings.profile(pd.Series([text, "7", "abc", None], dtype="str"))
    assert found.formatted.tolist() == [True, False, False, False]
    assert found.numbers.tolist() == [False, True, False, False]


@pytest.mark.parametrize("text", ["1Fam", "1.5Fin", "C22 C26", "1,2,3", "5 kg", "A-12", "2003"])
def test_codes_with_digits_are_not_formatted_numbers(text: str) -> None:
    """Category codes with digits in them (house prices' 1.5Fin, a cabin C22 C26) and numbers
    with units stay text; a plain year is a number."""
    found = spellings.profile(pd.Series([text], dtype="str"))
    assert not found.formatted.any() and not found.dates.any()


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ([f"{p:,}" for p in PRICES], ("'208,500' at data row 1", "thousands separator")),
        ([f"${p:,}" for p in PRICES], ("'$208,500' at data row 1", "currency sign")),
        ([f"{p % 97}%" for p in PRICES], ("'47%' at data row 1", "percent sign")),
        ([f"({p})" for p in PRICES], ("'(208500)' at data row 1", "parentheses")),
    ],
)
def test_a_formatted_feature_is_refused_naming_a_cell(
    tmp_path: Path, values: list[str], named: tuple[str, ...]
) -> None:
    """A feature of formatted numbers is refused naming column, cell and what to do, where it
    was silently made categorical."""
    rows = [f'"{v}",{k}' for k, v in enumerate(values)]
    message = _refusal(_csv(tmp_path, "price,y", rows))
    for part in ("column 'price'", *named, "PIPELINE_DATA__COLUMN_KINDS"):
        assert part in message, message


def test_formatted_numbers_are_refused_before_the_cardinality_limit(tmp_path: Path) -> None:
    """Over the cardinality limit the refusal names the format, not the number of values."""
    rows = [f'"{1000 + k:,}",{k}' for k in range(1200)]
    message = _refusal(_csv(tmp_path, "area,y", rows))
    assert "'1,000' at data row 1" in message and "distinct" not in message


def test_a_formatted_feature_declared_categorical_is_kept(tmp_path: Path) -> None:
    """Declaring the column categorical is the documented way to keep formatted values."""
    rows = [f'"{p:,}",{k}' for k, p in enumerate(PRICES)]
    _, found = _train_frame(_csv(tmp_path, "price,y", rows), column_kinds={"price": "categorical"})
    assert _kinds(found) == {"price": "categorical"}


@pytest.mark.parametrize("task", ["auto", "regression"])
def test_a_formatted_target_is_refused(tmp_path: Path, task: str) -> None:
    """A price target written 208,500 is refused, where it trained a 10-class classifier."""
    rows = [f'{k},"{p:,}"' for k, p in enumerate(PRICES)]
    message = _refusal(_csv(tmp_path, "x,y", rows), task=task)
    assert "target column 'y'" in message and "'208,500' at data row 1" in message


def test_a_formatted_target_declared_multiclass_is_labels(tmp_path: Path) -> None:
    """PIPELINE_DATA__TASK=multiclass takes formatted values as class labels, as declared."""
    rows = [f'{k},"{p:,}"' for k, p in enumerate(PRICES)]
    _, found = _train_frame(_csv(tmp_path, "x,y", rows), task="multiclass")
    assert found.task == "multiclass"


# -- hex and Python's digit grouping ---------------------------------------------------------


def test_hex_integers_are_numbers_in_every_rule(tmp_path: Path) -> None:
    """pyarrow's CSV reader reads 0x1F as 31; prediction's and training's text rules agree."""
    frame, found = _train_frame(_csv(tmp_path, "code,y", [f"0x{k:X},{k}" for k in range(10, 40)]))
    assert _kinds(found) == {"code": "numeric"} and frame["code"].iloc[0] == 10
    text = pd.Series(["0x1F", "12", "-0x1F"], dtype="str")
    for parser in ("pandas", "arrow"):
        values, bad = cells.parse_numbers(text, parser)
        assert values[:2].tolist() == [31.0, 12.0] and bad.tolist() == [False, False, True]
    assert cells.to_float("0x1F") == 31.0


def test_python_digit_grouping_is_not_a_number_anywhere() -> None:
    """ "1_000" is refused by pandas and pyarrow; a JSON-lines cell no longer parses it either."""
    assert math.isnan(cells.to_float("1_000")) and math.isnan(cells.to_float(b"1_000"))
    mixed = pd.Series([5, "1_000"], dtype=object)
    assert cells.parse_numbers(mixed, "arrow")[1].tolist() == [False, True]


# -- text that is all numbers ---------------------------------------------------------------


def test_text_of_plain_numbers_is_numeric(tmp_path: Path) -> None:
    """A Parquet string column of numbers is a numeric feature and a regression target, where
    it was an identifier (dropped) and a 10-class target."""
    path = _parquet(
        tmp_path,
        area=pa.array([str(8000 + 37 * k) for k in range(10)]),
        y=pa.array([str(p) for p in PRICES]),
    )
    frame, found = _train_frame(path)
    assert _kinds(found) == {"area": "numeric"} and found.task == "regression"
    assert frame["y"].dtype == np.float64 and frame["y"].iloc[0] == 208500.0


# -- dates ----------------------------------------------------------------------------------

DATES = [
    "2003-01-15",
    "01/15/2003",
    "15.01.2003",
    "15-01-03",
    "2003/01/15",
    "15 Jan 2003",
    "Jan 15, 2003",
    "January 2003",
    "2003-01-15T10:30:00Z",
    "2003-01-15 10:30",
    "Mon, 15 Jan 2003 10:30",
    "10:30",
    "10:30 PM",
]


@pytest.mark.parametrize("text", DATES)
def test_dates_and_times_are_recognised_in_any_common_spelling(text: str) -> None:
    """ISO, US, European and month-name dates, with or without a time, and times of day."""
    assert spellings.profile(pd.Series([text], dtype="str")).dates.tolist() == [True]


@pytest.mark.parametrize("spelling", ["{y}-01-15", "01/15/{y}", "15.01.{y}", "15 Jan {y}"])
def test_a_date_feature_is_refused_whatever_its_spelling(tmp_path: Path, spelling: str) -> None:
    """US-format dates are refused like ISO ones, where they silently became categories."""
    rows = [f"{spelling.format(y=1990 + k)},{k}" for k in range(10)]
    message = _refusal(_csv(tmp_path, "sold,y", rows))
    first = spelling.format(y=1990)
    assert "column 'sold'" in message and "holds dates" in message
    assert f"'{first}' at data row 1" in message and "PIPELINE_DATA__DROP" in message


def test_a_date_column_declared_categorical_keeps_the_files_text(tmp_path: Path) -> None:
    """Declared categorical, a date keeps its spelling (what predict reads from a CSV file),
    not pyarrow's timestamp rendering "2003-01-15 10:30:00"."""
    rows = [f"2003-01-{k + 10} 10:30,{k}" for k in range(10)]
    frame, found = _train_frame(
        _csv(tmp_path, "sold,y", rows), column_kinds={"sold": "categorical"}
    )
    assert _kinds(found) == {"sold": "categorical"}
    assert frame["sold"].iloc[0] == "2003-01-10 10:30"


@pytest.mark.parametrize("task", ["auto", "regression"])
def test_a_date_target_is_refused(tmp_path: Path, task: str) -> None:
    """Dates in the target are refused, where they trained a classifier of days."""
    rows = [f"{k},01/{k + 10}/2003" for k in range(10)]
    message = _refusal(_csv(tmp_path, "x,y", rows), task=task)
    assert "target column 'y'" in message and "holds dates" in message


@pytest.mark.parametrize(
    "values",
    [
        pa.array([dt.date(2003, 1, k + 1) for k in range(10)]),
        pa.array([dt.datetime(2003, 1, k + 1) for k in range(10)]),
        pa.array([dt.timedelta(seconds=k) for k in range(10)]),
    ],
    ids=["date32", "timestamp", "duration"],
)
def test_a_typed_date_target_is_refused_not_a_traceback(tmp_path: Path, values: pa.Array) -> None:
    """Parquet dates, timestamps and durations in the target are one line, not a crash."""
    message = _refusal(_parquet(tmp_path, x=pa.array(range(10)), y=values))
    assert "target column 'y'" in message and "holds dates, times or durations" in message


# -- Parquet and Arrow types ----------------------------------------------------------------


def test_parquet_decimals_half_floats_and_dictionaries_are_plain(tmp_path: Path) -> None:
    """decimal128/256 are float64 numbers, float16 is float32, a dictionary is its values."""
    path = _parquet(
        tmp_path,
        d128=pa.array([decimal.Decimal(p) for p in PRICES], pa.decimal128(10, 2)),
        d256=pa.array([decimal.Decimal(k) / 4 for k in range(10)], pa.decimal256(40, 2)),
        half=pa.array([k / 2 for k in range(10)], pa.float16()),
        colour=pa.array(["red", "blue"] * 5).dictionary_encode(),
        y=pa.array([decimal.Decimal(p) for p in PRICES], pa.decimal128(12, 2)),
    )
    frame, found = _train_frame(path)
    assert _kinds(found) == {
        "d128": "numeric",
        "d256": "numeric",
        "half": "numeric",
        "colour": "categorical",
    }
    assert found.task == "regression" and frame["d128"].dtype == np.float64
    assert frame["half"].dtype == np.float32 and frame["colour"].iloc[0] == "red"


def test_missing_markers_apply_to_parquet_text(tmp_path: Path) -> None:
    """ "NA" in a Parquet string column is missing, as it is in a CSV file."""
    path = _parquet(
        tmp_path,
        colour=pa.array(["NA", "red", "blue", "", "red"] * 2, pa.large_string()),
        y=pa.array(range(10)),
    )
    frame, _ = _train_frame(path)
    assert frame["colour"].isna().tolist()[:5] == [True, False, False, True, False]


def test_parquet_text_reads_alike_with_or_without_dictionary_pages(tmp_path: Path) -> None:
    """Text that Parquet stores with a dictionary per row group is read as Arrow dictionaries
    (its values decoded once each) and made plain, its missing markers found among each row
    group's own values: the frame and the schema are those of the same text stored plain."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "blue", "green"], 3000).astype(object)
    colour[2500:2600] = "NA"  # markers in the last row groups only
    colour[2700:2710] = "?"
    colour[100:110] = None
    table = pa.table({"colour": pa.array(colour, pa.string()), "x": rng.random(3000),
                      "y": rng.random(3000)})  # fmt: skip
    dictionary, plain = tmp_path / "dictionary.parquet", tmp_path / "plain.parquet"
    pq.write_table(table, dictionary, row_group_size=1000)  # three dictionaries
    pq.write_table(table, plain, row_group_size=1000, use_dictionary=False)
    assert read._dictionary_text(dictionary) == ["colour"]
    assert read._dictionary_text(plain) == []
    markers = {"missing_values": ["NA", "?", ""]}
    (a, found_a), (b, found_b) = _train_frame(dictionary, **markers), _train_frame(plain, **markers)
    pd.testing.assert_frame_equal(a, b)
    assert a["colour"].isna().sum() == 120 and found_a == found_b
    assert str(a["colour"].dtype) == str(b["colour"].dtype)


def _not_utf8(tmp_path: Path, dictionary: bool) -> Path:
    """A Parquet file whose text column "c" holds bytes that are not UTF-8 in rows 5 and 6 (a
    writer that took bytes for text): pyarrow reads them as text all the same."""
    cells_ = [b"red", b"blue"] * 2 + [b"r\xffd", b"\xfe"] + [b"blue"] * 4
    offsets = np.cumsum([0] + [len(c) for c in cells_]).astype(np.int32)
    text = pa.Array.from_buffers(
        pa.string(),
        len(cells_),
        [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(cells_))],
    )
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"c": text, "x": range(10), "y": range(10)}), path,
                   use_dictionary=dictionary)  # fmt: skip
    return path


@pytest.mark.parametrize("dictionary", [True, False], ids=["dictionary", "plain"])
def test_parquet_text_that_is_not_utf8_is_one_line_naming_the_column(
    tmp_path: Path, dictionary: bool
) -> None:
    """Text bytes that are not UTF-8 in a Parquet column are refused as a CSV file's are, in
    training and in prediction (a traceback in pyarrow's conversion to Python text, exit 1)."""
    path = _not_utf8(tmp_path, dictionary)
    assert _refusal(path) == (
        f"dataset {path.name} is not valid UTF-8 text (column 'c'): re-encode the column's "
        "text as UTF-8"
    )
    with pytest.raises(DataError) as caught:
        _chunks(path, "parquet", ["c", "x"])  # chunks of 4 rows: rows 5 to 8 hold them
    assert caught.value.message == (
        f"input {path} is not valid UTF-8 text (column 'c', rows 5 to 8): re-encode the "
        "column's text as UTF-8"
    )
    assert _kinds(_train_frame(path, drop=["c"])[1]) == {"x": "numeric"}  # dropped: trained


def test_a_damaged_parquet_file_is_told_in_pyarrow_s_words(tmp_path: Path) -> None:
    """A Parquet file cut short is one line quoting pyarrow's reader (which file, what it
    missed), whatever the reader looks at first."""
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"c": ["a", "b"] * 50, "y": range(100)}), path)
    path.write_bytes(path.read_bytes()[:-10])
    message = _refusal(path)
    assert message.startswith(f"dataset {path.name} is not a readable Parquet file (Could not ")
    assert f"open Parquet input source '{path}': Parquet magic bytes not found" in message


@pytest.mark.parametrize(
    ("values", "what"),
    [
        (pa.array([[k, 1] for k in range(10)]), "lists"),
        (pa.array([{"a": k} for k in range(10)]), "structs"),
        (pa.array([[("a", k)] for k in range(10)], pa.map_(pa.string(), pa.int64())), "maps"),
        (pa.array([bytes([k]) for k in range(10)]), "binary values"),
    ],
    ids=["list", "struct", "map", "binary"],
)
def test_nested_and_binary_parquet_columns_are_refused(
    tmp_path: Path, values: pa.Array, what: str
) -> None:
    """A list, struct, map or binary feature is refused naming it (it was a traceback or a
    silent category); listed in PIPELINE_DATA__DROP it is ignored."""
    path = _parquet(tmp_path, tags=values, x=pa.array(range(10)), y=pa.array(PRICES))
    message = _refusal(path)
    assert f"column 'tags' in dataset data.parquet holds {what}" in message
    assert "PIPELINE_DATA__DROP" in message
    _, found = _train_frame(path, drop=["tags"])
    assert _kinds(found) == {"x": "numeric"}


def test_a_list_target_is_refused_naming_the_target(tmp_path: Path) -> None:
    """A list target is refused as the target, not as a feature."""
    path = _parquet(tmp_path, x=pa.array(range(10)), y=pa.array([[p] for p in PRICES]))
    message = _refusal(path)
    assert message.startswith("target column 'y'") and "holds lists" in message


def test_unsupported_names_every_nested_type() -> None:
    """Large and fixed-size lists and a dictionary of bytes are refused too; plain types not."""
    assert columns.unsupported(pa.large_list(pa.int64())) == "lists"
    assert columns.unsupported(pa.list_(pa.int64(), 2)) == "lists"
    assert columns.unsupported(pa.dictionary(pa.int8(), pa.binary())) == "binary values"
    for plain in (pa.string(), pa.large_string(), pa.decimal128(5, 2), pa.date32(), pa.null()):
        assert columns.unsupported(plain) is None


# -- prediction's readers -------------------------------------------------------------------


def _predictor(required: list[str]) -> Any:
    """What the readers ask of a predictor: its columns, delimiter and missing markers, and its
    own check of a header (``Predictor.check_columns``)."""
    from pipeline.predict.predictor import Predictor

    fake = SimpleNamespace(required=required, delimiter=",", missing_values=list(DEFAULT_MISSING))
    fake.check_columns = lambda columns, label: Predictor.check_columns(fake, columns, label)  # type: ignore[arg-type]
    return fake


def _chunks(path: Path, fmt: str, required: list[str]) -> pd.DataFrame:
    chunks = readers.iter_chunks(path, fmt, 4, _predictor(required), RunSettings(), Stats())
    return pd.concat(list(chunks))


def test_json_lines_missing_markers_are_missing_as_in_csv(tmp_path: Path) -> None:
    """ "NA" and "" in a JSON-lines cell are missing values, as they are in a CSV file."""
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"a": 1, "b": "x"}\n{"a": "NA", "b": "NA"}\n{"a": 3, "b": ""}\n{"a": 4, "b": null}\n'
    )
    frame = _chunks(path, "jsonl", ["a", "b"])
    assert frame["a"].isna().tolist() == [False, True, False, False]
    assert frame["b"].isna().tolist() == [False, True, True, True]
    assert cells.parse_numbers(frame["a"], "arrow")[1].tolist() == [False] * 4


def test_parquet_input_is_made_plain_like_training_input(tmp_path: Path) -> None:
    """Prediction reads a Parquet decimal as a number and "NA" text as missing, chunk by
    chunk, as training's reader does."""
    path = _parquet(
        tmp_path,
        a=pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("3")] * 3, pa.decimal128(6, 2)),
        b=pa.array(["x", "NA", "y"] * 3).dictionary_encode(),
    )
    frame = _chunks(path, "parquet", ["a", "b"])
    assert frame["a"].dtype == np.float64 and frame["a"].iloc[0] == 1.5
    assert frame["b"].isna().tolist()[:3] == [False, True, False]
    assert frame.index.tolist() == list(range(9))


def test_parquet_input_with_a_list_in_a_required_column_is_refused(tmp_path: Path) -> None:
    """A required column of lists is refused naming it; an extra one is ignored."""
    path = _parquet(tmp_path, a=pa.array([[1], [2]]), b=pa.array([[1], [2]]), c=pa.array([1, 2]))
    with pytest.raises(DataError, match="column 'a' holds lists"):
        _chunks(path, "parquet", ["a", "c"])
    assert _chunks(path, "parquet", ["c"])["c"].tolist() == [1, 2]


def test_a_json_object_or_array_in_a_cell_fails_or_is_noted() -> None:
    """A nested JSON value is not one value: it fails the run, or is noted and made missing,
    where a categorical column took its text as an unknown category."""
    series = pd.Series(["a", {"k": 1}, [1, 2], None], dtype=object)
    with pytest.raises(DataError) as caught:
        cells.single_values(series, "colour", "input x.jsonl", "fail", np.full(4, "", object))
    assert (caught.value.column, caught.value.row) == ("colour", 2)
    assert "not a JSON object or array" in caught.value.message
    notes = np.full(4, "", dtype=object)
    kept = cells.single_values(series, "colour", "L", "column", notes)
    assert kept.tolist() == ["a", None, None, None] and [bool(n) for n in notes] == [
        False,
        True,
        True,
        False,
    ]


# -- the target -----------------------------------------------------------------------------


def test_a_yes_no_target_is_binary_and_yes_is_the_positive_class(tmp_path: Path) -> None:
    """yes/no are text, not booleans: a binary target whose classes sort "no" < "yes"."""
    rows = [f"{k},{'yes' if k % 2 else 'no'}" for k in range(10)]
    _, found = _train_frame(_csv(tmp_path, "x,y", rows))
    assert found.task == "binary"


def test_a_target_class_spelt_two_ways_is_refused(tmp_path: Path) -> None:
    """ "yes" and "Yes " in one target are one class split in two: refused, naming both."""
    rows = [f"{k},{v}" for k, v in enumerate(["yes", "no", "Yes ", "no", "yes", "no"])]
    message = _refusal(_csv(tmp_path, "x,y", rows))
    assert "'yes' at data row 1" in message and "'Yes ' at data row 3" in message


def test_a_mostly_true_false_target_is_refused(tmp_path: Path) -> None:
    """A true/false target with one odd value is refused, not trained as three classes."""
    rows = [f"{k},{'true' if k % 2 else 'false'}" for k in range(10)] + ["10,maybe"]
    message = _refusal(_csv(tmp_path, "x,y", rows))
    assert "'maybe' at data row 11" in message and "true/false" in message


def test_rows_without_a_target_and_an_id_in_another_case_are_said(cli: Any, tmp_path: Path) -> None:
    """`pipeline train` on a table where some rows lack the target and the id column is `id`
    (the default drop list names `Id`): one warning counts the rows left out (they had been
    dropped without a word), and the drop warning names `id`, now a feature, and the setting
    that leaves it out."""
    rows = [
        f"{i},{i % 10 * 1.5},{'abc'[i % 3]},{'' if i % 7 == 0 else i % 10 * 3 + i % 3}"
        for i in range(120)
    ]
    path = _csv(tmp_path, "id,a,kind,y", rows)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output
    found = [e for e in events(result.stdout) if e["event"] == "data.warning"]
    left_out = [e for e in found if "rows_without_target" in e]
    assert [e["rows_without_target"] for e in left_out] == [18]
    assert left_out[0]["message"].startswith(f"18 of 120 rows of {path} have no value in target")
    assert any(
        "its column 'id' is used as a feature" in e["message"]
        and """PIPELINE_DATA__DROP='["id"]'""" in e["message"]
        for e in found
    ), found
    schema_event = next(e for e in events(result.stdout) if e["event"] == "data.schema")
    assert schema_event["rows"] == 102


def test_a_class_with_a_few_rows_is_named_in_a_warning(cli: Any, tmp_path: Path) -> None:
    """A yes/no target with one stray 'maybe' trained a 3-class model without a word: a
    data.rare_classes warning names the class and its count (the run goes on: it may be real)."""
    rows = [f"{i % 10 * 1.5},{'abc'[i % 3]},{'yes' if i % 2 else 'no'}" for i in range(119)]
    path = _csv(tmp_path, "a,kind,y", [*rows, "3.0,a,maybe"])
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output
    rare = [e for e in events(result.stdout) if e["event"] == "data.rare_classes"]
    assert len(rare) == 1 and rare[0]["rare"] == {"maybe": 1} and rare[0]["classes"] == 3
    assert "fewer than 5 rows" in rare[0]["message"]


def test_a_true_false_csv_column_with_a_blank_cell_is_boolean_and_its_model_predicts(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """pyarrow reads true/false cells with one blank as booleans with a null, which pandas
    holds as True/False/None objects: schema inference typed that numeric, and the package
    then refused its own training rows ('true' is no number). It is boolean, as without the
    blank cell; the package predicts the training file."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=120)
    flag = np.where(a > 0, "true", "false").astype(object)
    flag[5] = ""
    data = tmp_path / "flags.csv"
    pd.DataFrame({"a": a, "f": flag, "y": a * 2}).to_csv(data, index=False)
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2",
           "PIPELINE_MODEL__NAME": "flags"}  # fmt: skip
    trained = cli("train", env=env)
    assert trained.exit_code == 0, trained.stderr
    build = next(e for e in events(trained.stdout) if e["event"] == "train.summary")["build_id"]
    assert cli("package", build, env=env).exit_code == 0
    columns = json.loads((store / "builds" / build / "schema.json").read_text())["columns"]
    assert {c["name"]: c["kind"] for c in columns} == {"a": "numeric", "f": "boolean"}
    archive = store / "packages" / "flags" / "0.1.0.tar.gz"
    predicted = cli("predict", str(data), "--package", str(archive), env=env)
    assert predicted.exit_code == 0, predicted.stderr


def test_a_column_declared_boolean_that_is_not_is_refused_at_training(
    cli: Any, tmp_path: Path
) -> None:
    """COLUMN_KINDS {"b": "boolean"} on a column of 0..4: training took five categories and
    the package then refused its own rows ('2' is not true or false). Now exit 4 at
    training, naming the column, the row and the value."""
    rng = np.random.default_rng(0)
    data = tmp_path / "codes.csv"
    pd.DataFrame({"a": rng.normal(size=60), "b": [2, *rng.integers(0, 5, 59)],
                  "y": rng.normal(size=60)}).to_csv(data, index=False)  # fmt: skip
    env = {
        "PIPELINE_DATA__SOURCE": str(data),
        "PIPELINE_DATA__TARGET": "y",
        "PIPELINE_DATA__DROP": "[]",
        "PIPELINE_DATA__COLUMN_KINDS": '{"b": "boolean"}',
    }
    refused = cli("train", env=env)
    assert refused.exit_code == 4, refused.stderr
    assert "column 'b' in" in refused.stderr and "has 2 at data row 1: expected true or false" \
        in refused.stderr  # fmt: skip


# -- declared text in CSV --------------------------------------------------------------------


def test_declared_categorical_codes_keep_their_text_in_training_and_prediction(
    tmp_path: Path, cli: Any, store: Path
) -> None:
    """Zip codes declared categorical were read as numbers for training (``00501`` became the
    category ``501``) and as text by `pipeline predict`, so the training file's own rows
    predicted as unknown categories; codes ``1.1`` and ``1.10`` were one category. Both readers
    now keep the file's text, and a declared multiclass target keeps its classes apart."""
    codes = ["00501", "02134", "10001", "1.1", "1.10"]
    rows = [f"{k / 100:.2f},{codes[k % 5]},{k % 5 + k / 1000:.3f}" for k in range(200)]
    path = _csv(tmp_path, "a,z,y", rows)
    frame, found = _train_frame(path, column_kinds={"z": "categorical"})
    assert _kinds(found) == {"a": "numeric", "z": "categorical"}
    assert sorted(set(frame["z"])) == sorted(codes)
    (tmp_path / "labels").mkdir()
    labels = _csv(tmp_path / "labels", "a,y", [f"{k},{codes[k % 5]}" for k in range(200)])
    frame, found = _train_frame(labels, task="multiclass")
    assert sorted(set(frame["y"])) == sorted(codes)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_DATA__COLUMN_KINDS": '{"z": "categorical"}',
           "PIPELINE_MODEL__NAME": "zips", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    assert cli("train", env=env).exit_code == 0
    built = next((store / "builds").iterdir()) / "preprocessing.json"
    vocab = json.loads(built.read_text())["categorical"][0]["vocab"]
    assert sorted(vocab) == sorted(codes)
    assert cli("package", env=env).exit_code == 0
    out = tmp_path / "out.csv"
    archive = store / "packages" / "zips" / "0.1.0.tar.gz"
    done = cli("predict", str(path), "--package", str(archive), "-o", str(out), env=env)
    assert done.exit_code == 0, done.stderr
    assert events(done.stdout)[-1]["unknown_categories"] == {}


# -- a missing marker the settings do not know -----------------------------------------------


def test_numbers_with_one_repeated_placeholder_are_refused_not_categories(tmp_path: Path) -> None:
    """Titanic's ages with ``?`` for a fifth of them became one category per age (below the
    90% rule), silently; a column of numbers whose every other cell is one repeated value is
    refused naming it and the setting that makes it missing; so is one of half numbers or more,
    10 distinct or more, beside several words ('?' and 'unknown'; lot areas with every 4th cell
    'big', 'small', 'tiny', 'huge' or 'n/k' became a category per area seen three times). Under
    10 distinct numbers ("0, 1, 2, many"), or true/false words with a third word, stay
    categories."""
    ages = [f"{20 + k % 50},{k % 2}" if k % 5 else f"?,{k % 2}" for k in range(100)]
    message = _refusal(_csv(tmp_path, "age,y", ages))
    assert "column 'age'" in message and "'?' at data row 1" in message
    assert "80 of its 100 values are numbers" in message
    assert "add '?' to PIPELINE_DATA__MISSING_VALUES" in message
    frame, found = _train_frame(_csv(tmp_path, "age,y", ages), missing_values=["?", ""])
    assert _kinds(found) == {"age": "numeric"} and frame["age"].isna().sum() == 20
    two = [r.replace("?", "unknown") if k % 10 == 0 else r for k, r in enumerate(ages)]
    message = _refusal(_csv(tmp_path, "age,y", two))
    assert "'unknown' at data row 1" in message and "80 of its 100 values are numbers" in message
    words = ("big", "small", "tiny", "huge", "n/k")
    areas = [f"{7000 + 37 * k},{k % 2}" if k % 4 else f"{words[k % 5]},{k % 2}" for k in range(300)]
    message = _refusal(_csv(tmp_path, "LotArea,y", areas))
    assert "column 'LotArea'" in message and "225 of its 300 values are numbers" in message
    assert "PIPELINE_DATA__COLUMN_KINDS" in message, message
    assert _kinds(_train_frame(_csv(tmp_path, "LotArea,y", areas),
                               column_kinds={"LotArea": "categorical"})[1]) == {
        "LotArea": "categorical"}  # fmt: skip
    few = [f"{k % 3},{k % 2}" if k % 5 < 2 else f"many,{k % 2}" for k in range(100)]
    assert _kinds(_train_frame(_csv(tmp_path, "kids,y", few))[1]) == {"kids": "categorical"}
    words = [f"{('yes', 'no', 'maybe')[k % 3]},{k % 2}" for k in range(100)]
    assert _kinds(_train_frame(_csv(tmp_path, "ok,y", words))[1]) == {"ok": "categorical"}
    target = [f"{k},{k * 1000 if k % 5 else '?'}" for k in range(100)]
    assert "target column 'y'" in _refusal(_csv(tmp_path, "x,y", target))


@pytest.mark.parametrize("placeholder", ["99999999999", "-1"])
def test_a_placeholder_that_skews_the_target_is_refused_not_hidden_by_the_log(
    tmp_path: Path, placeholder: str
) -> None:
    """A placeholder among house prices skewed the target, so inference chose the log, and in
    logs it was 30 spreads from the median, not 10^6: the refusal was skipped, the row trained
    (test R² 0.819 -> 0.785). The raw values are checked before the log is chosen; a declared
    log checks the logs only, so real heavy tails can still be trained."""
    rows = [f"{k},{PRICES[k % 10] + k}" for k in range(40)]
    rows[11] = f"11,{placeholder}"
    path = _csv(tmp_path, "x,y", rows)
    data = _data()
    frame = schema.prepare_target(read.read_table(path, data, label=path.name), "y", "auto",
                                  path.name)  # fmt: skip
    if placeholder == "-1":  # not positive, the rest not skewed: no log, nothing to refuse
        assert schema.infer(frame, data, "auto", path.name)[0].target_transform == "none"
        return
    with pytest.raises(DataError) as caught:
        schema.infer(frame, data, "auto", path.name)
    message = caught.value.message
    assert message.startswith(f"target column 'y' in data.csv has {placeholder}"), message
    assert "at data row 12" in message and "TARGET_TRANSFORM=log" in message
    assert schema.infer(frame, data, "log", path.name)[0].target_transform == "log"


def _skewed_target(tmp_path: Path, low: str, every: int) -> tuple[pd.DataFrame, DataSettings]:
    """60 right-skewed prices (skew 1.12: auto takes their log), ``low`` on rows ``every``."""
    rows = [f"{k},{low if k % every == 11 % every else round(100000 * 1.12 ** (k % 30))}"
            for k in range(60)]  # fmt: skip
    path = _csv(tmp_path, "x,y", rows)
    data = _data()
    frame = schema.prepare_target(read.read_table(path, data, label=path.name), "y", "auto",
                                  path.name)  # fmt: skip
    return frame, data


@pytest.mark.parametrize("low", ["-1", "0"])
def test_one_value_at_or_below_zero_in_a_skewed_target_is_refused(tmp_path: Path, low: str) -> None:
    """One -1 (or 0) among right-skewed prices turned the log off without a word, and the
    model trained on raw prices: a guess that changes the model. Refused naming the row and
    both ways on; a declared transform trains it."""
    frame, data = _skewed_target(tmp_path, low, every=60)
    with pytest.raises(DataError) as caught:
        schema.infer(frame, data, "auto", "data.csv")
    message = caught.value.message
    assert message.startswith(f"target column 'y' in data.csv has {low} at data row 12"), message
    assert "(1 of 60 values <= 0)" in message
    assert "TARGET_TRANSFORM to none (no log) or log1p" in message
    assert schema.infer(frame, data, "none", "data.csv")[0].target_transform == "none"


@pytest.mark.parametrize("low", ["0", "-5"])
def test_a_skewed_target_with_many_values_at_or_below_zero_is_not_logged_nor_refused(
    tmp_path: Path, low: str
) -> None:
    """Zeros that are the data's nature (a count, a third of them 0) or losses keep the
    target as it is, without a refusal: only a stray value is taken for a mistake."""
    frame, data = _skewed_target(tmp_path, low, every=3)
    assert schema.infer(frame, data, "auto", "data.csv")[0].target_transform == "none"


def test_a_named_pandas_index_in_parquet_is_a_column_an_unnamed_one_is_not(
    tmp_path: Path,
) -> None:
    """`df.set_index("x2").to_parquet()` holds x2 as a column with pandas metadata naming it the
    index: training lost it without a word (the index was dropped) and predict said the file
    lacked it. Both read it now; an unnamed index (`__index_level_0__`, a shuffled frame's row
    labels) stays out of the columns, as pandas keeps it."""
    frame = pd.DataFrame({"x1": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], "x2": [3, 1, 4, 1, 5, 9],
                          "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})  # fmt: skip
    named = tmp_path / "named.parquet"
    frame.set_index("x2").to_parquet(named)
    shuffled = tmp_path / "shuffled.parquet"
    frame.iloc[[5, 0, 3, 1, 4, 2]].to_parquet(shuffled)
    assert "__index_level_0__" in pq.read_schema(shuffled).names
    data = _data()
    read_named = read.read_table(named, data, label="named.parquet")
    assert list(read_named.columns) == ["x1", "y", "x2"]
    assert read_named["x2"].tolist() == [3, 1, 4, 1, 5, 9]
    assert read.header(named, data) == ["x1", "y", "x2"]
    assert list(read.read_table(shuffled, data, label="s.parquet").columns) == ["x1", "x2", "y"]
    assert read.header(shuffled, data) == ["x1", "x2", "y"]
    predicted = _chunks(named, "parquet", ["x1", "x2"])
    assert predicted["x2"].tolist() == [3, 1, 4, 1, 5, 9]


def test_numbers_beside_one_unknown_marker_are_refused_even_below_half(tmp_path: Path) -> None:
    """83 numbers (42%) and 117 cells of one '-' became a categorical column of '-' and a few
    numbers, every other number unknown, without a word; the marker is now named, as it is at
    half or more. Few numbers (under a tenth), or under ten distinct ones ("0, 1, 2, many"),
    stay categories."""
    rng = np.random.default_rng(0)
    numbers = [str(int(v)) for v in rng.integers(0, 100, 83)]
    cells_ = numbers + ["-"] * 117
    order = rng.permutation(200)
    rows = [f"{cells_[i]},{k}" for k, i in enumerate(order)]
    message = _refusal(_csv(tmp_path, "x2,y", rows))
    assert "column 'x2'" in message and "'-'" in message and "83 of its 200 values are numbers"\
        in message and "PIPELINE_DATA__MISSING_VALUES" in message  # fmt: skip
    few = [f"{v},{k}" for k, v in enumerate(["-"] * 190 + [str(k) for k in range(10)])]
    assert _kinds(_train_frame(_csv(tmp_path, "x2,y", few))[1]) == {"x2": "categorical"}
    two = [f"{v},{k}" for k, v in enumerate(["none"] * 150 + [str(k % 9) for k in range(50)])]
    assert _kinds(_train_frame(_csv(tmp_path, "x2,y", two))[1]) == {"x2": "categorical"}


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [({"target": "Y"}, "PIPELINE_DATA__TARGET"),
     ({"column_kinds": {"X2": "categorical"}}, "PIPELINE_DATA__COLUMN_KINDS")],
)  # fmt: skip
def test_a_name_in_another_case_is_suggested(
    tmp_path: Path, overrides: dict[str, Any], setting: str
) -> None:
    """A target `Y` for a column `y` got no suggestion: difflib scores 'Y' and 'y' apart."""
    rows = [f"{k % 7},{k}" for k in range(30)]
    message = _refusal(_csv(tmp_path, "x2,y", rows), **overrides)
    wanted = "y" if "target" in overrides else "x2"
    assert setting in message and f"did you mean '{wanted}'?" in message, message


def test_a_parquet_file_declared_csv_is_named_so(tmp_path: Path) -> None:
    """Read as CSV, a Parquet file's bytes made a message about fields on line 2 and '\\x7f'."""
    path = _parquet(tmp_path, x=pa.array([1, 2, 3]), y=pa.array([1.0, 2.0, 3.0]))
    message = _refusal(path, format="csv")
    assert "is a Parquet file, but PIPELINE_DATA__FORMAT=csv" in message, message


def test_a_pandas_range_index_keeps_ids_with_their_rows_and_a_named_one_is_a_column(
    tmp_path: Path,
) -> None:
    """`df.iloc[5:].to_parquet()` stores its index as a range from 5: predict's integer ids,
    set by index, moved 5 rows (the last 5 empty) in one chunk and not in chunks of 100.
    `df.set_index("Id")` of consecutive ids stores them only as a named range: not read."""
    frame = pd.DataFrame({"Id": range(100, 130), "x": np.arange(30) / 10, "y": np.arange(30.0)})
    sliced = tmp_path / "sliced.parquet"
    frame.iloc[5:].to_parquet(sliced)
    predictor = _predictor(["x"])
    for chunk in (4, 1000):
        chunks = readers.iter_chunks(sliced, "parquet", chunk, predictor,
                                     RunSettings(id_column="Id"), Stats())  # fmt: skip
        got = pd.concat(list(chunks))
        assert got["Id"].tolist() == list(range(105, 130)), chunk
        assert got["x"].tolist() == frame["x"].iloc[5:].tolist()
    named = tmp_path / "named.parquet"
    frame.set_index("Id").to_parquet(named)
    assert read.header(named, _data()) == ["x", "y", "Id"]
    assert read.read_table(named, _data(), label="n")["Id"].tolist() == list(range(100, 130))
    chunks = readers.iter_chunks(named, "parquet", 4, _predictor(["x", "Id"]), RunSettings(),
                                 Stats())  # fmt: skip
    assert pd.concat(list(chunks))["Id"].tolist() == list(range(100, 130))


def test_a_column_that_counts_the_rows_is_named_in_a_warning(tmp_path: Path) -> None:
    """A saved pandas index (0, 1, 2, ...) or house prices' Id kept as a feature (1, 2, 3,
    ...) was used without a word: the model learnt a row's place in the file. A warning names
    it; a shuffled id, the same numbers out of order, or a declared kind is not named."""
    rows = [f"{k},{(k * 7) % 11},{k % 2}" for k in range(40)]
    path = _csv(tmp_path, "index,x,y", rows)
    data = _data()
    frame = read.read_table(path, data, label=path.name)
    frame = schema.prepare_target(frame, data.target, data.task, path.name)
    warnings = schema.infer(frame, data, "none", path.name)[1]
    assert [w for w in warnings if "counts the rows" in w] == [
        "column 'index' counts the rows (0, 1, 2, ...): an index saved with the data? It is "
        "used as a feature, which ties a prediction to a row's place in the file; add it to "
        "PIPELINE_DATA__DROP, or, a trend such as a year per row, declare it numeric in "
        "PIPELINE_DATA__COLUMN_KINDS to keep it without this word"
    ], warnings
    # Rows without a target left out: the counter still counts the file's rows (it was
    # missed, the gaps breaking its steps of 1).
    gappy = _csv(tmp_path, "index,x,y",
                 [r if k % 9 else f"{k},{(k * 7) % 11}," for k, r in enumerate(rows)])  # fmt: skip
    frame = read.read_table(gappy, data, label="g")
    frame = schema.prepare_target(frame, data.target, data.task, "g")
    assert len(frame) < 40
    assert any("counts the rows" in w for w in schema.infer(frame, data, "none", "g")[1])
    # Customer ids from 1001 count the rows as well (only 0 and 1 were looked for).
    ids = _csv(
        tmp_path, "customer_id,x,y", [f"{1001 + k},{(k * 7) % 11},{k % 2}" for k in range(40)]
    )
    frame = read.read_table(ids, data, label="c")
    warnings = schema.infer(frame, data, "none", "c")[1]
    assert any(w.startswith("column 'customer_id' counts the rows (1001, 1002, 1003, ...)")
               for w in warnings), warnings  # fmt: skip
    shuffled = _csv(tmp_path, "index,x,y", [rows[k] for k in range(39, -1, -1)])
    frame = read.read_table(shuffled, data, label="s")
    assert not schema.infer(frame, data, "none", "s")[1]
    declared = _data(column_kinds={"index": "numeric"})
    frame = read.read_table(path, declared, label="d")
    assert not schema.infer(frame, declared, "none", "d")[1]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_true_false_target_with_missing_cells_keeps_its_classes(
    cli: Any, store: Path, tmp_path: Path, fmt: str
) -> None:
    """A true/false target with some empty cells trained the classes "0" and "1" (its values,
    Python objects beside the missing ones, were read as the numbers 1 and 0), where the same
    file without a gap gave "false" and "true": predictions and probability columns changed
    names with one missing target. Its classes are "false" and "true" either way."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    labels = [None if i % 10 == 0 else bool(v > 0) for i, v in enumerate(x)]
    path = tmp_path / f"flags.{fmt}"
    if fmt == "csv":
        pd.DataFrame({"x": x, "y": labels}).to_csv(path, index=False)
    else:
        pq.write_table(pa.table({"x": x, "y": pa.array(labels, pa.bool_())}), path)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    ids = tmp_path / "id"
    result = cli("train", "--id-file", str(ids), env=env)
    assert result.exit_code == 0, result.output[-2000:]
    built = json.loads(
        (store / "builds" / ids.read_text().strip() / "preprocessing.json").read_text()
    )
    assert built["target"]["classes"] == ["false", "true"]


def test_nullable_columns_with_a_missing_end_train_and_unsigned_ones_say_nothing(
    cli: Any, tmp_path: Path
) -> None:
    """pandas' nullable Int64 / Float64 / int64[pyarrow] columns with a missing first or last
    cell (a `convert_dtypes()` frame written to Parquet) were a traceback, exit 1: the row
    counter check asked whether pd.NA was finite. An unsigned column whose last value is below
    its first put numpy's "overflow encountered" warning in the event stream. They train, and
    a counter with a missing end is not a counter."""
    rng = np.random.default_rng(2)
    n = 300
    x = rng.normal(size=n)
    frame = pd.DataFrame({"x": x, "y": x * 3 + 50})
    frame["a"] = pd.array([None if i == 0 else i % 50 for i in range(n)], dtype="Int64")
    frame["b"] = pd.array([*(rng.normal(size=n - 1)), None], dtype="Float64")
    frame["c"] = pd.array([None, *range(1, n)], dtype="int64[pyarrow]")
    frame["d"] = np.array([(n - i) % 200 for i in range(n)], dtype=np.uint8)
    path = tmp_path / "nullable.parquet"
    frame.to_parquet(path, index=False)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output[-2000:]
    assert "python.warning" not in result.stdout
    said = [e["message"] for e in events(result.stdout) if e["event"] == "data.warning"]
    assert not [m for m in said if "counts the rows" in m], said


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_codes_written_with_leading_zeros_are_named_in_a_warning(
    cli: Any, store: Path, tmp_path: Path, fmt: str
) -> None:
    """Zip codes (`02134`) trained as the numbers 2134 without a word: pyarrow reads a CSV
    column of digits as integers, and a Parquet text column of numbers was inferred numeric.
    A data.warning names the column and a value; amounts without leading zeros and `0.5` are
    not named, and a column declared categorical keeps its text (and no warning)."""
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({
        "zip": [f"{z:05d}" for z in rng.integers(1000, 99999, n)],
        "amount": rng.integers(1, 500, n).astype(str),
        "share": [f"{v:.2f}" for v in rng.uniform(0, 0.9, n)],
        "y": rng.normal(size=n),
    })  # fmt: skip
    frame.loc[0, "zip"] = "02134"
    path = tmp_path / f"zips.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output
    said = [e["message"] for e in events(result.stdout) if e["event"] == "data.warning"]
    padded = [m for m in said if "leading zeros" in m]
    assert padded == [
        "column 'zip' holds numbers written with leading zeros ('02134'): they are read as "
        "numbers, so the zeros are lost and nearby values count as close; if they are codes "
        "(zip codes, account numbers), declare the column categorical in "
        "PIPELINE_DATA__COLUMN_KINDS (numeric, if they are amounts, says so without this word)"
    ], said
    build = next(e for e in events(result.stdout) if e["event"] == "train.summary")["build_id"]
    columns = json.loads((store / "builds" / build / "schema.json").read_text())["columns"]
    assert {c["name"]: c["kind"] for c in columns}["zip"] == "numeric"

    declared = cli("train", env={**env, "PIPELINE_DATA__COLUMN_KINDS": '{"zip": "categorical"}'})
    assert declared.exit_code == 0, declared.output
    assert not [e for e in events(declared.stdout) if "leading zeros" in str(e.get("message"))]


def test_a_windows_1252_header_is_refused_in_one_line(cli: Any, tmp_path: Path) -> None:
    """An Excel export in Windows-1252 whose header holds 'région' was a 66-line traceback
    (exit 1): pyarrow decodes the header's names only when they are asked for. It is exit 4
    saying the file is not UTF-8, naming line 1."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"target": rng.choice(["a", "b"], 120), "alcohol": rng.normal(size=120),
                          "région": "x"})  # fmt: skip
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False, encoding="cp1252")
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "target",
           "PIPELINE_DATA__DROP": "[]"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 4, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert "is not valid UTF-8 text" in line and "line 1" in line and "re-encode" in line, line


def test_a_spreadsheets_total_row_is_refused_naming_it(cli: Any, tmp_path: Path) -> None:
    """A table exported with its "Total" row (every number the column's sum) trained on it
    without a word: the target's sum switched the target to logs and the model was ruined.
    A row labelled Total (or "Grand total:", "TOTAL") whose numbers are the sums of the rows
    above is exit 4 naming the row and the column, also when an empty row or a note follows
    it; a product named "Total" with its own numbers, or a note saying "Sum", is data."""
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({"clinic": rng.choice(["north", "south"], n),
                          "x": rng.normal(5, 1, n), "y": rng.normal(10, 1, n)})  # fmt: skip
    env = {"PIPELINE_DATA__TARGET": "y", "PIPELINE_DATA__DROP": "[]",
           "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    path = tmp_path / "export.csv"

    def train(*tail: dict[str, Any]) -> Any:
        pd.concat([frame, pd.DataFrame(list(tail))]).to_csv(path, index=False)
        return cli("train", env={**env, "PIPELINE_DATA__SOURCE": str(path)})

    sums = {"x": frame["x"].sum(), "y": frame["y"].sum()}
    for label, after in (("Total", []), ("Grand total:", [{}]),
                         ("TOTAL", [{"clinic": "Source: clinic export"}])):  # fmt: skip
        result = train({"clinic": label, **sums}, *after)
        assert result.exit_code == 4, (label, result.output)
        assert result.stderr.strip() == (
            f"error: dataset {path}: data row 121 is a summary row ({label!r} in column "
            "'clinic'): its numbers are the sums of the rows above, not a row to learn from; "
            "delete it from the file and train again"
        ), label
    assert train({"clinic": "Total", "x": 5.5, "y": 10.2}).exit_code == 0  # a clinic's own


def test_a_european_export_is_told_its_delimiter(cli: Any, tmp_path: Path) -> None:
    """A semicolon-delimited file with decimal commas (Excel in a European locale): its data
    lines split on the commas, so the message was "14 fields on line 2 where the header has
    1 ...: fix that line", where a plain `;` file was told to set the delimiter."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                          "y": rng.normal(size=60)})  # fmt: skip
    path = tmp_path / "export.csv"
    frame.to_csv(path, sep=";", decimal=",", index=False)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 4, result.output
    line = result.stderr.strip()
    assert "where the header has 1: the header looks delimited by ';': set " in line, line
    assert "PIPELINE_DATA__DELIMITER=';', and write decimal commas as points" in line


def test_column_names_that_differ_only_by_spaces_are_named(cli: Any, tmp_path: Path) -> None:
    """A header `...,s5, s5,y` trained two features, 's5' and ' s5', without a word."""
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{a + b:.3f}" for a, b in rng.normal(size=(60, 2))]
    path = _csv(tmp_path, "s5, s5,y", rows)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output
    said = [e["message"] for e in events(result.stdout) if e["event"] == "data.warning"]
    assert f"columns 's5', ' s5' of {path} differ only by surrounding spaces: they are " \
        "different columns; rename one if they were meant to be one" in said, said  # fmt: skip


def test_categories_that_differ_only_by_case_or_spaces_are_named(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """`red`, `RED` and `red ` in one column trained three categories without a word, where
    predict calls such a value a misspelling and a target spelt so is refused. A data.warning
    names the pairs; a column of distinct categories gets none."""
    rng = np.random.default_rng(0)
    colours = ["red", "blue", "green"]
    rows = []
    for k, x in enumerate(rng.normal(size=90)):
        colour = colours[k % 3]
        colour = colour.upper() if k % 5 == 0 else colour + " " if k % 7 == 0 else colour
        rows.append(f"{x:.3f},{colour},{colours[k % 3]},{x * 2:.3f}")
    path = _csv(tmp_path, "x,colour,clean,y", rows)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    ids = tmp_path / "id"
    result = cli("train", "--id-file", str(ids), env=env)
    assert result.exit_code == 0, result.output
    said = [e["message"] for e in events(result.stdout) if e["event"] == "data.warning"]
    twins = [m for m in said if "differ only by case or surrounding spaces" in m]
    assert twins == [
        "column 'colour' holds categories that differ only by case or surrounding spaces "
        "('BLUE' / 'blue' / 'blue '; 'GREEN' / 'green' / 'green '; 'RED' / 'red' / 'red '): "
        "each is a category of its own; if they mean one, fix their spelling in the data"
    ], said
    schema = json.loads((store / "builds" / ids.read_text().strip() / "schema.json").read_text())
    kinds = {c["name"]: c["kind"] for c in schema["columns"]}
    assert kinds == {"x": "numeric", "colour": "categorical", "clean": "categorical"}  # kept


def test_integers_a_float64_cannot_hold_are_named_in_a_warning(cli: Any, tmp_path: Path) -> None:
    """uint64 ids near 2^63 trained as one number ("one value in every training row", which
    the file does not hold) and int64 values beyond 2^53 lost their last bits, without a word.
    A data.warning names the column, a value and its row; ordinary integers get none."""
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=n)
    table = pa.table({
        "x": x,
        "small": pa.array(rng.integers(0, 1000, n), pa.int64()),
        "ids": pa.array([2**63 + k for k in range(n)], pa.uint64()),
        "y": x * 2,
    })  # fmt: skip
    path = tmp_path / "big.parquet"
    pq.write_table(table, path)
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 0, result.output[-2000:]
    said = [e["message"] for e in events(result.stdout) if e["event"] == "data.warning"]
    beyond = [m for m in said if "beyond 2^53" in m]
    assert beyond == [
        "column 'ids' holds integers beyond 2^53 (9223372036854775808 at data row 1), which the "
        "model's float64 numbers cannot hold exactly: nearby values become one number; if they "
        "are ids or codes, add the column to PIPELINE_DATA__DROP or declare it categorical in "
        "PIPELINE_DATA__COLUMN_KINDS"
    ], said
    # Arrow-backed int64 (a traceback: the summary-row check read a row whole, and Arrow would
    # not merge it with a float column) and a CSV column with gaps (read as float64, its ids
    # lost before the check): both named.
    big = [2**60 + 7 * k for k in range(n)]
    gaps = pd.array(big, dtype="Int64")
    gaps[[0, 5]] = pd.NA
    frames = {"arrow.parquet": pd.array(big, dtype="int64[pyarrow]"), "gaps.csv": gaps}
    for name, column in frames.items():
        path = tmp_path / name
        frame = pd.DataFrame({"x": x, "ids": column, "y": x * 2})
        frame.to_parquet(path) if name.endswith("parquet") else frame.to_csv(path, index=False)
        result = cli("train", env={**env, "PIPELINE_DATA__SOURCE": str(path)})
        assert result.exit_code == 0, result.output[-2000:]
        said = [e["message"] for e in events(result.stdout) if e["event"] == "data.warning"]
        assert [m for m in said if "column 'ids' holds integers beyond 2^53" in m], (name, said)


def test_a_date_or_duration_in_a_message_is_shown_as_written() -> None:
    """A Parquet date where a number belongs was shown as `datetime.date(2020, 1, 1)`, a
    duration as `Timedelta('0 days 00:00:49')`: Python's spelling, not the data's."""
    assert cells.shown(dt.date(2020, 1, 1)) == "'2020-01-01'"
    assert cells.shown(pd.Timedelta(seconds=49)) == "'0 days 00:00:49'"
    assert cells.shown(pd.Timestamp("2020-01-01 10:00", tz="UTC")) == "'2020-01-01 10:00:00+00:00'"
    assert cells.shown("x") == "'x'" and cells.shown(1.5) == "1.5" and cells.shown(True) == "true"


def test_several_nameless_columns_are_named_as_such(tmp_path: Path) -> None:
    """A spreadsheet's empty trailing columns (`x,name,y,,`) were "duplicate column names
    ['']: give every column a unique name" (and one nameless column's advice, to drop "",
    cannot help two). They are named as columns without a name, with their positions."""
    path = _csv(tmp_path, "x1,name,y,,", ["1,a,2,,", "2,b,3,,"])
    with pytest.raises(DataError) as err:
        read.read_table(path, _data(), label="xl.csv")
    assert str(err.value) == (
        "dataset xl.csv has 2 columns without a name (columns 4, 5: a spreadsheet's extra "
        "columns, or a saved index?): name them, or delete them"
    )
