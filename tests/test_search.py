"""The search's library: a typed space checked at load, configurations drawn from the seed.

These need no Ray: what the trials are is decided before Ray sees them (tests/test_tune.py
runs the search itself on Ray).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli

from pipeline import search, tune
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load
from pipeline.settings.space import check_fits


def _settings(tmp_path: Path, **env: str) -> Settings:
    return load(env, env_file=tmp_path / "absent.env").settings


def _refused(tmp_path: Path, space: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space))
    assert caught.value.exit_code == 3
    assert "\n" not in caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("space", "named"),
    [
        (
            {"train.learning_rat": {"loguniform": [1e-4, 1e-2]}},
            "did you mean 'train.learning_rate'",
        ),
        (
            {"train.test_fraction": {"uniform": [0.1, 0.2]}},
            "is not searchable (it changes the rows or the target each trial is scored on",
        ),
        (
            {"train.workers": {"int": [1, 3]}},
            "is not searchable (it chooses how a run executes, not what the model learns)",
        ),
        # Each named why: refit was "it chooses the data or how a run executes", which it is not.
        (
            {"train.refit": {"choice": [True, False]}},
            "is not searchable (it acts after a trial is scored",
        ),
        ({"train.bag_folds": {"choice": [0, 5]}}, "is not searchable (trials are scored unbagged"),
        ({"seed": {"int": [1, 5]}}, "names no searchable setting"),
        ({"train.learning_rate": {"loguniform": [0, 1e-2]}}, "loguniform needs low > 0"),
        ({"train.learning_rate": {"uniform": [0.1, 0.01]}}, "low <= high"),
        ({"train.batch_size": {"uniform": [8, 64]}}, "integer setting"),
        # A range over a true/false, text or list setting: only its bounds were checked (0
        # and 1 are booleans), and every fraction drawn between them failed its trial.
        ({"features.log_skewed": {"uniform": [0, 1]}}, '{"choice": [true, false]}'),
        ({"features.log_skewed": {"int": [0, 1]}}, "is not a number setting: an int range"),
        ({"features.scaling": {"uniform": [0, 1]}}, '["robust", "standard"]'),
        ({"model.hidden": {"int": [1, 3]}}, '{"choice": [[256, 128]]}'),
        ({"train.batch_size": {"int": [8.5, 64]}}, "(integers)"),
        ({"model.hidden": {"choice": [[0]]}}, "choice value [0] is not a valid model.hidden"),
        ({"model.dropout": {"uniform": [0.1, 1.2]}}, "uniform value 1.2"),
        ({"model.dropout": [0.1, 0.2]}, 'expected one of {"loguniform"'),
        ({"model.dropout": {"normal": [0.1, 0.2]}}, 'expected one of {"loguniform"'),
        ({"model.dropout": {"choice": []}}, "choice needs a list of 1 to 64 values"),
        ({}, "the space is empty"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(tmp_path: Path, space: Any, named: str) -> None:
    message = _refused(tmp_path, space)
    assert "PIPELINE_TUNE__SPACE" in message
    assert named in message


def test_the_default_space_is_valid_and_covers_what_users_tune(tmp_path: Path) -> None:
    space = _settings(tmp_path).tune.space
    assert set(space) >= {
        "train.learning_rate", "train.weight_decay", "train.batch_size", "model.hidden",
        "model.dropout", "features.max_embedding_dim", "features.min_frequency",
        "features.log_skewed", "features.smooth_clip", "features.clip_quantile", "model.members",
    }  # fmt: skip


def test_trial_one_is_the_current_configuration(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PIPELINE_TRAIN__LEARNING_RATE="0.002")
    first = search.trial_configs(settings, 3)[0]
    assert first["train.learning_rate"] == 0.002
    assert first["model.hidden"] == [256, 128]


def test_configurations_come_from_the_seed_alone(tmp_path: Path) -> None:
    """Same seed: same draws; a longer search extends a shorter one; another seed differs."""
    settings = _settings(tmp_path)
    eight = search.trial_configs(settings, 8)
    assert search.trial_configs(settings, 8) == eight
    assert search.trial_configs(settings, 12)[:8] == eight
    other = search.trial_configs(_settings(tmp_path, PIPELINE_SEED="7"), 8)
    assert other[0] == eight[0] and other[1:] != eight[1:]
    assert len({json.dumps(c, sort_keys=True) for c in eight}) == 8  # no repeats


def test_draws_respect_each_dimension(tmp_path: Path) -> None:
    space = {
        "train.learning_rate": {"loguniform": [1e-4, 1e-2]},
        "model.dropout": {"uniform": [0.0, 0.3]},
        "features.min_frequency": {"int": [2, 4]},
        "model.hidden": {"choice": [[64], [128, 64]]},
    }
    settings = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space))
    for config in search.trial_configs(settings, 40)[1:]:
        assert 1e-4 <= config["train.learning_rate"] <= 1e-2
        assert 0.0 <= config["model.dropout"] <= 0.3
        assert config["features.min_frequency"] in (2, 3, 4)
        assert config["model.hidden"] in ([64], [128, 64])
        assert float(f"{config['train.learning_rate']:.3g}") == config["train.learning_rate"]
        applied = search.apply(settings, config)
        assert applied.model.hidden == config["model.hidden"]
        assert applied.train.learning_rate == config["train.learning_rate"]


def test_one_space_spelled_two_ways_is_one_search(tmp_path: Path) -> None:
    """`["64"]` and `[64]`, `[1.0, 5]` and `[1, 5]` read as the same settings: they are the
    same space, so the same draws and the same tune id (they gave two ids before)."""
    spelled = {
        "model.members": {"choice": ["4", 8]},
        "model.hidden": {"choice": [["64"], [128, 64]]},
        "features.min_frequency": {"int": [1.0, 5]},
        "model.dropout": {"uniform": [0, 0.3]},
    }
    normal = {
        "model.members": {"choice": [4, 8]},
        "model.hidden": {"choice": [[64], [128, 64]]},
        "features.min_frequency": {"int": [1, 5]},
        "model.dropout": {"uniform": [0.0, 0.3]},
    }
    one = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(spelled))
    other = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(normal))
    assert json.dumps(one.tune.space) == json.dumps(other.tune.space) == json.dumps(normal)
    assert search.trial_configs(one, 6) == search.trial_configs(other, 6)


def test_a_small_space_is_not_drawn_twice(tmp_path: Path) -> None:
    space = {"features.log_skewed": {"choice": [True, False]}}
    settings = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space))
    configs = search.trial_configs(settings, 2)
    assert configs == [{"features.log_skewed": True}, {"features.log_skewed": False}]


@pytest.mark.parametrize(
    ("env", "task", "transform", "expected"),
    [
        ({}, "regression", "log", "rmse_log"),  # auto resolved to log by the schema
        ({}, "regression", "none", "rmse"),
        ({}, "binary", "none", "log_loss"),
        ({"PIPELINE_TUNE__METRIC": "accuracy"}, "multiclass", "none", "accuracy"),
    ],
)
def test_the_metric_follows_the_task(
    tmp_path: Path, env: dict[str, str], task: str, transform: str, expected: str
) -> None:
    assert search.metric_for(_settings(tmp_path, **env), task, transform) == expected


@pytest.mark.parametrize(
    ("env", "task", "named"),
    [
        ({"PIPELINE_TUNE__METRIC": "accuracy"}, "regression", "does not apply to a regression"),
        ({"PIPELINE_TUNE__METRIC": "rmse"}, "binary", "does not apply to a binary"),
        ({"PIPELINE_TUNE__METRIC": "rmse_log"}, "regression", "needs a log target"),
        ({"PIPELINE_TUNE__METRIC": "roc_auc"}, "multiclass", "needs a binary target"),
    ],
)  # fmt: skip
def test_a_metric_that_cannot_rank_this_task_is_refused(
    tmp_path: Path, env: dict[str, str], task: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        search.metric_for(_settings(tmp_path, **env), task, "none")


def test_the_winner_preset_is_toml_that_loads_to_the_winning_recipe(tmp_path: Path) -> None:
    """--preset-out: a TOML file whose settings are the winner's recipe, nothing operational;
    the data as given (a sha256 pin kept, which the build config leaves out)."""
    pin = "ab" * 32
    settings = _settings(tmp_path, PIPELINE_PRESET="titanic", PIPELINE_DATA__SHA256=pin)
    winner = {"trial": 3, "score": 0.41, "config": search.trial_configs(settings, 4)[3]}
    path = tmp_path / "tuned.toml"
    tune.write_preset(path, settings, winner, "f" * 64, "log_loss")
    parsed = tomllib.loads(path.read_text())
    assert parsed["data"]["column_kinds"] == {"pclass": "categorical"}
    assert parsed["data"]["sha256"] == pin and parsed["data"]["missing_values"] == ["?", ""]
    assert "device" not in parsed["train"] and "threads" not in parsed["train"]
    assert {"members", "linear_blend"} <= set(parsed["model"])  # the whole recipe is pinned
    reloaded = _settings(tmp_path, PIPELINE_PRESET=str(path))
    assert reloaded.build_config() == search.apply(settings, winner["config"]).build_config()
    assert reloaded.model.name == "titanic"


def test_no_secret_travels_to_the_cluster_and_no_test_row_either(tmp_path: Path) -> None:
    """The payload Ray ships to its workers: settings without secrets, and only the training
    and validation rows (renumbered), never the test rows."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    settings = _settings(tmp_path, KAGGLE_KEY="s3cret-key", PIPELINE_SERVE__TOKEN="s3cret-token")
    frame = pd.DataFrame({"x": range(10), "y": range(10)})
    split = SimpleNamespace(
        train=np.array([0, 2, 4, 6]), val=np.array([8, 9]), test=np.array([1, 3, 5, 7])
    )
    data = SimpleNamespace(frame=frame, split=split, schema=None, label="d", seeds=None)
    payload = tune._payload(settings, data, "rmse", None, [{}])  # type: ignore[arg-type]
    assert payload.settings.kaggle_key is None and payload.settings.serve.token is None
    assert payload.settings.build_config() == settings.build_config()
    assert payload.frame["x"].tolist() == [0, 2, 4, 6, 8, 9]
    assert payload.train.tolist() == [0, 1, 2, 3] and payload.val.tolist() == [4, 5]


def test_a_tune_record_is_found_by_prefix_and_refused_when_changed(tmp_path: Path) -> None:
    """`tune show`'s reading: the latest or a prefix (any case) resolves; a changed file is an
    integrity error, as for builds, repaired by running the search again; an unknown prefix is
    not found, a too short one says so."""
    from pipeline.errors import IntegrityError, NotFoundError
    from pipeline.store import Store

    store = Store.from_uri(str(tmp_path / "store"))
    trials = [{"trial": 0, "status": "ok", "score": 0.5, "config": {}, "seconds": 1.0,
               "rank": 1, "metrics": {}, "epochs": 3, "error": None}]  # fmt: skip
    tid = tune._write(store, {"seed": 1}, trials, trials[0], "rmse", 2.0)
    assert tune.load(store, None)[0] == tid == tune.load(store, tid[:6])[0]
    assert tune.load(store, tid[:6].upper())[0] == tid  # a copied upper-case prefix
    assert tune.load(store, tid)[1]["winner.json"]["score"] == 0.5
    with pytest.raises(NotFoundError, match="no tune 'abcdef'"):
        tune.load(store, "abcdef")
    with pytest.raises(NotFoundError, match="too short: give at least 4 hex digits"):
        tune.load(store, tid[:2])  # it said "no tune" although one starts so
    path = tmp_path / "store" / "tunes" / tid / "trials.json"
    path.write_text(path.read_text().replace("0.5", "0.1"))
    with pytest.raises(IntegrityError, match=r"trials\.json of tune"):
        tune.load(store, tid)
    # Running the search again repairs the record (it was kept damaged).
    assert tune._write(store, {"seed": 1}, trials, trials[0], "rmse", 2.0) == tid
    assert tune.load(store, tid)[1]["winner.json"]["score"] == 0.5


def test_an_ambiguous_id_prefix_lists_the_ids_it_matches(tmp_path: Path) -> None:
    """Two builds (or tunes) whose ids share the prefix: the message names both (it said
    only how many matched, so the user had to list the folder)."""
    from pipeline.artifacts import resolve_in
    from pipeline.errors import NotFoundError
    from pipeline.store import Store

    store = Store.from_uri(str(tmp_path / "store"))
    for id_ in ("abcd" + "1" * 60, "abcd" + "2" * 60, "ffff" + "3" * 60):
        store.write(f"builds/{id_}/manifest.json", b"{}")
    with pytest.raises(NotFoundError) as caught:
        resolve_in(store, "builds", "abcd", "latest-build", "build", "pipeline train")
    assert "ambiguous (2 builds: abcd11111111, abcd22222222)" in caught.value.message
    found = resolve_in(store, "builds", "ffff", "latest-build", "build", "pipeline train")
    assert found == "ffff" + "3" * 60


def test_resume_without_an_interrupted_search_is_refused_naming_the_others(
    cli: Any, store: Path
) -> None:
    """`tune --resume` that finds no interrupted run of this search is exit 8 before Ray
    starts, as `train --resume` without a checkpoint is (it logged a warning and started the
    whole search over, leaving the interrupted one's results behind); an interrupted search
    with other settings (here, other --trials) is counted in the message."""
    from tests.conftest import one_error_line

    env = {"PIPELINE_TRAIN__MAX_EPOCHS": "2"}
    first = cli("tune", "--trials", "2", "--resume", env=env)
    assert first.exit_code == 8
    line = one_error_line(first)
    assert "no interrupted search with these data, settings, seed and --trials" in line
    assert "run `pipeline tune` without --resume" in line and "other interrupted" not in line
    other = store / "tune-partial" / ("0" * 32)
    other.mkdir(parents=True)
    (other / "00000-00.json").write_text('{"trial": 0, "status": "ok"}')
    again = cli("tune", "--trials", "3", "--resume", env=env)
    assert again.exit_code == 8
    assert "(1 other interrupted search(es) in tune-partial/" in one_error_line(again)
    assert not (store / "tunes").exists()


@pytest.mark.parametrize(
    ("env", "space", "refused"),
    [
        # Beside the defaults (4 members) [4096, 4096, 4096] broke the weight bound as settings
        # loaded, with 1 member set: every command was exit 3 over a valid space.
        ({"PIPELINE_MODEL__MEMBERS": "1"},
         {"model.hidden": {"choice": [[4096, 4096, 4096], [128]]}}, None),
        ({}, {"model.hidden": {"choice": [[4096, 4096, 4096], [128]]}},
         "key 'model.hidden': choice value [4096, 4096, 4096] is not a valid model.hidden "
         "(134,217,728 weights between hidden layers (33,554,432 in each of 4 member(s)"),
        # ...and [4096, 2048] beside 16 members passed, and failed every trial that drew it.
        ({"PIPELINE_MODEL__MEMBERS": "16"}, {"model.hidden": {"choice": [[64], [4096, 2048]]}},
         "choice value [4096, 2048] is not a valid model.hidden"),
        # Values valid alone that break a rule together: every trial that drew them failed,
        # retried twice, and the search exited 0.
        ({}, {"model.hidden": {"choice": [[64], [4096, 4096]]},
              "model.members": {"choice": [1, 8]}},
         "keys 'model.hidden', 'model.members': together they can draw "
         "model.hidden=[4096, 4096], model.members=8"),
    ],
)  # fmt: skip
def test_the_space_is_checked_beside_the_settings_as_configured(
    tmp_path: Path, env: dict[str, str], space: Any, refused: str | None
) -> None:
    """Settings load checks each value of the space beside the section's defaults, except the
    rules across its settings (the weight bound of hidden times members): `pipeline tune`
    checks those beside the settings as configured (``search.check_fits``), exit 3."""
    settings = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space), **env)
    if refused is None:
        check_fits(settings)
        return
    with pytest.raises(ConfigError) as caught:
        check_fits(settings)
    message = caught.value.message
    assert caught.value.exit_code == 3 and "\n" not in message
    assert message.startswith("invalid setting tune.space from env var PIPELINE_TUNE__SPACE: ")
    assert refused in message


def test_a_drawn_combination_the_settings_refuse_fails_its_trial_with_one_line(
    tmp_path: Path,
) -> None:
    """With 16 members set, a drawn [4096, 2048] breaks the weight bound (`pipeline tune`
    refuses such a space first: ``check_fits``). Drawn anyway, that was a pydantic dump,
    retried twice as if a worker had died; it is a ConfigError, which `trainable` records as
    a failed trial."""
    settings = _settings(
        tmp_path,
        PIPELINE_MODEL__MEMBERS="16",
        PIPELINE_TUNE__SPACE=json.dumps({"model.hidden": {"choice": [[64], [4096, 2048]]}}),
    )
    assert search.apply(settings, {"model.hidden": [64]}).model.hidden == [64]
    with pytest.raises(ConfigError) as caught:
        search.apply(settings, {"model.hidden": [4096, 2048]})
    message = caught.value.message
    assert message.startswith("the trial's settings are not valid: model: 134,217,728 weights")
    assert "\n" not in message and "input_value" not in message


def test_a_damaged_record_of_an_interrupted_search_is_run_again_not_a_traceback(
    tmp_path: Path,
) -> None:
    """`tune --resume` read each finished run's record as it was: one cut short was a
    JSONDecodeError traceback, one edited was used silently. Each record carries the sha256 of
    its content: one cut short, edited, without its digest (an earlier version's) or kept under
    another run's name is work to do again, named in a warning."""
    from pipeline.store import Store
    from pipeline.trials import Partial

    class Log:
        def __init__(self) -> None:
            self.warnings: list[tuple[str, dict[str, Any]]] = []

        def warning(self, event: str, **fields: Any) -> None:
            self.warnings.append((event, fields))

    store = Store.from_uri(str(tmp_path / "store"))
    partial = Partial(store, {"search": 1})
    ok = {"trial": 0, "status": "ok", "score": 0.5, "metrics": {"rmse": 0.5}, "epochs": 3,
          "seconds": 1.0}  # fmt: skip
    partial.record(ok)
    partial.record({**ok, "trial": 1})
    partial.record({**ok, "trial": 2})
    key = f"{partial.prefix}/00001-00.json"
    store.write(key, store.read_bytes(key)[:20])  # cut short
    store.write_json(f"{partial.prefix}/00002-00.json", {"status": "ok"})  # no trial
    partial.record({**ok, "trial": 3})
    edited = f"{partial.prefix}/00003-00.json"
    store.write_json(edited, {**store.read_json(edited), "score": 0.1})
    store.write_json(f"{partial.prefix}/00004-00.json", {**ok, "trial": 4})  # no digest
    store.write(
        f"{partial.prefix}/00005-00.json", store.read_bytes(f"{partial.prefix}/00000-00.json")
    )
    log = Log()
    done = partial.load(log)
    assert sorted(done) == [0] and done[0] == ok
    damaged = sorted(fields["key"] for event, fields in log.warnings)
    assert damaged == [key, *(f"{partial.prefix}/0000{n}-00.json" for n in range(2, 6))]
    assert all(event == "tune.resume_record_damaged" for event, _ in log.warnings)


def test_a_retried_trials_error_is_its_message_without_rays_traceback_or_colours() -> None:
    """The `tune.trial_retried` warning carried Ray's error file as it was: terminal colours
    (``\\x1b[36m``), the ``ray::ImplicitFunc.train()`` header and traceback frames."""
    from pipeline.trials import failure_text

    record = (
        "Failure # 1 (occurred at 2026-12-06_12-00-00)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=123, ip=10.0.0.1, actor_id=abc)\n"
        '  File "/x/trainable.py", line 331, in train\n'
        "    raise skipped from exception_cause(skipped)\n"
        "    ^^^^^^^^^^^^\n"
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
        "\tclass_name: ImplicitFunc\n"
        "The actor's worker process was killed (SIGKILL).\n"
    )
    assert failure_text("Failure # 0 (occurred at x)\nold\n" + record) == (
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task. "
        "The actor's worker process was killed (SIGKILL)."
    )


@pytest.mark.parametrize(
    ("env", "trials", "most"),
    [
        ({"PIPELINE_TRAIN__BATCH_SIZE": "32"}, 3, 2),  # trial 0 is one of the choices
        ({"PIPELINE_TRAIN__BATCH_SIZE": "128"}, 4, 3),  # trial 0 is outside them
    ],
)
def test_more_trials_than_a_finite_space_holds_is_refused(
    tmp_path: Path, env: dict[str, str], trials: int, most: int
) -> None:
    """Two batch sizes, 5 trials: trials 3 and 4 repeated 2 and 1, scores and all, without a
    word. More trials than the space's configurations (and the current settings) is exit 3;
    as many runs; a continuous dimension has no end."""
    space = {"train.batch_size": {"choice": [32, 64]}}
    settings = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space), **env)
    with pytest.raises(ConfigError) as caught:
        search.check_trials(settings, trials)
    assert (
        f"{trials} trials (PIPELINE_TUNE__TRIALS) are more than the {most} configuration(s)"
        in caught.value.message
    )
    search.check_trials(settings, most)
    assert len({json.dumps(c) for c in search.trial_configs(settings, most)}) == most
    wide = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(
        {**space, "model.dropout": {"uniform": [0.0, 0.3]}}))  # fmt: skip
    search.check_trials(wide, 50)


def test_a_range_of_one_value_counts_as_one_configuration(tmp_path: Path) -> None:
    """``{"uniform": [0.3, 0.3]}`` can draw one value: 3 trials repeated the same one, score
    and all, where a choice of one value was refused as too many trials."""
    space = {"model.dropout": {"uniform": [0.3, 0.3]}}
    settings = _settings(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space))
    with pytest.raises(ConfigError) as caught:
        search.check_trials(settings, 3)
    assert "3 trials (PIPELINE_TUNE__TRIALS) are more than the 2 configuration(s)" in (
        caught.value.message
    )
    search.check_trials(settings, 2)
    # The range's one value is the current setting's (dropout 0.1, the default): trials 0 and
    # 1 ran the same configuration, score and all; 2 trials are refused, through the CLI too.
    for kind, key, value in (("uniform", "model.dropout", 0.1),
                             ("loguniform", "train.learning_rate", 0.001)):  # fmt: skip
        one = json.dumps({key: {kind: [value, value]}})
        same = _settings(tmp_path, PIPELINE_TUNE__SPACE=one)
        with pytest.raises(ConfigError) as caught:
            search.check_trials(same, 2)
        assert "2 trials (PIPELINE_TUNE__TRIALS) are more than the 1 configuration(s)" in (
            caught.value.message
        )
        assert "ask for 1 trial (--trials 1)" in caught.value.message
        search.check_trials(same, 1)
        done = run_cli("tune", "--trials", "2", env={
            "PIPELINE_TUNE__SPACE": one, "PIPELINE_STORE": str(tmp_path / "store"),
            "PIPELINE_ENV_FILE": os.devnull})  # fmt: skip
        assert done.returncode == 3 and "the 1 configuration(s)" in done.stderr, done.stderr
        assert not (tmp_path / "store").exists()
