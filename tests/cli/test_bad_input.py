"""Bad input through the real CLI: one line on stderr, a documented exit code, nothing stored.

The README's "Bad input" contract: a missing target column, an unreadable or empty file, an
unknown URI scheme, a target with a single class, text in a numeric target, Kaggle without
credentials or without network each give a one-line error naming what is wrong and what to do,
a documented non-zero exit code (DataError 4, SourceError 5, NotFoundError 8), no traceback, and
nothing written to the store. Every file here is a real file written into ``tmp_path``; none of
these inputs may reach training.
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import io
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import event, events, run_cli, store_files

DATA_ERROR = 4
SOURCE_ERROR = 5
NOT_FOUND = 8

# If a case wrongly got as far as training, one epoch keeps the failing test fast.
FAST = {"PIPELINE_TRAIN__MAX_EPOCHS": "1"}
KAGGLE_URI = "kaggle://competitions/house-prices-advanced-regression-techniques/train.csv"

# "What to do": an instruction, or the setting or variable the user has to change.
_ACTION = re.compile(
    r"\b(check|fix|set|use|point|choose|fill|re-encode|save|convert|decompress|rename|run|"
    r"give|add|declare|try|list|make)\b|did you mean|PIPELINE_[A-Z_]+|KAGGLE_[A-Z_]+",
    re.IGNORECASE,
)


def _house_prices_rows(n: int) -> list[list[str]]:
    """The header and first ``n`` data rows of the house-prices dataset shipped in the package."""
    text = (files("pipeline") / "datasets" / "house-prices.csv").read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))[: n + 1]


def _write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return path


def _house_prices_with(tmp_path: Path, edits: dict[tuple[int, str], str], n: int = 20) -> Path:
    """A CSV of real house-prices rows with ``edits[(data row, column)]`` (data rows from 1)."""
    rows = _house_prices_rows(n)
    header = rows[0]
    for (row, column), value in edits.items():
        rows[row][header.index(column)] = value
    return _write_rows(tmp_path / "house-prices.csv", rows)


def assert_refused(
    exit_code: int, stdout: str, stderr: str, store: Path, code: int, *named: str
) -> str:
    """Check the bad-input contract for one run and return the error message.

    Exit ``code``; stderr exactly one printable line ``error: <message>`` that contains every
    string in ``named`` and says what to do; no traceback anywhere; stdout all JSON lines ending
    in an ``error`` event with the same code and message; no file in the store, ``tmp/`` empty.
    """
    assert exit_code == code, f"exit {exit_code}, expected {code}; stderr: {stderr!r}"
    assert "Traceback" not in stdout and "Traceback" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    line = stderr[:-1]
    assert line.startswith("error: "), line
    message = line.removeprefix("error: ")
    assert line.isprintable(), f"control characters in the error line: {line!r}"
    for part in named:
        assert part in message, f"{part!r} not named in: {message}"
    # Paths and URIs are left out of the search: a folder name must not pass for advice.
    advice = message
    for part in named:
        if "/" in part:
            advice = advice.replace(part, "")
    assert _ACTION.search(advice), f"the message does not say what to do: {message}"

    stream = events(stdout)  # fails on any line that is not JSON
    assert stream, "no events on stdout"
    error = event(stdout, "error")
    assert stream[-1] == error
    assert error["exit_code"] == code
    assert error["message"] == message

    assert store_files(store) == [], f"files written to the store: {store_files(store)}"
    tmp = store / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), f"left in tmp/: {list(tmp.iterdir())}"
    return message


def _refused(result: Any, store: Path, code: int, *named: str) -> str:
    return assert_refused(result.exit_code, result.stdout, result.stderr, store, code, *named)


# --- bad files and URIs ------------------------------------------------------------------------


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


def _missing(folder: Path) -> str:
    return str(folder / "no-such-file.csv")


def _directory(folder: Path) -> str:
    path = folder / "data.csv"
    path.mkdir()
    return str(path)


HOUSES = "Id,LotArea,SalePrice\n1,8450,208500\n2,9600,181500\n3,11250,223500\n"

TRAIN_CASES = [
    pytest.param(
        _csv(HOUSES),
        {"PIPELINE_DATA__TARGET": "SalePrise"},
        DATA_ERROR,
        ("{source}", "'SalePrise'", "did you mean 'SalePrice'?"),
        id="missing-target-close-name",
    ),
    pytest.param(
        _missing,
        {},
        DATA_ERROR,
        ("{source}", "does not exist", "PIPELINE_DATA__SOURCE"),
        id="no-such-path",
    ),
    pytest.param(
        _directory,
        {},
        DATA_ERROR,
        ("{source}", "not a file", "PIPELINE_DATA__SOURCE"),
        id="directory",
    ),
    pytest.param(_csv(b""), {}, DATA_ERROR, ("{source}", "empty"), id="empty-file"),
    pytest.param(
        _csv("Id,LotArea,SalePrice\n"), {}, DATA_ERROR, ("{source}", "no rows"), id="header-only"
    ),
    pytest.param(
        _csv(bytes(range(256)) * 4), {}, DATA_ERROR, ("{source}",), id="binary-blob-not-csv"
    ),
    pytest.param(
        lambda folder: "ftp://x/y.csv",
        {},
        SOURCE_ERROR,
        ("'ftp://'", "ftp://x/y.csv", "PIPELINE_DATA__SOURCE"),
        id="unknown-scheme",
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
    """Each bad dataset or URI exits with its documented code and one line naming it; no writes."""
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


# --- remote sources ----------------------------------------------------------------------------


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable: requests would send 127.0.0.1 through it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no Kaggle credential files, and no XDG config folder to find one in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kaggle_without_credentials_is_a_source_error(
    cli: Any, store: Path, empty_home: Path
) -> None:
    """kaggle:// with no KAGGLE_* variable and no credential file exits 5 saying what to set."""
    result = cli(
        "train", env={**FAST, "PIPELINE_DATA__SOURCE": KAGGLE_URI, "HOME": str(empty_home)}
    )
    message = _refused(result, store, SOURCE_ERROR, KAGGLE_URI, "KAGGLE_USERNAME", "KAGGLE_KEY")
    assert "credentials" in message


def test_kaggle_without_network_is_a_quick_source_error(
    cli: Any, store: Path, empty_home: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    """kaggle:// with credentials but nobody listening exits 5 within seconds, naming the URI."""
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
        "PIPELINE_DATA__SOURCE": KAGGLE_URI,
        "HOME": str(empty_home),
        "KAGGLE_CONFIG_DIR": str(config_dir),
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "KAGGLE_USERNAME": "fake-user",
        "KAGGLE_KEY": key,
    }
    started = time.monotonic()
    result = cli("train", env=env)
    assert time.monotonic() - started < 10
    _refused(result, store, SOURCE_ERROR, KAGGLE_URI, "cannot reach Kaggle")
    assert key not in result.stdout + result.stderr


@pytest.fixture
def http_404(no_proxy: None) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 that answers 404 to everything; yields its base URL."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest's output clean

        def do_GET(self) -> None:
            body = b"no such file"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_http_404_is_a_source_error(cli: Any, store: Path, http_404: str) -> None:
    """An http:// dataset the server does not have exits 5 naming the URL and the status."""
    uri = f"{http_404}/data/train.csv"
    result = cli("train", env={**FAST, "PIPELINE_DATA__SOURCE": uri})
    _refused(result, store, SOURCE_ERROR, uri, "HTTP 404")


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_on_an_empty_store_is_not_found(cli: Any, store: Path) -> None:
    """`evaluate` with no build in the store exits 8 in one line that says to train first."""
    result = cli("evaluate")
    _refused(result, store, NOT_FOUND, str(store), "pipeline train")


def test_evaluate_of_an_unknown_build_prefix_is_not_found(cli: Any, store: Path) -> None:
    """`evaluate <prefix>` matching no build exits 8 in one line naming the prefix."""
    (store / "builds" / ("f" * 64)).mkdir(parents=True)  # another build, which must not match
    result = cli("evaluate", "abcd1234")
    _refused(result, store, NOT_FOUND, "'abcd1234'", str(store))


# --- a real process ----------------------------------------------------------------------------


def test_bad_input_in_a_real_process_exits_4_without_traceback(store: Path, tmp_path: Path) -> None:
    """`python -m pipeline train` on text in a numeric target exits 4: one line, no traceback."""
    path = _house_prices_with(tmp_path, {(5, "SalePrice"): "abc"})
    env = {
        **FAST,
        "PIPELINE_STORE": str(store),
        "PIPELINE_ENV_FILE": str(tmp_path / "no.env"),
        "PIPELINE_DATA__SOURCE": str(path),
        "PIPELINE_DATA__TASK": "regression",
    }
    done = run_cli("train", env=env, cwd=tmp_path, timeout=120)
    assert_refused(
        done.returncode, done.stdout, done.stderr, store, DATA_ERROR, "'abc'", "data row 5"
    )
