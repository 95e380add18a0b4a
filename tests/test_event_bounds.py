"""A classifier with many classes: its K x K confusion matrices stay in metrics.json, out of
summary events and the /v1/model document (issue 11, item 18)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import event

from pipeline.metrics import EVENT_MAX_CLASSES
from pipeline.serve.server import load_release
from pipeline.settings import load

pytestmark = pytest.mark.slow


def _many_classes(path: Path, k: int = 14, n: int = 700) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    label = np.clip(((x + 3) / 6 * k).astype(int), 0, k - 1)
    noise = rng.normal(size=n)
    rows = "\n".join(f"{a:.4f},{b:.4f},c{c}" for a, b, c in zip(x, noise, label, strict=True))
    path.write_text("x,noise,grade\n" + rows + "\n")


def test_many_classes_keep_their_matrices_in_files_not_in_events(cli: Any, tmp_path: Path) -> None:
    """train.summary, evaluate.summary and /v1/model leave out a 14-class matrix; metrics.json
    keeps both (validation and test); a 2-class matrix stays everywhere."""
    data = tmp_path / "grades.csv"
    _many_classes(data)
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "grade",
           "PIPELINE_DATA__TASK": "multiclass", "PIPELINE_TRAIN__MAX_EPOCHS": "3",
           "PIPELINE_MODEL__NAME": "grades"}  # fmt: skip
    trained = cli("train", "--id-file", str(tmp_path / "b"), env=env)
    assert trained.exit_code == 0, trained.output
    summary = event(trained.stdout, "train.summary")
    build = (tmp_path / "b").read_text().strip()
    stored = json.loads((tmp_path / "store" / "builds" / build / "metrics.json").read_text())
    for part in ("validation", "test"):
        assert len(stored[part]["confusion_matrix"]["labels"]) == 14 > EVENT_MAX_CLASSES
        assert "confusion_matrix" not in summary[part]
        assert summary[part]["accuracy"] == stored[part]["accuracy"]
    evaluated = cli("evaluate", build, env=env)
    assert "confusion_matrix" not in event(evaluated.stdout, "evaluate.summary")["test"]
    packaged = cli("package", build, env=env)
    assert packaged.exit_code == 0, packaged.output
    archive = next((tmp_path / "store" / "packages").glob("*/*.tar.gz"))
    settings = load({**env, "PIPELINE_STORE": str(tmp_path / "store")}).settings
    info = load_release(settings, None, archive).info()
    assert "confusion_matrix" not in info["metrics"]["test"]
    assert info["metrics"]["test"]["accuracy"] == stored["test"]["accuracy"]


def test_two_classes_keep_their_matrix_in_the_summary(cli: Any) -> None:
    """Titanic's 2 x 2 matrix is small: the summary event still carries it."""
    trained = cli("train", env={"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "2"})
    assert trained.exit_code == 0, trained.output
    matrix = event(trained.stdout, "train.summary")["test"]["confusion_matrix"]
    assert len(matrix["labels"]) == 2
