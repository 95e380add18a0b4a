"""Cell-level parsing: the number and boolean rules, row numbers, messages and error fields."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.data import cells
from pipeline.errors import DataError, PipelineError


def _notes(n: int) -> np.ndarray:
    return np.full(n, "", dtype=object)


# -- numbers --------------------------------------------------------------------------------


def test_pandas_rule_parses_text_and_flags_non_numbers() -> None:
    """Training's rule: text numbers parse, "nan" and words are bad cells, missing is not."""
    series = pd.Series(["1.5", " 2", "nan", "abc", None, "inf", "1e400"], dtype=object)
    values, bad = cells.parse_numbers(series)
    assert bad.tolist() == [False, False, True, True, False, False, False]
    assert values[:2].tolist() == [1.5, 2.0]
    assert np.isnan(values[2:5]).all() and values[5] == math.inf and values[6] == math.inf


def test_pandas_rule_reads_booleans_as_one_and_zero() -> None:
    """A column read as booleans is numbers to training (True is 1), never a bad cell."""
    values, bad = cells.parse_numbers(pd.Series([True, False, True]))
    assert values.tolist() == [1.0, 0.0, 1.0] and not bad.any()


def test_arrow_rule_reads_the_text_nan_as_missing() -> None:
    """Prediction's fast cast takes "nan" as a missing value, where training refuses it."""
    series = pd.Series(["1", "nan", None], dtype="str")
    values, bad = cells.parse_numbers(series, "arrow")
    assert values[0] == 1.0 and np.isnan(values[1:]).all() and not bad.any()
    assert cells.parse_numbers(series)[1].tolist() == [False, True, False]


def test_arrow_rule_falls_back_by_dtype_when_the_cast_fails() -> None:
    """Text falls back to pandas' parser; Python objects to ``to_float``, which accepts more."""
    text = pd.Series(["١", " 2", "x"], dtype="str")
    values, bad = cells.parse_numbers(text, "arrow")
    assert bad.tolist() == [True, False, True] and values[1] == 2.0
    objects = pd.Series(["١", " 2", "x"], dtype=object)
    values, bad = cells.parse_numbers(objects, "arrow")
    assert bad.tolist() == [False, False, True] and values[:2].tolist() == [1.0, 2.0]


def test_arrow_rule_refuses_booleans_among_python_objects() -> None:
    """A JSON-lines cell true in a numeric column is a bad cell, bytes and huge ints are not."""
    series = pd.Series([True, b"1.5", 10**400, None], dtype=object)
    values, bad = cells.parse_numbers(series, "arrow")
    assert bad.tolist() == [True, False, False, False]
    assert values[1] == 1.5 and values[2] == math.inf


def test_arrow_rule_keeps_numbers_and_their_infinities() -> None:
    """A float column is returned as it is; infinities are left for the caller to judge."""
    values, bad = cells.parse_numbers(pd.Series([1.0, np.inf, np.nan]), "arrow")
    assert values[:2].tolist() == [1.0, math.inf] and not bad.any()


@given(st.floats())
def test_to_float_keeps_every_float(x: float) -> None:
    """Any float, NaN and infinities included, is itself."""
    got = cells.to_float(x)
    assert got == x or (math.isnan(got) and math.isnan(x))


@given(st.integers())
def test_to_float_takes_any_int(n: int) -> None:
    """An int is its float, or an infinity of its sign beyond float's range."""
    try:
        expected = float(n)
    except OverflowError:
        expected = math.inf
    assert cells.to_float(n) == expected


@pytest.mark.parametrize("value", [True, np.bool_(False), None, "abc", b"x", [1], 1 + 2j])
def test_to_float_is_nan_for_what_is_not_a_real_number(value: object) -> None:
    """Booleans, None, words, containers and complex numbers are not numbers."""
    assert math.isnan(cells.to_float(value))


@given(st.lists(st.one_of(st.none(), st.text(max_size=4), st.sampled_from(["1", "-2.5", "x"]))))
def test_are_numbers_agrees_with_the_pandas_rule(texts: list[str | None]) -> None:
    """The one-parse-per-distinct-text mask is the pandas rule's verdict, for both text dtypes."""
    for dtype in ("str", object):
        series = pd.Series(texts, dtype=dtype)
        bad = cells.parse_numbers(series)[1]
        present = series.notna().to_numpy()
        assert cells.are_numbers(series).tolist() == (present & ~bad).tolist()


def test_first_non_number_names_the_file_row() -> None:
    """The first bad cell is named by its data row (the index + 1) and its plain value."""
    series = pd.Series(["1", "2", "three"], index=[4, 7, 9], dtype=object)
    assert cells.first_non_number(series) == (10, "three")
    assert cells.first_non_number(pd.Series([1.0, np.inf])) is None


# -- booleans -------------------------------------------------------------------------------


def test_to_bool_takes_pyarrows_spellings_and_one_and_zero() -> None:
    """true/True/TRUE/1 and their false forms are booleans; anything else is None."""
    for text in ("true", "True", "TRUE", "1"):
        assert cells.to_bool(text) is True
    for text in ("false", "False", "FALSE", "0"):
        assert cells.to_bool(text) is False
    assert [cells.to_bool(v) for v in (1, 0.0, np.bool_(True), False)] == [True, False, True, False]
    assert [cells.to_bool(v) for v in ("yes", "t", 2, 0.5, None, b"true")] == [None] * 6


def test_parse_booleans_by_dtype() -> None:
    """Text maps through the spellings, objects through ``to_bool``, a bool column is kept."""
    text = pd.Series(["true", "0", "maybe", None], dtype="str")
    mapped, bad = cells.parse_booleans(text)
    assert mapped.tolist()[:2] == [True, False] and bad.tolist() == [False, False, True, False]
    objects = pd.Series([1, "FALSE", 2, None], dtype=object)
    mapped, bad = cells.parse_booleans(objects)
    assert mapped.tolist()[:2] == [True, False] and bad.tolist() == [False, False, True, False]
    flags = pd.Series([True, False])
    assert cells.parse_booleans(flags)[0] is flags


def test_inference_words_leave_out_one_and_zero() -> None:
    """Schema inference counts true/false words only: a column of 1/0 reads as numbers."""
    series = pd.Series(["true", "1", "FALSE", None, "no"], dtype="str")
    assert cells.are_boolean_words(series).tolist() == [True, False, True, False, False]
    assert sorted(cells.BOOLEAN_WORDS) == ["FALSE", "False", "TRUE", "True", "false", "true"]


# -- rows, messages and error fields --------------------------------------------------------


def test_data_row_is_the_index_plus_one_or_the_position() -> None:
    """A frame's index is its 0-based file row; a caller's other index counts by position."""
    assert cells.data_row(pd.Series([1, 2], index=[10, 20]), 1) == 21
    assert cells.data_row(pd.Series([1, 2], index=["a", "b"]), 1) == 2


def test_printable_escapes_and_cuts() -> None:
    """Control characters are escaped and a long text ends in "..." at the limit."""
    assert cells.printable("a\tb\x00") == "a\\tb\\x00"
    assert cells.printable("x" * 50, 10) == "xxxxxxx..."
    assert cells.printable("x" * 50, None) == "x" * 50


@given(st.text())
def test_shown_without_a_limit_is_the_repr(text: str) -> None:
    """Training messages show a text cell as its repr, whole; prediction's are cut to 80."""
    assert cells.shown(text, None) == repr(text)
    assert len(cells.shown(text)) <= cells.SHOWN_CHARS


def test_data_error_fields_are_optional_and_survive_pickling() -> None:
    """``DataError(message)`` still works; a cell's fields travel with the error."""
    whole = DataError("the file\nis empty")
    assert whole.message == "the file is empty"
    assert (whole.column, whole.row, whole.value) == (None, None, None)
    error = cells.cell_error("age", "data.csv", 17, "'abc'", ": expected a number")
    assert error.message == "column 'age' in data.csv has 'abc' at data row 17: expected a number"
    assert isinstance(error, PipelineError) and error.exit_code == 4
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.column, copy.row, copy.value) == (
        error.message,
        "age",
        17,
        "'abc'",
    )


def test_numbers_fail_on_the_first_bad_cell_with_its_fields() -> None:
    """With on_error=fail the first text or infinite cell is a ``DataError`` naming it."""
    series = pd.Series(["1", "inf", "abc"], index=[5, 6, 7], dtype="str")
    with pytest.raises(DataError) as caught:
        cells.numbers(series, "LotArea", "input x.csv", "fail", _notes(3))
    error = caught.value
    assert (error.column, error.row, error.value) == ("LotArea", 7, "'inf'")
    assert error.message == (
        "column 'LotArea' in input x.csv has 'inf' at data row 7: expected a finite number; fix "
        "the row, or set PIPELINE_RUN__ON_ERROR=column to report bad rows in an error column"
    )


def test_numbers_note_bad_cells_and_impute_them() -> None:
    """With on_error=column each bad cell is noted in its row and becomes NaN."""
    notes = _notes(3)
    notes[2] = "column 'b': 'x' is not true or false"
    values = cells.numbers(pd.Series(["1", "x", "y"], dtype="str"), "a", "L", "column", notes)
    assert values[0] == 1.0 and np.isnan(values[1:]).all()
    assert notes.tolist() == [
        "",
        "column 'a': 'x' is not a finite number",
        "column 'b': 'x' is not true or false; column 'a': 'y' is not a finite number",
    ]


def test_booleans_fail_or_note_like_numbers() -> None:
    """A cell that is not true/false fails with its fields, or is noted and becomes None."""
    series = pd.Series(["true", "maybe"], dtype="str")
    with pytest.raises(DataError) as caught:
        cells.booleans(series, "CentralAir", "L", "fail", _notes(2))
    assert (caught.value.column, caught.value.row, caught.value.value) == (
        "CentralAir",
        2,
        "'maybe'",
    )
    notes = _notes(2)
    mapped = cells.booleans(series, "CentralAir", "L", "column", notes)
    assert mapped.tolist() == [True, None]
    assert notes.tolist() == ["", "column 'CentralAir': 'maybe' is not true or false"]


def test_bad_cells_yields_one_error_per_cell_in_row_order() -> None:
    """Every bad cell becomes its own error, for callers that list them all."""
    series = pd.Series(["x", "1", "y"], dtype="str")
    errors = list(cells.bad_cells(series, np.array([True, False, True]), "a", "L", "a number"))
    assert [(e.row, e.value) for e in errors] == [(1, "'x'"), (3, "'y'")]


# -- categories and reading -----------------------------------------------------------------


def test_category_texts_are_canonical() -> None:
    """3.0 is "3", booleans are "true"/"false", NaN is missing, huge integers are exact."""
    got = [cells.category_text(v) for v in (3.0, np.float32(2.0), True, np.nan, None, "a", 7)]
    assert got == ["3", "2", "true", None, None, "a", "7"]
    texts = cells.float_category_texts(np.array([1.0, 2.5, 1e20, -0.0, np.inf]))
    assert texts.tolist() == ["1", "2.5", "100000000000000000000", "0", "inf"]


def test_csv_options_read_missing_markers_and_text_columns() -> None:
    """Missing markers are missing quoted or not; text columns are read alone, as text."""
    body = b'a;b;c\n1;NA;"NA"\n2;x;\n'
    table = pacsv.read_csv(pa.BufferReader(body), **cells.csv_options(";", ["NA", ""]))
    assert table.column("a").type == pa.int64() and table.column("b").to_pylist() == [None, "x"]
    assert table.column("c").null_count == 2
    options = cells.csv_options(";", ["NA"], text_columns=["a", "c"], block_size=1 << 16)
    assert options["read_options"].block_size == 1 << 16
    table = pacsv.read_csv(pa.BufferReader(body), **options)
    assert table.column_names == ["a", "c"] and table.schema.types == [pa.string()] * 2


def test_a_long_ragged_row_is_named_by_its_line(tmp_path: Path) -> None:
    """pyarrow shows a malformed row's first ~100 characters then " ...": such a row was
    "on a line" (no number), so a user had to search a big file for it. Now its line, and
    among lines that start alike, the one with the wrong field count."""
    from tests.conftest import run_cli

    header = ",".join(f"column_{j:02d}" for j in range(30)) + ",y"
    row = ",".join(f"{1000 + j}.5" for j in range(30))
    lines = [header] + [f"{row},{i}" for i in range(200)]
    lines[150] = f"{row},150,extra"  # line 151 of the file; lines 2-201 start alike
    data = tmp_path / "wide.csv"
    data.write_text("\n".join(lines) + "\n")
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_STORE": str(tmp_path / "store")}  # fmt: skip
    done = run_cli("train", env=env, cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "has 32 fields on line 151 where the header has 31" in line, line
