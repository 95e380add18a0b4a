"""``pipeline.settings.load``: layering, presets, parsing, validation, unknown names and secrets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr
from tests.conftest import REPO

from pipeline.errors import ConfigError
from pipeline.settings import LOADER_VARS, Loaded, leaves, load, unknown_error

CONFIG = str(REPO / "config")


@pytest.fixture
def no_env(tmp_path: Path) -> Path:
    """A .env path that does not exist, so only the layers a test passes are read."""
    return tmp_path / "absent.env"


def write_env(tmp_path: Path, lines: Mapping[str, str]) -> Path:
    """Write a .env file with one ``NAME=value`` line per item."""
    path = tmp_path / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()), encoding="utf-8")
    return path


def load_env(environ: Mapping[str, str], env_file: Path, **kw: Mapping[str, str]) -> Loaded:
    """``load`` with the repo's presets reachable by name."""
    return load({"PIPELINE_CONFIG_DIR": CONFIG, **environ}, env_file=env_file, **kw)


# --- precedence ---------------------------------------------------------------------------------


def test_defaults_have_origin_default(no_env: Path) -> None:
    """With nothing set, every setting holds its field default and says it came from there."""
    loaded = load_env({}, no_env)
    assert loaded.settings.data.target == "SalePrice"
    assert loaded.settings.seed == 42
    assert loaded.preset is None
    assert loaded.env_file is None
    assert loaded.unknown == []
    assert {leaf.path for leaf in leaves()} <= set(loaded.origins)
    assert set(loaded.origins.values()) == {"default"}


def test_preset_overrides_defaults(no_env: Path) -> None:
    """PIPELINE_PRESET=titanic takes the preset's values over defaults and marks them 'preset'."""
    loaded = load_env({"PIPELINE_PRESET": "titanic"}, no_env)
    s = loaded.settings
    assert loaded.preset == REPO / "config" / "titanic.toml"
    assert (s.data.target, s.data.task) == ("survived", "binary")
    assert s.data.column_kinds == {"pclass": "categorical"}
    assert loaded.origins[("data", "target")] == "preset"
    assert loaded.origins[("data", "column_kinds")] == "preset"
    # A key the preset does not set keeps its default.
    assert s.train.max_epochs == 300
    assert loaded.origins[("train", "max_epochs")] == "default"


def test_each_layer_beats_the_one_below(tmp_path: Path) -> None:
    """default < preset < .env < environ < overrides, each key resolving to its highest layer."""
    env_file = write_env(
        tmp_path,
        {
            "PIPELINE_DATA__TARGET": "from_dotenv",
            "PIPELINE_DATA__TASK": "multiclass",
            "PIPELINE_TRAIN__MAX_EPOCHS": "11",
        },
    )
    loaded = load_env(
        {
            "PIPELINE_PRESET": "titanic",
            "PIPELINE_DATA__TASK": "regression",
            "PIPELINE_TRAIN__MAX_EPOCHS": "12",
        },
        env_file,
        overrides={"PIPELINE_TRAIN__MAX_EPOCHS": "13"},
    )
    s, origins = loaded.settings, loaded.origins
    assert loaded.env_file == env_file
    # default only
    assert (s.train.patience, origins[("train", "patience")]) == (30, "default")
    # default < preset
    assert (s.data.source, origins[("data", "source")]) == ("builtin://titanic", "preset")
    # preset < .env
    assert (s.data.target, origins[("data", "target")]) == ("from_dotenv", ".env")
    # preset < .env < environ
    assert (s.data.task, origins[("data", "task")]) == ("regression", "env")
    # .env < environ < overrides
    assert (s.train.max_epochs, origins[("train", "max_epochs")]) == (13, "cli")


def test_overrides_beat_environ_for_the_same_key(no_env: Path) -> None:
    """A command-line override wins over the same variable in the environment; origin is 'cli'."""
    loaded = load_env(
        {"PIPELINE_TRAIN__DEVICE": "cuda"}, no_env, overrides={"PIPELINE_TRAIN__DEVICE": "cpu"}
    )
    assert loaded.settings.train.device == "cpu"
    assert loaded.origins[("train", "device")] == "cli"


def test_load_reads_only_the_given_environ(monkeypatch: pytest.MonkeyPatch, no_env: Path) -> None:
    """An explicit ``environ`` is the whole environment: the process's variables do not leak in."""
    monkeypatch.setenv("PIPELINE_SEED", "7")
    loaded = load_env({}, no_env)
    assert loaded.settings.seed == 42
    assert loaded.origins[("seed",)] == "default"


# --- presets ------------------------------------------------------------------------------------


def test_preset_named_in_env_file_is_used(tmp_path: Path) -> None:
    """PIPELINE_PRESET given only in the .env file still selects the preset."""
    env_file = write_env(tmp_path, {"PIPELINE_PRESET": "titanic"})
    loaded = load_env({}, env_file)
    assert loaded.preset == REPO / "config" / "titanic.toml"
    assert loaded.settings.data.target == "survived"
    assert loaded.origins[("data", "target")] == "preset"
    assert loaded.unknown == []


def test_preset_given_as_a_toml_path(tmp_path: Path, no_env: Path) -> None:
    """PIPELINE_PRESET may be the path of a .toml file outside config/."""
    preset = tmp_path / "mine.toml"
    preset.write_text('seed = 11\n[train]\nmax_epochs = 3\n[data]\ndrop = ["a"]\n')
    loaded = load({"PIPELINE_PRESET": str(preset)}, env_file=no_env)
    assert loaded.preset == preset
    assert (loaded.settings.seed, loaded.settings.train.max_epochs) == (11, 3)
    assert loaded.settings.data.drop == ["a"]
    assert loaded.origins[("train", "max_epochs")] == "preset"


def test_unknown_preset_name_lists_available_presets(no_env: Path) -> None:
    """An unknown preset name is a ConfigError that names it and the presets there are."""
    with pytest.raises(ConfigError) as err:
        load_env({"PIPELINE_PRESET": "titanik"}, no_env)
    message = err.value.message
    assert "titanik" in message
    assert "PIPELINE_PRESET" in message
    assert "house-prices" in message
    assert "titanic" in message
    assert err.value.exit_code == 3


def test_missing_preset_file_is_a_config_error(tmp_path: Path, no_env: Path) -> None:
    """A preset path ending in .toml that does not exist is a ConfigError naming the path."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load({"PIPELINE_PRESET": str(missing)}, env_file=no_env)


def test_a_tune_space_in_toml_may_use_dotted_keys_or_tables(tmp_path: Path, no_env: Path) -> None:
    """TOML reads an unquoted ``model.dropout = ...`` under [tune.space] as a nested table (it was
    "key 'model' names no searchable setting"): it means what the JSON key "model.dropout" does,
    as does a [tune.space.features] table; a misspelt field is still named."""
    preset = tmp_path / "space.toml"
    preset.write_text(
        "[tune.space]\nmodel.dropout = {uniform = [0.0, 0.3]}\n"
        '"train.learning_rate" = {loguniform = [1e-4, 1e-2]}\n'
        "[tune.space.features]\nmin_frequency = {int = [1, 5]}\n"
    )
    space = load({"PIPELINE_PRESET": str(preset)}, env_file=no_env).settings.tune.space
    assert space == {
        "model.dropout": {"uniform": [0.0, 0.3]},
        "train.learning_rate": {"loguniform": [1e-4, 1e-2]},
        "features.min_frequency": {"int": [1, 5]},
    }
    preset.write_text("[tune.space]\nmodel.dropot = {uniform = [0.0, 0.3]}\n")
    with pytest.raises(ConfigError, match=r"'model.dropot'.*did you mean 'model.dropout'"):
        load({"PIPELINE_PRESET": str(preset)}, env_file=no_env)


def test_preset_with_unknown_key_suggests_the_right_one(tmp_path: Path, no_env: Path) -> None:
    """A preset key that is not a setting is a ConfigError naming it, with a did-you-mean."""
    preset = tmp_path / "typo.toml"
    preset.write_text('[data]\ntraget = "y"\n')
    with pytest.raises(ConfigError) as err:
        load({"PIPELINE_PRESET": str(preset)}, env_file=no_env)
    message = err.value.message
    assert "data.traget" in message
    assert "did you mean 'data.target'" in message
    # A misspelt table was "unknown key 'tuning'; did you mean 'tune.scoring'?": the section.
    preset.write_text('[tuning]\nscoring = "cv"\n')
    with pytest.raises(ConfigError) as err:
        load({"PIPELINE_PRESET": str(preset)}, env_file=no_env)
    assert "has unknown section [tuning]; did you mean [tune]? (sections: data," in str(err.value)


def test_preset_cannot_set_secrets(tmp_path: Path, no_env: Path) -> None:
    """Credentials are not preset keys: a preset setting kaggle_key is refused."""
    preset = tmp_path / "secret.toml"
    preset.write_text('kaggle_key = "in-a-file"\n')
    with pytest.raises(ConfigError, match="kaggle_key"):
        load({"PIPELINE_PRESET": str(preset)}, env_file=no_env)


def test_a_preset_value_is_checked_even_where_a_later_layer_overrides_it(
    tmp_path: Path, no_env: Path
) -> None:
    """`max_epochs = "ten"` in a preset passed whenever .env or the environment set the epochs
    (a laptop), and failed where nothing did (CI): each preset value is checked by itself. A
    rule across settings (the split's fractions) is judged on the merged values only."""
    preset = tmp_path / "bad.toml"
    preset.write_text('[train]\nmax_epochs = "ten"\n')
    env = {"PIPELINE_PRESET": str(preset), "PIPELINE_TRAIN__MAX_EPOCHS": "5"}
    with pytest.raises(ConfigError) as err:
        load(env, env_file=no_env)
    assert (
        err.value.message.startswith(f"invalid setting train.max_epochs from preset {preset}")
        and "(got 'ten')" in err.value.message
    )
    preset.write_text("[train]\nval_fraction = 0.5\ntest_fraction = 0.5\n")  # sums to 1
    settings = load({**env, "PIPELINE_TRAIN__TEST_FRACTION": "0.2"}, env_file=no_env).settings
    assert (settings.train.val_fraction, settings.train.test_fraction) == (0.5, 0.2)


@pytest.mark.parametrize(
    "uri",
    ["http://user:hunter22@example.com/t.csv", "https://example.com/t.csv?X-Amz-Signature=abcd",
     "https://example.com/t.csv?token=abcd&x=1"],
)  # fmt: skip
def test_a_preset_cannot_hold_a_uri_with_credentials(
    tmp_path: Path, no_env: Path, uri: str
) -> None:
    """A password or a token in a preset's URI is a secret in a versioned file, as a preset's
    AWS_SECRET_ACCESS_KEY is (refused): it was accepted without a word. A user name alone and
    a URI a record masked (`***@`, written by `tune --preset-out`) are not credentials."""
    preset = tmp_path / "creds.toml"
    preset.write_text(f'[data]\nsource = "{uri}"\n')
    with pytest.raises(ConfigError) as err:
        load({"PIPELINE_PRESET": str(preset)}, env_file=no_env)
    message = err.value.message
    assert "sets 'data.source' to a URI with credentials in it" in message
    assert "set PIPELINE_DATA__SOURCE in the environment instead" in message
    assert "hunter22" not in message and "abcd" not in message
    fine_uris = [
        "http://user@example.com/t.csv",
        "https://***@example.com/t.csv",
        "https://example.com/t.csv?token=***",
        "https://example.com/t.csv?page=2",
    ]
    for fine in fine_uris:
        preset.write_text(f'[data]\nsource = "{fine}"\n')
        assert load({"PIPELINE_PRESET": str(preset)}, env_file=no_env).settings.data.source == fine


# --- parsing ------------------------------------------------------------------------------------


def test_lists_and_dicts_are_json(no_env: Path) -> None:
    """List and mapping settings are parsed from JSON values."""
    loaded = load_env(
        {
            "PIPELINE_DATA__DROP": '["a","b"]',
            "PIPELINE_DATA__COLUMN_KINDS": '{"MSSubClass":"categorical"}',
            "PIPELINE_MODEL__HIDDEN": "[8, 4]",
        },
        no_env,
    )
    s = loaded.settings
    assert s.data.drop == ["a", "b"]
    assert s.data.column_kinds == {"MSSubClass": "categorical"}
    assert s.model.hidden == [8, 4]
    assert loaded.origins[("data", "drop")] == "env"
    assert loaded.origins[("data", "column_kinds")] == "env"


def test_json_in_env_file_is_parsed(tmp_path: Path) -> None:
    """A JSON list in the .env file is parsed just like one in the environment."""
    env_file = tmp_path / "json.env"
    env_file.write_text('PIPELINE_DATA__DROP=\'["x", "y"]\'\n')
    loaded = load_env({}, env_file)
    assert loaded.settings.data.drop == ["x", "y"]
    assert loaded.origins[("data", "drop")] == ".env"


def test_whole_section_as_json(no_env: Path) -> None:
    """A section given as one JSON object sets its keys and leaves the others at their defaults."""
    loaded = load_env({"PIPELINE_TRAIN": '{"max_epochs": 7}'}, no_env)
    s = loaded.settings
    assert s.train.max_epochs == 7
    assert s.train.patience == 30
    assert loaded.origins[("train", "max_epochs")] == "env"
    assert loaded.origins[("train", "patience")] == "default"
    assert loaded.unknown == []


def test_names_are_case_insensitive(no_env: Path) -> None:
    """Variable names match regardless of case and are not reported as unknown."""
    loaded = load_env(
        {"pipeline_seed": "9", "Pipeline_Data__Target": "price", "PIPELINE_train__MAX_epochs": "4"},
        no_env,
    )
    s = loaded.settings
    assert (s.seed, s.data.target, s.train.max_epochs) == (9, "price", 4)
    assert loaded.origins[("seed",)] == "env"
    assert loaded.origins[("data", "target")] == "env"
    assert loaded.unknown == []


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIPELINE_TRAIN__MAX_EPOCHS", "ten"),
        ("PIPELINE_TRAIN__VAL_FRACTION", "1.5"),
        ("PIPELINE_DATA__TASK", "regresion"),
        ("PIPELINE_SEED", "-1"),
    ],
)
def test_invalid_value_names_the_variable(no_env: Path, name: str, value: str) -> None:
    """A value of the wrong type, out of range or outside a literal is a ConfigError naming it."""
    with pytest.raises(ConfigError) as err:
        load_env({name: value}, no_env)
    assert name in err.value.message
    assert value in err.value.message
    assert err.value.exit_code == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIPELINE_DATA__DROP", "[a,"),
        ("PIPELINE_DATA__COLUMN_KINDS", "{bad"),
        ("PIPELINE_TRAIN", '{"max_epochs": 7'),
    ],
)
def test_malformed_json_names_the_variable(no_env: Path, name: str, value: str) -> None:
    """Undecodable JSON for a list, mapping or section is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as err:
        load_env({"PIPELINE_SEED": "1", name: value}, no_env)
    assert name in err.value.message
    assert "JSON" in err.value.message


def test_invalid_value_in_env_file_names_the_variable(tmp_path: Path) -> None:
    """A bad value read from the .env file is reported under its PIPELINE_ name too."""
    env_file = write_env(tmp_path, {"PIPELINE_TRAIN__BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="PIPELINE_TRAIN__BATCH_SIZE"):
        load_env({}, env_file)


# --- unknown variables --------------------------------------------------------------------------


def test_misspelt_variable_is_unknown(no_env: Path) -> None:
    """A misspelt PIPELINE_ name is listed as unknown and does not change the setting it missed."""
    loaded = load_env({"PIPELINE_DATA__TRAGET": "price", "PIPELINE_SEEED": "1"}, no_env)
    assert loaded.unknown == ["PIPELINE_DATA__TRAGET", "PIPELINE_SEEED"]
    assert loaded.settings.data.target == "SalePrice"


def test_misspelt_variable_in_process_environment_is_unknown(
    monkeypatch: pytest.MonkeyPatch, no_env: Path
) -> None:
    """A misspelt nested name in os.environ (what the CLI reads) is listed, not a parse error."""
    monkeypatch.setenv("PIPELINE_DATA__TRAGET", "price")
    loaded = load(env_file=no_env)
    assert loaded.unknown == ["PIPELINE_DATA__TRAGET"]
    assert loaded.settings.data.target == "SalePrice"


def test_misspelt_variable_in_env_file_is_unknown(tmp_path: Path) -> None:
    """Unknown names are also collected from the .env file."""
    env_file = write_env(tmp_path, {"PIPELINE_DATA__TRAGET": "price"})
    assert load_env({}, env_file).unknown == ["PIPELINE_DATA__TRAGET"]


def test_unknown_error_suggests_the_close_name() -> None:
    """``unknown_error`` names the unknown variable and suggests the setting it was meant to be."""
    error = unknown_error(["PIPELINE_DATA__TRAGET"])
    assert isinstance(error, ConfigError)
    assert error.exit_code == 3
    assert "PIPELINE_DATA__TRAGET" in error.message
    assert "did you mean PIPELINE_DATA__TARGET?" in error.message


def test_loader_variables_are_not_unknown(tmp_path: Path) -> None:
    """PIPELINE_PRESET, PIPELINE_CONFIG_DIR and PIPELINE_ENV_FILE steer loading, not unknown."""
    env_file = write_env(tmp_path, {"PIPELINE_PRESET": "titanic"})
    environ = {"PIPELINE_CONFIG_DIR": CONFIG, "PIPELINE_ENV_FILE": str(env_file)}
    assert set(LOADER_VARS) == {"PIPELINE_PRESET", "PIPELINE_CONFIG_DIR", "PIPELINE_ENV_FILE"}
    assert load(environ, env_file=env_file).unknown == []
    assert load({**environ, "PIPELINE_PRESET": "titanic"}, env_file=tmp_path / "x").unknown == []


def test_other_prefixes_are_ignored(no_env: Path) -> None:
    """Variables without the PIPELINE_ prefix are neither settings nor unknown."""
    loaded = load_env({"HOME": "/root", "PIPELINES": "x", "SEED": "3"}, no_env)
    assert loaded.unknown == []
    assert loaded.settings.seed == 42


# --- secrets and build config -------------------------------------------------------------------


def test_credentials_are_secret_and_never_public(no_env: Path) -> None:
    """Kaggle credentials load as SecretStr and stay out of public() and build_config()."""
    key, token = "kk-SECRET-123456", "tok-SECRET-654321"
    loaded = load_env(
        {"KAGGLE_KEY": key, "KAGGLE_API_TOKEN": token, "KAGGLE_USERNAME": "someone"}, no_env
    )
    s = loaded.settings
    assert isinstance(s.kaggle_key, SecretStr)
    assert isinstance(s.kaggle_api_token, SecretStr)
    assert s.kaggle_key.get_secret_value() == key
    assert s.kaggle_api_token.get_secret_value() == token
    assert loaded.origins[("kaggle_key",)] == "env"
    for shown in (repr(s), str(s), repr(s.public()), repr(s.build_config())):
        assert key not in shown
        assert token not in shown
    for field in ("kaggle_key", "kaggle_api_token", "kaggle_username"):
        assert field not in s.public()
        assert field not in s.build_config()
    assert "someone" not in repr(s.public())


def test_build_config_ignores_operational_settings(no_env: Path) -> None:
    """Settings differing only in store, logging, device or threads share one build_config."""
    base = load_env({}, no_env).settings
    other = load_env(
        {
            "PIPELINE_STORE": "/elsewhere",
            "PIPELINE_LOG_FORMAT": "console",
            "PIPELINE_LOG_LEVEL": "debug",
            "PIPELINE_TRAIN__DEVICE": "auto",
            "PIPELINE_TRAIN__THREADS": "3",
            "KAGGLE_KEY": "kk-123456",
        },
        no_env,
    ).settings
    assert base.public() != other.public()
    assert base.build_config() == other.build_config()
    build = base.build_config()
    assert "store" not in build
    assert "log_format" not in build
    assert "log_level" not in build
    assert "device" not in build["train"]
    assert "threads" not in build["train"]


def test_build_config_changes_with_what_shapes_the_model(no_env: Path) -> None:
    """The seed and the training knobs are part of build_config, so changing them changes it."""
    base = load_env({}, no_env).settings.build_config()
    assert load_env({"PIPELINE_SEED": "1"}, no_env).settings.build_config() != base
    assert load_env({"PIPELINE_TRAIN__MAX_EPOCHS": "2"}, no_env).settings.build_config() != base
    assert load_env({"PIPELINE_MODEL__HIDDEN": "[8]"}, no_env).settings.build_config() != base
    # Every model setting is recorded (a build's config.json says how it was trained, and a
    # tuned preset pins it), but the package's name and version, which do not shape it.
    assert set(base["model"]) == {"hidden", "dropout", "members", "linear_blend"}
    for change in ({"PIPELINE_MODEL__MEMBERS": "1"}, {"PIPELINE_MODEL__LINEAR_BLEND": "false"}):
        assert load_env(change, no_env).settings.build_config() != base
    assert load_env({"PIPELINE_MODEL__VERSION": "2.0.0"}, no_env).settings.build_config() == base


def test_build_config_records_one_spelling_of_the_data_settings(no_env: Path) -> None:
    """Missing markers and dropped columns in another order or named twice, and a sha256 pin,
    give the build config of the plain settings; ``read_as`` records what ``auto`` read the
    file as. ``public`` (what `config show` and manifests show) keeps the values as given."""
    base = load_env({}, no_env).settings
    other = load_env(
        {
            "PIPELINE_DATA__MISSING_VALUES": '["NA", "?", "NA"]',
            "PIPELINE_DATA__DROP": '["Id", "Street", "Id"]',
            "PIPELINE_DATA__SHA256": "ab" * 32,
        },
        no_env,
    ).settings
    same = load_env(
        {"PIPELINE_DATA__MISSING_VALUES": '["?", "NA"]', "PIPELINE_DATA__DROP": '["Street", "Id"]'},
        no_env,
    ).settings
    assert other.build_config() == same.build_config() != base.build_config()
    assert other.build_config()["data"]["missing_values"] == ["?", "NA"]
    assert "sha256" not in other.build_config()["data"]
    assert other.public()["data"]["drop"] == ["Id", "Street", "Id"]
    assert other.public()["data"]["sha256"] == "ab" * 32
    assert base.build_config()["data"]["format"] == "auto"
    read = {"format": "csv", "task": "regression", "target_transform": "log"}
    assert base.build_config(resolved=read) == load_env(
        {
            "PIPELINE_DATA__FORMAT": "csv",
            "PIPELINE_DATA__TASK": "regression",
            "PIPELINE_TRAIN__TARGET_TRANSFORM": "log",
        },
        no_env,
    ).settings.build_config(resolved=read)
    recorded = base.build_config(resolved=read)
    assert (recorded["data"]["format"], recorded["data"]["task"]) == ("csv", "regression")
    assert recorded["train"]["target_transform"] == "log"
    # A classification auto resolved to stays auto: not only a spelling (README, Builds).
    binary = base.build_config(resolved={**read, "task": "binary", "target_transform": "none"})
    assert binary["data"]["task"] == "auto"


# --- leaves -------------------------------------------------------------------------------------


def test_leaves_name_the_documented_variables() -> None:
    """``leaves()`` yields the core variable names the README promises, once each."""
    envs = [leaf.env for leaf in leaves()]
    assert len(envs) == len(set(envs))
    for name in (
        "PIPELINE_DATA__SOURCE",
        "PIPELINE_DATA__TARGET",
        "PIPELINE_DATA__TASK",
        "PIPELINE_SEED",
        "PIPELINE_STORE",
        "PIPELINE_LOG_FORMAT",
        "PIPELINE_LOG_LEVEL",
        "PIPELINE_MODEL__NAME",
        "PIPELINE_MODEL__VERSION",
    ):
        assert name in envs


def test_leaves_mark_exactly_the_credentials_secret() -> None:
    """Only the Kaggle and S3 credentials (under their tools' names) and serve's token are
    secret."""
    secret = {leaf.env for leaf in leaves() if leaf.secret}
    assert secret == {"KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "PIPELINE_SERVE__TOKEN",
                      "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}  # fmt: skip
    defaults = {leaf.env: leaf.default for leaf in leaves()}
    assert defaults["PIPELINE_SEED"] == 42
    assert defaults["PIPELINE_DATA__DROP"] == ["Id"]


@pytest.mark.parametrize("value", ["", "null"])
def test_an_empty_or_null_variable_says_how_to_get_the_default(
    no_env: Path, tmp_path: Path, value: str
) -> None:
    """PIPELINE_RUN__WORKERS= (or =null, as the README prints the default) is refused, as
    before, and the message now says that unsetting it gives the default (a user read it as
    "off"); in a .env file, that the line goes."""
    with pytest.raises(ConfigError) as err:
        load_env({"PIPELINE_RUN__WORKERS": value}, no_env)
    assert "unset PIPELINE_RUN__WORKERS for the default" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_env({}, write_env(tmp_path, {"PIPELINE_RUN__WORKERS": value}))
    assert "remove the line for the default" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_env({"PIPELINE_RUN__WORKERS": "two"}, no_env)
    assert "for the default" not in err.value.message


@pytest.mark.parametrize("value", ["local", " LOCAL "])
def test_ray_address_local_is_the_embedded_runtime(no_env: Path, value: str) -> None:
    """RAY_ADDRESS=local is Ray's word for a runtime of one's own: it was looked up as a host
    name and failed as unreachable (exit 5)."""
    assert load_env({"RAY_ADDRESS": value}, no_env).settings.ray_address is None
    assert load_env({"RAY_ADDRESS": "auto"}, no_env).settings.ray_address == "auto"
