"""Usage errors (a bad option value, an unknown option or command, a missing argument): one line
on stderr naming the option and where to look, exit 2, at every depth of sub-commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import run_cli

CASES = [
    (["predict", "rows.csv", "--workers", "two"], "'--workers'", "valid integer"),
    (["tune", "--trials", "two"], "'--trials'", "valid integer"),
    (["tune", "show", "--nope"], "--nope", "no such option"),
    (["trian"], "'trian'", "did you mean 'train'"),
    (["release", "promote"], "'promote'", "no such command"),
    (["predict"], "'SOURCE'", "missing argument"),
    (["predict", "-o"], "'-o'", "requires an argument"),
]


@pytest.mark.parametrize(("args", "names", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_usage_error_is_one_line_and_exit_2(
    args: list[str], names: str, says: str, tmp_path: object
) -> None:
    """It was typer's usage banner and a framed box of 5 lines or more."""
    done = run_cli(*args, env={"PIPELINE_STORE": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("error: ") and names in line and says in line.lower(), line
    assert f" {args[0]}" in line or args[0] == "trian", line  # the command it is about
    assert "-h` lists its usage" in line and "╭" not in line and done.stdout == ""


@pytest.mark.parametrize(
    ("args", "command"),
    [(["predict", "-o"], "predict"), (["predict", "rows.csv", "--output"], "predict"),
     (["train", "--device"], "train"), (["release", "list", "--name"], "release list")],
)  # fmt: skip
def test_an_option_without_its_value_names_its_command(
    args: list[str], command: str, tmp_path: object
) -> None:
    """click's parser raises "requires an argument" without the command's context: the line
    named `pipeline` and sent the user to `pipeline -h`, which lists no such option."""
    done = run_cli(*args, env={"PIPELINE_STORE": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert f"pipeline {command}: option '{args[-1]}' requires an argument" in line, line
    assert line.endswith(f"pipeline {command} -h` lists its usage)"), line


@pytest.mark.parametrize(
    ("args", "named"),
    [(["evaluate", ""], "argument BUILD"), (["diff", "", "abcd"], "argument A"),
     (["report", " "], "argument REF"), (["package", ""], "argument BUILD"),
     (["release", "create", ""], "argument PACKAGE"), (["tune", "show", ""], "argument REF"),
     (["predict", "rows.csv", ""], "argument SOURCE"),
     (["predict", "--release", "", "rows.csv"], "option --release"),
     (["serve", "--release", ""], "option --release"),
     (["train", "--id-file", ""], "option --id-file"),
     (["train", "--id-file="], "option --id-file"),
     (["predict", "rows.csv", "-o", " "], "option --output"),
     (["report", "-o", ""], "option --output"), (["diff", "a", "b", "--html", ""], "option --html"),
     (["tune", "--preset-out", ""], "option --preset-out"),
     (["train", "--workers", ""], "option --workers"), (["tune", "--trials="], "option --trials")],
)  # fmt: skip
def test_an_empty_argument_is_a_usage_error_not_its_default(
    args: list[str], named: str, tmp_path: object
) -> None:
    """`pipeline evaluate "$(cat build.id)"` with an empty id file evaluated the latest build
    (its gates passed in CI on a build nobody meant); `--release ""` fell back to
    PIPELINE_RELEASE; a path option given empty (`--id-file ""`) was read as the current folder
    ("file '' is a directory"; `predict -o ''` wrote there). Now exit 2 naming the argument,
    before any work."""
    env = {"PIPELINE_STORE": str(tmp_path), "PIPELINE_RELEASE": "house-prices@current"}
    done = run_cli(*args, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.splitlines()
    assert f"{named} is empty" in line and "give a value" in line, line
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "setting", "option"),
    [(["train", "--workers", "0"], "train.workers", "--workers"),
     (["tune", "--trials", "0"], "tune.trials", "--trials"),
     (["tune", "-n", "-3"], "tune.trials", "--trials"),
     (["predict", "rows.csv", "--workers", "0", "-o", "out"], "run.workers", "--workers")],
)  # fmt: skip
def test_an_option_value_out_of_its_settings_range_is_exit_3_as_the_setting(
    args: list[str], setting: str, option: str, tmp_path: object
) -> None:
    """The README's rule: a value the option's setting refuses is exit 3, as the setting
    would be (PIPELINE_TRAIN__WORKERS=0 was 3, `--workers 0` was 2, and `evaluate --folds 1`
    was 3)."""
    done = run_cli(*args, env={"PIPELINE_STORE": str(tmp_path)})
    assert done.returncode == 3, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: invalid setting {setting} from option {option}: "), line
    assert "greater than or equal to 1" in line
    assert line.endswith("; use 1 or more"), line  # what to do, not only what was expected


@pytest.mark.parametrize("args", [[], ["release"], ["data"], ["config"]])
def test_a_group_alone_shows_its_help_on_stderr(args: list[str]) -> None:
    """`pipeline release` with no sub-command shows its help page, with exit 2 as a usage
    error: on stderr, where every usage error goes (it was 2 KB of help on stdout, the event
    stream a CI job parses); `--help` asked for is on stdout, exit 0."""
    done = run_cli(*args, env={})
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert "Usage: pipeline" in done.stderr and "error:" not in done.stderr
    asked = run_cli(*args, "--help", env={})
    assert asked.returncode == 0 and "Usage: pipeline" in asked.stdout and asked.stderr == ""


@pytest.mark.parametrize(
    "args",
    [["train", "--id-file"], ["package", "b", "--id-file"], ["release", "create", "p", "--id-file"],
     ["data", "fetch", "--id-file"], ["tune", "--preset-out"], ["diff", "a", "b", "--html"],
     ["report", "-o"]],
)  # fmt: skip
def test_an_output_that_is_a_folder_is_exit_3_whichever_option_names_it(
    args: list[str], tmp_path: Path
) -> None:
    """`--id-file FOLDER` and `diff --html FOLDER` were click's usage error (exit 2, "file
    'out' is a directory") where `report -o FOLDER` was exit 3 naming the fix: one rule now,
    checked before any work."""
    out = tmp_path / ("out.toml" if args[-1] == "--preset-out" else "out")  # a preset's suffix
    out.mkdir()
    done = run_cli(*args, str(out), env={"PIPELINE_STORE": str(tmp_path / "s")})
    assert done.returncode == 3, (done.stdout, done.stderr)
    # diff's log events go to stderr (its document is stdout): the error line is the last
    line = done.stderr.splitlines()[-1]
    assert line.startswith("error: ") and f"{args[-1]} {out} is a folder" in line, line
