"""K-fold bagging (``bagging``): small tables train K networks instead of select-then-refit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.conftest import event, invoke_isolated, run_cli, start_cli

from pipeline import bagging
from pipeline.model import ModelConfig, TabularMLP

# scikit-learn's bundled diabetes table (442 rows, a dev dependency): a small real regression
# table, where the validation split that chooses the epochs and the ridge's share is 66 rows.
ENV = {
    "PIPELINE_DATA__TARGET": "target",
    "PIPELINE_DATA__DROP": "[]",
    "PIPELINE_LOG_FORMAT": "json",
    "PIPELINE_TRAIN__MAX_EPOCHS": "30",
    "PIPELINE_TRAIN__PATIENCE": "8",
    "PIPELINE_MODEL__HIDDEN": "[64]",
    "PIPELINE_ENV_FILE": os.devnull,
}


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_diabetes

    path = tmp_path_factory.mktemp("data") / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    return path


def _env(data: Path, store: Path, **extra: str) -> dict[str, str]:
    return {**ENV, "PIPELINE_DATA__SOURCE": str(data), "PIPELINE_STORE": str(store), **extra}


def _build(store: Path, build_id: str, name: str) -> Any:
    return json.loads((store / "builds" / build_id / name).read_text())


@pytest.fixture(scope="module")
def bagged(tmp_path_factory: pytest.TempPathFactory, diabetes: Path) -> tuple[Path, dict[str, Any]]:
    """One default (auto) run on the 353 training + validation rows of diabetes."""
    root = tmp_path_factory.mktemp("bagged")
    done = invoke_isolated("train", root=root, env=_env(diabetes, root / "store"))
    assert done.exit_code == 0, done.output[-3000:]
    return root / "store", event(done.stdout, "train.summary")


@pytest.mark.slow
def test_a_small_table_is_bagged_by_default_and_the_package_predicts_it(
    bagged: tuple[Path, dict[str, Any]], diabetes: Path, tmp_path: Path, cli: Any
) -> None:
    """Under 1,000 training + validation rows, train bags: 5 networks of one member each (the
    default 4 members, rounded up per fold), each early-stopped on its own fold, merged into
    one ensemble of 5; no refit; validation metrics from the out-of-fold outputs of all 353
    rows; the ridge's share chosen on them. The package predicts the test rows the build
    scored, and `evaluate` re-measures them."""
    store, summary = bagged
    assert summary["bag_folds"] == 5
    build = summary["build_id"]
    metrics = _build(store, build, "metrics.json")
    assert metrics["refit"] is False
    assert metrics["bagging"]["folds"] == 5 and metrics["bagging"]["members_per_fold"] == 1
    assert len(metrics["bagging"]["best_epochs"]) == 5
    assert _build(store, build, "model.json")["members"] == 5
    history = _build(store, build, "history.json")
    assert len(history["folds"]) == 5 and history["refit"] == []
    assert history["selection"] == history["folds"][0]
    assert metrics["validation"]["rmse"] > 0 and metrics["test"]["rmse"] > 0
    # The diabetes target ranges 25..346: a network alone on 66 validation rows scored 56.8 on
    # seed 42's test rows; bagged, the test RMSE stays within what a sane model gets.
    assert metrics["test"]["rmse"] < 70, metrics["test"]
    env = _env(diabetes, store)
    again = cli("evaluate", build, env=env)
    assert again.exit_code == 0, again.output[-2000:]
    assert event(again.stdout, "evaluate.summary")["test"]["rmse"] == pytest.approx(
        metrics["test"]["rmse"], rel=1e-9
    )


@pytest.mark.slow
def test_bagging_is_reproducible_and_zero_folds_is_select_then_refit(
    bagged: tuple[Path, dict[str, Any]], diabetes: Path, tmp_path: Path
) -> None:
    """The same data, settings and seed give the same build id in another process (one torch
    thread there, the machine's count here); bag_folds=0
    trains as before bagging (a refit); 3 folds is another build."""
    _, summary = bagged
    env = _env(diabetes, tmp_path / "store")
    done = run_cli("train", env={**env, "PIPELINE_TRAIN__THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert event(done.stdout, "train.summary")["build_id"] == summary["build_id"]
    off = invoke_isolated("train", root=tmp_path, env={**env, "PIPELINE_TRAIN__BAG_FOLDS": "0"})
    assert off.exit_code == 0, off.output[-2000:]
    plain = event(off.stdout, "train.summary")
    assert plain["bag_folds"] is None and plain["build_id"] != summary["build_id"]
    history = _build(tmp_path / "store", plain["build_id"], "history.json")
    assert history["refit"] and "folds" not in history
    three = invoke_isolated("train", root=tmp_path, env={**env, "PIPELINE_TRAIN__BAG_FOLDS": "3"})
    assert event(three.stdout, "train.summary")["bag_folds"] == 3


@pytest.mark.slow
def test_a_stop_in_a_fold_checkpoints_and_resume_gives_the_uninterrupted_build(
    bagged: tuple[Path, dict[str, Any]], diabetes: Path, tmp_path: Path, cli: Any
) -> None:
    """SIGTERM in the third fold saves a checkpoint holding the two folds done; --resume trains
    the rest and builds what the uninterrupted run built."""
    _, summary = bagged
    store = tmp_path / "store"
    env = _env(diabetes, store)
    proc = start_cli("train", env=env)
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        row = json.loads(line)
        if row.get("event") == "train.epoch" and row["fold"] == 2 and row["epoch"] == 3:
            proc.send_signal(signal.SIGTERM)
            break
    lines.extend(proc.stdout)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err
    assert "in fold2 epoch" in err and "pipeline train --resume" in err, err
    assert event("".join(lines), "train.interrupted")["phase"] == "fold2"
    resumed = cli("train", "--resume", env=env)
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert event(resumed.stdout, "train.summary")["build_id"] == summary["build_id"]
    assert not any((store / "checkpoints").iterdir())


def test_the_merged_ensemble_is_the_mean_of_the_fold_networks() -> None:
    """``merge`` lays the folds' members side by side: its output is their outputs' mean."""
    cfg = ModelConfig(
        n_numeric=3, cardinalities=(4, 2), embedding_dims=(2, 2), hidden=(8,), dropout=0.0,
        n_outputs=2, members=2,
    )  # fmt: skip
    models = [TabularMLP(cfg, torch.Generator().manual_seed(s)) for s in range(3)]
    merged = bagging.merge(models)
    assert merged.cfg.members == 6
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(9))
    c = torch.tensor([[i % 4, i % 2] for i in range(10)])
    for m in (*models, merged):
        m.eval()
    with torch.no_grad():
        want = torch.stack([m(x, c) for m in models]).mean(dim=0)
        assert torch.allclose(merged(x, c), want, atol=1e-6)


def test_folds_cover_every_row_once_and_are_stratified() -> None:
    """Each row is held out by exactly one fold and trained on by the others; each class is
    dealt evenly between the folds."""
    rows = np.arange(100, 300)
    labels = np.array([0] * 150 + [1] * 50)
    folds = bagging.parts(rows, 5, 7, labels)
    held = np.sort(np.concatenate([h for _, h in folds]))
    assert np.array_equal(held, rows)
    for fit_rows, out in folds:
        assert not set(fit_rows) & set(out) and len(fit_rows) + len(out) == len(rows)
        assert np.sum(labels[out - 100] == 1) == 10


def test_bagging_with_workers_is_refused_before_any_data_is_read(cli: Any) -> None:
    """Bagging runs in this process: asking for it with data-parallel workers is exit 3."""
    done = cli("train", env={"PIPELINE_TRAIN__BAG_FOLDS": "5", "PIPELINE_TRAIN__WORKERS": "2"})
    assert done.exit_code == 3
    assert "bagging runs in this process" in done.stderr and "PIPELINE_TRAIN__WORKERS" in (
        done.stderr
    )


def test_a_table_of_fewer_rows_than_folds_takes_one_fold_per_row_or_is_refused(
    tmp_path: Path, cli: Any
) -> None:
    """Five rows of house prices leave 4 training + validation rows: 5 folds had an empty one,
    a ZeroDivisionError traceback. auto takes 4 folds; 5 asked for is exit 3 saying why."""
    from tests.conftest import REPO

    shipped = REPO / "src" / "pipeline" / "datasets" / "house-prices.csv"
    lines = shipped.read_text().splitlines()[:6]
    path = tmp_path / "five.csv"
    path.write_text("\n".join(lines) + "\n")
    env = {**_env(path, tmp_path / "store"), "PIPELINE_DATA__TARGET": "SalePrice",
           "PIPELINE_DATA__DROP": '["Id"]', "PIPELINE_TRAIN__MAX_EPOCHS": "3"}  # fmt: skip
    done = cli("train", env=env)
    assert done.exit_code == 0, done.output[-2000:]
    assert event(done.stdout, "train.summary")["bag_folds"] == 4
    refused = cli("train", env={**env, "PIPELINE_TRAIN__BAG_FOLDS": "5"})
    assert refused.exit_code == 3 and "has 4 training + validation rows" in refused.stderr
