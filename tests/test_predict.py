"""The run stage: `pipeline predict` on releases and packages, as a CI job and a user would."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import REPO, event, events, invoke_isolated, run_cli

TEST_CSV = REPO / "tests" / "fixtures" / "house-prices-test.csv"
TEST_SHA = "8fdd3d829d4d986b58f845c9553b225e67dd8383624d90fb6ca1d4bed5798c1e"


def _ok(done: Any) -> Any:
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _done(result: Any) -> Any:
    """An in-process command's result, once it exited 0."""
    assert result.exit_code == 0, result.output[-2000:]
    return result


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """train -> evaluate (gate) -> package -> release create, as a CI job runs them.

    The chain runs in-process (it is set-up here); every test's `pipeline predict` is a real
    process, as a CI job or a user runs it.
    """
    root = tmp_path_factory.mktemp("chain")
    env = {
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_SEED": "0",
        "PIPELINE_RUN__ID_COLUMN": "Id",
        # A smaller ensemble than the default, a quarter of the training time: the gate still
        # passes with margin (test rmse_log 0.125 at seed 0; the default model's is 0.118).
        "PIPELINE_MODEL__HIDDEN": "[64]",
        "PIPELINE_MODEL__MEMBERS": "2",
    }
    _done(invoke_isolated("train", "--id-file", str(root / "build.id"), root=root, env=env))
    gate = _done(
        invoke_isolated("evaluate", root=root, env={**env, "PIPELINE_GATES__MAX_RMSE_LOG": "0.16"})
    )
    assert event(gate.stdout, "evaluate.summary")["passed"] is True
    _done(invoke_isolated("package", "--id-file", str(root / "package.id"), root=root, env=env))
    package_id = (root / "package.id").read_text().strip()
    release = ("release", "create", package_id, "--id-file", str(root / "release.id"))
    _done(invoke_isolated(*release, root=root, env=env))
    return {"env": env, "root": root, "package_id": package_id,
            "release": (root / "release.id").read_text().strip()}  # fmt: skip


def _predict(chain: dict[str, Any], *args: str, **extra: str) -> Any:
    return run_cli("predict", *args, env={**chain["env"], **extra}, cwd=chain["root"])


@pytest.fixture(scope="module")
def whole(chain: dict[str, Any]) -> tuple[Any, Path]:
    """The real test file predicted by a real `pipeline predict` with the defaults (one chunk):
    the finished process and its output file, which other runs are compared with."""
    out = chain["root"] / "predictions.csv"
    done = _ok(_predict(chain, str(TEST_CSV), "--release", chain["release"], "-o", str(out)))
    return done, out


def test_ci_chain_predicts_every_row_of_the_unseen_test_file(
    chain: dict[str, Any], whole: tuple[Any, Path]
) -> None:
    """The released model predicts all 1,459 real test rows, unseen categories included."""
    assert hashlib.sha256(TEST_CSV.read_bytes()).hexdigest() == TEST_SHA
    assert chain["release"] == "house-prices@v1"
    done, out = whole
    summary = event(done.stdout, "predict.summary")
    assert summary["rows"] == 1459 and summary["errors"] == 0
    assert summary["package_id"] == chain["package_id"]
    assert sum(summary["unknown_categories"].values()) > 0  # test.csv has unseen categories
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["Id", "prediction"] and len(frame) == 1459
    assert frame["Id"].tolist() == pd.read_csv(TEST_CSV)["Id"].tolist()
    assert frame["prediction"].between(20_000, 1_000_000).all()


def test_predictions_stream_to_stdout_with_logs_on_stderr(
    chain: dict[str, Any], whole: tuple[Any, Path]
) -> None:
    """Without -o, or with `-o -` as most Unix tools spell it, CSV predictions are stdout (the
    bytes -o writes) and the JSON log stream moves to stderr (`-o -` wrote a file named "-")."""
    for dash in ([], ["-o", "-"]):
        done = _ok(_predict(chain, str(TEST_CSV), *dash, PIPELINE_RELEASE="house-prices@current"))
        frame = pd.read_csv(io.StringIO(done.stdout))
        assert len(frame) == 1459
        assert done.stdout.encode() == whole[1].read_bytes()
        assert events(done.stderr)[-1]["event"] == "predict.summary"
        assert not (chain["root"] / "-").exists()


def test_run_settings_the_release_replaces_are_named_in_a_warning(
    chain: dict[str, Any], whole: tuple[Any, Path]
) -> None:
    """The environment's run settings that differ from the release's bound ones do not apply
    (a release is immutable configuration): one warning names their variables; the machine's
    chunk size is the environment's and not named. Run from the package, they apply."""
    out = chain["root"] / "overridden.csv"
    changed = {"PIPELINE_RUN__ON_ERROR": "column", "PIPELINE_RUN__ID_COLUMN": "MSSubClass"}
    done = _ok(
        _predict(chain, str(TEST_CSV), "--release", chain["release"], "-o", str(out),
                 PIPELINE_RUN__CHUNK_ROWS="500", **changed)
    )  # fmt: skip
    warning = event(done.stdout, "predict.settings_ignored")
    assert warning["settings"] == ["PIPELINE_RUN__ID_COLUMN", "PIPELINE_RUN__ON_ERROR"]
    assert warning["level"] == "warning" and "create a new release" in warning["message"]
    assert out.read_bytes() == whole[1].read_bytes()
    package = next((chain["root"] / "store" / "packages").rglob("*.tar.gz"))
    direct = _ok(_predict(chain, str(TEST_CSV), "--package", str(package), "-o", str(out),
                          PIPELINE_RELEASE="", **changed))  # fmt: skip
    assert "predict.settings_ignored" not in direct.stdout
    assert pd.read_csv(out).columns.tolist() == ["MSSubClass", "prediction", "error"]


def test_stdin_and_pipes_are_read_as_files_are(
    chain: dict[str, Any], whole: tuple[Any, Path], tmp_path: Path
) -> None:
    """`cat rows.csv | pipeline predict -` and `pipeline predict <(zcat rows.csv.gz)` (a pipe
    path) predict what the file gives, byte for byte; the rows are copied to a temporary file
    first (removed afterwards) since the readers reopen their input. A nameless input's format
    comes from its first bytes: Parquet's magic, a JSON object, else CSV, gzip read through.
    Empty stdin is one line, exit 4; `--workers` still refuses stdin, before Ray starts. It was
    refused always."""
    import subprocess
    import sys
    import threading

    from tests.conftest import _process_env

    env = {
        **_process_env({**chain["env"], "PIPELINE_RUN__ID_COLUMN": "Id"}),
        "TMPDIR": str(tmp_path),
    }
    argv = [sys.executable, "-m", "pipeline", "predict", "-", "--release", chain["release"]]

    def piped(data: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*argv, *extra], input=data, env=env, cwd=chain["root"],
                              capture_output=True, timeout=120, check=False)  # fmt: skip

    # The copy of a run killed with SIGKILL (a whole input's bytes) is swept by the next run:
    # a folder marked by a process that is gone (it stayed in TMPDIR for good).
    left = tmp_path / "pipeline-input-killed1"
    left.mkdir()
    (left / ".pipeline-owner").write_text("999999999 1\n")  # no such process
    (left / "input").write_bytes(TEST_CSV.read_bytes())
    done = piped(TEST_CSV.read_bytes())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == whole[1].read_bytes()
    assert not left.exists()
    assert event(done.stderr.decode(), "predict.summary")["input"] == "-"
    frame = pd.read_csv(TEST_CSV, keep_default_na=False, dtype=str).head(50)
    for name, write in (("rows.parquet", frame.to_parquet), ("rows.jsonl", None)):
        path = tmp_path / name
        if write is not None:
            write(path)
        else:
            frame.to_json(path, orient="records", lines=True)
        from_file = _ok(_predict(chain, str(path), "--release", chain["release"], "-o", "-"))
        assert piped(path.read_bytes()).stdout == from_file.stdout.encode(), name
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(TEST_CSV.read_bytes()))
    feeder.start()
    through = run_cli("predict", str(fifo), "--release", chain["release"], "-o", "-",
                      env=chain["env"], cwd=chain["root"])  # fmt: skip
    feeder.join(timeout=60)
    assert through.returncode == 0, through.stderr[-2000:]
    assert through.stdout.encode() == whole[1].read_bytes()
    import gzip

    # Gzip is read through (`cat rows.csv.gz | pipeline predict -`); gzipped Parquet is refused.
    assert piped(gzip.compress(TEST_CSV.read_bytes(), mtime=0)).stdout == whole[1].read_bytes()
    # Gzipped JSON lines too, piped or named .jsonl.gz (they were "not valid UTF-8 text", and
    # read as CSV: "lacks required column(s)").
    jsonl = (tmp_path / "rows.jsonl").read_bytes()
    plain = _ok(_predict(chain, str(tmp_path / "rows.jsonl"), "--release", chain["release"]))
    assert piped(gzip.compress(jsonl, mtime=0)).stdout == plain.stdout.encode()
    named = chain["root"] / "rows.jsonl.gz"
    named.write_bytes(gzip.compress(jsonl, mtime=0))
    from_gz = _ok(_predict(chain, str(named), "--release", chain["release"]))
    assert from_gz.stdout == plain.stdout
    zipped = piped(gzip.compress((tmp_path / "rows.parquet").read_bytes(), mtime=0))
    assert zipped.returncode == 4
    assert zipped.stderr.decode().splitlines()[-1] == (
        "error: input stdin is gzip-compressed Parquet: decompress it first"
    )
    empty = piped(b"")
    assert empty.returncode == 4
    assert empty.stderr.decode().splitlines()[-1] == (
        "error: input stdin is empty: expected a header line and rows; check the file"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.fifo", "rows.jsonl", "rows.parquet"]
    workers = piped(TEST_CSV.read_bytes(), "--workers", "2", "-o", str(tmp_path / "parts"))
    assert workers.returncode == 3  # options that contradict each other, not bad rows
    assert workers.stderr.decode().splitlines()[-1].startswith("error: input - (stdin) is not read")
    assert not (tmp_path / "parts").exists()


def test_a_package_path_that_does_not_exist_is_not_found(chain: dict[str, Any]) -> None:
    """exit 8 (not found), not 7 (integrity: a damaged archive), naming the path."""
    missing = chain["root"] / "no-such-package.tar.gz"
    done = _predict(chain, str(TEST_CSV), "--package", str(missing), "-o", "x.csv",
                    PIPELINE_RELEASE="")  # fmt: skip
    assert done.returncode == 8, done.stderr
    assert done.stderr == f"error: no package archive at {missing}: check the path " + (
        "(`pipeline package` writes them to packages/<name>/<version>.tar.gz in the store), or "
        "run a release with --release\n"
    )
    # A folder (the store, say) was exit 7, "cannot be read: Is a directory", as if damaged.
    folder = _predict(chain, str(TEST_CSV), "--package", str(chain["root"] / "store"))
    assert folder.returncode == 3 and "is a folder: pass the .tar.gz" in folder.stderr


def test_chunked_run_equals_single_chunk_run(
    chain: dict[str, Any], whole: tuple[Any, Path]
) -> None:
    """Chunks of 99 or 8 rows give byte-identical output to one chunk of everything (with 99,
    23 of the 1,459 rows used to differ in their last bits: the tails differ in size). The one
    chunk is scored in spans of blocks by one thread per core, the small chunks by one."""
    summary = event(whole[0].stdout, "predict.summary")
    assert summary["chunks"] == 1
    assert summary["threads"] == min(4, len(os.sched_getaffinity(0)))
    for rows in ("99", "8"):
        out = chain["root"] / f"chunked-{rows}.csv"
        done = _ok(_predict(chain, str(TEST_CSV), "--release", chain["release"], "-o", str(out),
                            PIPELINE_RUN__CHUNK_ROWS=rows))  # fmt: skip
        assert event(done.stdout, "predict.summary")["chunks"] == {"99": 15, "8": 183}[rows]
        assert out.read_bytes() == whole[1].read_bytes(), rows


def test_missing_columns_are_counted_past_ten_and_a_foreign_delimiter_named(
    chain: dict[str, Any],
) -> None:
    """A file holding a few of the 79 columns names ten missing ones and counts the rest (the
    whole list was 1.5 KB on one line); a ';'-delimited file is told the model's delimiter,
    which no setting changes (it said to set PIPELINE_DATA__DELIMITER, which predict ignores)."""
    root = chain["root"]
    lines = TEST_CSV.read_text().splitlines()[:3]
    (root / "few.csv").write_text("\n".join(",".join(x.split(",")[:9]) for x in lines) + "\n")
    done = _predict(chain, str(root / "few.csv"), "--release", chain["release"])
    message = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert done.returncode == 4 and len(message) == 1, done.stderr
    assert "and 61 more: the model was trained on 79 columns" in message[0]
    assert len(message[0]) < 400
    (root / "semi.csv").write_text("\n".join(x.replace(",", ";") for x in lines) + "\n")
    done = _predict(chain, str(root / "semi.csv"), "--release", chain["release"],
                    PIPELINE_DATA__DELIMITER=";")  # fmt: skip
    message = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert done.returncode == 4 and len(message) == 1, done.stderr
    assert "delimited by ';', but this model reads CSV delimited by ','" in message[0]
    assert "PIPELINE_DATA__DELIMITER" not in message[0]


def test_a_bad_cell_under_a_release_gives_advice_that_works(chain: dict[str, Any]) -> None:
    """A release fixes PIPELINE_RUN__ON_ERROR, so "set PIPELINE_RUN__ON_ERROR=column" (what the
    message said, and what a user then set, to no effect) is not the advice under one."""
    root = chain["root"]
    lines = TEST_CSV.read_text().splitlines()[:3]
    area = lines[0].split(",").index("LotArea")
    cells = lines[2].split(",")
    cells[area] = "lots"
    (root / "bad.csv").write_text("\n".join([lines[0], lines[1], ",".join(cells)]) + "\n")
    done = _predict(chain, str(root / "bad.csv"), "--release", chain["release"],
                    PIPELINE_RUN__ON_ERROR="column")  # fmt: skip
    message = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert done.returncode == 4 and len(message) == 1, done.stderr
    assert "'LotArea'" in message[0] and "data row 2" in message[0], message[0]
    assert "a release created under PIPELINE_RUN__ON_ERROR=column" in message[0]
    assert "set PIPELINE_RUN__ON_ERROR" not in message[0]
    # The release's id column (Id) missing from the input: "set it to an existing column or
    # unset it" was the advice, and setting it changes nothing under a release.
    id_at = lines[0].split(",").index("Id")
    kept = [[c for j, c in enumerate(x.split(",")) if j != id_at] for x in lines]
    without = "\n".join(",".join(row) for row in kept)
    (root / "no-id.csv").write_text(without + "\n")
    done = _predict(chain, str(root / "no-id.csv"), "--release", chain["release"],
                    PIPELINE_RUN__ID_COLUMN="LotArea")  # fmt: skip
    message = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert done.returncode == 4 and len(message) == 1, done.stderr
    assert (
        "has no id column 'Id'" in message[0]
        and "which a release keeps as it was created with" in message[0]
    )
    assert "set it to an existing column" not in message[0]
    # A misspelt id column of the environment (with --package) is named with the one meant.
    package = next((root / "store" / "packages").rglob("*.tar.gz"))
    done = _predict(chain, str(TEST_CSV), "--package", str(package), PIPELINE_RUN__ID_COLUMN="id")
    assert done.returncode == 4 and "no id column 'id' (did you mean 'Id'?)" in done.stderr


def test_input_and_output_formats_agree(chain: dict[str, Any], whole: tuple[Any, Path]) -> None:
    """Parquet and JSON-lines inputs and outputs give the same predictions as CSV, to the bit
    (JSON lines kept 10 significant digits, pandas' default)."""
    root = chain["root"]
    frame = pd.read_csv(TEST_CSV)  # typed columns with real nulls, as such files carry them
    frame.to_parquet(root / "in.parquet")
    frame.to_json(root / "in.jsonl", orient="records", lines=True)
    # Python's float() reads a CSV's shortest spelling back to the same bits.
    expected = pd.read_csv(whole[1], dtype=str)["prediction"].map(float)
    for source, target in (("in.parquet", "out.parquet"), ("in.jsonl", "out.jsonl")):
        _ok(
            _predict(
                chain, str(root / source), "--release", chain["release"], "-o", str(root / target)
            )
        )
        got = (pd.read_parquet(root / target)["prediction"].tolist() if target.endswith("parquet")
               else [json.loads(line)["prediction"]
                     for line in (root / target).read_text().splitlines()])  # fmt: skip
        assert got == expected.tolist(), target


def test_an_output_named_for_a_format_predict_does_not_write_is_refused(
    chain: dict[str, Any], whole: tuple[Any, Path]
) -> None:
    """`-o out.xlsx` or `-o out.csv.gz` would hold plain CSV: exit 3 naming the suffix, nothing
    written; a declared PIPELINE_RUN__OUTPUT_FORMAT (with --package: a release fixes its own)
    writes that format under the name."""
    root = chain["root"]
    for name in ("out.xlsx", "out.csv.gz"):
        done = _predict(chain, str(TEST_CSV), "--release", chain["release"], "-o", str(root / name))
        assert done.returncode == 3, done.stderr
        assert Path(name).suffix in done.stderr and "PIPELINE_RUN__OUTPUT_FORMAT" in done.stderr
        assert "Traceback" not in done.stderr
        assert not (root / name).exists() and not list(root.glob(f".{name}.*"))
    package = next((root / "store" / "packages").rglob("*.tar.gz"))
    _ok(_predict(chain, str(TEST_CSV), "--package", str(package), "-o", str(root / "p.gz"),
                 PIPELINE_RUN__OUTPUT_FORMAT="csv"))  # fmt: skip
    assert (root / "p.gz").read_bytes() == whole[1].read_bytes()


@pytest.mark.parametrize(
    ("declared", "name"),
    [("csv", "p.parquet"), ("jsonl", "p.csv"), ("parquet", "p.jsonl"), ("csv", "p.json")],
)
def test_an_output_named_for_another_format_than_the_declared_one_is_refused(
    chain: dict[str, Any], declared: str, name: str
) -> None:
    """PIPELINE_RUN__OUTPUT_FORMAT=csv with `-o p.parquet` wrote CSV text into p.parquet, exit
    0 (a release created with that format did it to every user who named a .parquet file):
    whoever read it failed on the magic bytes. Now exit 3 naming both, nothing written."""
    root = chain["root"]
    package = next((root / "store" / "packages").rglob("*.tar.gz"))
    done = _predict(chain, str(TEST_CSV), "--package", str(package), "-o", str(root / name),
                    PIPELINE_RUN__OUTPUT_FORMAT=declared)  # fmt: skip
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert f"named {Path(name).suffix}" in line and f"OUTPUT_FORMAT={declared}" in line, line
    assert not (root / name).exists() and not list(root.glob(f".{name}.*"))


def test_missing_column_is_refused_and_extra_columns_are_reported(chain: dict[str, Any]) -> None:
    """A missing model column exits 4 naming it; an extra one is a warning event."""
    root = chain["root"]
    frame = pd.read_csv(TEST_CSV, keep_default_na=False, dtype=str)
    frame.drop(columns=["LotArea"]).to_csv(root / "missing.csv", index=False)
    done = _predict(
        chain, str(root / "missing.csv"), "--release", chain["release"], "-o", str(root / "x.csv")
    )
    assert done.returncode == 4 and "LotArea" in done.stderr and "Traceback" not in done.stderr
    assert not (root / "x.csv").exists() and not list(root.glob(".x.csv.*"))
    frame.assign(Colour="red").to_csv(root / "extra.csv", index=False)
    done = _ok(
        _predict(
            chain, str(root / "extra.csv"), "--release", chain["release"], "-o", str(root / "y.csv")
        )
    )
    warning = event(done.stdout, "predict.extra_columns")
    assert warning["columns"] == ["Colour"] and warning["level"] == "warning"


def test_a_bad_value_fails_the_batch_or_goes_to_the_error_column(chain: dict[str, Any]) -> None:
    """Text in a numeric column names its row and column, or (on_error=column) fails one row."""
    root = chain["root"]
    frame = pd.read_csv(TEST_CSV, keep_default_na=False, dtype=str)
    frame.loc[16, "LotArea"] = "abc"
    frame.to_csv(root / "bad.csv", index=False)
    done = _predict(
        chain, str(root / "bad.csv"), "--release", chain["release"], "-o", str(root / "b.csv")
    )
    assert done.returncode == 4
    assert "'LotArea'" in done.stderr and "'abc'" in done.stderr and "data row 17" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = _ok(_predict(chain, str(root / "bad.csv"), "--package", _package_path(chain), "-o",
                        str(root / "b.csv"), PIPELINE_RUN__ON_ERROR="column",
                        PIPELINE_RUN__ID_COLUMN="Id"))  # fmt: skip
    assert event(done.stdout, "predict.summary")["errors"] == 1
    out = pd.read_csv(root / "b.csv", keep_default_na=False)
    assert "LotArea" in out.loc[16, "error"] and out.loc[16, "prediction"] == ""
    assert (out.drop(index=16)["error"] == "").all()


def _package_path(chain: dict[str, Any]) -> str:
    return str(Path(chain["env"]["PIPELINE_STORE"]) / "packages" / "house-prices" / "0.1.0.tar.gz")


def test_a_flipped_byte_in_the_package_is_an_integrity_error(chain: dict[str, Any]) -> None:
    """Any changed byte of the archive makes predict refuse with exit code 7."""
    root = chain["root"]
    data = Path(_package_path(chain)).read_bytes()
    for offset in (10, len(data) // 3, len(data) // 2, len(data) - 5):
        copy = root / "tampered.tar.gz"
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        copy.write_bytes(bytes(flipped))
        done = _predict(chain, str(TEST_CSV), "--package", str(copy), "-o", str(root / "t.csv"))
        assert done.returncode == 7, (offset, done.stderr)
        assert "Traceback" not in done.stderr and not (root / "t.csv").exists()
        # The way out, as `release create` gives it (it said "the file is damaged" and no more).
        assert "package its build again" in done.stderr, (offset, done.stderr)


def test_no_release_chosen_is_a_config_error(chain: dict[str, Any]) -> None:
    """predict with neither --release, PIPELINE_RELEASE nor --package exits 3 and says how."""
    done = _predict(chain, str(TEST_CSV), "-o", str(chain["root"] / "n.csv"))
    assert done.returncode == 3 and "--release" in done.stderr
    # Set but empty, it was taken as unset, and the line said to set it.
    empty = _predict(chain, str(TEST_CSV), "-o", str(chain["root"] / "n.csv"), PIPELINE_RELEASE="")
    assert empty.returncode == 3 and "PIPELINE_RELEASE is set but empty" in empty.stderr
    # An image built without a release bakes it empty, and no `docker run` can unset it: the
    # line said "unset it"; --release wins over it, and the line says so.
    assert "pass --release or --package PATH, which win over it" in empty.stderr
    given = _predict(chain, str(TEST_CSV), "--release", chain["release"], "-o",
                     str(chain["root"] / "n.csv"), PIPELINE_RELEASE="")  # fmt: skip
    assert given.returncode == 0, given.stderr


def test_rollback_makes_current_predict_with_the_earlier_package(cli: Any, tmp_path: Path) -> None:
    """Releases v1 and v2 of different packages, then rollback: @current predicts with v1's.

    The releases are made in-process; the `pipeline predict` that reads @current is real.
    """
    env = {
        "PIPELINE_STORE": str(tmp_path / "store"),
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_PRESET": "titanic",
        "PIPELINE_CONFIG_DIR": str(REPO / "config"),
        "PIPELINE_TRAIN__MAX_EPOCHS": "5",
    }
    ids = []
    for seed, version in (("1", "1.0.0"), ("2", "1.1.0")):
        step = {**env, "PIPELINE_SEED": seed, "PIPELINE_MODEL__VERSION": version}
        _done(cli("train", env=step))
        _done(cli("package", "--id-file", str(tmp_path / "p"), env=step))
        ids.append((tmp_path / "p").read_text().strip())
        _done(cli("release", "create", ids[-1], env=step))
    _done(cli("release", "rollback", env=env))
    rows = tmp_path / "rows.csv"
    pd.read_csv(REPO / "src" / "pipeline" / "datasets" / "titanic.csv").head(50).to_csv(
        rows, index=False
    )
    current = {**env, "PIPELINE_RELEASE": "titanic@current"}
    done = _ok(
        run_cli("predict", str(rows), "-o", str(tmp_path / "out.csv"), env=current, cwd=tmp_path)
    )
    summary = event(done.stdout, "predict.summary")
    assert summary["package_id"] == ids[0] and summary["release"] == "titanic@v1"
    out = pd.read_csv(tmp_path / "out.csv")
    assert set(out.columns) == {"prediction", "probability_0", "probability_1"}
    assert out["prediction"].isin([0, 1]).all()
    assert (out["probability_0"] + out["probability_1"]).round(9).eq(1).all()
    history = json.loads(_done(cli("release", "list", env=env)).stdout.splitlines()[-1])
    assert history["current"] == 1 and history["count"] == 2
    assert os.path.exists(tmp_path / "store" / "releases" / "titanic" / "history")


def test_evaluate_takes_a_release_and_re_tests_the_build_it_holds(chain: dict[str, Any]) -> None:
    """`pipeline evaluate house-prices@v1` (or `current`) re-tests the release's build, as
    `report` and `diff` read a release; it was "no build 'house-prices@v1'" (exit 8)."""
    build_id = (chain["root"] / "build.id").read_text().strip()
    by_id = _ok(run_cli("evaluate", build_id, env=chain["env"], cwd=chain["root"]))
    expected = event(by_id.stdout, "evaluate.summary")
    for ref in (chain["release"], "current"):
        done = _ok(run_cli("evaluate", ref, env=chain["env"], cwd=chain["root"]))
        summary = event(done.stdout, "evaluate.summary")
        assert summary["build_id"] == build_id
        assert summary["test"] == expected["test"]
    missing = run_cli("evaluate", "house-prices@v9", env=chain["env"], cwd=chain["root"])
    assert missing.returncode == 8 and "house-prices@v9 does not exist" in missing.stderr


def test_a_required_secret_that_is_not_set_stops_the_run_at_its_start(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """A release made with PIPELINE_RUN__REQUIRED_SECRETS='["MODEL_TOKEN"]' does not run
    without MODEL_TOKEN in the environment (exit 3 naming it, never a value); it ran anyway.
    The same with --package and the setting in the environment."""
    import shutil

    # A store of its own (the chain's current release stays the one other tests read).
    shutil.copytree(chain["root"] / "store" / "packages", tmp_path / "store" / "packages")
    own = {**chain["env"], "PIPELINE_STORE": str(tmp_path / "store")}
    secret = {"PIPELINE_RUN__REQUIRED_SECRETS": '["MODEL_TOKEN"]'}
    created = run_cli("release", "create", chain["package_id"], env=own | secret, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    package = next((tmp_path / "store" / "packages").rglob("*.tar.gz"))
    out = tmp_path / "p.csv"
    cases = ((("--release", "house-prices@v1"), {}), (("--package", str(package)), secret))
    for args, extra in cases:
        predict = ("predict", str(TEST_CSV), *args, "-o", str(out))
        refused = run_cli(*predict, env=own | extra, cwd=tmp_path)
        assert refused.returncode == 3, refused.stderr
        assert "requires the secret(s) ['MODEL_TOKEN']" in refused.stderr and not out.exists()
        _ok(run_cli(*predict, env=own | extra | {"MODEL_TOKEN": "t0k3n"}, cwd=tmp_path))
        assert "t0k3n" not in out.read_text()
        out.unlink()


def test_a_required_secret_set_in_the_env_file_lets_the_run_start(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """A release requiring AWS_SECRET_ACCESS_KEY, the key in `.env`: the S3 client takes
    `.env`'s keys, but the check read the process environment only and refused (exit 3).
    A variable no setting reads (MODEL_TOKEN) still counts only in the environment."""
    import shutil

    shutil.copytree(chain["root"] / "store" / "packages", tmp_path / "store" / "packages")
    own = {**chain["env"], "PIPELINE_STORE": str(tmp_path / "store")}
    secret = {"PIPELINE_RUN__REQUIRED_SECRETS": '["AWS_SECRET_ACCESS_KEY"]'}
    created = run_cli("release", "create", chain["package_id"], env=own | secret, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    dotenv = tmp_path / "secrets.env"
    dotenv.write_text("AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=s3cr3t-in-dotenv\n")
    out = tmp_path / "p.csv"
    predict = ("predict", str(TEST_CSV), "--release", "house-prices@v1", "-o", str(out))
    refused = run_cli(*predict, env=own, cwd=tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert "requires the secret(s) ['AWS_SECRET_ACCESS_KEY']" in refused.stderr
    done = _ok(run_cli(*predict, env=own | {"PIPELINE_ENV_FILE": str(dotenv)}, cwd=tmp_path))
    assert out.exists() and "s3cr3t" not in done.stdout + done.stderr + out.read_text()
    dotenv.write_text("MODEL_TOKEN=t0k3n\n")
    other = {"PIPELINE_RUN__REQUIRED_SECRETS": '["MODEL_TOKEN"]'}
    _ok(run_cli("release", "create", chain["package_id"], env=own | other, cwd=tmp_path))
    again = run_cli(*predict[:2], "--release", "house-prices@v2", "-o", str(tmp_path / "q.csv"),
                    env=own | {"PIPELINE_ENV_FILE": str(dotenv)}, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 3 and "['MODEL_TOKEN']" in again.stderr, again.stderr


def test_a_fresh_predict_loads_torch_with_the_collector_paused_then_frozen(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """Cold start (issue 14): a fresh `pipeline predict` imports torch and pandas with the
    cyclic collector off and freezes what they created, so no collection (the interpreter's
    last one at exit included: about 0.35 s of a one-row run) walks them again; the collector
    is on again for the run itself. The predictions are those of a warm process."""
    import subprocess
    import sys

    code = (
        "import atexit, gc, sys\nfrom pipeline.cli import main\n"
        "atexit.register(lambda: print('GC', gc.isenabled(), gc.get_freeze_count(),"
        " gc.get_stats()[2]['collections'], 'torch' in sys.modules, file=sys.stderr))\n"
        "main()\n"
    )
    out = tmp_path / "p.csv"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
        **chain["env"],
    }
    args = [str(TEST_CSV), "--release", chain["release"], "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", code, "predict", *args],
        cwd=chain["root"], env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    _, enabled, frozen, full, torch_loaded = done.stderr.strip().splitlines()[-1].split()
    assert (enabled, torch_loaded) == ("True", "True")
    assert int(frozen) > 200_000  # torch's and pandas' objects (about 320,000 here)
    assert int(full) <= 1  # full collections: 4 with the collector on while torch loads
    assert out.read_bytes() == _ok(_predict(chain, *args[:3], "-o", "-")).stdout.encode()


def test_a_globstar_in_a_workers_pattern_matches_any_depth(tmp_path: Path) -> None:
    """`predict 'nest/**/*.csv' --workers 2` read one level of folders: nest/c/d/x.csv was
    skipped without a word. ``**`` now matches any depth, as Spark's and the shell's."""
    from pipeline.predict.inputs import inputs

    for name in ("a.csv", "b/y.csv", "c/d/x.csv", "c/d/notes.txt"):
        (tmp_path / "nest" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "nest" / name).write_text("x\n1\n")
    found = inputs(tmp_path / "nest" / "**" / "*.csv")
    assert [p.relative_to(tmp_path / "nest").as_posix() for p in found] == [
        "a.csv", "b/y.csv", "c/d/x.csv",
    ]  # fmt: skip
    one_level = inputs(tmp_path / "nest" / "*" / "*.csv")
    assert [p.relative_to(tmp_path / "nest").as_posix() for p in one_level] == ["b/y.csv"]


def test_a_stop_after_rows_went_to_stdout_says_that_output_is_incomplete(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """Predictions streamed to stdout cannot be taken back: a bad row in a later chunk said only
    what was wrong with it, and Ctrl-C said "nothing was written" over thousands of rows on
    stdout. Both now say that output is incomplete; a file output (-o) still gets nothing."""
    import signal
    import subprocess
    import threading

    from tests.conftest import start_cli

    lines = TEST_CSV.read_text().splitlines()
    rows = (lines[1:] * 4)[:5000]
    cells = rows[4500].split(",")
    cells[4] = "abc"  # LotArea
    bad = tmp_path / "bad-later.csv"
    bad.write_text("\n".join([lines[0], *rows[:4500], ",".join(cells), *rows[4501:]]) + "\n")
    for where, out in (("stdout", []), ("/dev/stdout", ["-o", "/dev/stdout"])):
        later = _predict(chain, str(bad), "--release", chain["release"], *out,
                         PIPELINE_RUN__CHUNK_ROWS="100")  # fmt: skip
        assert later.returncode == 4 and len(later.stdout.splitlines()) > 1000
        assert later.stderr.splitlines()[-1].endswith(
            f"(the predictions of earlier rows went to {where} already: that output is incomplete)"
        ), where
    first = tmp_path / "bad-first.csv"
    first.write_text("\n".join([lines[0], ",".join(cells), *rows[:10]]) + "\n")
    at_once = _predict(chain, str(first), "--release", chain["release"])
    assert at_once.returncode == 4 and at_once.stdout == ""
    assert "stdout already" not in at_once.stderr
    big = tmp_path / "big.csv"
    big.write_text("\n".join([lines[0], *(lines[1:] * 140)[:200_000]]) + "\n")
    proc = start_cli("predict", str(big), "--release", chain["release"],
                     env={**chain["env"], "PIPELINE_RUN__CHUNK_ROWS": "1000"},
                     cwd=chain["root"])  # fmt: skip
    assert proc.stdout.readline()  # predictions have begun to reach stdout
    proc.send_signal(signal.SIGINT)  # the pipe is full by now: predict waits on it
    drained = threading.Thread(target=proc.stdout.read)  # so that it can write and exit
    drained.start()
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    drained.join(30)
    err = proc.stderr.read()
    assert code == 130, err[-2000:]
    assert err.splitlines()[-1] == (
        "error: predict interrupted: the predictions of earlier rows went to stdout already: "
        "that output is incomplete; run it again"
    )


def test_columns_named_but_for_case_or_spaces_are_named_in_the_error(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """A header with a space after each comma, or in upper case, was 'lacks required
    column(s) [...]: add them (empty cells are allowed)': following that advice scored every
    row with those features missing. The error names the near columns to rename."""
    lines = TEST_CSV.read_text().splitlines()[:4]
    for name, header in (("spaced.csv", lines[0].replace(",", ", ")),
                         ("upper.csv", lines[0].upper())):  # fmt: skip
        path = tmp_path / name
        path.write_text("\n".join([header, *lines[1:]]) + "\n")
        done = _predict(chain, str(path), "--release", chain["release"])
        assert done.returncode == 4, done.stderr
        message = done.stderr.splitlines()[-1]
        near = " LotArea" if name == "spaced.csv" else "LOTAREA"
        assert "lacks required column(s)" in message, message
        assert f"'{near}' to 'LotArea'" in message and "(names match exactly)" in message
        assert "add them" not in message and "add the others" not in message
    # A letter off (`LotAre`), beside a column simply absent: rename one, add the other. A
    # column the model uses is never the suggestion (BsmtFinSF1 for BsmtFinSF2).
    names = lines[0].split(",")
    at = {name: i for i, name in enumerate(names)}
    names[at["LotArea"]] = "LotAre"
    keep = [i for i, name in enumerate(names) if name != "BsmtFinSF2"]
    path = tmp_path / "misspelt.csv"
    path.write_text("\n".join(",".join(line.split(",")[i] for i in keep)
                              for line in [",".join(names), *lines[1:]]) + "\n")  # fmt: skip
    done = _predict(chain, str(path), "--release", chain["release"])
    message = done.stderr.splitlines()[-1]
    assert done.returncode == 4 and "['LotArea', 'BsmtFinSF2']" in message, message
    assert message.endswith(
        "rename 'LotAre' to 'LotArea' (names match exactly); add the others (empty cells are "
        "allowed)"
    ), message


def test_a_file_uri_is_its_path_and_an_empty_argument_is_named(
    chain: dict[str, Any], whole: tuple[Any, Path], tmp_path: Path
) -> None:
    """`predict file:///abs/rows.csv` was refused as a URI (exit 5) though it names a local
    file; `predict ''` said "input . is not a file" (an empty path is the current folder), and
    `predict s3://b/x.csv` was shown as "s3:/b/x.csv". A file:// URI is its path now, an empty
    argument is named, and another URI is shown as given."""
    out = tmp_path / "p.csv"
    _ok(_predict(chain, TEST_CSV.as_uri(), "--release", chain["release"], "-o", str(out)))
    assert out.read_bytes() == whole[1].read_bytes()
    empty = _predict(chain, "", "--release", chain["release"])  # a usage error, as for any
    assert empty.returncode == 2 and "argument SOURCE is empty" in empty.stderr, empty.stderr
    uri = _predict(chain, "s3://bucket/rows.csv", "--release", chain["release"])
    assert uri.returncode == 5 and "input s3://bucket/rows.csv looks like a URI" in uri.stderr


def test_a_file_whose_bytes_are_another_format_than_its_name_says_is_named(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """Parquet bytes in rows.csv were "not valid UTF-8 text: re-encode it as UTF-8", and JSON
    lines in rows.csv "lacks required column(s)" with every column listed: advice that could
    not help. The first bytes are checked against the name: exit 4, saying what it holds."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parquet = tmp_path / "rows.csv"
    pq.write_table(pacsv.read_csv(TEST_CSV), parquet)
    lines = tmp_path / "lines.txt"
    lines.write_text('{"Id": 1, "LotArea": 8450}\n')
    for path, holds, rename in ((parquet, "Parquet data", ".parquet"),
                                (lines, "JSON lines", ".jsonl")):  # fmt: skip
        done = _predict(chain, str(path), "--release", chain["release"])
        assert done.returncode == 4, done.stderr
        message = done.stderr.splitlines()[-1]
        assert f"holds {holds}" in message and f"rename it {rename}" in message, message


def test_text_that_is_not_utf8_is_named_by_column_and_line(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """A Latin-1 'é' in one cell was "input rows.csv is not valid UTF-8 text: re-encode it",
    with no column or line to look at (the README promised the column): both are named now."""
    lines = TEST_CSV.read_bytes().splitlines()[:6]
    header = lines[0].decode().split(",")
    cells = lines[4].split(b",")
    at = header.index("Neighborhood")
    cells[at] = b"Caf\xe9"
    lines[4] = b",".join(cells)
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = _predict(chain, str(path), "--release", chain["release"])
    assert done.returncode == 4, done.stderr
    assert "is not valid UTF-8 text (column 'Neighborhood', line 5)" in done.stderr, done.stderr


@pytest.mark.parametrize("asked", ["option", "environment"])
def test_workers_without_an_output_folder_say_so_once(chain: dict[str, Any], asked: str) -> None:
    """With workers, predictions go to a folder, never to stdout: a missing -o is refused,
    and the log stream stays on stdout (it went to stderr, as for predictions on stdout, so
    stderr held the error event and the error line)."""
    args = ["--workers", "2"] if asked == "option" else []
    extra = {"PIPELINE_RUN__WORKERS": "2"} if asked == "environment" else {}
    done = _predict(chain, str(TEST_CSV), "--release", chain["release"], *args, **extra)
    assert done.returncode == 3, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "pass -o FOLDER" in done.stderr
    assert event(done.stdout, "error")["exit_code"] == 3


def test_a_quoted_glob_without_workers_says_how_patterns_are_read(chain: dict[str, Any]) -> None:
    """`pipeline predict 'in/*.csv'` said only that the file does not exist."""
    done = _predict(chain, "in/*.csv", "--release", chain["release"], "-o", "x.csv")
    assert done.returncode == 4, done.stderr[-2000:]
    assert "input in/*.csv does not exist" in done.stderr
    assert "a pattern is read with --workers N -o FOLDER" in done.stderr


def test_a_known_category_spelt_otherwise_is_named_not_only_counted(
    chain: dict[str, Any], whole: tuple[Any, Path], tmp_path: Path
) -> None:
    """'rl' for 'RL' and ' Pave' for 'Pave' were scored as unknown categories, and only a
    count in predict.summary said so (the same count as a rare value's). A
    predict.misspelt_categories warning names each respelling and the value the model knows;
    the real test file, whose unknown values are merely unseen, gets none."""
    lines = TEST_CSV.read_text().splitlines()[:60]
    header = lines[0].split(",")
    zoning, street = header.index("MSZoning"), header.index("Street")
    rows = []
    for line in lines[1:]:
        cells = line.split(",")
        cells[zoning] = cells[zoning].lower() if cells[zoning] == "RL" else cells[zoning]
        cells[street] = " " + cells[street]
        rows.append(",".join(cells))
    path = tmp_path / "respelt.csv"
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    done = _ok(_predict(chain, str(path), "--release", chain["release"], "-o",
                        str(tmp_path / "p.csv")))  # fmt: skip
    (warned,) = [e for e in events(done.stdout) if e["event"] == "predict.misspelt_categories"]
    assert warned["level"] == "warning"
    assert warned["columns"] == {"MSZoning": {"rl": "RL"}, "Street": {" Pave": "Pave"}}, warned
    assert "'rl' for 'RL'" in warned["message"] and "fix their spelling" in warned["message"]
    assert not [e for e in events(whole[0].stdout) if e["event"] == "predict.misspelt_categories"]


def test_a_column_of_which_every_value_is_unknown_is_named(
    chain: dict[str, Any], whole: tuple[Any, Path], tmp_path: Path
) -> None:
    """Neighborhood written as the numbers 0, 1, 2 (an export that kept the codes) was scored
    as unknown in every row, and only a count in predict.summary said so. A
    predict.unknown_column warning names the column, values given and values known; the real
    test file (some values merely unseen) and a respelt column (its own warning) get none."""
    lines = TEST_CSV.read_text().splitlines()[:60]
    at = lines[0].split(",").index("Neighborhood")
    rows = []
    for k, line in enumerate(lines[1:]):
        cells = line.split(",")
        cells[at] = str(k % 3)
        rows.append(",".join(cells))
    path = tmp_path / "codes.csv"
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    done = _ok(_predict(chain, str(path), "--release", chain["release"], "-o",
                        str(tmp_path / "p.csv")))  # fmt: skip
    (warned,) = [e for e in events(done.stdout) if e["event"] == "predict.unknown_column"]
    assert warned["level"] == "warning" and warned["column"] == "Neighborhood"
    assert warned["values"] == 59
    said = warned["message"]
    assert "none of its 59 values has a weight in the model ('0', '1', '2'; it knows " in said
    assert "'Blmngtn', 'BrDale', 'BrkSide', ...): never seen in training, or seen fewer" in said
    # A missing cell among them does not hide it (it had: every row had to be unknown).
    cells4 = rows[4].split(",")
    cells4[at] = ""
    rows[4] = ",".join(cells4)
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    gap = _ok(_predict(chain, str(path), "--release", chain["release"], "-o",
                       str(tmp_path / "q.csv")))  # fmt: skip
    (warned,) = [e for e in events(gap.stdout) if e["event"] == "predict.unknown_column"]
    assert warned["values"] == 58
    assert not [e for e in events(whole[0].stdout) if e["event"] == "predict.unknown_column"]


def test_an_excel_sep_line_is_named_not_every_column_missing(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """'sep=,' on line 1 (Excel's hint) read as the header: "lacks required column(s) [...]
    and 69 more: add them", advice no one could follow."""
    path = tmp_path / "excel.csv"
    path.write_text("sep=,\n" + "\n".join(TEST_CSV.read_text().splitlines()[:5]) + "\n")
    done = _predict(chain, str(path), "--release", chain["release"])
    assert done.returncode == 4, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "starts with Excel's 'sep=' line, which is not the header: remove line 1 (Excel writes "
            "it to name the delimiter)"
        )
    ), done.stderr


def test_a_cell_that_is_no_number_says_what_it_looks_like(
    chain: dict[str, Any], tmp_path: Path
) -> None:
    """'8,450' in LotArea was "expected a finite number", where training names the thousands
    separator; a date and another tool's missing marker are named too."""
    from pipeline.data.spellings import number_hint as _number_hint

    lines = TEST_CSV.read_text().splitlines()[:3]
    at = lines[0].split(",").index("LotArea")
    for value, says in (('"8,450"', "(a formatted number: write it plainly"),
                        ("2003-01-15", "(a date: the model takes numbers here)")):  # fmt: skip
        row = lines[1].split(",")
        row[at] = value
        path = tmp_path / "odd.csv"
        path.write_text("\n".join([lines[0], ",".join(row), lines[2]]) + "\n")
        done = _predict(chain, str(path), "--release", chain["release"])
        assert done.returncode == 4 and f"expected a finite number {says}" in done.stderr, (
            done.stderr
        )
    # A model trained with PIPELINE_DATA__MISSING_VALUES='["?", ""]' (Titanic's) and given NA.
    assert "'NA' is not one of this model's missing markers" in _number_hint("NA")
    assert _number_hint("abc") == "" and _number_hint(3) == ""


def test_a_file_without_its_header_line_is_told_so(chain: dict[str, Any]) -> None:
    """A CSV exported without a header (its first line a row of values) was "lacks required
    column(s) ['MSSubClass', ...] and 69 more": it says the first line holds values and that
    the header goes on line 1. A file of another table, with a header, keeps the list."""
    headless = chain["root"] / "headless.csv"
    headless.write_text("\n".join(TEST_CSV.read_text().splitlines()[1:6]) + "\n")
    done = _predict(chain, str(headless), "--release", chain["release"])
    assert done.returncode == 4, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert "has no header line: its first line holds values ('1461', '20', 'RH', '80', ...)" in line
    other = chain["root"] / "other.csv"
    other.write_text("region,2019,2020,2021\nnorth,1,2,3\n")  # another table's real header
    done = _predict(chain, str(other), "--release", chain["release"])
    assert done.returncode == 4 and "lacks required column(s)" in done.stderr, done.stderr


def test_a_rename_hint_keeps_the_count_of_missing_columns(chain: dict[str, Any]) -> None:
    """12 columns missing, one of them misspelt: the rename hint replaced the list's "and 2
    more" with nothing, so the list read as the whole of it."""
    import pandas as pd

    frame = pd.read_csv(TEST_CSV, nrows=3, keep_default_na=False)
    dropped = [c for c in frame.columns if c not in ("Id", "LotArea")][:11]
    short = chain["root"] / "short.csv"
    frame.drop(columns=dropped).rename(columns={"LotArea": "lotarea"}).to_csv(short, index=False)
    done = _predict(chain, str(short), "--release", chain["release"])
    assert done.returncode == 4, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "and 2 more: the model was trained on 79 columns; rename 'lotarea' to 'LotArea'" in (
        line
    ), line
