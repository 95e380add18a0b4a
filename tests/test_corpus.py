"""Bad input, in one suite: bad files, datasets and URIs against `train`, `predict`, `evaluate`.

What it covers:

- the corpus: every file in ``tests/corpus/`` is a real file named by what it is (the README
  there lists them; four large ones are written into a temporary folder instead of being
  committed), each run through both commands: as the dataset of `train`
  (PIPELINE_DATA__SOURCE) and as the input of `predict` against a release in a store that
  already holds a build, a package and a release;
- small bad datasets the tests write themselves (a misspelt target, a single class, text,
  inf or blanks in a target, a file that cannot be read), each through `train` in a fresh store;
- URIs: unknown schemes and paths smuggled out, HTTP failures from a local server, Kaggle
  payloads, stalls, missing credentials and no network from a fake Kaggle;
- `evaluate` with no build or an unknown build prefix;
- a few runs in a real process, where the process is the point: its exit code, its stdout and
  stderr kept apart, a stall bounded by the timeout.

A refused case must give exactly one line on stderr, ``error: ...``, naming the file (and the
column, row or line where one applies) and saying what to do; the documented exit code of its
error class (DataError 4, SourceError 5, NotFoundError 8); no traceback; a JSON log stream
ending in the same ``error`` event; and leave every byte of the store as it was (a fresh store:
nothing in it). A few cases are accepted by design (a UTF-8 BOM, a value of 1e308, an
identifier column, 5,000 columns; a prediction input needs no target): their documented
behaviour is asserted instead. When the module is done, the store still predicts good rows.

Tests that need the trained store or a real process are marked `slow`; the rest run in
`make test-fast`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import http.server
import io
import json
import os
import random
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from tests.conftest import REPO, event, events, invoke_isolated, run_cli, store_files

CORPUS = REPO / "tests" / "corpus"
DATA_ERROR, SOURCE_ERROR, NOT_FOUND = 4, 5, 8
COLUMNS = ["Id", "LotArea", "YearBuilt", "OverallQual", "Neighborhood", "CentralAir", "SalePrice"]
# One epoch and a tiny network: a case that wrongly got as far as training stays fast.
FAST = {"PIPELINE_TRAIN__MAX_EPOCHS": "1", "PIPELINE_MODEL__HIDDEN": "[8]"}
CURRENT = "house-prices@current"
TIMEOUT = 0.5  # seconds, for the stalling servers: PIPELINE_HTTP_TIMEOUT / PIPELINE_KAGGLE_TIMEOUT

# "What to do": an instruction, a suggestion, or the setting the user has to change.
_ACTION = re.compile(
    r"\b(check|fix|set|use|point|choose|fill|re-encode|save|convert|decompress|rename|give|add|"
    r"declare|close|download|unzip|export|name|pass|write|try|raise|leave|run|list|make)\b|"
    r"did you mean|PIPELINE_[A-Z_]+|KAGGLE_[A-Z_]+",
    re.IGNORECASE,
)


# --- real files from the built-in house prices ------------------------------------------------


def _house_rows(n: int) -> list[list[str]]:
    """The header and ``n`` rows of the built-in house prices, CentralAir spelt true/false."""
    text = (files("pipeline") / "datasets" / "house-prices.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    out = [COLUMNS]
    for k in range(n):
        row = dict(rows[k % len(rows)])
        row["CentralAir"] = "true" if row["CentralAir"] == "Y" else "false"
        out.append([row[c] for c in COLUMNS])
    return out


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return path


def _ten_mb_single_line(folder: Path) -> Path:
    """10 MB of comma-separated numbers and not one line break (every newline lost)."""
    rng = random.Random(5)
    line = ",".join(str(rng.randrange(10**6)) for _ in range(1_600_000))
    path = folder / "ten-mb-single-line.csv"
    path.write_text(line[: 10 << 20], encoding="ascii")
    return path


def _ten_mb_data_line(folder: Path) -> Path:
    """A good header and row, then one 10 MB data line."""
    rows = _house_rows(1)
    text = "\n".join(",".join(r) for r in rows) + "\n" + "x" * (10 << 20) + "\n"
    path = folder / "ten-mb-data-line.csv"
    path.write_text(text, encoding="ascii")
    return path


def _five_thousand_columns(folder: Path) -> Path:
    """House-price columns plus 4,993 numeric ones: 5,000 columns, 24 rows."""
    rng = random.Random(7)
    rows = _house_rows(24)
    rows[0] = rows[0] + [f"extra_{k:04d}" for k in range(4993)]
    for row in rows[1:]:
        row.extend(str(rng.randrange(100)) for _ in range(4993))
    return _write_csv(folder / "five-thousand-columns.csv", rows)


def _high_cardinality(folder: Path) -> Path:
    """1,100 real rows whose Neighborhood has 1,050 distinct values (not every row distinct)."""
    rows = _house_rows(1100)
    for k, row in enumerate(rows[1:]):
        row[4] = f"Area-{k % 1050}"
    return _write_csv(folder / "high-cardinality-text-column.csv", rows)


GENERATED: dict[str, Callable[[Path], Path]] = {
    "ten-mb-single-line.csv": _ten_mb_single_line,
    "ten-mb-data-line.csv": _ten_mb_data_line,
    "five-thousand-columns.csv": _five_thousand_columns,
    "high-cardinality-text-column.csv": _high_cardinality,
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The large corpus files, written once per module into a temporary folder."""
    folder = tmp_path_factory.mktemp("generated")
    for build in GENERATED.values():
        build(folder)
    return folder


def _source(name: str, generated: Path) -> str:
    """The path of a corpus file (committed or generated), or of one that does not exist."""
    if name in GENERATED:
        return str(generated / name)
    return str(CORPUS / name)


# --- the shared store: a build, a package and a release ----------------------------------------


@dataclass
class Released:
    """A store holding a trained build, its package and release house-prices@v1."""

    root: Path
    store: Path
    env: dict[str, str]
    good: Path

    def invoke(self, *args: str, store: Path | None = None, **extra: str) -> Any:
        env = {**self.env, **extra}
        if store is not None:
            env["PIPELINE_STORE"] = str(store)
        return invoke_isolated(*args, root=self.root, env=env)


def snapshot(store: Path) -> dict[str, str]:
    """Every path under ``store``: a file's sha256, or ``dir`` for a folder."""
    out = {}
    for path in sorted(store.rglob("*")):
        key = str(path.relative_to(store))
        out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    """train -> package -> release on 300 real rows; afterwards the release still predicts.

    The teardown is the module's end-to-end check: after every case, the store is
    byte-identical to what the fixture built and ``predict --release house-prices@current``
    on good rows succeeds.
    """
    root = tmp_path_factory.mktemp("released")
    good = _write_csv(root / "good.csv", _house_rows(300))
    env = {
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_CONFIG_DIR": str(REPO / "config"),
        **FAST,
    }
    state = Released(root, root / "store", env, good)
    trained = state.invoke("train", PIPELINE_DATA__SOURCE=str(good))
    assert trained.exit_code == 0, trained.stderr
    packaged = state.invoke("package", "--id-file", str(root / "package.id"))
    assert packaged.exit_code == 0, packaged.stderr
    package_id = (root / "package.id").read_text().strip()
    created = state.invoke("release", "create", package_id)
    assert created.exit_code == 0, created.stderr
    before = snapshot(state.store)
    assert any(k.startswith("builds/") for k in before)
    assert any(k.startswith("packages/") for k in before)
    assert any(k.startswith("releases/") for k in before)
    yield state
    assert snapshot(state.store) == before
    out = root / "after.csv"
    done = state.invoke("predict", str(good), "--release", CURRENT, "-o", str(out))
    assert done.exit_code == 0, done.stderr
    assert event(done.stdout, "predict.summary")["rows"] == 300
    assert len(out.read_text().splitlines()) == 301


# --- the contract ------------------------------------------------------------------------------


def assert_refused(
    exit_code: int,
    stdout: str,
    stderr: str,
    code: int,
    named: tuple[str, ...],
    store: Path,
    before: dict[str, str] | None,
) -> str:
    """One printable ``error:`` line naming every part of ``named`` and an action; exit
    ``code``; no traceback; JSON events ending in the same error; the store untouched:
    as ``before`` (its snapshot), or, for ``None``, a fresh store with no file in it and
    ``tmp/`` empty."""
    assert exit_code == code, f"exit {exit_code}, expected {code}; stderr: {stderr!r}"
    assert "Traceback" not in stdout and "Traceback" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    line = stderr[:-1]
    assert line.startswith("error: ") and line.isprintable(), line
    message = line.removeprefix("error: ")
    for part in named:
        assert part in message, f"{part!r} not named in: {message}"
    advice = message
    for part in named:  # a path or URI must not pass for advice
        if "/" in part:
            advice = advice.replace(part, "")
    assert _ACTION.search(advice), f"the message does not say what to do: {message}"
    stream = events(stdout)  # fails on any line that is not JSON
    assert stream, "no events on stdout"
    error = event(stdout, "error")
    assert stream[-1] == error and error["exit_code"] == code and error["message"] == message
    if before is not None:
        assert snapshot(store) == before, "the store changed"
    else:
        assert store_files(store) == [], f"files written to the store: {store_files(store)}"
        tmp = store / "tmp"
        assert not tmp.exists() or not any(tmp.iterdir()), f"left in tmp/: {list(tmp.iterdir())}"
    return message


def _refused(result: Any, store: Path, code: int, *named: str) -> str:
    """`assert_refused` for an in-process run against a fresh store."""
    return assert_refused(result.exit_code, result.stdout, result.stderr, code, named, store, None)


@dataclass(frozen=True)
class Case:
    """One corpus entry: the expected outcome of `train` and of `predict` on it.

    An outcome is ``(exit code, strings the message must contain)``; ``{path}`` stands for the
    file or URI. ``None`` means accepted by design, asserted by its own test below.
    """

    name: str
    train: tuple[int, tuple[str, ...]] | None
    predict: tuple[int, tuple[str, ...]] | None


P = "{path}"
MISSING_COLUMNS = (P, "lacks required column(s)", "'LotArea'")
FILES = [
    Case("empty.csv", (4, (P, "is empty")), (4, (P, "is empty"))),
    Case("whitespace-only.csv", (4, (P, "is empty")), (4, (P, "is empty"))),
    Case("header-only.csv", (4, (P, "no rows")), (4, (P, "no rows"))),
    Case("header-only-no-newline.csv", (4, (P, "no rows")), (4, (P, "no rows"))),
    Case(
        "semicolon-delimited.csv",
        (4, (P, "'SalePrice'", "PIPELINE_DATA__DELIMITER=';'")),
        (4, (P, "lacks the model's columns", "delimited by ';'", "reads CSV delimited by ','")),
    ),
    Case(
        "tab-delimited.csv",
        (4, (P, "'SalePrice'", "PIPELINE_DATA__DELIMITER='\\t'")),
        (4, (P, "lacks the model's columns", "delimited by tab", "convert the file")),
    ),
    Case(
        "duplicate-column-names.csv",
        (4, (P, "duplicate column names ['LotArea']")),
        (4, (P, "more than one column named ['LotArea']")),
    ),
    Case(  # it was "not a readable Parquet file ... it may be truncated or damaged"
        "duplicate-column-names.parquet",
        (4, (P, "duplicate column names ['LotArea']")),
        (4, (P, "more than one column named ['LotArea']")),
    ),
    Case(
        "ragged-row-extra-field.csv",
        (4, (P, "8 fields on line 8", "header has 7")),
        (4, (P, "8 fields on line 8", "header has 7")),
    ),
    Case(
        "ragged-row-missing-field.csv",
        (4, (P, "4 fields on line 13", "header has 7")),
        (4, (P, "4 fields on line 13", "header has 7")),
    ),
    Case(
        "unterminated-quote-mid-row.csv",
        (4, (P, "unterminated quote on line 11")),
        (4, (P, "unterminated quote on line 11")),
    ),
    Case(
        "unterminated-quote-last-column.csv",
        (4, (P, "unterminated quote in column 'SalePrice' at data row 25")),
        (4, (P, "unterminated quote in column 'SalePrice' at data row 25")),
    ),
    Case("binary-garbage.csv", (4, (P, "binary data")), (4, (P, "binary data"))),
    Case("gzip-named-csv.csv", (4, (P, "gzip-compressed")), (4, (P, "gzip-compressed"))),
    Case("xlsx-workbook-named-csv.csv", (4, (P, "zip archive")), (4, (P, "zip archive"))),
    Case(
        "latin1-encoded.csv",
        # Training named the column alone (predict its line too): a million rows to search.
        (4, (P, "not valid UTF-8", "(column 'Neighborhood', line 7)")),
        (4, (P, "not valid UTF-8")),
    ),
    Case("utf16-encoded.csv", (4, (P, "UTF-16")), (4, (P, "UTF-16"))),
    Case("html-page-named-csv.csv", (4, (P, "HTML")), (4, (P, "HTML"))),
    Case("target-all-missing.csv", (4, (P, "'SalePrice'", "every value is missing")), None),
    Case("target-constant.csv", (4, (P, "'SalePrice'", "single value 150000")), None),
    Case(
        "text-in-target.csv",
        (4, (P, "'SalePrice'", "'call for price' at data row 14", "PIPELINE_DATA__TASK")),
        None,
    ),
    Case("inf-in-target.csv", (4, (P, "'SalePrice'", "inf at data row 21")), None),
    Case(
        "text-in-numeric-column.csv",
        (4, (P, "'LotArea'", "'abc' at data row 9", "29 of its 30 values are numbers")),
        (4, (P, "'LotArea'", "'abc' at data row 9", "PIPELINE_RUN__ON_ERROR")),
    ),
    Case(
        "text-in-numeric-column.parquet",
        (4, (P, "'LotArea'", "'n/a - see notes' at data row 8")),
        (4, (P, "'LotArea'", "'n/a - see notes' at data row 8")),
    ),
    Case(
        "text-in-boolean-column.csv",
        (4, (P, "'CentralAir'", "'maybe' at data row 4", "true/false")),
        (4, (P, "'CentralAir'", "'maybe' at data row 4", "true or false")),
    ),
    Case(
        "inf-in-numeric-column.csv",
        (4, (P, "'LotArea'", "inf at data row 11")),
        (4, (P, "'LotArea'", "'inf' at data row 11")),
    ),
    Case(
        "minus-inf-in-numeric-column.csv",
        (4, (P, "'YearBuilt'", "-inf at data row 17")),
        (4, (P, "'YearBuilt'", "'-inf' at data row 17")),
    ),
    Case(
        "overflow-1e999-in-numeric-column.csv",
        (4, (P, "'OverallQual'", "inf at data row 3")),
        (4, (P, "'OverallQual'", "'1e999' at data row 3", "a number beyond float64")),
    ),
    Case(
        "dates-in-numeric-column.csv",
        (4, (P, "'YearBuilt'", "holds dates")),
        (4, (P, "'YearBuilt'", "'2003-01-01' at data row 1")),
    ),
    Case("target-column-only.csv", (4, (P, "no feature columns")), (4, MISSING_COLUMNS)),
    Case("no-target-column.csv", (4, (P, "no column 'SalePrice'")), None),
    Case("two-rows.csv", (4, (P, "2 rows, too few to split")), None),
    Case("unnamed-index-column.csv", (4, (P, "column 1", "has no name")), None),
    Case("not-parquet.parquet", (4, (P, "not Parquet")), (4, (P, "not a readable Parquet"))),
    Case("truncated.parquet", (4, (P, "not a readable Parquet")), (4, (P, "readable Parquet"))),
    Case("broken-line.jsonl", (4, (P, "is JSON")), (4, (P, "line 5 is not valid JSON"))),
    Case("array-line.jsonl", (4, (P, "is JSON")), (4, (P, "line 9 is a JSON list"))),
    # Read as lines, both were "lacks required column(s)" with all 6 columns listed.
    Case(
        "json-array.json",
        (4, (P, "is JSON")),
        (4, (P, "holds a JSON array", "one object per line", "jq -c")),
    ),
    Case("blank-lines.jsonl", (4, (P, "is JSON")), (4, (P, "has no rows"))),
    # Both were a traceback (exit 1): RecursionError and Python's int-digits ValueError.
    Case(
        "deeply-nested-line.jsonl",
        (4, (P, "is JSON")),
        (4, (P, "line 4 cannot be read as JSON (nested too deep)")),
    ),
    Case(
        "five-thousand-digit-number.jsonl",
        (4, (P, "is JSON")),
        (4, (P, "line 3 cannot be read as JSON (a number of over 4,300 digits)")),
    ),
    Case(
        "directory.csv",
        (4, (P, "not a file", "PIPELINE_DATA__SOURCE")),
        (4, (P, "not a file")),
    ),
    Case(
        "no-such-file.csv",
        (4, (P, "does not exist", "PIPELINE_DATA__SOURCE")),
        (4, (P, "does not exist")),
    ),
    Case(
        "ten-mb-single-line.csv",
        (4, (P, "line longer than 1 MiB")),
        (4, (P, "first line longer than 1 MiB")),
    ),
    Case(
        "ten-mb-data-line.csv",
        (4, (P, "line longer than 1 MiB")),
        (4, (P, "line longer than 4 MiB")),  # predict's parser block (it said 1 MiB)
    ),
    Case(
        "high-cardinality-text-column.csv",
        (4, (P, "'Neighborhood'", "1050 distinct", "MAX_CATEGORICAL_CARDINALITY")),
        None,
    ),
    # Formatted numbers, dates, Parquet types and JSON-lines cells: one rule in every reader.
    Case(
        "thousands-separators-in-target.csv",
        (4, (P, "'SalePrice'", "'208,500' at data row 1", "thousands separator", "TASK")),
        None,
    ),
    Case(
        "currency-in-target.csv",
        (4, (P, "'SalePrice'", "'$208,500' at data row 1", "currency sign")),
        None,
    ),
    Case(
        "thousands-separators-in-numeric-column.csv",
        (4, (P, "'YearBuilt'", "'2,003' at data row 1", "thousands separator")),
        (4, (P, "'YearBuilt'", "'2,003' at data row 1", "finite number")),
    ),
    Case(
        "percent-in-numeric-column.csv",
        (4, (P, "'OverallQual'", "'70%' at data row 1", "percent sign")),
        (4, (P, "'OverallQual'", "'70%' at data row 1", "finite number")),
    ),
    Case(
        "decimal-comma-in-numeric-column.csv",
        (4, (P, "'LotArea'", "'8.450,5' at data row 1", "decimal comma")),
        (4, (P, "'LotArea'", "'8.450,5' at data row 1", "finite number")),
    ),
    Case(
        "spaces-as-thousands-separators-in-numeric-column.csv",
        (4, (P, "'LotArea'", "'8 450' at data row 1", "thousands separator")),
        (4, (P, "'LotArea'", "'8 450' at data row 1", "finite number")),
    ),
    Case(
        "us-dates-in-numeric-column.csv",
        (4, (P, "'YearBuilt'", "holds dates", "'01/01/2003' at data row 1")),
        (4, (P, "'YearBuilt'", "'01/01/2003' at data row 1", "finite number")),
    ),
    Case(
        "dates-in-target.csv",
        (4, (P, "target column 'SalePrice'", "holds dates", "'2008-01-15' at data row 1")),
        None,
    ),
    Case("decimal-columns.parquet", None, None),
    Case("numbers-stored-as-text.parquet", None, None),
    Case(
        "list-in-numeric-column.parquet",
        (4, (P, "'LotArea'", "holds lists", "PIPELINE_DATA__DROP")),
        (4, (P, "'LotArea'", "holds lists")),
    ),
    Case(
        "struct-in-categorical-column.parquet",
        (4, (P, "'Neighborhood'", "holds structs")),
        (4, (P, "'Neighborhood'", "holds structs")),
    ),
    Case(
        "binary-categorical-column.parquet",
        (4, (P, "'Neighborhood'", "holds binary values")),
        (4, (P, "'Neighborhood'", "holds binary values")),
    ),
    Case(
        "list-target.parquet",
        (4, (P, "target column 'SalePrice'", "holds lists", "PIPELINE_DATA__TARGET")),
        None,
    ),
    Case("na-strings.jsonl", (4, (P, "is JSON")), None),
    Case(
        "object-in-a-cell.jsonl",
        (4, (P, "is JSON")),
        (4, (P, "'Neighborhood'", "at data row 3", "not a JSON object or array")),
    ),
]


def _format(named: tuple[str, ...], path: str) -> tuple[str, ...]:
    return tuple(n.replace(P, path) for n in named)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in FILES if c.train], ids=lambda c: c.name)
def test_train_refuses_bad_file(released: Released, generated: Path, case: Case) -> None:
    """`train` on each bad file: its exit code, one line naming the problem, store untouched."""
    assert case.train is not None
    path = _source(case.name, generated)
    before = snapshot(released.store)
    result = released.invoke("train", PIPELINE_DATA__SOURCE=path)
    code, named = case.train
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        code,
        _format(named, path),
        released.store,
        before,
    )


def _predict(released: Released, source: str) -> tuple[Any, Path]:
    out = released.root / "predictions.csv"
    result = released.invoke("predict", source, "--release", CURRENT, "-o", str(out))
    return result, out


def _no_output(out: Path) -> None:
    """A failed predict leaves neither its output nor a temporary file beside it."""
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary output file was left"


def _predict_refuses_uri(released: Released, uri: str, before: dict[str, str]) -> None:
    """predict of a URI exits 5: it reads local files only. The URI is shown as given, its
    credentials masked (it was shown as a path: 's3:/b/x.csv', one slash lost)."""
    from pipeline.log import redacted_uri

    result, out = _predict(released, uri)
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        SOURCE_ERROR,
        ("looks like a URI", "local files only", f"input {redacted_uri(uri)} "),
        released.store,
        before,
    )
    _no_output(out)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in FILES if c.predict], ids=lambda c: c.name)
def test_predict_refuses_bad_file(released: Released, generated: Path, case: Case) -> None:
    """`predict` on each bad file: its exit code, one line naming it, no output, store intact."""
    assert case.predict is not None
    path = _source(case.name, generated)
    before = snapshot(released.store)
    result, out = _predict(released, path)
    code, named = case.predict
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        code,
        _format(named, path),
        released.store,
        before,
    )
    _no_output(out)


# --- accepted by design ------------------------------------------------------------------------


def _predictions(released: Released, path: str, rows: int) -> tuple[dict[str, Any], list[float]]:
    """Predict ``path`` with the release; the summary event and the predicted values."""
    before = snapshot(released.store)
    result, out = _predict(released, path)
    assert result.exit_code == 0, result.stderr
    assert snapshot(released.store) == before
    summary = event(result.stdout, "predict.summary")
    assert summary["rows"] == rows and summary["errors"] == 0
    with out.open(newline="") as fh:
        values = [float(r["prediction"]) for r in csv.DictReader(fh)]
    out.unlink()
    assert len(values) == rows and all(0 < v < float("inf") for v in values)
    return summary, values


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("target-all-missing.csv", 30),
        ("target-constant.csv", 30),
        ("text-in-target.csv", 30),
        ("inf-in-target.csv", 30),
        ("no-target-column.csv", 30),
        ("two-rows.csv", 2),
        ("unnamed-index-column.csv", 30),
        ("high-cardinality-text-column.csv", 1100),
        ("thousands-separators-in-target.csv", 30),
        ("currency-in-target.csv", 30),
        ("dates-in-target.csv", 30),
        ("list-target.parquet", 30),
    ],
)
def test_predict_needs_no_target_and_ignores_extra_columns(
    released: Released, generated: Path, name: str, rows: int
) -> None:
    """Files refused for training only because of their target or size are valid prediction
    input: the target column is never read, and extra or unnamed columns are ignored."""
    summary, _ = _predictions(released, _source(name, generated), rows)
    if name == "high-cardinality-text-column.csv":
        # Every neighbourhood name is new to the model: the unknown bucket, counted.
        assert summary["unknown_categories"] == {"Neighborhood": 1100}


def _train_ok(released: Released, tmp_path: Path, path: str) -> tuple[Any, dict[str, Any]]:
    """Train on ``path`` in a fresh store; the result and the build's schema.json."""
    store = tmp_path / "accepted-store"
    result = released.invoke("train", store=store, PIPELINE_DATA__SOURCE=path)
    assert result.exit_code == 0, result.stderr
    build_id = event(result.stdout, "train.summary")["build_id"]
    schema = json.loads((store / "builds" / build_id / "schema.json").read_text())
    return result, schema


@pytest.mark.slow
@pytest.mark.parametrize("spelled", ["\\t", "tab"])
def test_the_tab_the_hint_names_is_a_delimiter_setting(
    released: Released, tmp_path: Path, spelled: str
) -> None:
    """The refusal of a tab-delimited file says PIPELINE_DATA__DELIMITER='\\t'; set so (two
    characters, as a shell or a .env file passes it), it was exit 3 ("at most 1 character")."""
    store = tmp_path / "tab-store"
    path = str(CORPUS / "tab-delimited.csv")
    result = released.invoke("train", store=store, PIPELINE_DATA__SOURCE=path,
                             PIPELINE_DATA__DELIMITER=spelled)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    build_id = event(result.stdout, "train.summary")["build_id"]
    schema = json.loads((store / "builds" / build_id / "schema.json").read_text())
    assert [c["name"] for c in schema["columns"]] == COLUMNS[1:-1]


@pytest.mark.slow
def test_utf8_bom_is_stripped(released: Released, tmp_path: Path) -> None:
    """A UTF-8 byte-order mark is accepted and stripped, as pandas does: the first column is
    'Id' (dropped by default), not '\\ufeffId'; predict reads the same file."""
    path = str(CORPUS / "utf8-bom.csv")
    assert Path(path).read_bytes().startswith(b"\xef\xbb\xbfId,")
    _, schema = _train_ok(released, tmp_path, path)
    assert schema["dropped"] == ["Id"]
    assert [c["name"] for c in schema["columns"]] == COLUMNS[1:-1]
    _predictions(released, path, 30)


@pytest.mark.slow
def test_huge_finite_value_trains_and_predicts(released: Released, tmp_path: Path) -> None:
    """1e308 is a legal float: training keeps finite statistics, and prediction clips it to
    the training range, so every prediction is a finite positive price."""
    path = str(CORPUS / "huge-1e308-in-numeric-column.csv")
    result, _ = _train_ok(released, tmp_path, path)
    summary = event(result.stdout, "train.summary")
    assert all(isinstance(v, float) for v in summary["test"].values() if v is not None)
    _predictions(released, path, 30)


@pytest.mark.slow
def test_identifier_column_is_dropped_with_a_warning(released: Released, tmp_path: Path) -> None:
    """A text column with a different value in every row is an identifier: train drops it
    with a data.warning naming it and what to do; predict ignores it as an extra column."""
    path = str(CORPUS / "every-value-unique-text-column.csv")
    result, schema = _train_ok(released, tmp_path, path)
    warnings = [e for e in events(result.stdout) if e["event"] == "data.warning"]
    assert any("'ListingRef'" in w["message"] and "PIPELINE_DATA__DROP" in w["message"]
               for w in warnings), warnings  # fmt: skip
    assert "ListingRef" in schema["dropped"]
    assert "ListingRef" not in [c["name"] for c in schema["columns"]]
    _predictions(released, path, 30)


@pytest.mark.slow
def test_five_thousand_columns_train_and_predict(
    released: Released, generated: Path, tmp_path: Path
) -> None:
    """5,000 columns train into a model with 4,998 inputs; predict ignores the 4,995 extra
    columns with one bounded warning (20 names and the count), not a 60 KB log line."""
    path = _source("five-thousand-columns.csv", generated)
    _, schema = _train_ok(released, tmp_path, path)
    assert len(schema["columns"]) == 4998
    result, out = _predict(released, path)
    assert result.exit_code == 0, result.stderr
    warning = event(result.stdout, "predict.extra_columns")
    assert warning["count"] == 4995 and len(warning["columns"]) == 20
    assert max(len(line) for line in result.stdout.splitlines()) < 5000
    out.unlink()


def _same_predictions(released: Released, path: str, rows: list[list[str]]) -> None:
    """``path`` predicts exactly what the CSV of ``rows`` (header first) predicts."""
    csv_path = _write_csv(released.root / "same-rows.csv", rows)
    _, expected = _predictions(released, str(csv_path), len(rows) - 1)
    _, got = _predictions(released, path, len(rows) - 1)
    assert got == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", ["decimal-columns.parquet", "numbers-stored-as-text.parquet"])
def test_parquet_numbers_train_as_numbers(released: Released, tmp_path: Path, name: str) -> None:
    """Parquet decimals and text that is all numbers are numbers: LotArea stays a numeric
    feature (not 30 categories, nor an identifier), SalePrice a regression target, and
    predict reads the file as it reads the same rows in CSV."""
    path = str(CORPUS / name)
    _, schema = _train_ok(released, tmp_path, path)
    kinds = {c["name"]: c["kind"] for c in schema["columns"]}
    assert kinds["LotArea"] == "numeric" and kinds["YearBuilt"] == "numeric"
    assert schema["task"] == "regression" and "LotArea" not in schema["dropped"]
    _same_predictions(released, path, _house_rows(30))


@pytest.mark.slow
def test_missing_markers_are_missing_in_json_lines(released: Released) -> None:
    """A JSON-lines cell "NA" is a missing value, as it is in a CSV file: no bad cell, and the
    same predictions as the CSV with those cells written NA."""
    rows = _house_rows(30)
    for row, column in ((5, 1), (12, 1), (8, 4), (20, 5)):
        rows[row][column] = "NA"
    _same_predictions(released, str(CORPUS / "na-strings.jsonl"), rows)


# --- small bad datasets the tests write, each through `train` in a fresh store ----------------

HOUSES = "Id,LotArea,SalePrice\n1,8450,208500\n2,9600,181500\n3,11250,223500\n"


def _csv(content: str | bytes) -> Callable[[Path], str]:
    """A builder writing ``content`` to ``data.csv`` in the test's folder; returns its path."""

    def build(folder: Path) -> str:
        path = folder / "data.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    return build


def _house_prices_with(tmp_path: Path, edits: dict[tuple[int, str], str], n: int = 20) -> Path:
    """A CSV of the first ``n`` rows of the built-in house prices (every column) with
    ``edits[(data row, column)]`` (data rows from 1)."""
    text = (files("pipeline") / "datasets" / "house-prices.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))[: n + 1]
    header = rows[0]
    for (row, column), value in edits.items():
        rows[row][header.index(column)] = value
    return _write_csv(tmp_path / "house-prices.csv", rows)


TRAIN_CASES = [
    pytest.param(
        _csv(HOUSES),
        {"PIPELINE_DATA__TARGET": "SalePrise"},
        DATA_ERROR,
        ("{source}", "'SalePrise'", "did you mean 'SalePrice'?"),
        id="missing-target-close-name",
    ),
    pytest.param(
        # Classes coded 1, 2, 3 were silently taken as amounts (regression).
        _csv("x,grade\n" + "".join(f"{k},{k % 3 + 1}\n" for k in range(30))),
        {"PIPELINE_DATA__TARGET": "grade"},
        DATA_ERROR,
        ("{source}", "'grade'", "3 whole numbers (1, 2, 3)", "PIPELINE_DATA__TASK=multiclass"),
        id="few-whole-number-target",
    ),
    pytest.param(
        # A misspelt id in a drop list the user set would make the id a feature.
        _csv(HOUSES),
        {"PIPELINE_DATA__DROP": '["Idd"]'},
        DATA_ERROR,
        ("{source}", "'Idd'", "PIPELINE_DATA__DROP", "did you mean 'Id'?"),
        id="drop-names-a-missing-column",
    ),
    pytest.param(
        _csv(bytes(range(256)) * 4), {}, DATA_ERROR, ("{source}",), id="binary-blob-not-csv"
    ),
    pytest.param(
        _csv("x,label\n1,yes\n2,yes\n3,yes\n4,yes\n"),
        {"PIPELINE_DATA__TARGET": "label", "PIPELINE_DATA__TASK": "binary"},
        DATA_ERROR,
        ("{source}", "'label'", "single value 'yes'"),
        id="single-class-binary",
    ),
    pytest.param(
        _csv("x,label\n1,1\n2,1\n3,1\n4,1\n"),
        {"PIPELINE_DATA__TARGET": "label"},
        DATA_ERROR,
        # The value as the file has it, not numpy's repr of it (np.int64(1)).
        ("{source}", "'label'", "single value 1"),
        id="single-class-auto",
    ),
    pytest.param(
        _csv("x,price\n1,1.5\n2,2.5\n3,inf\n4,3.5\n"),
        {"PIPELINE_DATA__TARGET": "price", "PIPELINE_DATA__TASK": "regression"},
        DATA_ERROR,
        ("{source}", "'price'", "inf", "data row 3"),
        id="regression-target-inf",
    ),
    pytest.param(
        _csv("x,price\n1,\n2,NA\n3,\n"),
        {"PIPELINE_DATA__TARGET": "price"},
        DATA_ERROR,
        ("{source}", "'price'", "missing"),
        id="target-all-missing",
    ),
    pytest.param(
        _csv("x,price\n1,1.5\n2,0\n3,2.5\n4,-1\n5,4.0\n"),
        {"PIPELINE_DATA__TARGET": "price", "PIPELINE_TRAIN__TARGET_TRANSFORM": "log"},
        DATA_ERROR,
        ("{source}", "'price'", "<= 0", "PIPELINE_TRAIN__TARGET_TRANSFORM"),
        id="log-transform-non-positive-target",
    ),
    pytest.param(
        _csv("x,label\n" + "".join(f"{i},name{i}\n" for i in range(40))),
        {"PIPELINE_DATA__TARGET": "label", "PIPELINE_DATA__TASK": "multiclass"},
        DATA_ERROR,
        ("'label' has 40 classes in 40 rows, fewer than 2 rows per class", "is it an id?"),
        id="one-row-per-class",
    ),
    # SalePrice declared multiclass: 218 classes in 300 rows trained (exit 0) with a split of
    # 273 / 8 / 19 rows and only a rare-classes warning.
    pytest.param(
        _csv("x,price\n" + "".join(f"{i},{100000 + 1000 * (i % 160)}\n" for i in range(300))),
        {"PIPELINE_DATA__TARGET": "price", "PIPELINE_DATA__TASK": "multiclass"},
        DATA_ERROR,
        ("'price' has 160 classes in 300 rows", "PIPELINE_DATA__TASK=regression"),
        id="a-price-declared-multiclass",
    ),
]


def _house_prices_formatted(column: str, spelling: str) -> Callable[[Path], str]:
    """A builder of the whole built-in house prices with ``column`` written as ``spelling``
    formats it (``"{:,}"``: 208,500)."""

    def build(folder: Path) -> str:
        text = (files("pipeline") / "datasets" / "house-prices.csv").read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        k = rows[0].index(column)
        for row in rows[1:]:
            row[k] = spelling.format(int(row[k]))
        return str(_write_csv(folder / "house-prices.csv", rows))

    return build


def _house_prices_cell(column: str, row: int, value: str) -> Callable[[Path], str]:
    """A builder of the whole built-in house prices with data row ``row`` of ``column`` set to
    ``value``."""

    def build(folder: Path) -> str:
        text = (files("pipeline") / "datasets" / "house-prices.csv").read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        rows[row][rows[0].index(column)] = value
        return str(_write_csv(folder / "house-prices.csv", rows))

    return build


LABEL = {"PIPELINE_DATA__TARGET": "label"}
TRAIN_CASES += [
    pytest.param(
        # One -1 among the prices turned auto's log off without a word: raw dollars trained.
        _house_prices_cell("SalePrice", 11, "-1"),
        {},
        DATA_ERROR,
        (
            "{source}",
            "'SalePrice'",
            "-1 at data row 11",
            "1 of 1460 values <= 0",
            "PIPELINE_TRAIN__TARGET_TRANSFORM to none",
        ),
        id="skewed-target-one-negative",
    ),
    pytest.param(
        _house_prices_formatted("SalePrice", "{:,}"),
        {},
        DATA_ERROR,
        ("{source}", "target column 'SalePrice'", "'208,500' at data row 1", "thousands"),
        id="house-prices-target-with-thousands-separators",
    ),
    pytest.param(
        _house_prices_formatted("SalePrice", "${:,}"),
        {},
        DATA_ERROR,
        ("{source}", "target column 'SalePrice'", "'$208,500' at data row 1", "currency"),
        id="house-prices-target-with-a-currency-sign",
    ),
    pytest.param(
        _house_prices_formatted("YearBuilt", "{:,}"),
        {},
        DATA_ERROR,
        ("{source}", "'YearBuilt'", "'2,003' at data row 1", "thousands separator"),
        id="house-prices-year-with-thousands-separators",
    ),
    pytest.param(
        _house_prices_formatted("LotArea", "{:,}"),
        {},
        DATA_ERROR,
        ("{source}", "'LotArea'", "'8,450' at data row 1", "thousands separator"),
        id="formatted-numbers-beyond-the-cardinality-limit",
    ),
    pytest.param(
        _csv("x,label\n1,5%\n2,7.5%\n3,10%\n4,12%\n"),
        LABEL,
        DATA_ERROR,
        ("{source}", "'label'", "'5%' at data row 1", "percent sign"),
        id="percent-target",
    ),
    pytest.param(
        _csv('x,label\n1,"1,5"\n2,"2,25"\n3,"3,5"\n4,"4,75"\n'),
        LABEL,
        DATA_ERROR,
        ("{source}", "'label'", "'1,5' at data row 1", "decimal comma"),
        id="decimal-comma-target",
    ),
    pytest.param(
        _csv("x,label\n(5),1.5\n2,2.5\n(3),3.5\n4,4.5\n"),
        LABEL,
        DATA_ERROR,
        ("{source}", "'x'", "'(5)' at data row 1", "parentheses"),
        id="accounting-negatives-feature",
    ),
    pytest.param(
        _csv("x,label\n1,01/15/2003\n2,02/20/2004\n3,03/25/2005\n4,04/30/2006\n"),
        LABEL,
        DATA_ERROR,
        ("{source}", "'label'", "holds dates", "'01/15/2003' at data row 1"),
        id="us-dates-target",
    ),
    pytest.param(
        _csv("x,label\n1,yes\n2,no\n3,Yes\n4,no\n5,yes\n6,no\n"),
        LABEL,
        DATA_ERROR,
        ("{source}", "'label'", "'yes' at data row 1", "'Yes' at data row 3", "spelt two ways"),
        id="yes-no-target-spelt-two-ways",
    ),
    pytest.param(
        _csv("x,label\n" + "".join(f"{i},{('Y', 'N', 'yes', 'no')[i % 4]}\n" for i in range(12))),
        LABEL,
        DATA_ERROR,
        ("{source}", "'label'", "'Y' at data row 1", "'yes' at data row 3", "spelt two ways"),
        id="y-n-and-yes-no-target-spelt-two-ways",
    ),
    pytest.param(
        _csv("x,label\n" + "".join(f"{i},{('Y', 'N', 'yes', 'no')[i % 4]}\n" for i in range(12))),
        {**LABEL, "PIPELINE_DATA__TASK": "binary"},
        DATA_ERROR,
        ("{source}", "'label'", "'Y' at data row 1", "'yes' at data row 3", "spelt two ways"),
        id="y-n-and-yes-no-binary-target-spelt-two-ways",
    ),
    pytest.param(
        _csv(
            "x,label\n"
            + "".join(f"{i},{'true' if i % 2 else 'false'}\n" for i in range(10))
            + "10,maybe\n"
        ),
        LABEL,
        DATA_ERROR,
        ("{source}", "'label'", "'maybe' at data row 11", "10 of its 11 values are true/false"),
        id="mostly-true-false-target",
    ),
]


@pytest.mark.parametrize(("build", "env", "code", "named"), TRAIN_CASES)
def test_bad_dataset_is_refused_in_one_line(
    cli: Any,
    store: Path,
    tmp_path: Path,
    build: Callable[[Path], str],
    env: dict[str, str],
    code: int,
    named: tuple[str, ...],
) -> None:
    """Each bad dataset exits with its documented code and one line naming it; no writes."""
    source = build(tmp_path)
    result = cli("train", env={**FAST, "PIPELINE_DATA__SOURCE": source, **env})
    _refused(result, store, code, *(n.format(source=source) for n in named))


def test_missing_target_unlike_any_column_lists_the_columns(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """A target name close to no column gets no suggestion, but the setting and the columns."""
    source = _csv(HOUSES)(tmp_path)
    result = cli(
        "train", env={**FAST, "PIPELINE_DATA__SOURCE": source, "PIPELINE_DATA__TARGET": "zzz"}
    )
    message = _refused(result, store, DATA_ERROR, source, "'zzz'", "PIPELINE_DATA__TARGET")
    assert "did you mean" not in message
    assert "Id, LotArea, SalePrice" in message


def test_unreadable_file_is_refused(cli: Any, store: Path, tmp_path: Path) -> None:
    """A file that cannot be read (as root, whose bytes are not UTF-8) exits 4 naming the file."""
    path = tmp_path / "locked.csv"
    lines = ["city,price"] + [f"Zürich {i % 2},{100 + i}" for i in range(40)]
    path.write_bytes("\n".join(lines).encode("latin-1"))  # ü is not valid UTF-8 here
    path.chmod(0)
    # chmod does not stop root: then the test reads bytes it cannot decode instead.
    cannot_open = not os.access(path, os.R_OK)
    env = {**FAST, "PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TARGET": "price"}
    message = _refused(cli("train", env=env), store, DATA_ERROR, str(path))
    if cannot_open:
        assert "permission denied" in message.lower()
    else:
        assert "UTF-8" in message


@pytest.mark.parametrize("row", [1, 7, 20])
def test_text_in_numeric_target_names_column_value_and_row(
    cli: Any, store: Path, tmp_path: Path, row: int
) -> None:
    """'abc' in SalePrice of real house-prices rows is refused naming the column, value and row."""
    path = _house_prices_with(tmp_path, {(row, "SalePrice"): "abc"})
    env = {**FAST, "PIPELINE_DATA__SOURCE": str(path), "PIPELINE_DATA__TASK": "regression"}
    result = cli("train", env=env)
    _refused(result, store, DATA_ERROR, str(path), "'SalePrice'", "'abc'", f"data row {row}")


@pytest.mark.parametrize(
    ("column", "value", "env"),
    [
        ("SalePrice", "abc", {"PIPELINE_DATA__TASK": "regression"}),
        ("SalePrice", "inf", {"PIPELINE_DATA__TASK": "regression"}),
        ("LotArea", "abc", {"PIPELINE_DATA__COLUMN_KINDS": '{"LotArea": "numeric"}'}),
    ],
    ids=["text-in-target", "inf-in-target", "text-in-numeric-feature"],
)
def test_reported_row_counts_rows_whose_target_is_missing(
    cli: Any, store: Path, tmp_path: Path, column: str, value: str, env: dict[str, str]
) -> None:
    """The row named is the file's data row even when an earlier row's target is blank."""
    path = _house_prices_with(tmp_path, {(3, "SalePrice"): "", (7, column): value})
    result = cli("train", env={**FAST, "PIPELINE_DATA__SOURCE": str(path), **env})
    _refused(result, store, DATA_ERROR, str(path), f"'{column}'", value, "data row 7")


# --- URIs that name nothing we may read ---------------------------------------------------------

URIS = [
    pytest.param(
        "ftp://example.com/data/train.csv",
        ("'ftp://'", "PIPELINE_DATA__SOURCE"),
        id="unknown-scheme-ftp",
    ),
    pytest.param("gs://bucket/train.csv", ("'gs://'",), id="unknown-scheme-gs"),
    pytest.param(
        "file://remote-host/etc/passwd", ("names a remote host",), id="file-uri-remote-host"
    ),
    pytest.param(
        "builtin://../../../etc/passwd", ("unknown built-in dataset",), id="builtin-dot-dot"
    ),
    # Another spelling of the built-in dataset: accepted, it gave another build id for the
    # same weights.
    pytest.param(
        "builtin:///house-prices",
        ("another spelling of builtin://house-prices",),
        id="builtin-three-slashes",
    ),
    pytest.param(
        "kaggle://competitions/../../etc/passwd", ("malformed Kaggle URI",), id="kaggle-dot-dot"
    ),
    pytest.param(
        "kaggle://competitions/house-prices//etc/passwd",
        ("malformed Kaggle URI",),
        id="kaggle-absolute-path",
    ),
    pytest.param(
        "kaggle://datasets/owner/name/../../../escape.csv",
        ("malformed Kaggle URI",),
        id="kaggle-dataset-dot-dot",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("uri", "named"), URIS)
def test_uri_that_escapes_or_is_unknown_is_a_source_error(
    released: Released, tmp_path: Path, uri: str, named: tuple[str, ...]
) -> None:
    """Unknown schemes, remote file:// hosts and '..' or absolute paths smuggled into a URI
    exit 5 before anything is fetched; predict, which reads local files only, says so."""
    before = snapshot(released.store)
    listing = sorted(tmp_path.parent.rglob("*"))
    result = released.invoke("train", PIPELINE_DATA__SOURCE=uri)
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        SOURCE_ERROR,
        (uri, *named),
        released.store,
        before,
    )
    _predict_refuses_uri(released, uri, before)
    assert sorted(tmp_path.parent.rglob("*")) == listing, "something was written outside"


# --- HTTP: errors, stalls, truncation, bodies that are not data ---------------------------------

GARBAGE = random.Random(11).randbytes(2048)


@dataclass
class Server:
    """A local HTTP server: its base URL and an event that releases stalled handlers."""

    url: str
    stop: threading.Event


def _http_handler(stop: threading.Event) -> type[http.server.BaseHTTPRequestHandler]:
    good = "\n".join(",".join(r) for r in _house_rows(30)).encode() + b"\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each response, so a short body ends at close.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest's output clean

        def _send(self, status: int, body: bytes, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path
            if path == "/missing.csv":
                self._send(404, b"no such file")
            elif path == "/broken.csv":
                self._send(500, b"boom")
            elif path == "/stall.csv":
                stop.wait(30)  # never answers within the client's timeout
            elif path == "/stall-body.csv":
                self.send_response(200)
                self.send_header("Content-Length", str(len(good)))
                self.end_headers()
                self.wfile.write(good[:100])
                self.wfile.flush()
                stop.wait(30)  # headers and a first chunk, then nothing
            elif path == "/truncated.csv":
                self._send(200, good[: len(good) // 2], length=len(good))
            elif path == "/empty.csv":
                self._send(200, b"")
            elif unquote(path) in ("/garbage.csv", "/../../escape.csv"):
                self._send(200, GARBAGE)
            elif path == "/login.csv":
                self._send(200, (CORPUS / "html-page-named-csv.csv").read_bytes())
            else:
                self._send(400, b"unexpected path")

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A ThreadingHTTPServer on 127.0.0.1 (ephemeral port) in a daemon thread."""
    stop = threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(stop))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", stop)
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable: requests would send 127.0.0.1 through it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HTTP_CASES = [
    pytest.param("/missing.csv", SOURCE_ERROR, ("HTTP 404",), id="http-404"),
    pytest.param("/broken.csv", SOURCE_ERROR, ("HTTP 500",), id="http-500"),
    pytest.param(
        "/stall.csv", SOURCE_ERROR, ("within 0.5 seconds", "PIPELINE_HTTP_TIMEOUT"), id="stall"
    ),
    pytest.param("/stall-body.csv", SOURCE_ERROR, ("within 0.5 seconds",), id="stall-mid-body"),
    pytest.param("/truncated.csv", SOURCE_ERROR, ("truncated",), id="truncated-body"),
    pytest.param("/empty.csv", SOURCE_ERROR, ("empty body",), id="empty-body"),
    pytest.param("/garbage.csv", DATA_ERROR, ("binary data",), id="binary-body"),
    pytest.param("/login.csv", DATA_ERROR, ("HTML",), id="html-login-page"),
    pytest.param("/..%2f..%2fescape.csv", DATA_ERROR, ("binary data",), id="dot-dot-in-url"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "code", "named"), HTTP_CASES)
def test_http_failure_is_refused_and_caches_nothing(
    released: Released,
    server: Server,
    no_proxy: None,
    tmp_path: Path,
    path: str,
    code: int,
    named: tuple[str, ...],
) -> None:
    """Each HTTP failure exits with its code within the configured timeout; nothing reaches
    the store's cache (a body that is not data is refused before caching) or outside it."""
    uri = server.url + path
    before = snapshot(released.store)
    listing = sorted(tmp_path.parent.rglob("*"))
    started = time.monotonic()
    result = released.invoke("train", PIPELINE_DATA__SOURCE=uri, PIPELINE_HTTP_TIMEOUT=str(TIMEOUT))
    assert time.monotonic() - started < 10  # bounded by the timeout, not by the server
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        code,
        (uri, *named),
        released.store,
        before,
    )
    assert sorted(tmp_path.parent.rglob("*")) == listing, "something was written outside"
    _predict_refuses_uri(released, uri, before)


@pytest.mark.slow
def test_http_connection_refused_is_a_source_error(released: Released, no_proxy: None) -> None:
    """A URL nobody listens on exits 5 at once, saying the connection was refused."""
    uri = f"http://127.0.0.1:{_closed_port()}/train.csv"
    before = snapshot(released.store)
    result = released.invoke("train", PIPELINE_DATA__SOURCE=uri)
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        SOURCE_ERROR,
        (uri, "connection refused"),
        released.store,
        before,
    )
    _predict_refuses_uri(released, uri, before)


# --- Kaggle: payloads that are not the file, no credentials, a stalled server -------------------

KAGGLE_URI = "kaggle://competitions/house-prices/train.csv"
KAGGLE_KEY = "fake-key-corpus-31d7"
DOWNLOAD_CALL = "/api/v1/competitions.CompetitionApiService/DownloadDataFile"


def _kaggle_handler(body: bytes | None, stop: threading.Event) -> type[Any]:
    """The two calls of a single-file download: a POST redirected to a GET of the file.

    ``body`` is what the file request returns; None makes it stall.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != DOWNLOAD_CALL:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(302)
            self.send_header("Location", "/files/train.csv.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if body is None:
                stop.wait(30)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def kaggle_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> Iterator[Callable[[bytes | None], dict[str, str]]]:
    """Start a fake Kaggle serving a given payload; returns the env that points the real client
    at it (LOCAL mode, a private HOME and config folder, fake credentials)."""
    home = tmp_path / "home"
    config_dir = home / "kaggle-config"
    config_dir.mkdir(parents=True)
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_env import KaggleEnv, _env_to_endpoint

    monkeypatch.setattr(KaggleApi, "args", ["--local"])
    monkeypatch.setattr(KaggleApi, "config_dir", str(config_dir))
    monkeypatch.setattr(KaggleApi, "config", str(config_dir / "kaggle.json"))
    stop = threading.Event()
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: bytes | None) -> dict[str, str]:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _kaggle_handler(body, stop))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(httpd)
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setitem(_env_to_endpoint, KaggleEnv.LOCAL, url)
        return {
            "HOME": str(home),
            "KAGGLE_CONFIG_DIR": str(config_dir),
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "KAGGLE_USERNAME": "fake-user",
            "KAGGLE_KEY": KAGGLE_KEY,
        }

    yield start
    stop.set()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _zip_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, data)
    return buffer.getvalue()


KAGGLE_CASES = [
    pytest.param(GARBAGE, ("neither a zip archive nor Parquet",), id="payload-not-a-zip"),
    pytest.param(b"PK\x03\x04" + GARBAGE, ("damaged zip archive",), id="payload-damaged-zip"),
    pytest.param(
        _zip_of("test.csv", b"a,b\n1,2\n"), ("does not contain train.csv",), id="zip-lacks-file"
    ),
    pytest.param(
        gzip.compress(GARBAGE, mtime=0), ("neither a zip archive nor Parquet",), id="payload-gzip"
    ),
    pytest.param(None, ("within 0.5 seconds", "PIPELINE_KAGGLE_TIMEOUT"), id="server-stalls"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "named"), KAGGLE_CASES)
def test_kaggle_payload_that_is_not_the_file_is_a_source_error(
    released: Released,
    kaggle_client: Callable[[bytes | None], dict[str, str]],
    body: bytes | None,
    named: tuple[str, ...],
) -> None:
    """What the real kaggle client downloads is checked: a payload that is neither the file
    nor a zip holding it exits 5, a stalled server within PIPELINE_KAGGLE_TIMEOUT; the key
    never shows and nothing is cached."""
    env = kaggle_client(body)
    before = snapshot(released.store)
    started = time.monotonic()
    result = released.invoke(
        "train", PIPELINE_DATA__SOURCE=KAGGLE_URI, PIPELINE_KAGGLE_TIMEOUT=str(TIMEOUT), **env
    )
    assert time.monotonic() - started < 10  # the client alone would wait forever
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        SOURCE_ERROR,
        (KAGGLE_URI, *named),
        released.store,
        before,
    )
    assert KAGGLE_KEY not in result.stdout + result.stderr
    _predict_refuses_uri(released, KAGGLE_URI, before)


@pytest.mark.slow
def test_kaggle_without_credentials_is_a_source_error(released: Released, tmp_path: Path) -> None:
    """kaggle:// with no credentials anywhere exits 5 saying which variables to set; predict
    of the same URI says it reads local files only."""
    home = tmp_path / "empty-home"
    home.mkdir()
    before = snapshot(released.store)
    result = released.invoke(
        "train", PIPELINE_DATA__SOURCE=KAGGLE_URI, HOME=str(home), XDG_CONFIG_HOME=str(home)
    )
    assert_refused(
        result.exit_code,
        result.stdout,
        result.stderr,
        SOURCE_ERROR,
        (KAGGLE_URI, "credentials missing", "KAGGLE_USERNAME", "KAGGLE_KEY"),
        released.store,
        before,
    )
    _predict_refuses_uri(released, KAGGLE_URI, before)


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no Kaggle credential files, and no XDG config folder to find one in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def test_kaggle_without_network_is_a_quick_source_error(
    cli: Any, store: Path, empty_home: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    """kaggle:// with credentials but nobody listening exits 5 within seconds, naming the URI."""
    uri = "kaggle://competitions/house-prices-advanced-regression-techniques/train.csv"
    # As in tests/data/test_kaggle_source.py: the client in LOCAL mode, its endpoint a closed port.
    config_dir = empty_home / "kaggle-config"
    config_dir.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_env import KaggleEnv, _env_to_endpoint

    monkeypatch.setattr(KaggleApi, "args", ["--local"])
    monkeypatch.setattr(KaggleApi, "config_dir", str(config_dir))
    monkeypatch.setattr(KaggleApi, "config", str(config_dir / "kaggle.json"))
    monkeypatch.setitem(_env_to_endpoint, KaggleEnv.LOCAL, f"http://127.0.0.1:{_closed_port()}")
    key = "fake-key-4f1c9a7e0d2b"
    env = {
        **FAST,
        "PIPELINE_DATA__SOURCE": uri,
        "HOME": str(empty_home),
        "KAGGLE_CONFIG_DIR": str(config_dir),
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "KAGGLE_USERNAME": "fake-user",
        "KAGGLE_KEY": key,
    }
    started = time.monotonic()
    result = cli("train", env=env)
    assert time.monotonic() - started < 10
    _refused(result, store, SOURCE_ERROR, uri, "cannot reach Kaggle")
    assert key not in result.stdout + result.stderr


# --- predict only -------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_cells_go_to_the_error_column_when_asked(released: Released, tmp_path: Path) -> None:
    """With PIPELINE_RUN__ON_ERROR=column (bound at release time, so via --package here) a
    text number and a non-boolean get an error message in their row and no prediction."""
    rows = _house_rows(6)
    rows[2][1] = "abc"  # LotArea of data row 2
    rows[5][5] = "maybe"  # CentralAir of data row 5
    path = _write_csv(tmp_path / "two-bad-cells.csv", rows)
    package = next((released.store / "packages").rglob("*.tar.gz"))
    out = tmp_path / "out.csv"
    before = snapshot(released.store)
    result = released.invoke(
        "predict", str(path), "--package", str(package), "-o", str(out),
        PIPELINE_RUN__ON_ERROR="column",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert snapshot(released.store) == before
    with out.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["error"] != "" for r in got] == [False, True, False, False, True, False]
    assert "'abc' is not a finite number" in got[1]["error"]
    assert "'maybe' is not true or false" in got[4]["error"]
    assert got[1]["prediction"] == "" and got[0]["prediction"] != ""


# --- evaluate -----------------------------------------------------------------------------------


def test_evaluate_on_an_empty_store_is_not_found(cli: Any, store: Path) -> None:
    """`evaluate` with no build in the store exits 8 in one line that says to train first."""
    result = cli("evaluate")
    _refused(result, store, NOT_FOUND, str(store), "pipeline train")


def test_evaluate_of_an_unknown_build_prefix_is_not_found(cli: Any, store: Path) -> None:
    """`evaluate <prefix>` matching no build exits 8 in one line naming the prefix."""
    (store / "builds" / ("f" * 64)).mkdir(parents=True)  # another build, which must not match
    result = cli("evaluate", "abcd1234")
    _refused(result, store, NOT_FOUND, "'abcd1234'", str(store))


# --- real processes -----------------------------------------------------------------------------


def _real_env(released: Released, **extra: str) -> dict[str, str]:
    return {**released.env, **extra}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        pytest.param(
            ("train",),
            {"PIPELINE_DATA__SOURCE": str(CORPUS / "binary-garbage.csv")},
            ("binary data",),
            id="train-binary-garbage",
        ),
        pytest.param(
            ("predict", str(CORPUS / "array-line.jsonl"), "--release", CURRENT),
            {},
            ("line 9 is a JSON list",),
            id="predict-array-line-jsonl",
        ),
        pytest.param(
            ("predict", str(CORPUS / "ragged-row-missing-field.csv"), "--release", CURRENT),
            {},
            ("4 fields on line 13",),
            id="predict-ragged-row",
        ),
    ],
)
def test_real_process_refuses_without_traceback(
    released: Released, args: tuple[str, ...], env: dict[str, str], named: tuple[str, ...]
) -> None:
    """`python -m pipeline` in a real process: exit 4, one line, no traceback, store intact.

    predict writes predictions to stdout here, so its log stream is on stderr: the error line
    is then the last line of stderr and the only one that is not JSON.
    """
    before = snapshot(released.store)
    done = run_cli(*args, env=_real_env(released, **env), cwd=released.root, timeout=120)
    assert done.returncode == DATA_ERROR, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    if args[0] == "predict":
        *log, last = done.stderr.splitlines()
        assert done.stdout == "" and last.startswith("error: ")
        assert event("\n".join(log), "error")["message"] == last.removeprefix("error: ")
        message = last
    else:
        assert done.stderr.count("\n") == 1
        message = done.stderr
    for part in named:
        assert part in message
    assert snapshot(released.store) == before


@pytest.mark.slow
def test_bad_input_in_a_real_process_exits_4_without_traceback(store: Path, tmp_path: Path) -> None:
    """`python -m pipeline train` on text in a numeric target exits 4: one line, no traceback."""
    path = _house_prices_with(tmp_path, {(5, "SalePrice"): "abc"})
    env = {
        **FAST,
        "PIPELINE_STORE": str(store),
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_DATA__SOURCE": str(path),
        "PIPELINE_DATA__TASK": "regression",
    }
    done = run_cli("train", env=env, cwd=tmp_path, timeout=120)
    named = ("'abc'", "data row 5")
    assert_refused(done.returncode, done.stdout, done.stderr, DATA_ERROR, named, store, None)


@pytest.mark.slow
def test_real_process_http_stall_is_bounded(
    released: Released, server: Server, no_proxy: None
) -> None:
    """A real `train` against a server that never answers gives up after the configured
    PIPELINE_HTTP_TIMEOUT and exits 5, writing nothing."""
    uri = server.url + "/stall.csv"
    before = snapshot(released.store)
    env = _real_env(released, PIPELINE_DATA__SOURCE=uri, PIPELINE_HTTP_TIMEOUT=str(TIMEOUT))
    started = time.monotonic()
    done = run_cli("train", env=env, cwd=released.root, timeout=120)
    assert time.monotonic() - started < 30
    assert_refused(
        done.returncode,
        done.stdout,
        done.stderr,
        SOURCE_ERROR,
        (uri, "within 0.5 seconds"),
        released.store,
        before,
    )


def test_corpus_has_a_case_for_every_committed_file() -> None:
    """Every file in tests/corpus/ is exercised by a case here (none is dead weight), and the
    corpus holds at least 40 cases that `train` refuses."""
    named = {c.name for c in FILES} | {"utf8-bom.csv", "huge-1e308-in-numeric-column.csv",
                                       "every-value-unique-text-column.csv"}  # fmt: skip
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "README.md"}
    assert on_disk <= named, on_disk - named
    refused = [c for c in FILES if c.train] + URIS + HTTP_CASES + KAGGLE_CASES
    assert len(refused) + 2 >= 40  # + connection refused + missing Kaggle credentials
