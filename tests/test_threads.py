"""Thread count is a speed knob, not a model input: 1 and 2 torch threads give the same build."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import event
from tests.conftest import run_fresh as run_cli


def test_one_and_two_threads_give_the_same_build_id_and_weights(tmp_path: Path) -> None:
    """`pipeline train` with PIPELINE_TRAIN__THREADS=1 and =2 writes byte-identical builds."""
    builds = {}
    for threads in ("1", "2"):
        store = tmp_path / f"store-{threads}"
        done = run_cli(
            "train",
            env={
                "PIPELINE_STORE": str(store),
                "PIPELINE_LOG_FORMAT": "json",
                "PIPELINE_ENV_FILE": os.devnull,
                "PIPELINE_TRAIN__MAX_EPOCHS": "2",
                "PIPELINE_TRAIN__THREADS": threads,
                "PIPELINE_SEED": "3",
            },
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        summary = event(done.stdout, "train.summary")
        assert summary["threads"] == int(threads)  # the setting took effect and is logged
        build = store / "builds" / summary["build_id"]
        environment = json.loads((build / "provenance.json").read_text())["environment"]
        assert environment["threads"] == int(threads)  # and is recorded, outside the id
        builds[threads] = (summary["build_id"], (build / "weights.pt").read_bytes())
    assert builds["1"][0] == builds["2"][0]
    assert builds["1"][1] == builds["2"][1]
