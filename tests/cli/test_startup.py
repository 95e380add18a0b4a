"""Fast start: the CLI prints help and its version without importing the heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli

PROBE = """
import json, sys
from typer.testing import CliRunner
from pipeline.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in ("torch", "pandas", "pyarrow", "numpy", "kaggle", "ray", "matplotlib")
               if m in sys.modules)
print(json.dumps({"code": result.exit_code, "heavy": heavy, "out": result.output[:200]}))
"""


def _probe(*args: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_does_not_import_torch_or_pandas() -> None:
    """`pipeline --help` (and each command's help) leaves torch, pandas, Ray and friends
    unimported."""
    commands = ["train", "evaluate", "tune", "config", "data", "package", "release", "predict",
                "serve", "report", "diff"]  # fmt: skip
    for args in [["--help"], ["tune", "show", "--help"]] + [[name, "--help"] for name in commands]:
        probe = _probe(*args)
        assert probe["code"] == 0
        assert "Usage" in probe["out"]
        assert probe["heavy"] == [], args


def test_version_and_module_entry_point() -> None:
    """`python -m pipeline --version` prints the package version."""
    from pipeline import __version__

    done = run_cli("--version", env={}, fresh=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"pipeline {__version__}"


def test_help_names_the_environment_variables() -> None:
    """Help text points users at the PIPELINE_* variables that configure each stage."""
    done = run_cli("train", "--help", env={"COLUMNS": "200"})
    assert done.returncode == 0
    assert "PIPELINE_DATA__SOURCE" in done.stdout and "PIPELINE_TRAIN__DEVICE" in done.stdout


def test_a_flag_in_help_shows_no_value_placeholder() -> None:
    """typer showed `--resume <bool>`, `--all <bool>`, `--help <bool>`: read as options that
    take a value (`diff --all true` then took "true" as build A). Options that take one keep
    theirs."""
    for args in (["train", "--help"], ["diff", "--help"], ["--help"], ["tune", "--help"]):
        done = run_cli(*args, env={"COLUMNS": "200"})
        assert done.returncode == 0 and "<bool>" not in done.stdout, (args, done.stdout)
    assert "<int>" in run_cli("train", "--help", env={"COLUMNS": "200"}).stdout


def test_help_paragraphs_are_wrapped_by_the_terminal_not_the_source() -> None:
    """Docstrings are wrapped at 95 columns in the source; help shows each paragraph as one
    line that the terminal wraps (rich kept the source's breaks, so an 80-column terminal got
    lines of a word or two between full ones)."""
    for args, text in (
        (["package", "--help"], "PIPELINE_MODEL__VERSION; a version that is already packaged"),
        (["diff", "--help"], "inputs (data, split, seed, code), settings"),
        (["--help"], "identity, inputs (data, split, seed, code), settings, validation"),
        (["release", "create", "--help"], "Release PACKAGE with the PIPELINE_RUN__* settings"),
    ):
        done = run_cli(*args, env={"COLUMNS": "400"})
        assert done.returncode == 0, args
        assert text in done.stdout, (args, done.stdout)


def test_predict_refuses_a_missing_release_or_a_damaged_package_before_loading_torch(
    tmp_path: Path,
) -> None:
    """Mistakes that need no model are refused before torch and pandas load: a user waits a
    fraction of a second for the one line, not for an interpreter full of tensors."""
    rows = tmp_path / "rows.csv"
    rows.write_text("a\n1\n")
    damaged = tmp_path / "model.tar.gz"
    damaged.write_bytes(b"\x1f\x8b" + b"not a package" * 10)
    env = {"PIPELINE_STORE": str(tmp_path / "store"), "PIPELINE_LOG_FORMAT": "json"}
    for args, code in (([], 3), (["--package", str(damaged)], 7), (["--release", "x@v1"], 8)):
        probe = _probe("predict", str(rows), "-o", str(tmp_path / "out.csv"), *args, env=env)
        assert probe["code"] == code, (args, probe)
        assert not {"torch", "pandas"} & set(probe["heavy"]), (args, probe)


def test_train_refuses_a_bad_dataset_before_loading_torch(tmp_path: Path) -> None:
    """A dataset that cannot train (here: no target column) is refused after reading it and
    before torch loads; asking for CUDA is checked first, and that needs torch."""
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n3,4\n")
    env = {"PIPELINE_STORE": str(tmp_path / "store"), "PIPELINE_LOG_FORMAT": "json",
           "PIPELINE_DATA__SOURCE": str(rows), "PIPELINE_DATA__TARGET": "price"}  # fmt: skip
    probe = _probe("train", env=env)
    assert probe["code"] == 4 and "torch" not in probe["heavy"], probe
    import torch

    probe = _probe("train", "--device", "cuda", env=env)
    assert probe["code"] == (4 if torch.cuda.is_available() else 3), probe
    assert "torch" in probe["heavy"], probe


def test_evaluate_refuses_a_missing_build_before_loading_torch(tmp_path: Path) -> None:
    """No build to evaluate is said at once (exit 8), before torch loads."""
    env = {"PIPELINE_STORE": str(tmp_path / "store"), "PIPELINE_LOG_FORMAT": "json"}
    for args in ([], ["0123abcd"]):
        probe = _probe("evaluate", *args, env=env)
        assert probe["code"] == 8 and "torch" not in probe["heavy"], probe


def test_a_stop_while_the_cli_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """SIGTERM or Ctrl-C in the quarter second the CLI takes to import typer and its commands
    and to parse the command line: SIGTERM killed the process with no word (exit 143), Ctrl-C
    printed the traceback of the import it broke, or exited 130 without a word (typer's
    answer while it parsed). Each is now the CLI's stop: one line, exit 130, nothing written."""
    import signal
    import time

    entry = (
        "import sys; sys.argv = ['pipeline', 'train']; print('ready', flush=True); "
        "from pipeline.__main__ import main; main()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_STORE"] = str(tmp_path / "store")
    for signum in (signal.SIGTERM, signal.SIGINT):
        for delay in (0.05, 0.08, 0.12):
            proc = subprocess.Popen(
                [sys.executable, "-c", entry], env=env, cwd=tmp_path, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(delay)
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=60)
            assert (proc.returncode, err.count("\n")) == (130, 1), (signum, delay, err[-2000:])
            assert "Traceback" not in err and "nothing was written" in err, err
            assert not (tmp_path / "store" / "builds").exists()
