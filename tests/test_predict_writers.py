"""`pipeline predict`'s CSV and Parquet writers: one schema and the same bytes, whatever the
chunks (PIPELINE_RUN__CHUNK_ROWS), and no traceback on the way out of a failed run.

Each case was found by a QA pass playing a user; each crashed (exit 1) or changed bytes before.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.test_predict import TEST_CSV, _ok, _predict, chain  # noqa: F401 (fixture)


def _package(chain: dict[str, Any]) -> str:  # noqa: F811
    found = sorted((chain["root"] / "store" / "packages").glob("*/*.tar.gz"))
    assert len(found) == 1
    return str(found[0])


def _rows(chain: dict[str, Any], name: str, cells: list[str]) -> Path:  # noqa: F811
    """The first len(cells) rows of the test file with a ``ref`` column of ``cells``."""
    lines = TEST_CSV.read_text().splitlines()
    body = [f"{line},{cell}" for line, cell in zip(lines[1:], cells, strict=False)]
    path = chain["root"] / name
    path.write_text("\n".join([lines[0] + ",ref", *body]) + "\n")
    return path


def _bad_area(chain: dict[str, Any], name: str, n: int, bad: set[int]) -> Path:  # noqa: F811
    """The first ``n`` rows of the test file, LotArea 'abc' in the rows numbered ``bad``
    (1-based)."""
    lines = TEST_CSV.read_text().splitlines()
    area = lines[0].split(",").index("LotArea")
    body = []
    for number, line in enumerate(lines[1 : n + 1], start=1):
        cells = line.split(",")
        if number in bad:
            cells[area] = "abc"
        body.append(",".join(cells))
    path = chain["root"] / name
    path.write_text("\n".join([lines[0], *body]) + "\n")
    return path


def _at_two_chunk_sizes(
    chain: dict[str, Any],  # noqa: F811
    rows: Path,
    fmt: str,
    **env: str,
) -> list[bytes]:
    """The output bytes of ``rows`` predicted in chunks of 2 rows and in one chunk."""
    outputs = []
    for chunk in ("2", "100000"):
        out = chain["root"] / f"{rows.stem}-{chunk}.{fmt}"
        _ok(_predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                     PIPELINE_RUN__CHUNK_ROWS=chunk, **env))  # fmt: skip
        outputs.append(out.read_bytes())
    return outputs


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_id_column_missing_in_the_first_chunk_takes_its_type_from_a_later_one(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """The first chunk's ids all empty: the writer took a null column from it and failed on
    the next chunk's text (exit 1, `Unsupported cast from large_string to null`). Now every
    chunk size gives the one-chunk bytes; Parquet's row groups no longer follow the chunks."""
    rows = _rows(chain, f"ids-{fmt}.csv", ["", "", "", "R4", "R5", ""])
    outputs = _at_two_chunk_sizes(chain, rows, fmt, PIPELINE_RUN__ID_COLUMN="ref")
    assert outputs[0] == outputs[1]
    if fmt == "csv":
        lines = outputs[0].decode().splitlines()
        assert [line.split(",")[0] for line in lines] == ['"ref"', "", "", "", '"R4"', '"R5"', ""]


def test_every_row_of_the_first_chunk_bad_with_an_error_column(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """ON_ERROR=column and a first chunk of bad rows only: its prediction columns were null and
    the next chunk's numbers could not be cast (exit 1). Now the one-chunk bytes."""
    rows = _bad_area(chain, "bad-first.csv", 5, bad={1, 2})
    outputs = _at_two_chunk_sizes(chain, rows, "parquet", PIPELINE_RUN__ON_ERROR="column")
    assert outputs[0] == outputs[1]


def test_a_json_lines_id_column_of_text_and_numbers_is_written_as_text(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """Ids "A7" and 1 in one JSON-lines file: exit 1 (`Expected bytes, got a 'int' object`).
    Now the column is text, as serve answers it."""
    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    records = []
    for pid, line in zip(["A7", 1], lines[1:3], strict=True):
        record: dict[str, Any] = dict(zip(names, line.split(","), strict=True))
        record["pid"] = pid
        records.append(json.dumps(record))
    rows = chain["root"] / "mixed.jsonl"
    rows.write_text("\n".join(records) + "\n")
    done = _ok(_predict(chain, str(rows), "--package", _package(chain),
                        PIPELINE_RUN__ID_COLUMN="pid"))  # fmt: skip
    assert [line.split(",")[0] for line in done.stdout.splitlines()[:3]] == ['"pid"', '"A7"', '"1"']


def _jsonl(chain: dict[str, Any], name: str, ids: list[Any], drop: dict[int, str]) -> Path:  # noqa: F811
    """The first len(ids) rows of the test file as JSON lines with ``pid`` ids; the key
    ``drop[i]`` left out of line i (0-based)."""
    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    records = []
    for i, (pid, line) in enumerate(zip(ids, lines[1:], strict=False)):
        record: dict[str, Any] = dict(zip(names, line.split(","), strict=True))
        record["pid"] = pid
        record.pop(drop.get(i, ""), None)
        records.append(json.dumps(record))
    path = chain["root"] / name
    path.write_text("\n".join(records) + "\n")
    return path


def test_json_lines_rows_are_read_alone_whatever_the_chunks(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """pandas' chunked reader decided per chunk: a line without the key PoolQC was refused in
    chunks of 1 ("lacks required column") and read as missing in chunks of 2; ids 1461, 3.5
    were written 1461 in chunks of 1 and 1461.0 in one chunk. Each line is read alone now:
    the same bytes in every chunking, each id as its line holds it; a key no line holds is
    still refused."""
    rows = _jsonl(chain, "alone.jsonl", [1461, 1462, 3.5, None, "A-5", 9007199254740993],
                  {1: "PoolQC", 4: "LotArea"})  # fmt: skip
    outputs = []
    for chunk in ("1", "2", "100000"):
        out = chain["root"] / f"a{chunk}.jsonl"
        _ok(_predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                     PIPELINE_RUN__CHUNK_ROWS=chunk, PIPELINE_RUN__ID_COLUMN="pid"))  # fmt: skip
        outputs.append((chain["root"] / f"a{chunk}.jsonl").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    ids = [json.loads(line)["pid"] for line in outputs[0].decode().splitlines()]
    assert ids == [1461, 1462, 3.5, None, "A-5", 9007199254740993]
    assert b'"pid":1461,' in outputs[0] and b'"pid":3.5,' in outputs[0]
    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    without = chain["root"] / "without.jsonl"
    without.write_text("".join(
        json.dumps({k: v for k, v in zip(names, line.split(","), strict=True) if k != "PoolQC"})
        + "\n" for line in lines[1:4]))  # fmt: skip
    for chunk in ("1", "2", "100000"):
        refused = _predict(chain, str(without), "--package", _package(chain),
                           PIPELINE_RUN__CHUNK_ROWS=chunk)  # fmt: skip
        assert refused.returncode == 4 and "lacks required column(s) ['PoolQC']" in refused.stderr
        # Refused before any row reached stdout: predictions made without the column had been
        # written in full (every row, PoolQC missing) and then the run exited 4.
        assert refused.stdout == "", (chunk, refused.stdout[:200])
    # The key first held by the last line, spelled with a JSON escape there: read in every
    # chunking, as in one chunk.
    late = chain["root"] / "late.jsonl"
    text = without.read_text().splitlines()
    text[-1] = text[-1][:-1] + ', "Pool\\u0051C": "Gd"}'
    late.write_text("\n".join(text) + "\n")
    outputs = []
    for chunk in ("1", "2", "100000"):
        done = _predict(chain, str(late), "--package", _package(chain),
                        PIPELINE_RUN__CHUNK_ROWS=chunk)  # fmt: skip
        outputs.append(_ok(done).stdout)
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0].splitlines()) == 4


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_ids_of_two_kinds_are_refused_in_every_chunking_for_csv_and_parquet(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """Ids 1461, 1462, 3.5 from JSON lines: written as floats in one chunk, refused in chunks
    of 1. The first id's kind decides: whole numbers, so 3.5 at row 3 is refused in every
    chunking, naming the row; text first takes numbers as text."""
    rows = _jsonl(chain, f"kinds-{fmt}.jsonl", [1461, 1462, 3.5], {})
    for chunk in ("1", "2", "100000"):
        out = chain["root"] / f"kinds-{chunk}.{fmt}"
        done = _predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                        PIPELINE_RUN__CHUNK_ROWS=chunk, PIPELINE_RUN__ID_COLUMN="pid")  # fmt: skip
        assert done.returncode == 4, (chunk, done.stderr)
        assert "output column 'pid' holds 3.5 at data row 3, where earlier rows held int" in (
            done.stderr
        )
        assert not out.exists()
    text = _jsonl(chain, f"text-{fmt}.jsonl", ["A-1", 2, 3.5], {})
    outputs = _at_two_chunk_sizes(chain, text, fmt, PIPELINE_RUN__ID_COLUMN="pid")
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_text_id_first_takes_later_numbers_as_text_in_chunks_of_one_too(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """Ids "A", 2, true from JSON lines were written "A", "2", "true" in one chunk, and refused
    in chunks of one ("holds True at data row 3, where earlier rows held int values": a chunk
    of text alone is pandas' own string column, which the writer did not look at, so the
    second chunk's 2 decided). Parquet's text column was string or large_string by the first
    chunk. Now the same bytes in every chunking, and a number first refuses later text in
    every chunking, naming its row."""
    for ids in (["A-1", 2, True], ["A-1", 2, 3.5]):
        rows = _jsonl(chain, f"first-text-{fmt}.jsonl", ids, {})
        outputs = []
        for chunk in ("1", "2", "100000"):
            out = chain["root"] / f"first-text-{chunk}.{fmt}"
            env = {"PIPELINE_RUN__CHUNK_ROWS": chunk, "PIPELINE_RUN__ID_COLUMN": "pid"}
            _ok(_predict(chain, str(rows), "--package", _package(chain), "-o", str(out), **env))
            outputs.append(out.read_bytes())
        assert outputs[0] == outputs[1] == outputs[2], ids
    rows = _jsonl(chain, f"first-number-{fmt}.jsonl", [1, "A-5", None], {})
    for chunk in ("1", "2", "100000"):
        done = _predict(chain, str(rows), "--package", _package(chain), "-o",
                        str(chain["root"] / f"n.{fmt}"), PIPELINE_RUN__CHUNK_ROWS=chunk,
                        PIPELINE_RUN__ID_COLUMN="pid")  # fmt: skip
        assert done.returncode == 4 and "holds 'A-5' at data row 2" in done.stderr, done.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_json_lines_integer_ids_with_a_missing_one_stay_integers_in_every_chunking(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """Ids 101..106 with the fifth missing: pandas reads a chunk holding the missing id as
    floats, so JSON lines wrote `101.0` in one chunk and `101` in chunks of 2, and Parquet's
    bytes changed with the chunks. Now every chunking writes the one-chunk bytes, ids whole."""
    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    records = []
    for pid, line in zip([101, 102, 103, 104, None, 106], lines[1:7], strict=True):
        record: dict[str, Any] = dict(zip(names, line.split(","), strict=True))
        record["pid"] = pid
        records.append(json.dumps(record))
    rows = chain["root"] / f"int-ids-{fmt}.jsonl"
    rows.write_text("\n".join(records) + "\n")
    outputs = _at_two_chunk_sizes(chain, rows, fmt, PIPELINE_RUN__ID_COLUMN="pid")
    assert outputs[0] == outputs[1]
    if fmt == "jsonl":
        ids = [json.loads(line)["pid"] for line in outputs[0].decode().splitlines()]
        assert ids == [101, 102, 103, 104, None, 106]
        assert b'"pid":101,' in outputs[0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_parquet_integer_ids_beyond_2_53_with_a_missing_one_come_back_exact(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """A Parquet int64 id column with a missing id: pandas read the chunk holding it as
    float64, so 9007199254740993 came back 9007199254740992 (CSV wrote 9.007199254740992e+15)
    in one chunk and exact in chunks of 1. Every chunking now writes the exact ids."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    ids = [9007199254740993, None, 12345678901234567, 3, 4, 5]
    table = pacsv.read_csv(TEST_CSV).slice(0, len(ids))
    rows = chain["root"] / f"big-ids-{fmt}.parquet"
    pq.write_table(table.append_column("pid", pa.array(ids, pa.int64())), rows)
    outputs = _at_two_chunk_sizes(chain, rows, fmt, PIPELINE_RUN__ID_COLUMN="pid")
    assert outputs[0] == outputs[1]
    if fmt == "parquet":
        got = pq.read_table(chain["root"] / f"big-ids-{fmt}-2.parquet")["pid"]
        assert got.type == pa.int64() and got.to_pylist() == ids
    elif fmt == "jsonl":
        assert [json.loads(line)["pid"] for line in outputs[0].decode().splitlines()] == ids
    else:
        assert outputs[0].decode().splitlines()[1].startswith("9007199254740993,")


def test_a_bad_row_in_a_later_chunk_of_a_parquet_output_is_one_line(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """The run stops at the bad row (exit 4); the Parquet writer left open wrote its footer when
    collected, into the closed file: a traceback after the error line."""
    rows = _bad_area(chain, "bad-later.csv", 3, bad={3})
    out = chain["root"] / "bad-later.parquet"
    done = _predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                    PIPELINE_RUN__CHUNK_ROWS="2")  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert not out.exists() and not list(chain["root"].glob(".bad-later.parquet.*"))


def test_a_json_lines_file_with_a_byte_order_mark_is_read(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """A UTF-8 BOM before the first line: exit 4 'line 1 is not valid JSON', where the README
    says a BOM is stripped (as a CSV file's is). The predictions equal the CSV file's."""
    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    records = [json.dumps(dict(zip(names, line.split(","), strict=True))) for line in lines[1:4]]
    rows = chain["root"] / "bom.jsonl"
    rows.write_bytes(b"\xef\xbb\xbf" + ("\n".join(records) + "\n").encode())
    plain = chain["root"] / "bom.csv"
    plain.write_text("\n".join(lines[:4]) + "\n")
    package = _package(chain)
    read = [_ok(_predict(chain, str(p), "--package", package)).stdout for p in (rows, plain)]
    assert read[0] == read[1] and len(read[0].splitlines()) == 4


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_true_in_a_numeric_column_is_refused_naming_it(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """`"LotArea": true` (JSON lines) or a Parquet boolean column for a number was read as 1.0
    and predicted (exit 0), where CSV's `true` is refused and serve answers 422. Now exit 4
    naming the column and the row (and the value as Python writes it, not `np.True_`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    record: dict[str, Any] = dict(zip(names, lines[1].split(","), strict=True))
    record["LotArea"] = True
    rows = chain["root"] / f"true-number.{fmt}"
    if fmt == "jsonl":
        rows.write_text(json.dumps(record) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist([record]), rows)
    done = _predict(chain, str(rows), "--package", _package(chain))
    assert done.returncode == 4, done.stderr
    # Spelt as JSON and Parquet spell it (it was Python's "True").
    assert f"column 'LotArea' in {rows} has true at data row 1: expected a finite number" \
        in done.stderr  # fmt: skip


def test_json_lines_beyond_64_bits_and_a_piped_array_are_named(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """A 1e999 or a 23-digit integer made pandas refuse the whole file with 'cannot be read as
    JSON lines', naming no line or column; a JSON array on stdin was sniffed as CSV ('lacks
    required columns'), where the same file by name is told it is an array."""
    import subprocess

    from tests.conftest import _process_env

    lines = TEST_CSV.read_text().splitlines()
    names = lines[0].split(",")
    record = dict(zip(names, lines[1].split(","), strict=True))
    rows = chain["root"] / "huge.jsonl"
    rows.write_text(json.dumps(record) + "\n" + json.dumps(record)[:-1] + ', "zz": 1e999}\n')
    done = _predict(chain, str(rows), "--package", _package(chain))
    assert done.returncode == 4, done.stderr
    assert f"input {rows} line 2 column 'zz' holds a number beyond float64" in done.stderr
    # An integer beyond int64 in a feature is the float the server reads (it was refused,
    # "beyond 64 bits", where serve predicted it); in the id column, refused by name.
    big, as_float = dict(record), dict(record)
    big["LotArea"], as_float["LotArea"] = 1 << 64, float(1 << 64)
    for name, rec in (("big.jsonl", big), ("float.jsonl", as_float)):
        (chain["root"] / name).write_text(json.dumps(rec) + "\n")
    outputs = [_ok(_predict(chain, str(chain["root"] / name), "--package", _package(chain))).stdout
               for name in ("big.jsonl", "float.jsonl")]  # fmt: skip
    assert outputs[0] == outputs[1]
    big["LotArea"] = 10**400  # beyond float64 as well: it was an OverflowError's traceback
    (chain["root"] / "huge-int.jsonl").write_text(json.dumps(big) + "\n")
    huge = _predict(chain, str(chain["root"] / "huge-int.jsonl"), "--package", _package(chain))
    assert huge.returncode == 4 and "Traceback" not in huge.stderr, huge.stderr[-500:]
    assert "line 1 column 'LotArea' holds an integer of 401 digits, beyond float64" in huge.stderr
    big["LotArea"] = 1 << 64
    big["pid"] = 1 << 63
    (chain["root"] / "big-id.jsonl").write_text(json.dumps(big) + "\n")
    refused = _predict(chain, str(chain["root"] / "big-id.jsonl"), "--package", _package(chain),
                       PIPELINE_RUN__ID_COLUMN="pid")  # fmt: skip
    assert refused.returncode == 4
    assert f"id column 'pid' holds {1 << 63}, an integer outside int64" in refused.stderr
    array = json.dumps([record, record]).encode()
    piped = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", "-", "--package", _package(chain)],
        input=array, capture_output=True, env=_process_env(chain["env"]), timeout=120,
        check=False,
    )  # fmt: skip
    assert piped.returncode == 4, piped.stderr
    assert b"input stdin holds a JSON array" in piped.stderr
    assert b"pipe it through jq -c '.[]'" in piped.stderr


def test_a_failed_run_leaves_no_folder_it_made_for_its_output(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """`-o new/sub/p.csv`, and a bad row after the first chunk was written: exit 4, and the
    folders made for the output (new, new/sub) were left behind, empty."""
    rows = _bad_area(chain, "bad-third.csv", 3, bad={3})
    out = chain["root"] / "new" / "sub" / "p.csv"
    done = _predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                    PIPELINE_RUN__CHUNK_ROWS="2")  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert not (chain["root"] / "new").exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_id_that_is_a_json_array_fails_its_row_as_serve_refuses_it(
    chain: dict[str, Any],  # noqa: F811
    fmt: str,
) -> None:
    """An id [1] from JSON lines was written as the text "[1]", exit 0, where serve refused the
    same record (422 id_type) and the README says an object or array in a cell fails its row.
    It is refused now, naming the row; PIPELINE_RUN__ON_ERROR=column echoes it, as serve
    does."""
    rows = _jsonl(chain, f"array-id-{fmt}.jsonl", ["A-1", [1], {"k": 2}], {})
    out = chain["root"] / f"array-id.{fmt}"
    done = _predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                    PIPELINE_RUN__ID_COLUMN="pid")  # fmt: skip
    assert done.returncode == 4 and "column 'pid'" in done.stderr and "data row 2" in done.stderr
    assert not out.exists()
    _ok(_predict(chain, str(rows), "--package", _package(chain), "-o", str(out),
                 PIPELINE_RUN__ID_COLUMN="pid", PIPELINE_RUN__ON_ERROR="column"))  # fmt: skip
    # Echoed as it was spelt: JSON lines keep the array and the object (they were Python's
    # reprs, "[1]" and "{'k': 2}"); CSV, one kind per column (text here), their JSON text.
    if fmt == "jsonl":
        ids = [json.loads(line)["pid"] for line in out.read_text().splitlines()]
        assert ids == ["A-1", [1], {"k": 2}], ids
    else:
        with out.open(newline="") as fh:
            assert [r["pid"] for r in csv.DictReader(fh)] == ["A-1", "[1]", '{"k":2}']
