"""Outputs the user names that are not plain files: streams, devices and links.

Every output (`predict -o`, `report -o`, `diff --html`, `--id-file`, `tune --preset-out`) is
written to a temporary file and renamed into place. Renamed onto a stream, that replaced it:
`predict -o /dev/stdout` run as root turned the link /dev/stdout into a regular file and printed
nothing, and `report -o /dev/full` reported success after replacing the device node. A FIFO
stands in for a device here (no root needed, and a regression cannot damage the machine's
/dev): renamed over, it stops being a FIFO and its reader sees nothing.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import _process_env, event, run_cli
from tests.test_predict import TEST_CSV, _ok, chain, whole  # noqa: F401 (fixtures)


class FifoReader:
    """A FIFO at ``path`` and a thread reading everything written to it, until the writer
    closes it."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.data = path, b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with self.path.open("rb") as fh:  # blocks until a writer opens it
            self.data = fh.read()

    def result(self) -> bytes:
        """What was read; the FIFO must still be one (it was not renamed over)."""
        assert stat.S_ISFIFO(self.path.lstat().st_mode), "the FIFO was replaced by a file"
        if self.thread.is_alive():  # nobody opened it: unblock the reader, then fail below
            with self.path.open("wb"):
                pass
        self.thread.join(10)
        return self.data


def test_predict_into_a_fifo_streams_the_predictions_through_it(
    chain: dict[str, Any],  # noqa: F811
    whole: tuple[Any, Path],  # noqa: F811
) -> None:
    """`predict -o FIFO`: the same bytes as a file, through the FIFO, which stays a FIFO."""
    fifo = FifoReader(chain["root"] / "predictions.fifo")
    done = run_cli("predict", str(TEST_CSV), "--release", chain["release"], "-o", str(fifo.path),
                   env=chain["env"], cwd=chain["root"])  # fmt: skip
    _ok(done)
    assert fifo.result() == whole[1].read_bytes()


def test_predict_to_its_own_stdout_redirected_to_a_file_loses_nothing(
    chain: dict[str, Any],  # noqa: F811
    whole: tuple[Any, Path],  # noqa: F811
) -> None:
    """`predict -o /dev/stdout > file`: opened a second time, the output had an offset of its
    own, and the events written afterwards overwrote the predictions; shared, the events were
    written between them (a CSV that pandas could not read). The predictions alone go there
    now, the events to stderr, as with `-o -`. The test names /proc/self/fd/1, where
    /dev/stdout leads: the same path through the code, and one a regression cannot turn into
    a regular file."""
    redirected = chain["root"] / "redirected.txt"
    with redirected.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "predict", str(TEST_CSV), "--release",
             chain["release"], "-o", "/proc/self/fd/1"],
            env=_process_env(chain["env"]), cwd=chain["root"], stdout=out,
            stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert redirected.read_bytes() == whole[1].read_bytes()
    assert event(done.stderr, "predict.summary")["rows"] == 1459


def test_predict_through_a_link_replaces_its_target_and_keeps_the_link(
    chain: dict[str, Any],  # noqa: F811
    whole: tuple[Any, Path],  # noqa: F811
) -> None:
    """`-o link.csv` (a link to a file): the link stays, its target holds the predictions."""
    root = chain["root"]
    target = root / "kept" / "real.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    (root / "link.csv").symlink_to(target)
    _ok(run_cli("predict", str(TEST_CSV), "--release", chain["release"], "-o", "link.csv",
                env=chain["env"], cwd=root))  # fmt: skip
    assert (root / "link.csv").is_symlink()
    assert target.read_bytes() == whole[1].read_bytes()


@pytest.mark.parametrize("option", ["-o", "--id-file"])
def test_an_output_under_a_file_is_refused_at_once_naming_it(
    chain: dict[str, Any],  # noqa: F811
    option: str,
) -> None:
    """`-o notes.txt/sub/p.csv`, notes.txt a file: exit 3 before any work, naming notes.txt (it
    was exit 9 at the end, naming a hidden temporary file beside the output)."""
    root = chain["root"]
    (root / "notes.txt").write_text("x\n")
    command = ["data", "fetch"] if option == "--id-file" else ["predict", str(TEST_CSV)]
    done = run_cli(*command, option, "notes.txt/sub/p.csv", env=chain["env"], cwd=root)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {option} notes.txt/sub/p.csv")
    assert "notes.txt is a file, not a folder" in done.stderr and ".tmp" not in done.stderr


@pytest.mark.parametrize(
    ("command", "option", "uri"),
    [(["report"], "-o", "s3://bucket/r.html"), (["diff", "a", "b"], "--html", "s3://b/d.html"),
     (["package"], "--id-file", "s3://bucket/pk.id"), (["tune"], "--preset-out", "S3://b/t.toml"),
     (["report"], "-o", "file:///tmp/r.html"), (["predict", "rows.csv"], "-o", "gs://b/p.csv")],
)  # fmt: skip
def test_an_output_named_by_a_uri_is_refused_not_written_to_a_local_folder(
    command: list[str], option: str, uri: str, tmp_path: Path
) -> None:
    """`report -o s3://bucket/r.html` wrote ./s3:/bucket/r.html and said so, exit 0: the user
    believed the report was in the bucket. Now exit 3 before any work, nothing written."""
    env = {"PIPELINE_STORE": str(tmp_path / "store"), "PIPELINE_ENV_FILE": os.devnull}
    done = run_cli(*command, option, uri, env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    scheme = uri.partition(":")[0]
    assert line.startswith("error: ") and f" {scheme}://...: outputs are written to local" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["train"], ["data", "fetch"], ["tune"]])
def test_an_id_file_naming_the_dataset_is_refused_and_the_data_kept(
    command: list[str], tmp_path: Path
) -> None:
    """`train --id-file data.csv` (the file PIPELINE_DATA__SOURCE names, spelt another way)
    replaced the user's dataset with a 65-byte id and exited 0. Now exit 3 before any work,
    and the data is as it was."""
    data = tmp_path / "data.csv"
    data.write_bytes(TEST_CSV.read_bytes())
    env = {"PIPELINE_STORE": str(tmp_path / "store"), "PIPELINE_DATA__SOURCE": "data.csv",
           "PIPELINE_ENV_FILE": os.devnull, "RAY_ADDRESS": ""}  # fmt: skip
    option = "--preset-out" if command == ["tune"] else "--id-file"
    done = run_cli(*command, option, f"./{data.name}", env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line == (f"error: {option} {data.name} is the dataset PIPELINE_DATA__SOURCE names: "
                    "it would be overwritten; choose another path")  # fmt: skip
    assert data.read_bytes() == TEST_CSV.read_bytes()
    assert not (tmp_path / "store" / "builds").exists()


@pytest.mark.parametrize("command", ["report", "id-file"])
def test_report_and_id_file_into_a_fifo(
    chain: dict[str, Any],  # noqa: F811
    command: str,
) -> None:
    """`report -o FIFO` and `package --id-file FIFO` write through the FIFO."""
    fifo = FifoReader(chain["root"] / f"{command}-fifo")
    if command == "report":
        args = ["report", "-o", str(fifo.path)]
    else:
        args = ["package", "--id-file", str(fifo.path)]
    done = run_cli(*args, env=chain["env"], cwd=chain["root"])
    _ok(done)
    data = fifo.result()
    if command == "report":
        assert data.startswith(b"<!DOCTYPE html>") and data.rstrip().endswith(b"</html>")
    else:
        assert data.decode().strip() == chain["package_id"]


def test_a_reader_that_stops_early_ends_predict_with_141_and_one_line(
    chain: dict[str, Any],  # noqa: F811
) -> None:
    """`pipeline predict big.csv | head -1`: exit 141 (128 + SIGPIPE, as a Unix tool cut off
    by its reader) and one line saying the output is cut short. It was exit 9 with "cannot
    write stdout: Broken pipe; choose another -o path"."""
    lines = TEST_CSV.read_text().splitlines()
    big = chain["root"] / "big.csv"
    big.write_text("\n".join([lines[0], *(lines[1:] * 10)]) + "\n")  # 14,590 rows, 300+ KB out
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "predict", str(big), "--release", chain["release"]],
        env=_process_env(chain["env"]), cwd=chain["root"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b'"Id","prediction"'  # the release's id
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: stdout was closed before every prediction was written (its reader, such as "
        "`head`, stopped reading): the output is cut short"
    ]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["release", "--help"]])
def test_help_read_by_head_ends_with_141_not_1(args: list[str], tmp_path: Path) -> None:
    """`pipeline --help | head -1` or `| true` (a help page is printed by rich, which exits 1
    after pointing stdout at /dev/null when its reader goes away): 141 as for every other
    command, not 1, which this tool's exit codes reserve for a bug (`set -o pipefail` scripts
    stop on it). A help page printed in full, to /dev/null or a pipe read to the end, exits 0."""
    env = _process_env({"PIPELINE_ENV_FILE": os.devnull})
    argv = [sys.executable, "-m", "pipeline", *args]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # before the page is written (`| true`): no race with a short page
    assert proc.wait(timeout=60) == 141
    page = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert page.returncode == 0 and b"Usage" in page.stdout
    with open(os.devnull, "wb") as null:
        assert subprocess.run(argv, env=env, cwd=tmp_path, stdout=null, timeout=60).returncode == 0
