"""`pipeline config show` and the unknown-variable check every command makes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, events, run_cli, store_files

from pipeline.settings import leaves

SECRET = "kk-SECRET-123456"


def shown(result: Any) -> dict[str, Any]:
    """The JSON document `config show` printed (stdout may also carry JSON log events)."""
    docs = [e for e in events(result.stdout) if "settings" in e]
    assert len(docs) == 1, result.stdout
    return docs[0]


def rows(result: Any) -> dict[str, dict[str, Any]]:
    """The shown settings keyed by env name."""
    return {row["env"]: row for row in shown(result)["settings"]}


def test_json_lists_every_setting_with_value_origin_and_env(cli: Callable[..., Any]) -> None:
    """The JSON output has one row per setting with its dotted name, env name, value and origin."""
    result = cli("config", "show", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = shown(result)
    assert doc["unknown"] == []
    assert doc["preset"] is None
    assert doc["env_file"] is None
    expected = [(".".join(leaf.path), leaf.env) for leaf in leaves()]
    assert [(r["setting"], r["env"]) for r in doc["settings"]] == expected
    by_env = rows(result)
    assert by_env["PIPELINE_DATA__TARGET"]["value"] == "SalePrice"
    assert by_env["PIPELINE_DATA__TARGET"]["origin"] == "default"
    assert by_env["PIPELINE_DATA__DROP"]["value"] == ["Id"]
    assert result.stderr == ""


def test_a_value_set_by_the_platforms_port_says_so(cli: Callable[..., Any]) -> None:
    """PORT=9999 sets serve.port: config show credited PIPELINE_SERVE__PORT, which the user
    never set. The row says which variable set it (JSON `from`, the table `(from PORT)`)."""
    result = cli("config", "show", "--format", "json", env={"PORT": "9999"})
    port = rows(result)["PIPELINE_SERVE__PORT"]
    assert (port["value"], port["origin"], port["from"]) == (9999, "env", "PORT")
    assert all("from" not in r for r in shown(result)["settings"] if r["env"] != port["env"])
    table = cli("config", "show", "--format", "table", env={"PORT": "9999"}).stdout
    assert any(line.endswith("9999  (from PORT)") for line in table.splitlines()), table
    own = cli("config", "show", "--format", "json", env={"PIPELINE_SERVE__PORT": "9998"})
    assert "from" not in rows(own)["PIPELINE_SERVE__PORT"]


def test_origins_env_preset_and_dotenv(cli: Callable[..., Any], tmp_path: Path) -> None:
    """Each value says where it came from: env, preset or .env."""
    env_file = tmp_path / "custom.env"
    env_file.write_text("PIPELINE_SEED=5\nPIPELINE_DATA__TASK=multiclass\n")
    result = cli(
        "config",
        "show",
        "--format",
        "json",
        env={
            "PIPELINE_PRESET": "titanic",
            "PIPELINE_ENV_FILE": str(env_file),
            "PIPELINE_DATA__TASK": "regression",
        },
    )
    assert result.exit_code == 0, result.output
    doc = shown(result)
    assert doc["preset"] == str(REPO / "config" / "titanic.toml")
    assert doc["env_file"] == str(env_file)
    by_env = rows(result)
    assert by_env["PIPELINE_DATA__TARGET"] == {
        "setting": "data.target",
        "env": "PIPELINE_DATA__TARGET",
        "value": "survived",
        "origin": "preset",
    }
    assert (by_env["PIPELINE_SEED"]["value"], by_env["PIPELINE_SEED"]["origin"]) == (5, ".env")
    assert by_env["PIPELINE_DATA__TASK"]["value"] == "regression"
    assert by_env["PIPELINE_DATA__TASK"]["origin"] == "env"
    assert by_env["PIPELINE_LOG_FORMAT"]["origin"] == "env"  # set by the cli fixture
    assert by_env["PIPELINE_TRAIN__PATIENCE"]["origin"] == "default"


def test_secret_is_redacted_everywhere(cli: Callable[..., Any]) -> None:
    """KAGGLE_KEY is shown redacted and its value appears nowhere in stdout or stderr."""
    result = cli(
        "config",
        "show",
        "--format",
        "json",
        env={"KAGGLE_KEY": SECRET, "KAGGLE_API_TOKEN": SECRET + "-tok"},
    )
    assert result.exit_code == 0, result.output
    by_env = rows(result)
    assert by_env["KAGGLE_KEY"]["value"] == "**********"
    assert by_env["KAGGLE_KEY"]["origin"] == "env"
    assert by_env["KAGGLE_API_TOKEN"]["value"] == "**********"
    assert by_env["KAGGLE_USERNAME"]["value"] is None
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr


def test_secret_is_redacted_in_table(cli: Callable[..., Any]) -> None:
    """The table format redacts the secret too and lists each env name with its origin."""
    result = cli(
        "config", "show", "--format", "table", env={"KAGGLE_KEY": SECRET, "PIPELINE_SEED": "3"}
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert lines["KAGGLE_KEY"][1:] == ["env", '"**********"']
    assert lines["PIPELINE_SEED"][1:] == ["env", "3"]
    assert lines["PIPELINE_DATA__TARGET"][1:] == ["default", '"SalePrice"']
    assert {leaf.env for leaf in leaves()} <= set(lines)


def test_secret_is_masked_when_the_command_fails(cli: Callable[..., Any]) -> None:
    """A failing `config show` (unknown variable) still never prints the secret's value."""
    result = cli(
        "config",
        "show",
        "--format",
        "json",
        env={"KAGGLE_KEY": SECRET, "PIPELINE_SEEED": "1"},
    )
    assert result.exit_code == 3
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("PIPELINE_SEEED", "PIPELINE_SEED"),
        ("PIPELINE_DATA__TRAGET", "PIPELINE_DATA__TARGET"),
    ],
)
def test_unknown_variable_is_listed_and_exits_3(
    cli: Callable[..., Any], name: str, meant: str
) -> None:
    """An unknown PIPELINE_ variable is listed, then exits 3 with one did-you-mean error line."""
    result = cli("config", "show", "--format", "json", env={name: "1"})
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    # stdout is the document alone, which `| jq` reads (an error event followed it there).
    assert json.loads(result.stdout)["unknown"] == [name]
    err_lines = result.stderr.splitlines()
    assert len(err_lines) == 1, result.stderr
    assert err_lines[0].startswith("error: ")
    assert name in err_lines[0]
    assert f"did you mean {meant}?" in err_lines[0]
    table = cli("config", "show", "--format", "table", env={name: "1"})
    assert table.exit_code == 3 and table.stdout.splitlines()[0].split() == [
        "VARIABLE", "ORIGIN", "VALUE"
    ]  # fmt: skip
    assert [line.split()[:2] for line in table.stdout.splitlines() if name in line] == [
        [name, "unknown"]
    ]


def test_config_show_in_a_subprocess(tmp_path: Path) -> None:
    """The installed module prints parseable JSON and exits 0 in a real process."""
    proc = run_cli(
        "config",
        "show",
        "--format",
        "json",
        env={
            "PIPELINE_ENV_FILE": os.devnull,
            "PIPELINE_CONFIG_DIR": str(REPO / "config"),
            "PIPELINE_PRESET": "titanic",
            "PIPELINE_STORE": str(tmp_path / "store"),
            "PIPELINE_LOG_FORMAT": "json",
            "KAGGLE_KEY": SECRET,
        },
        cwd=tmp_path,
        timeout=60,
        fresh=True,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    by_env = {row["env"]: row for row in doc["settings"]}
    assert by_env["PIPELINE_DATA__TARGET"]["origin"] == "preset"
    assert by_env["PIPELINE_STORE"]["value"] == str(tmp_path / "store")
    assert SECRET not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("typo", ["PIPELINE_MAX_EPOCHS", "PIPELINE_DATA__TRAGET"])
def test_train_with_unknown_variable_fails_before_doing_anything(
    cli: Callable[..., Any], store: Path, tmp_path: Path, typo: str
) -> None:
    """`pipeline train` refuses an unknown variable with exit 3 before reading data or writing."""
    data = tmp_path / "tiny.csv"
    data.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(30)))
    result = cli(
        "train",
        env={
            "PIPELINE_DATA__SOURCE": str(data),
            "PIPELINE_DATA__TARGET": "y",
            "PIPELINE_DATA__TASK": "regression",
            "PIPELINE_DATA__DROP": "[]",
            "PIPELINE_MODEL__HIDDEN": "[4]",
            "PIPELINE_TRAIN__MAX_EPOCHS": "1",
            typo: "1",
        },
    )
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert store_files(store) == []
    assert [e["event"] for e in events(result.stdout)] == ["error"]
    assert result.stderr.startswith("error: unknown setting " + typo)


def test_an_unknown_format_is_a_usage_error_not_json(cli: Callable[..., Any]) -> None:
    """`--format yaml` printed JSON and exited 0: now exit 2 naming the choices."""
    result = cli("config", "show", "--format", "yaml")
    assert result.exit_code == 2
    assert "'table'" in result.output and "'json'" in result.output
    assert not result.stdout.startswith("{")
