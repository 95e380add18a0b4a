"""Settings refuse absurd or conflicting values at load, naming the setting and its source."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import events, run_cli, store_files

from pipeline.errors import ConfigError, IntegrityError
from pipeline.settings import Loaded, load


@pytest.fixture
def no_env(tmp_path: Path) -> Path:
    """A .env path that does not exist, so only the layers a test passes are read."""
    return tmp_path / "absent.env"


def refused(environ: Mapping[str, str], env_file: Path, **kw: Any) -> str:
    """The message of the ConfigError (exit 3) that loading these settings raises."""
    with pytest.raises(ConfigError) as err:
        load(environ, env_file=env_file, **kw)
    assert err.value.exit_code == 3
    return err.value.message


def loaded(environ: Mapping[str, str], env_file: Path) -> Loaded:
    """Settings loaded from ``environ`` and ``env_file`` alone."""
    return load(environ, env_file=env_file)


def tiny_csv(tmp_path: Path) -> Path:
    """A 40-row regression CSV that trains in a moment."""
    path = tmp_path / "tiny.csv"
    path.write_text("x,y\n" + "".join(f"{i},{3 * i + 1}\n" for i in range(40)))
    return path


# --- item 11: absurd numbers are refused at load time ---------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("PIPELINE_MODEL__HIDDEN", "[0]", "greater than or equal to 1"),
        ("PIPELINE_MODEL__HIDDEN", "[-1]", "greater than or equal to 1"),
        ("PIPELINE_MODEL__HIDDEN", "[200000,200000]", "less than or equal to 8192"),
        ("PIPELINE_MODEL__HIDDEN", "[8192,8192,8192]", "weights between hidden layers"),
        ("PIPELINE_MODEL__HIDDEN", json.dumps([8] * 17), "at most 16"),
        ("PIPELINE_TRAIN__THREADS", "100000", "less than or equal to 256"),
        ("PIPELINE_SERVE__THREADS", "100000", "less than or equal to 256"),
        ("PIPELINE_SERVE__CONCURRENCY", "100000", "less than or equal to 256"),
        ("PIPELINE_FEATURES__MAX_EMBEDDING_DIM", "1000000", "less than or equal to 1024"),
        ("PIPELINE_RUN__CHUNK_ROWS", "100000000000000000000", "less than or equal to 100000000"),
        ("PIPELINE_HTTP_TIMEOUT", "1e12", "less than or equal to 86400"),
        ("PIPELINE_KAGGLE_TIMEOUT", "1e12", "less than or equal to 86400"),
        ("PIPELINE_SERVE__GRACEFUL_TIMEOUT", "100000000000", "less than or equal to 86400"),
        ("PIPELINE_SERVE__DRAIN_SECONDS", "1e300", "less than or equal to 86400"),
        ("PIPELINE_TRAIN__LEARNING_RATE", "inf", "finite number"),
        ("PIPELINE_TRAIN__WEIGHT_DECAY", "inf", "finite number"),
        ("PIPELINE_FEATURES__SKEW_THRESHOLD", "inf", "finite number"),
        ("PIPELINE_GATES__MIN_R2", "nan", "finite number"),
        # An id column named as an output column was overwritten by it: the ids were lost.
        ("PIPELINE_RUN__ID_COLUMN", "prediction", "the id would be lost"),
        ("PIPELINE_RUN__ID_COLUMN", "probability_1", "the id would be lost"),
        # An empty id column was recorded in a release ("id_column": ""), which no file has.
        ("PIPELINE_RUN__ID_COLUMN", "", "is empty: name the input column"),
        # A space before the store's path opened a folder ' .', and messages hid the space.
        ("PIPELINE_STORE", " ./store", "starts or ends with a space"),
        # An empty source was read as the working folder: "dataset . is not a file" (exit 4).
        ("PIPELINE_DATA__SOURCE", "", "at least 1 character"),
    ],
)
def test_absurd_values_are_refused_when_settings_load(
    no_env: Path, name: str, value: str, said: str
) -> None:
    """Widths of 0, -1 or 200,000, 100,000 threads, endless timeouts and inf are config errors."""
    message = refused({name: value}, no_env)
    assert f"env var {name}" in message
    assert said in message


def test_the_weights_bound_counts_every_member(no_env: Path) -> None:
    """64 members of [8192, 8192] passed (the bound was per member) and training died in a 17
    GB allocation's traceback; one member of it still loads."""
    big = {"PIPELINE_MODEL__HIDDEN": "[8192,8192]", "PIPELINE_MODEL__MEMBERS": "64"}
    message = refused(big, no_env)
    assert "env var PIPELINE_MODEL__HIDDEN" in message
    assert "env var PIPELINE_MODEL__MEMBERS" in message
    assert "in each of 64 member(s); 64.0 GiB to train" in message and "fewer members" in message
    assert refused(big | {"PIPELINE_MODEL__MEMBERS": "2"}, no_env)
    one = load(environ=big | {"PIPELINE_MODEL__MEMBERS": "1"}, env_file=no_env).settings
    assert one.model.members == 1 and one.model.hidden == [8192, 8192]


def test_absurd_width_fails_before_any_data_is_read(cli: Any, store: Path, tmp_path: Path) -> None:
    """`train` with hidden=[0] exits 3 with one line, before fetching data or writing the store."""
    env = {"PIPELINE_DATA__SOURCE": str(tiny_csv(tmp_path)), "PIPELINE_DATA__TARGET": "y"}
    env |= {"PIPELINE_DATA__DROP": "[]", "PIPELINE_MODEL__HIDDEN": "[0]"}
    result = cli("train", env=env)
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and "PIPELINE_MODEL__HIDDEN" in result.stderr
    assert "data.fetched" not in {e.get("event") for e in events(result.stdout)}
    assert store_files(store) == []


def test_tune_trials_option_is_bounded_like_the_setting(cli: Any, store: Path) -> None:
    """`tune --trials 100000000` passed the option's own check (at least 1) and started a
    search of years; it is validated as PIPELINE_TUNE__TRIALS is (at most 10,000), naming the
    option, before any data is read or Ray starts."""
    result = cli("tune", "--trials", "100000000")
    assert result.exit_code == 3, result.output
    assert "tune.trials from option --trials" in result.stderr
    assert "less than or equal to 10000" in result.stderr and result.stderr.count("\n") == 1
    assert store_files(store) == []


def test_utf16_env_file_is_a_config_error(tmp_path: Path) -> None:
    """A .env saved as UTF-16 (byte order mark first) is refused naming the file and encoding."""
    env_file = tmp_path / "utf16.env"
    env_file.write_bytes("PIPELINE_SEED=5\n".encode("utf-16"))
    message = refused({}, env_file)
    assert str(env_file) in message and "UTF-16" in message


def test_env_file_that_is_a_folder_is_a_config_error(tmp_path: Path) -> None:
    """PIPELINE_ENV_FILE naming a folder is refused, not silently read as no file."""
    message = refused({}, tmp_path)
    assert "PIPELINE_ENV_FILE" in message and "not a file" in message


@pytest.mark.slow
def test_env_file_that_does_not_exist_is_refused_when_named(tmp_path: Path) -> None:
    """PIPELINE_ENV_FILE naming a file that does not exist (a typo, a file not mounted) is exit 3
    naming it, before any work: every setting in it would have been silently missing, and the
    model trained on defaults. Docker's --env-file refuses it too. /dev/null reads no file, and
    ./.env stays optional when the variable is unset."""
    store = tmp_path / "store"
    missing = tmp_path / "prod.env"
    base = {"PIPELINE_STORE": str(store), "PIPELINE_TRAIN__MAX_EPOCHS": "1"}
    done = run_cli("train", env={**base, "PIPELINE_ENV_FILE": str(missing)}, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"{missing} (PIPELINE_ENV_FILE) does not exist" in line
    assert not store.exists() or store_files(store) == []
    null = {**base, "PIPELINE_ENV_FILE": os.devnull}
    shown = run_cli("config", "show", "--format", "json", env=null, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    seed = next(row for row in json.loads(shown.stdout)["settings"] if row["setting"] == "seed")
    assert seed["origin"] == "default"
    # In process, with the variable unset: ./.env is optional.
    assert load({}, env_file=tmp_path / "absent.env").settings.seed == 42


# --- item 12: fractions that leave no rows to train on --------------------------------------


def test_fractions_adding_up_to_one_are_refused_naming_both(no_env: Path, tmp_path: Path) -> None:
    """Validation + test fractions >= 1 fail at load, naming each fraction and its source."""
    preset = tmp_path / "split.toml"
    preset.write_text("[train]\ntest_fraction = 0.5\n")
    message = refused(
        {"PIPELINE_PRESET": str(preset), "PIPELINE_TRAIN__VAL_FRACTION": "0.5"}, no_env
    )
    assert "train.val_fraction (from env var PIPELINE_TRAIN__VAL_FRACTION)" in message
    assert f"train.test_fraction (from preset {preset})" in message
    assert "leaves none to train on" in message


@pytest.mark.parametrize(
    ("fractions", "said"),
    [
        ({"PIPELINE_TRAIN__VAL_FRACTION": "0.001"},
         "40 rows, and PIPELINE_TRAIN__VAL_FRACTION=0.001 of them rounds to no validation row: "
         "raise it to at least 0.025"),
        ({"PIPELINE_TRAIN__TEST_FRACTION": "0.01"},
         "PIPELINE_TRAIN__TEST_FRACTION=0.01 of them rounds to no test row"),
        ({"PIPELINE_TRAIN__VAL_FRACTION": "0.49", "PIPELINE_TRAIN__TEST_FRACTION": "0.5"},
         "leave none to train on: lower them"),
    ],
)  # fmt: skip
def test_a_fraction_that_leaves_a_part_empty_is_named(
    cli: Any, store: Path, tmp_path: Path, fractions: dict[str, str], said: str
) -> None:
    """VAL_FRACTION=0.001 of 40 rows said "has 40 rows, too few to split", blaming the rows;
    the fraction is named with the value that would work."""
    env = {"PIPELINE_DATA__SOURCE": str(tiny_csv(tmp_path)), "PIPELINE_DATA__TARGET": "y"}
    result = cli("train", env={**env, "PIPELINE_DATA__DROP": "[]", **fractions})
    assert result.exit_code == 4, result.output
    assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_target_that_is_also_dropped_is_refused_naming_both(no_env: Path) -> None:
    """DROP listing the target was ignored (the model trained on it as the target anyway)."""
    message = refused({"PIPELINE_DATA__DROP": '["Id", "SalePrice"]'}, no_env)
    assert "data.target (default) and data.drop (from env var PIPELINE_DATA__DROP)" in message
    assert "the target 'SalePrice' is also listed in drop" in message


def test_train_refuses_the_fractions_before_reading_data(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """`train` with fractions 0.6 + 0.4 exits 3 (not 4 'too few to split' after reading data)."""
    env = {"PIPELINE_DATA__SOURCE": str(tiny_csv(tmp_path)), "PIPELINE_DATA__TARGET": "y"}
    env |= {"PIPELINE_TRAIN__VAL_FRACTION": "0.6", "PIPELINE_TRAIN__TEST_FRACTION": "0.4"}
    result = cli("train", env={**env, "PIPELINE_DATA__DROP": "[]"})
    assert result.exit_code == 3, result.output
    assert "too few" not in result.stderr and "leaves none to train on" in result.stderr
    assert store_files(store) == []


# --- item 13: silent fallbacks and conflicts ------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        'PIPELINE_TRAIN__MAX_EPOCHS="77qq',
        "PIPELINE_TRAIN__MAX_EPOCHS 77qq",
        "=77qq",
        "PIPELINE_TRAIN__MAX_EPOCHS:77qq",  # dotenv read these two as "unset": silently ignored
        "PIPELINE_TRAIN__MAX_EPOCHS",
    ],
)
def test_broken_env_file_line_is_an_error_naming_it(tmp_path: Path, line: str) -> None:
    """A .env line that cannot be parsed is a config error naming the file and line number."""
    env_file = tmp_path / "broken.env"
    env_file.write_text(f"PIPELINE_SEED=5\n{line}\n")
    message = refused({}, env_file)
    assert f"{env_file} line 2" in message
    assert "77qq" not in message  # the line's text (it may hold a credential) is not shown


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("PIPELINE_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("PIPELINE_LOG_FORMAT", "JSON", "log_format", "json"),
        ("PIPELINE_TRAIN__DEVICE", "CPU", "train.device", "cpu"),
        ("PIPELINE_DATA__TASK", "Regression", "data.task", "regression"),
        ("PIPELINE_RUN__ON_ERROR", "Column", "run.on_error", "column"),
    ],
)
def test_choices_are_case_insensitive(
    no_env: Path, name: str, value: str, field: str, expected: str
) -> None:
    """PIPELINE_LOG_LEVEL=DEBUG (and every other choice in capitals) means its lower-case form."""
    settings: Any = loaded({name: value}, no_env).settings
    for part in field.split("."):
        settings = getattr(settings, part)
    assert settings == expected


def test_column_kinds_are_case_insensitive(no_env: Path) -> None:
    """A column kind given as "Categorical" means categorical."""
    environ = {"PIPELINE_DATA__COLUMN_KINDS": '{"MSSubClass": "Categorical"}'}
    assert loaded(environ, no_env).settings.data.column_kinds == {"MSSubClass": "categorical"}


def test_serve_refuses_release_together_with_package(cli: Any, tmp_path: Path) -> None:
    """`serve --release R --package P` exits 3 with one line naming both, instead of using P."""
    package = tmp_path / "model.tar.gz"
    result = cli("serve", "--release", "house-prices@current", "--package", str(package))
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1
    assert "--release" in result.stderr and "--package" in result.stderr


def test_predict_helpers_refuse_release_with_package_and_output_over_source(
    tmp_path: Path,
) -> None:
    """The run-stage checks refuse --release with --package, and -o naming the input file."""
    from pipeline.cli._models import refuse_output_over_source, refuse_release_and_package

    rows = tmp_path / "rows.csv"
    with pytest.raises(ConfigError, match=r"--release .* and --package .* both given"):
        refuse_release_and_package("house-prices@v1", tmp_path / "m.tar.gz")
    refuse_release_and_package(None, tmp_path / "m.tar.gz")
    with pytest.raises(ConfigError, match="would replace the rows"):
        refuse_output_over_source(rows, tmp_path / "." / "rows.csv")
    refuse_output_over_source(rows, tmp_path / "predictions.csv")


@pytest.mark.parametrize("folds", [0, 1, -2])
def test_folds_below_two_are_refused_before_any_work(tmp_path: Path, folds: int) -> None:
    """evaluate with 0, 1 or -2 folds is one config error, raised before the build is looked up."""
    from pipeline import evaluate
    from pipeline.store import Store

    settings = load({}, env_file=tmp_path / "absent.env").settings
    store = Store.from_uri(str(tmp_path / "store"))
    with pytest.raises(ConfigError, match=f"--folds {folds}: .*2 or more"):
        evaluate.run(settings, store, None, folds, None)


def test_evaluate_cli_applies_one_folds_rule(cli: Any) -> None:
    """`evaluate --folds 0` and `--folds 1` exit 3 alike; without --folds an empty store is 8."""
    for folds in ("0", "1"):
        result = cli("evaluate", "--folds", folds)
        assert result.exit_code == 3, result.output
        assert f"--folds {folds}" in result.stderr
    assert cli("evaluate").exit_code == 8


# --- item 14: each message names the real cause and where the value came from ----------------


@pytest.mark.parametrize(
    ("environ", "preset", "setting"),
    [
        ({}, "[train]\nmax_epochs = true\n", "train.max_epochs"),
        ({}, "seed = true\n", "seed"),
        ({}, "[model]\nhidden = [true, 64]\n", "model.hidden"),
        ({"PIPELINE_TRAIN": '{"learning_rate": false}'}, "", "train.learning_rate"),
        ({"PIPELINE_MODEL__HIDDEN": "[64, true]"}, "", "model.hidden"),
    ],
)
def test_true_or_false_is_no_number(
    tmp_path: Path, no_env: Path, environ: dict[str, str], preset: str, setting: str
) -> None:
    """A TOML or JSON true/false given to a number is refused naming the setting: pydantic
    read it as 1 or 0 (``max_epochs = true`` trained one epoch). Switches still take them."""
    path = tmp_path / "p.toml"
    path.write_text(preset + "[features]\nlog_skewed = false\n")
    message = refused({**environ, "PIPELINE_PRESET": str(path)}, no_env)
    assert f"invalid setting {setting} from" in message and "true/false" in message
    path.write_text("[features]\nlog_skewed = false\n[train]\nrefit = true\n")
    assert loaded({"PIPELINE_PRESET": str(path)}, no_env).settings.features.log_skewed is False


def test_one_setting_spelled_twice_with_different_values_is_refused(tmp_path: Path) -> None:
    """Names are not case-sensitive, so PIPELINE_train__max_epochs and PIPELINE_TRAIN__MAX_EPOCHS
    are one setting: two values for it were settled by the environment's order (a guess)."""
    empty = tmp_path / "none.env"
    empty.write_text("")
    message = refused({"PIPELINE_train__max_epochs": "5", "PIPELINE_TRAIN__MAX_EPOCHS": "7"}, empty)
    assert "PIPELINE_TRAIN__MAX_EPOCHS and PIPELINE_train__max_epochs (the environment)" in message
    same = {"PIPELINE_train__max_epochs": "7", "PIPELINE_TRAIN__MAX_EPOCHS": "7"}
    assert loaded(same, empty).settings.train.max_epochs == 7
    env_file = tmp_path / "twice.env"
    env_file.write_text("pipeline_seed=4\nPIPELINE_SEED=5\n")
    assert f"{env_file} line 2 (PIPELINE_SEED); {env_file} line 1" in refused({}, env_file)


def test_a_setting_set_by_its_sections_json_and_its_own_variable_is_refused(
    tmp_path: Path,
) -> None:
    """PIPELINE_TRAIN='{"max_epochs": 5}' beside PIPELINE_TRAIN__MAX_EPOCHS=7 trained 7 epochs
    without a word (pydantic-settings' rule); the same name on two lines of a .env with
    different values took the last. Both are exit 3, one line naming the two places; a
    section's JSON and variables for its other settings still combine, and a value repeated
    as it was is fine in a .env."""
    env = {"PIPELINE_ENV_FILE": os.devnull, "PIPELINE_STORE": str(tmp_path / "store")}
    both = {"PIPELINE_TRAIN": '{"max_epochs": 5}', "PIPELINE_TRAIN__MAX_EPOCHS": "7"}
    done = run_cli("config", "show", env={**env, **both})
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert "PIPELINE_TRAIN and env var PIPELINE_TRAIN__MAX_EPOCHS both set train.max_epochs" in (
        done.stderr
    )
    apart = {"PIPELINE_TRAIN": '{"patience": 3}', "PIPELINE_TRAIN__MAX_EPOCHS": "7"}
    shown = json.loads(run_cli("config", "show", env={**env, **apart}).stdout)
    values = {row["setting"]: row["value"] for row in shown["settings"]}
    assert (values["train.patience"], values["train.max_epochs"]) == (3, 7)

    env_file = tmp_path / "twice.env"
    env_file.write_text("PIPELINE_SEED=1\nOTHER=a\nOTHER=b\nPIPELINE_SEED=2\n")
    done = run_cli("config", "show", env={**env, "PIPELINE_ENV_FILE": str(env_file)})
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert f"{env_file} lines 1 and 4 both set PIPELINE_SEED" in done.stderr
    env_file.write_text("PIPELINE_SEED=1\nPIPELINE_SEED=1\n")
    done = run_cli("config", "show", env={**env, "PIPELINE_ENV_FILE": str(env_file)})
    assert done.returncode == 0, done.stderr


def test_a_ray_address_with_a_space_is_a_setting_error_not_an_unreachable_cluster(
    tmp_path: Path,
) -> None:
    """RAY_ADDRESS='garbage address' waited for the connect timeout and was exit 5, "cannot
    be reached", a network fault: it is a malformed setting, exit 3, named at load."""
    env = {"PIPELINE_ENV_FILE": os.devnull, "PIPELINE_STORE": str(tmp_path / "store"),
           "RAY_ADDRESS": "garbage address"}  # fmt: skip
    done = run_cli("tune", "--trials", "2", env=env)
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert "invalid setting ray_address from env var RAY_ADDRESS: holds a space" in done.stderr
    assert not (tmp_path / "store").exists()


def test_preset_value_is_blamed_on_the_preset(tmp_path: Path, no_env: Path) -> None:
    """A bad value in a preset file names that file, not the environment variable."""
    preset = tmp_path / "bad.toml"
    preset.write_text("[train]\nmax_epochs = 0\n")
    message = refused({"PIPELINE_PRESET": str(preset)}, no_env)
    assert f"train.max_epochs from preset {preset}" in message
    assert "env var" not in message


def test_env_file_values_are_literal(tmp_path: Path) -> None:
    """`${VAR}` in a .env value is kept as written, quoted or not, as `docker run --env-file`
    reads it: python-dotenv's expansion turned a secret holding "${" into another secret with
    no word (even in single quotes), and a name into 'a/rootb'."""
    env_file = tmp_path / "literal.env"
    env_file.write_text(
        "AWS_SECRET_ACCESS_KEY=ab${HOME}cd\nPIPELINE_DATA__SOURCE='data/${MINOR}.csv'\n"
    )
    loaded = load({"MINOR": "3", "HOME": "/root"}, env_file=env_file)
    assert loaded.settings.aws_secret_access_key is not None
    assert loaded.settings.aws_secret_access_key.get_secret_value() == "ab${HOME}cd"
    assert loaded.settings.data.source == "data/${MINOR}.csv"


def test_env_file_value_names_the_file_and_line(tmp_path: Path) -> None:
    """A bad value in .env names the file, its line and the variable."""
    env_file = tmp_path / "vals.env"
    env_file.write_text("# settings\nPIPELINE_SEED=3\nPIPELINE_TRAIN__BATCH_SIZE=0\n")
    message = refused({}, env_file)
    assert f"{env_file} line 3 (PIPELINE_TRAIN__BATCH_SIZE)" in message


@pytest.mark.parametrize(
    ("name", "value", "way"),
    [("PIPELINE_TUNE__FOLDS", "1", "; use 2 or more"), ("PIPELINE_RUN__CHUNK_ROWS", "0",
     "; use 1 or more"), ("PORT", "abc", "; use a whole number"),
     ("PIPELINE_TRAIN__LEARNING_RATE", "x", "; use a number"),
     ("PIPELINE_TRAIN__REFIT", "maybe", "; use true or false")],
)  # fmt: skip
def test_a_value_out_of_bounds_or_of_the_wrong_kind_says_what_to_use(
    no_env: Path, name: str, value: str, way: str
) -> None:
    """ "Input should be greater than or equal to 2 (got '1')" said what was expected and
    stopped: the line now ends with what to use."""
    message = refused({name: value}, no_env)
    assert message.endswith(f"(got {value!r}){way}"), message


def test_bad_port_names_port(no_env: Path) -> None:
    """A bad PORT (the platform's variable) is reported as PORT, not PIPELINE_SERVE__PORT."""
    message = refused({"PORT": "http"}, no_env)
    assert "env var PORT" in message and "PIPELINE_SERVE__PORT" not in message


def test_the_projects_own_port_in_dotenv_wins_over_the_platforms_port(tmp_path: Path) -> None:
    """PIPELINE_SERVE__PORT=9000 in .env lost to the environment's PORT=8080 (the README says
    the project's own variable wins), and config show credited PIPELINE_SERVE__PORT. In .env
    or the environment it wins; alone, PORT sets the port and is named as its source."""
    dotenv = tmp_path / "port.env"
    dotenv.write_text("PIPELINE_SERVE__PORT=9000\n")
    loaded = load({"PORT": "8080"}, env_file=dotenv)
    assert loaded.settings.serve.port == 9000 and loaded.origins[("serve", "port")] == ".env"
    loaded = load({"PORT": "8080", "PIPELINE_SERVE__PORT": "9100"}, env_file=dotenv)
    assert loaded.settings.serve.port == 9100
    empty = tmp_path / "empty.env"
    empty.write_text("")
    loaded = load({"PORT": "8080"}, env_file=empty)
    assert loaded.settings.serve.port == 8080
    assert loaded.settings.source_of("serve", "port") == "env var PORT"


def test_bad_device_option_names_the_option(cli: Any) -> None:
    """`train --device gpu` names the --device option, not PIPELINE_TRAIN__DEVICE, and is a
    usage error (exit 2) as a value outside every other option's choices is (`diff --format
    xml`): it was exit 3, the README's code for settings."""
    result = cli("train", "--device", "gpu")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert "invalid value for '--device'" in line and "PIPELINE_TRAIN__DEVICE" not in line
    assert "'gpu' is not one of 'cpu', 'cuda', 'auto'" in line
    assert cli("train", "--device", "gpu", "--help").exit_code == 0  # help still answers


def test_bad_port_option_is_one_config_error(cli: Any) -> None:
    """`serve --port 99999` is the same one-line config error as PORT=99999, naming --port."""
    result = cli("serve", "--port", "99999")
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and "option --port" in result.stderr


@pytest.mark.parametrize(
    "bad", [{"PORT": "abc"}, {"PORT": "99999"}, {"PIPELINE_SERVE__THREADS": "0"}]
)
def test_a_bad_serve_setting_stops_only_the_commands_that_read_it(
    cli: Any, tmp_path: Path, store: Path, bad: dict[str, str]
) -> None:
    """A platform's PORT=abc (or any invalid PIPELINE_SERVE__*) is judged by `serve` and
    `config show`, which read it: `train` and `release list` exited 3 over a port they never
    open. `serve` keeps its one-line exit 3 naming the variable."""
    env = {"PIPELINE_DATA__SOURCE": str(tiny_csv(tmp_path)), "PIPELINE_DATA__TARGET": "y"}
    env |= {"PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2", **bad}
    trained = cli("train", env=env)
    assert trained.exit_code == 0, trained.output
    assert len(store_files(store)) > 0
    listed = cli("release", "list", env=env)  # nothing packaged: 'no model', not the port
    assert listed.exit_code == 8 and "no model 'house-prices'" in listed.stderr, listed.output
    (name,) = bad
    for args in (("serve",), ("config", "show")):
        result = cli(*args, env=env)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.count("\n") == 1 and f"env var {name}" in result.stderr
    # Another setting's error is still reported, and the serve one is not added to it.
    mixed = cli("release", "list", env={**env, "PIPELINE_SEED": "-1"})
    assert mixed.exit_code == 3 and "PIPELINE_SEED" in mixed.stderr, mixed.output
    assert name not in mixed.stderr


def test_settings_say_where_each_value_came_from(tmp_path: Path) -> None:
    """Loaded settings name each value's source for later stages' messages (source_of)."""
    env_file = tmp_path / "src.env"
    env_file.write_text("PIPELINE_SEED=4\n")
    result = load(
        {"PIPELINE_TRAIN__THREADS": "2"},
        env_file=env_file,
        overrides={"PIPELINE_TRAIN__DEVICE": "cpu"},
    )
    s = result.settings
    assert s.source_of("train", "device") == "option --device"
    assert s.source_of("train", "threads") == "env var PIPELINE_TRAIN__THREADS"
    assert s.source_of("seed") == f"{env_file} line 1 (PIPELINE_SEED)"
    assert s.source_of("train", "patience") == "default"


def test_missing_cuda_names_where_the_device_came_from() -> None:
    """With no CUDA, device cuda is refused naming the place that asked for it."""
    import torch

    from pipeline import runtime

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    threads = torch.get_num_threads()
    try:
        with pytest.raises(ConfigError, match="from option --device"):
            runtime.configure(threads, "cuda", device_from="option --device")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("name", "value"),
    [("PIPELINE_MODEL__VERSION", "1.0.0-" + "a" * 300), ("PIPELINE_MODEL__NAME", "m" * 300)],
)
def test_long_name_or_version_is_refused_at_load(no_env: Path, name: str, value: str) -> None:
    """A 300-character model name or version is refused at load as too long, not as 'free space'."""
    message = refused({name: value}, no_env)
    assert f"env var {name}" in message and "at most 64 characters" in message


def test_package_check_refuses_a_long_version() -> None:
    """check_name_version (for Settings built in code) refuses a version too long for a file."""
    from pipeline.package import check_name_version

    with pytest.raises(ConfigError, match="at most 64 characters"):
        check_name_version("house-prices", "1.0.0-" + "a" * 300)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"Id,MSSubClass\n1,60\n", "text (a CSV or JSON file?"),
        (b"PK\x03\x04rest-of-a-zip", "a zip archive"),
        (b"PAR1\x00\x00", "a Parquet file"),
        (b"", "empty"),
    ],
)
def test_a_file_that_is_no_package_is_not_called_damaged(
    tmp_path: Path, data: bytes, said: str
) -> None:
    """A CSV (or zip, Parquet, empty file) given as a package is named for what it is."""
    from pipeline.package import open_package

    path = tmp_path / "rows.csv"
    path.write_bytes(data)
    with pytest.raises(IntegrityError) as err:
        open_package(path)
    assert "not a package archive" in err.value.message and said in err.value.message
    assert "damaged" not in err.value.message


# --- item 16: presets by name from any folder -----------------------------------------------


def test_bundled_preset_is_found_from_any_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_env: Path
) -> None:
    """PIPELINE_PRESET=titanic works from a folder without config/ and no PIPELINE_CONFIG_DIR."""
    monkeypatch.chdir(tmp_path)
    result = loaded({"PIPELINE_PRESET": "titanic"}, no_env)
    assert result.preset is not None and result.preset.name == "titanic.toml"
    assert result.settings.data.target == "survived"


@pytest.mark.slow
def test_preset_by_name_works_in_a_real_process_elsewhere(tmp_path: Path) -> None:
    """`pipeline config show`, a fresh process in another folder, finds the titanic preset."""
    proc = run_cli(
        "config",
        "show",
        "--format",
        "json",
        env={"PIPELINE_PRESET": "titanic", "PIPELINE_ENV_FILE": os.devnull},
        cwd=tmp_path,
        timeout=120,
        fresh=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["preset"].endswith("titanic.toml")


def test_a_diverging_learning_rate_is_one_line_not_a_traceback(cli: Any) -> None:
    """A learning rate so large the loss leaves the finite numbers: exit 3 naming the setting,
    not a ValueError from the metrics after the training."""
    env = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__LEARNING_RATE": "1e30",
           "PIPELINE_TRAIN__MAX_EPOCHS": "3"}  # fmt: skip
    result = cli("train", env=env)
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: training diverged at epoch 1")
    assert "PIPELINE_TRAIN__LEARNING_RATE" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, 3,
         "AWS_SECRET_ACCESS_KEY is not set, but AWS_ACCESS_KEY_ID is:"),
        ({"AWS_SECRET_ACCESS_KEY": "s3cr3t-half-pair"}, 3,
         "AWS_ACCESS_KEY_ID is not set, but AWS_SECRET_ACCESS_KEY is:"),
        ({"AWS_ENDPOINT_URL": "127.0.0.1:9000"}, 3, "AWS_ENDPOINT_URL"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:notaport"}, 3, "http(s)://host:port"),
        ({"AWS_ENDPOINT_URL": " http://127.0.0.1:9000"}, 3, "AWS_ENDPOINT_URL"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "a",
          "AWS_SECRET_ACCESS_KEY": "b", "AWS_REGION": "us-east-1"}, 3, "AWS_ALLOW_HTTP=true"),
    ],
)  # fmt: skip
def test_s3_client_settings_that_cannot_work_are_one_line(
    cli: Any, env: dict[str, str], code: int, says: str
) -> None:
    """Half a key pair was the client's traceback, a malformed endpoint a Rust panic (both
    exit 1), an http:// endpoint without AWS_ALLOW_HTTP 'the S3 server answered an error'
    (no request was sent). No server is needed to see any of them."""
    result = cli("release", "list", "--name", "m", env={"PIPELINE_STORE": "s3://bucket/x", **env})
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.output, lines
    assert "s3cr3t-half-pair" not in result.output


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PIPELINE_DATA__SHA256": "xyz"}, "data.sha256 from env var PIPELINE_DATA__SHA256"),
        ({"PIPELINE_DATA__SHA256": "a" * 63}, "64 hex digits"),
        ({"PIPELINE_DATA__COLUMN_KINDS": '{"SalePrice": "categorical"}'}, "names the target"),
        (
            {
                "PIPELINE_DATA__COLUMN_KINDS": '{"SalePrice": "categorical"}',
                "PIPELINE_DATA__TASK": "regression",
            },
            "says the target 'SalePrice' is categorical, but the task is regression",
        ),
        (
            {"PIPELINE_DATA__COLUMN_KINDS": '{"Id": "categorical"}'},
            "column_kinds names 'Id', which drop also lists",
        ),
        # Read the dataset first, then "has no column ''" (exit 4).
        (
            {"PIPELINE_DATA__TARGET": ""},
            "an empty or null value is not unset: unset PIPELINE_DATA__TARGET",
        ),
        # `config show` passed it; every other command refused it when the store opened.
        ({"PIPELINE_STORE": ""}, "invalid setting store from env var PIPELINE_STORE: names no"),
        # The column's name was shown in lower case: data.column_kinds.lotarea.
        (
            {"PIPELINE_DATA__COLUMN_KINDS": '{"LotArea": "text"}'},
            "invalid setting data.column_kinds.LotArea from env var",
        ),
        ({"PIPELINE_GATES__MIN_R2": "2"}, "gates.min_r2"),
        ({"PIPELINE_GATES__MAX_RMSE": "-1"}, "gates.max_rmse"),
        ({"PIPELINE_GATES__MIN_ACCURACY": "1.5"}, "gates.min_accuracy"),
        ({"PIPELINE_RUN__REQUIRED_SECRETS": '["a=b", ""]'}, "entry 1, 2 of 2 is no environment"),
        # pyarrow's own words at read time, exit 4: "delimiter cannot be \r or \n".
        ({"PIPELINE_DATA__DELIMITER": "\n"}, "a line break or a quote cannot delimit fields"),
        ({"PIPELINE_DATA__DELIMITER": '"'}, "a line break or a quote cannot delimit fields"),
    ],
)
def test_settings_that_could_only_fail_later_are_refused_at_load(
    environ: dict[str, str], named: str
) -> None:
    """A malformed pin was found only after the download, as "the data changed"; a kind for the
    target was ignored silently (also one that contradicts the task, or for a dropped column);
    a gate no metric can pass failed every build at evaluate."""
    assert named in refused(environ, Path(os.devnull))


def test_a_kind_for_the_target_that_agrees_with_the_task_is_accepted() -> None:
    for task, kind in [("regression", "numeric"), ("binary", "boolean"),
                       ("multiclass", "categorical")]:  # fmt: skip
        environ = {"PIPELINE_DATA__TASK": task,
                   "PIPELINE_DATA__COLUMN_KINDS": f'{{"SalePrice": "{kind}"}}'}  # fmt: skip
        assert load(environ, env_file=Path(os.devnull)).settings.data.column_kinds


def test_a_secret_pasted_where_its_name_goes_is_not_echoed() -> None:
    """The refusal of PIPELINE_RUN__REQUIRED_SECRETS='["sk-live-..."]' showed the value, which
    is most likely the secret itself."""
    said = refused({"PIPELINE_RUN__REQUIRED_SECRETS": '["API_KEY", "sk-live-abc123"]'},
                   Path(os.devnull))  # fmt: skip
    assert "entry 2 of 2 is no environment variable name" in said and "sk-live" not in said


def test_a_pin_may_be_written_as_sha256_prints_it_or_with_its_prefix() -> None:
    digest = "AB" * 32
    for spelling in (digest, f"sha256:{digest}", f"  {digest.lower()} "):
        read = load({"PIPELINE_DATA__SHA256": spelling}, env_file=Path(os.devnull))
        assert read.settings.data.sha256 == digest.lower()


def test_a_setting_cut_short_is_suggested_by_the_name_it_begins() -> None:
    """PIPELINE_GATES__MIN_F1 got "did you mean PIPELINE_GATES__MIN_R2?" (difflib's closest by
    letters); the setting it begins, MIN_F1_MACRO, is what was meant."""
    from pipeline.settings import unknown_error

    message = unknown_error(["PIPELINE_GATES__MIN_F1"]).message
    assert "(did you mean PIPELINE_GATES__MIN_F1_MACRO?)" in message
    message = unknown_error(["PIPELINE_TRAIN__LEARNING_RAT"]).message
    assert "(did you mean PIPELINE_TRAIN__LEARNING_RATE?)" in message


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PIPELINE_DATA__SOURCE": "http://alice:pw-s3cr3t@[::1/t.csv"}, "data.source"),
        ({"PIPELINE_STORE": "file://[bad/x"}, "setting store"),
        ({"RAY_ADDRESS": "ray://u:pw-s3cr3t@[bad"}, "ray_address"),
        ({"AWS_ENDPOINT_URL": "http://user:pw-s3cr3t@127.0.0.1:9000"}, "without a user"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/foo"}, "without a user, password, path"),
        ({"PIPELINE_DATA__SOURCE": "http://127.0.0.1:9/ti\ntanic.csv"}, "a control character"),
        ({"PIPELINE_STORE": "s3://bucket/x\t"}, "a control character"),
    ],
)
def test_uri_settings_that_cannot_be_parsed_are_one_line_without_their_credentials(
    cli: Any, env: dict[str, str], says: str
) -> None:
    """An unclosed `[` in a URI setting was a traceback (exit 1, `Invalid IPv6 URL`) in every
    command that read it; an endpoint with a password was printed by `config show`, and one with
    a path failed every request as "bucket does not exist". Now exit 3 at load, one line, the
    credentials masked."""
    result = cli("release", "list", env=env)
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.output, lines
    assert "s3cr3t" not in result.output


def test_config_sources_that_would_be_silently_skipped_are_refused(tmp_path: Path) -> None:
    """Three ways a run lost every setting of a file without a word (exit 0, defaults): a
    PIPELINE_CONFIG_DIR that does not exist (the bundled preset of that name was used
    instead), a `.env` that is a link to a file not there (an unmounted secret), and
    PIPELINE_ENV_FILE set inside `.env` (the file to read is chosen before `.env` is read)."""
    said = refused(
        {"PIPELINE_PRESET": "titanic", "PIPELINE_CONFIG_DIR": str(tmp_path / "nowhere")},
        Path(os.devnull),
    )
    assert f"PIPELINE_CONFIG_DIR={tmp_path / 'nowhere'} (from env var" in said
    assert "is not a folder" in said
    # No preset named: it was accepted without a word until a preset was (a typo unseen).
    said = refused({"PIPELINE_CONFIG_DIR": str(tmp_path / "nowhere")}, Path(os.devnull))
    assert f"PIPELINE_CONFIG_DIR={tmp_path / 'nowhere'} (from env var" in said
    link = tmp_path / ".env"
    link.symlink_to(tmp_path / "secrets" / "app.env")
    said = refused({}, link)
    assert "is a link to" in said and "does not exist (a secret not mounted?)" in said
    link.unlink()
    (tmp_path / "other.env").write_text("PIPELINE_SEED=4\n")
    link.write_text(f"PIPELINE_ENV_FILE={tmp_path / 'other.env'}\n")
    said = refused({}, link)
    assert "line 1 (PIPELINE_ENV_FILE) sets PIPELINE_ENV_FILE, which only the environment" in said
    link.write_text("PIPELINE_SEED=5\n")
    assert loaded({}, link).settings.seed == 5  # an ordinary .env still reads


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"PIPELINE_TUNE__SPACE": "{bad"},
         """e.g. '{"train.learning_rate": {"loguniform": [0.0003, 0.01]}}'"""),
        ({"PIPELINE_TRAIN": "{bad"}, "e.g. the section's settings by name (PIPELINE_TRAIN="),
        ({"PIPELINE_DATA__DROP": "[bad"}, """e.g. '["Id"]'"""),
        ({"PIPELINE_TUNE__SPACE": '{"train.learning_rate": {"loguniform": [3e-4, "a"]}}'},
         "loguniform needs [low, high], two numbers with low <= high"),
    ],
)  # fmt: skip
def test_broken_json_and_space_bounds_get_an_example_of_their_own(
    environ: dict[str, str], says: str
) -> None:
    """Broken JSON in PIPELINE_TUNE__SPACE or a section suggested '["Id"]' (the drop list's
    shape); a bound that is text said only "low <= high"."""
    assert says in refused(environ, Path(os.devnull))


def test_an_error_naming_a_setting_says_when_it_came_from_a_preset(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """`PIPELINE_PRESET=titanic` on another table said "no column 'survived'
    (PIPELINE_DATA__TARGET)", a variable the user never set; the error now says the preset
    set it. A setting from the environment is not annotated."""
    data = tiny_csv(tmp_path)
    result = cli("train", env={"PIPELINE_PRESET": "titanic", "PIPELINE_DATA__SOURCE": str(data)})
    assert result.exit_code == 4
    line = result.stderr.strip()
    assert "no column 'survived' (PIPELINE_DATA__TARGET)" in line
    assert "(PIPELINE_DATA__TARGET came from preset " in line and "titanic.toml)" in line
    own = cli("train", env={"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "nope"})
    assert own.exit_code == 4 and "came from" not in own.stderr


@pytest.mark.parametrize(
    ("name", "means"),
    [("PIPELINE_PRESET", "unset it for no preset"),
     ("PIPELINE_CONFIG_DIR", "unset it for ./config, then the bundled presets"),
     ("PIPELINE_ENV_FILE", "unset it for ./.env, read when present")],
)  # fmt: skip
def test_a_loader_variable_set_empty_is_refused_not_unset(
    cli: Any, name: str, means: str, tmp_path: Path
) -> None:
    """`PIPELINE_PRESET=$TUNED pipeline train` with $TUNED unset trained the default recipe,
    exit 0; an empty PIPELINE_CONFIG_DIR fell back to the bundled presets; an empty
    PIPELINE_ENV_FILE was "a folder" (the current one, "remove the folder"). Exit 3 now, as
    every other setting set empty is; in a .env file too."""
    result = cli("config", "show", env={name: "", "PIPELINE_PRESET": "titanic"}
                 if name != "PIPELINE_PRESET" else {name: ""})  # fmt: skip
    assert result.exit_code == 3, result.output
    line = result.stderr.strip()
    assert line == (f"error: {name} is set but empty (from env var {name}): an empty variable "
                    f"is a value, not unset; {means}" + line.split(means, 1)[1]), line  # fmt: skip
    if name != "PIPELINE_ENV_FILE":
        dotenv = tmp_path / "e.env"
        dotenv.write_text(f"{name}=\n")
        # The environment wins over .env: the fixture's PIPELINE_CONFIG_DIR is unset here.
        result = cli("config", "show", env={"PIPELINE_ENV_FILE": str(dotenv), name: None})
        assert result.exit_code == 3 and f"{name} is set but empty (from" in result.stderr


def test_a_suggested_name_gets_no_note_of_where_its_value_came_from(cli: Any) -> None:
    """`PIPELINE_TUNE__TRAILS=3 pipeline tune --trials 2` ended "(PIPELINE_TUNE__TRIALS came
    from option --trials)": the suggestion's own origin, beside the point of a misspelling."""
    result = cli("tune", "--trials", "2", env={"PIPELINE_TUNE__TRAILS": "3"})
    assert result.exit_code == 3, result.output
    line = result.stderr.strip()
    assert "(did you mean PIPELINE_TUNE__TRIALS?)" in line and "came from" not in line, line


@pytest.mark.parametrize(
    ("env", "said"),
    [({"PIPELINE_STORE": "ftp://x/y"}, "unsupported store URI 'ftp://x/y' (PIPELINE_STORE)"),
     ({"PIPELINE_STORE": "s3://"}, "PIPELINE_STORE='s3://' is no S3 URI"),
     ({"PIPELINE_STORE": "s3://bucket/p", "AWS_ACCESS_KEY_ID": "k"},
      "AWS_SECRET_ACCESS_KEY is not set, but AWS_ACCESS_KEY_ID is"),
     ({"PIPELINE_STORE": "s3://bucket/p", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
       "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
      "AWS_ENDPOINT_URL is http:// and AWS_ALLOW_HTTP is not true")],
)  # fmt: skip
def test_config_show_refuses_the_store_settings_every_store_command_refuses(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    """`config show` printed an ftp:// store, s3:// without a bucket, half an S3 key pair or an
    http:// endpoint without AWS_ALLOW_HTTP and exited 0, where every store command exits 3:
    a CI job that checked its settings with it passed. It exits 3 with the same line, without
    reaching any server; with AWS_ALLOW_HTTP the same settings show."""
    done = run_cli("config", "show", "--format", "json", env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stdout
    assert done.stderr.strip() == f"error: {said}" or done.stderr.strip().startswith(
        f"error: {said}"
    )
    assert "\n" not in done.stderr.strip()
    assert [e["event"] for e in events(done.stdout)] == ["error"]  # no settings document
    listed = run_cli("release", "list", "m", env=env, cwd=tmp_path)
    assert listed.returncode == 3 and said in listed.stderr
    if "AWS_ENDPOINT_URL" in env:
        allowed = run_cli("config", "show", "--format", "json",
                          env={**env, "AWS_ALLOW_HTTP": "true"}, cwd=tmp_path)  # fmt: skip
        assert allowed.returncode == 0, allowed.stderr
