"""`pipeline tune` with ``PIPELINE_STORE=s3://...``: the search, its partial results and its
record live in the object store, and give what the same search gives on a local folder."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import event
from tests.conftest import run_fresh as run_cli

pytestmark = [pytest.mark.s3, pytest.mark.slow]

QUICK = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "4",
    "PIPELINE_TRAIN__PATIENCE": "2",
    "PIPELINE_TUNE__SCORING": "validation",
    "PIPELINE_TUNE__CONCURRENCY": "1",
    "PIPELINE_LOG_FORMAT": "json",
    "RAY_ADDRESS": "",
}


def _run(env: dict[str, str], *args: str) -> Any:
    done = run_cli(*args, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_tune_on_the_object_store_matches_a_local_folder_and_its_winner_trains(
    s3_server: Any, tmp_path: Path
) -> None:
    """Tune on s3:// (embedded Ray), then `tune show` and a train with the winner's preset from
    another process that sees only the URL: the same tune id, trials and scores as the same
    search on a local folder, and nothing of the store on the local disk."""
    s3 = {**s3_server.env(f"tune-{uuid.uuid4().hex[:8]}"), **QUICK}
    s3["PIPELINE_ENV_FILE"] = os.devnull
    preset = tmp_path / "tuned.toml"
    summary = event(
        _run(s3, "tune", "--trials", "2", "--preset-out", str(preset)).stdout, "tune.summary"
    )
    local = {**QUICK, "PIPELINE_STORE": str(tmp_path / "local")}
    local["PIPELINE_ENV_FILE"] = s3["PIPELINE_ENV_FILE"]
    reference = event(_run(local, "tune", "--trials", "2").stdout, "tune.summary")
    assert summary["tune_id"] == reference["tune_id"]
    assert summary["winner"] == reference["winner"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = event(
        run_cli("tune", "show", summary["tune_id"][:10], env=s3, cwd=elsewhere).stdout,
        "tune.show",
    )
    trials = json.loads((tmp_path / "local" / "tunes" / reference["tune_id"] / "trials.json")
                        .read_text())  # fmt: skip
    assert sorted(r["score"] for r in shown["trials"]) == sorted(t["score"] for t in trials)
    trained = _run({**s3, "PIPELINE_PRESET": str(preset)}, "train")
    build = event(trained.stdout, "train.summary")["build_id"]
    listed = _run(s3, "tune", "show").stdout  # the latest tune, read back from the store
    assert event(listed, "tune.show")["tune_id"] == summary["tune_id"]
    assert len(build) == 64 and list(elsewhere.iterdir()) == []
