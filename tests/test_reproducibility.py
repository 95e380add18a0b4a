"""Same code, data, config and seed -> the same build, byte for byte, across processes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from tests.conftest import event, events, store_files
from tests.conftest import run_fresh as run_cli

# Trains three times, twice in real processes.
pytestmark = pytest.mark.slow

SECRET = "kk-0xDEADBEEF-secret-value"


class Done(NamedTuple):
    """A finished `pipeline train`, in a process of its own or in-process."""

    code: int
    stdout: str
    stderr: str


def test_two_processes_same_seed_same_build_and_another_seed_differs(
    cli: Any, tmp_path: Path
) -> None:
    """Separate `pipeline train` processes (one on 2 threads) agree on the build id, the
    weights' bytes and the package's bytes; a third run with another seed (in-process: it
    needs no process of its own) differs."""
    env = {
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_TRAIN__MAX_EPOCHS": "3",
        "PIPELINE_ENV_FILE": os.devnull,
        "KAGGLE_USERNAME": "someone",
        "KAGGLE_KEY": SECRET,
    }
    runs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        store = tmp_path / f"store-{name}"
        args = ("train", "--id-file", str(tmp_path / f"{name}.id"))
        full = {**env, "PIPELINE_STORE": str(store), "PIPELINE_SEED": seed}
        if name == "b":  # another thread count: the same build, and the same package bytes
            full["PIPELINE_TRAIN__THREADS"] = "2"
        if name == "c":
            result = cli(*args, env=full)
            done = Done(result.exit_code, result.stdout, result.stderr)
        else:
            process = run_cli(*args, env=full, cwd=tmp_path)
            done = Done(process.returncode, process.stdout, process.stderr)
        assert done.code == 0, done.stderr
        # Every stdout line is a JSON event, and the last one is the stage summary.
        stream = events(done.stdout)
        assert stream[-1]["event"] == "train.summary"
        build_id = (tmp_path / f"{name}.id").read_text().strip()
        assert event(done.stdout, "train.summary")["build_id"] == build_id
        runs.append((build_id, store, done))

    (id_a, store_a, _), (id_b, store_b, _), (id_c, _, _) = runs
    assert id_a == id_b
    weights_a = (store_a / "builds" / id_a / "weights.pt").read_bytes()
    assert weights_a == (store_b / "builds" / id_b / "weights.pt").read_bytes()
    assert id_c != id_a

    # The timestamps differ between the two runs but are outside the id.
    run_a = json.loads((store_a / "builds" / id_a / "run.json").read_text())
    run_b = json.loads((store_b / "builds" / id_b / "run.json").read_text())
    assert run_a["started_at"] != run_b["started_at"]

    # The Kaggle key was in the environment of every run: it must appear nowhere.
    for _, store, done in runs:
        assert SECRET not in done.stdout and SECRET not in done.stderr
        for path in store_files(store):
            assert SECRET.encode() not in path.read_bytes(), path
    provenance = json.loads((store_a / "builds" / id_a / "provenance.json").read_text())
    assert provenance["inputs"]["seed"] == 7
    assert len(provenance["inputs"]["split"]["digest"]) == 64
    assert provenance["inputs"]["dataset"]["sha256"].startswith("1e18addf")
    assert {"git", "python", "torch", "pandas", "cpu", "threads"} <= set(provenance["environment"])

    # Packaged, the two stores' builds give the same archive bytes: the environment (threads,
    # CPU, kernel, git state) stays in the build record, out of the sealed provenance.
    archives = []
    for store in (store_a, store_b):
        assert cli("package", env={**env, "PIPELINE_STORE": str(store)}).exit_code == 0
        archives.append((store / "packages" / "house-prices" / "0.1.0.tar.gz").read_bytes())
    assert archives[0] == archives[1]


def test_one_file_named_two_ways_trains_one_build(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PIPELINE_DATA__SOURCE=./titanic.csv`, `=titanic.csv` and `=.//titanic.csv` name one
    file: one build id, and the events name it one way. The source is part of a build's
    identity, and its spelling used to be too."""
    import shutil

    data = Path(__file__).parents[1] / "src" / "pipeline" / "datasets" / "titanic.csv"
    shutil.copyfile(data, tmp_path / "titanic.csv")
    monkeypatch.chdir(tmp_path)
    ids = []
    for spelling in ("./titanic.csv", "titanic.csv", ".//titanic.csv"):
        env = {
            "PIPELINE_PRESET": "titanic",
            "PIPELINE_DATA__SOURCE": spelling,
            "PIPELINE_TRAIN__MAX_EPOCHS": "1",
            "PIPELINE_ENV_FILE": os.devnull,
        }
        done = cli("train", env=env)
        assert done.exit_code == 0, done.stderr
        summary = event(done.stdout, "train.summary")
        assert event(done.stdout, "data.fetched")["uri"] == "titanic.csv"
        ids.append(summary["build_id"])
    assert len(set(ids)) == 1, ids


def test_a_regression_task_and_transform_named_or_auto_train_one_build(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`task=auto` and `target_transform=auto` on house prices resolve to regression and log:
    naming them trains the same build id (it was another id of identical weights), and
    config.json records what they resolved to."""
    monkeypatch.chdir(tmp_path)
    base = {"PIPELINE_TRAIN__MAX_EPOCHS": "1", "PIPELINE_ENV_FILE": os.devnull}
    named = {"PIPELINE_DATA__TASK": "regression", "PIPELINE_TRAIN__TARGET_TRANSFORM": "log"}
    ids = []
    for env in (base, {**base, **named}):
        done = cli("train", env=env)
        assert done.exit_code == 0, done.stderr
        ids.append(event(done.stdout, "train.summary")["build_id"])
    assert ids[0] == ids[1]
    config = json.loads((tmp_path / "store" / "builds" / ids[0] / "config.json").read_text())
    assert config["data"]["task"] == "regression"
    assert config["train"]["target_transform"] == "log"


def test_data_settings_spelt_another_way_train_one_build(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sha256 pin of the bytes the build records anyway, the missing markers and the
    dropped columns in another order or named twice, `format=csv` for what `auto` reads as
    CSV, `target_transform=auto` for what it resolves to: one build id, whose config.json
    holds the one spelling; `evaluate` reads it back. Each of them was another build id of
    the same model."""
    import hashlib
    import shutil

    data = Path(__file__).parents[1] / "src" / "pipeline" / "datasets" / "titanic.csv"
    shutil.copyfile(data, tmp_path / "titanic.csv")
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    base = {
        "PIPELINE_PRESET": "titanic",  # missing ["?", ""], drop name, ticket, boat, body, ...
        "PIPELINE_DATA__SOURCE": "titanic.csv",
        "PIPELINE_TRAIN__MAX_EPOCHS": "1",
        "PIPELINE_ENV_FILE": os.devnull,
    }
    spellings = {
        "as the preset gives it": {},
        "pinned": {"PIPELINE_DATA__SHA256": digest.upper()},
        "markers reordered, one twice": {"PIPELINE_DATA__MISSING_VALUES": '["", "?", ""]'},
        "drop reordered, one twice": {
            "PIPELINE_DATA__DROP": '["home.dest", "body", "boat", "ticket", "name", "body"]'
        },
        "the format auto resolves to": {"PIPELINE_DATA__FORMAT": "csv"},
        # The preset names the transform (none) that auto resolves to.
        "target transform auto": {"PIPELINE_TRAIN__TARGET_TRANSFORM": "auto"},
    }
    ids = {}
    for how, change in spellings.items():
        done = cli("train", env={**base, **change})
        assert done.exit_code == 0, (how, done.stderr)
        ids[how] = event(done.stdout, "train.summary")["build_id"]
    assert set(ids.values()) == {ids["as the preset gives it"]}, ids

    build = tmp_path / "store" / "builds" / ids["pinned"]
    recorded = json.loads((build / "config.json").read_text())["data"]
    assert "sha256" not in recorded
    assert recorded["missing_values"] == ["", "?"] and recorded["format"] == "csv"
    assert recorded["drop"] == ["boat", "body", "home.dest", "name", "ticket"]
    provenance = json.loads((build / "provenance.json").read_text())
    assert provenance["inputs"]["dataset"]["sha256"] == digest  # the bytes are still named
    schema = json.loads((build / "schema.json").read_text())
    assert schema["dropped"] == ["name", "ticket", "boat", "body", "home.dest"]  # file order

    evaluated = cli("evaluate", ids["pinned"], env=base)
    assert evaluated.exit_code == 0, evaluated.stderr
    assert event(evaluated.stdout, "evaluate.summary")["build_id"] == ids["pinned"]
