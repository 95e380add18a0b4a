"""`pipeline evaluate`: re-measured test metrics, K-fold cross-validation, gates, integrity."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, event, events, invoke_isolated, start_cli

# Every test evaluates a trained build.
pytestmark = pytest.mark.slow

FAST = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "15"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One small Titanic build, trained once per module (and xdist worker): (its store, its id).

    Tests never change this store: each works on a copy (`built`)."""
    root = tmp_path_factory.mktemp("evaluate")
    result = invoke_isolated("train", "--id-file", str(root / "id"), root=root, env=FAST)
    assert result.exit_code == 0, result.output
    return root / "store", (root / "id").read_text().strip()


@pytest.fixture
def built(trained: tuple[Path, str], store: Path) -> tuple[str, dict[str, Any]]:
    """The module's build, copied into this test's store: (build id, its metrics.json)."""
    shutil.copytree(trained[0], store)
    build_id = trained[1]
    return build_id, json.loads((store / "builds" / build_id / "metrics.json").read_text())


def test_evaluate_remeasures_the_recorded_test_metrics(cli: Any, built: tuple[str, dict]) -> None:
    """Evaluating the latest build reproduces the test metrics recorded at training time."""
    build_id, metrics = built
    result = cli("evaluate", env=FAST)
    assert result.exit_code == 0, result.output
    summary = event(result.stdout, "evaluate.summary")
    assert summary["build_id"] == build_id and summary["passed"] is True
    for name in ("accuracy", "f1_macro", "roc_auc", "log_loss"):
        assert summary["test"][name] == pytest.approx(metrics["test"][name], rel=1e-9)
    assert summary["test"]["confusion_matrix"] == metrics["test"]["confusion_matrix"]


def test_settings_of_the_recipe_set_today_to_other_values_are_said_to_be_ignored(
    cli: Any, built: tuple[str, dict], tmp_path: Path
) -> None:
    """PIPELINE_DATA__SOURCE pointed at other labelled rows (or another target, seed or
    network) gave the build's own test metrics back without a word, where predict warns of
    the run settings a release replaces. The same settings as the build's are not named."""
    build_id, metrics = built
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    env = {**FAST, "PIPELINE_DATA__SOURCE": str(other), "PIPELINE_SEED": "7",
           "PIPELINE_MODEL__DROPOUT": "0.3"}  # fmt: skip
    result = cli("evaluate", build_id, env=env)
    assert result.exit_code == 0, result.output
    warned = event(result.stdout, "evaluate.settings_ignored")
    assert warned["level"] == "warning"
    assert warned["settings"] == ["PIPELINE_DATA__SOURCE", "PIPELINE_MODEL__DROPOUT",
                                  "PIPELINE_SEED"], warned  # fmt: skip
    assert f"build {build_id[:12]} is re-tested on the data and settings it was trained with"\
        in warned["message"]  # fmt: skip
    summary = event(result.stdout, "evaluate.summary")
    assert summary["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], rel=1e-9)
    same = cli("evaluate", build_id, env=FAST)
    assert not [e for e in events(same.stdout) if e["event"] == "evaluate.settings_ignored"]


def test_evaluate_by_prefix_with_cross_validation(cli: Any, built: tuple[str, dict]) -> None:
    """--folds 3 cross-validates the build's recipe on its non-test rows, fold by fold."""
    build_id, _ = built
    result = cli("evaluate", build_id[:8], "--folds", "3", env=FAST)
    assert result.exit_code == 0, result.output
    folds = [
        e for e in map(json.loads, result.stdout.splitlines()) if e["event"] == "evaluate.fold"
    ]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    cv = event(result.stdout, "evaluate.summary")["cross_validation"]
    assert cv["folds"] == 3
    assert 0.6 < cv["accuracy_mean"] <= 1.0 and cv["accuracy_std"] >= 0


@pytest.mark.parametrize(
    ("gate", "bound", "code"),
    [("PIPELINE_GATES__MIN_ACCURACY", "0.6", 0), ("PIPELINE_GATES__MIN_ACCURACY", "0.99", 6),
     ("PIPELINE_GATES__MAX_LOG_LOSS", "0.01", 6), ("PIPELINE_GATES__MIN_R2", "0.5", 3)],
)  # fmt: skip
def test_quality_gates_decide_the_exit_code(
    cli: Any, built: tuple[str, dict], gate: str, bound: str, code: int
) -> None:
    """A met gate exits 0, a missed one exits 6, a gate on a metric the task lacks exits 3."""
    result = cli("evaluate", env={**FAST, gate: bound})
    assert result.exit_code == code, result.output
    if code == 6:
        assert result.stderr.startswith("error: build ") and "quality gates" in result.stderr
        assert f"({gate}); improve the model" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_failed_gate_from_a_dotenv_file_says_where_it_came_from(
    cli: Any, built: tuple[str, dict], tmp_path: Path
) -> None:
    """A gate set in .env (or a preset) failed with "revisit PIPELINE_GATES__*": the user
    looked in the environment and found nothing. The line names the gate's variable and the
    file and line it came from, as other settings' errors do."""
    env_file = tmp_path / "gates.env"
    env_file.write_text("PIPELINE_GATES__MIN_ACCURACY=0.999\n")
    result = cli("evaluate", env={**FAST, "PIPELINE_ENV_FILE": str(env_file)})
    assert result.exit_code == 6, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "0.999 (PIPELINE_GATES__MIN_ACCURACY); improve the model" in line, line
    assert line.endswith(f"(PIPELINE_GATES__MIN_ACCURACY came from {env_file} line 1)"), (
        line
    )  # once, not "... line 1 (PIPELINE_GATES__MIN_ACCURACY))"


def test_an_evaluations_folder_that_cannot_be_written_is_said_before_cross_validating(
    cli: Any, store: Path, built: tuple[str, dict]
) -> None:
    """A file where the store's evaluations/ folder should be: `evaluate --folds 3` trained
    every fold (minutes by default) and then failed to write the result. Exit 9 at once."""
    (store / "evaluations").mkdir(exist_ok=True)
    shutil.rmtree(store / "evaluations")
    (store / "evaluations").write_text("not a folder\n")
    result = cli("evaluate", "--folds", "3", env=FAST)
    assert result.exit_code == 9, result.output
    assert "evaluations" in result.stderr and "a part of the path is a file" in result.stderr
    assert '"evaluate.fold"' not in result.stdout  # no fold was trained


def test_a_metric_undefined_on_some_folds_is_said_not_silently_averaged_over_the_rest(
    cli: Any, tmp_path: Path
) -> None:
    """Many folds of a small binary table: held-out parts of one class have no ROC AUC, and
    the summary's mean covered the other folds (or, when the first fold had none, dropped the
    metric) without a word. Now a warning names the metric and how many folds lack it."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "small.csv"
    ys = [1] * 12 + [0] * 48
    data.write_text("x,z,y\n" + "".join(f"{rng.normal() + y:.3f},{rng.normal():.3f},{y}\n"
                                        for y in ys))  # fmt: skip
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__TASK": "binary", "PIPELINE_DATA__DROP": "[]",
           "PIPELINE_TRAIN__MAX_EPOCHS": "2", "PIPELINE_TRAIN__BAG_FOLDS": "0"}  # fmt: skip
    assert cli("train", env=env).exit_code == 0
    result = cli("evaluate", "--folds", "16", env=env)
    assert result.exit_code == 0, result.output
    (warning,) = [e for e in events(result.stdout)
                  if e.get("event") == "evaluate.warning" and "metric" in e]  # fmt: skip
    assert warning["metric"] == "roc_auc" and 0 < warning["undefined_folds"] < 16, warning
    cv = event(result.stdout, "evaluate.summary")["cross_validation"]
    assert "roc_auc_mean" in cv  # over the folds that have one


def test_a_tampered_build_is_refused(cli: Any, store: Path, built: tuple[str, dict]) -> None:
    """Changing one byte of a stored build makes evaluate exit with the integrity code."""
    build_id, _ = built
    weights = store / "builds" / build_id / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = cli("evaluate", build_id, env=FAST)
    assert result.exit_code == 7
    assert "weights.pt" in result.stderr and "Traceback" not in result.output


def test_a_dataset_changed_since_the_build_is_named_as_such(cli: Any, tmp_path: Path) -> None:
    """The build's own digest pins the data: a changed file is exit 4 saying the build was
    trained on other data (it said "PIPELINE_DATA__SHA256 expects ...; update the pin", a
    setting the user never set)."""
    data = tmp_path / "tiny.csv"
    data.write_text("x,y\n" + "".join(f"{i},{3 * i + 1}\n" for i in range(40)))
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    trained = cli("train", "--id-file", str(tmp_path / "id"), env=env)
    assert trained.exit_code == 0, trained.output
    build_id = (tmp_path / "id").read_text().strip()
    data.write_text(data.read_text() + "40,121\n")
    result = cli("evaluate", build_id, env=env)
    assert result.exit_code == 4
    assert result.stderr.startswith(f"error: dataset {data} has sha256 ")
    assert f"but build {build_id[:12]} was trained on sha256 " in result.stderr
    assert "PIPELINE_DATA__SHA256" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_cross_validation_is_exit_130_and_one_line(
    built: tuple[str, dict], store: Path, sig: signal.Signals
) -> None:
    """SIGTERM or Ctrl-C while a fold trains: exit 130, one line, no cv file (it was exit 1
    and a traceback ending in pipeline.fit.Stopped)."""
    env = {**FAST, "PIPELINE_STORE": str(store), "PIPELINE_LOG_FORMAT": "json"}
    proc = start_cli("evaluate", "--folds", "5", env=env)
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == "evaluate.fold":
            proc.send_signal(sig)
            break
    proc.stdout.read()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, stderr
    assert stderr.strip().splitlines() == [
        "error: evaluate interrupted: nothing was written; run it again"
    ]
    assert not (store / "evaluations").exists() or not list((store / "evaluations").rglob("cv-*"))


def test_a_moved_data_file_is_found_where_the_source_now_points(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """A build trained on a local CSV that moved since: `evaluate` said to check
    PIPELINE_DATA__SOURCE, then ignored it (the recorded path won). The source set today is
    used when the recorded file is gone; its sha256 must still be the build's."""
    first = tmp_path / "a" / "train.csv"
    first.parent.mkdir()
    shutil.copy(REPO / "src" / "pipeline" / "datasets" / "titanic.csv", first)
    env = {**FAST, "PIPELINE_DATA__SOURCE": str(first)}
    build = event(cli("train", env=env).stdout, "train.summary")["build_id"]
    moved = tmp_path / "b" / "train.csv"
    moved.parent.mkdir()
    first.rename(moved)
    assert cli("evaluate", build, env=env).exit_code == 4  # still pointing at the old path
    assert cli("evaluate", build, env={**env, "PIPELINE_DATA__SOURCE": str(moved)}).exit_code == 0
    moved.write_text(moved.read_text().replace("female", "male", 1))  # other data: refused
    other = cli("evaluate", build, env={**env, "PIPELINE_DATA__SOURCE": str(moved)})
    assert other.exit_code == 4 and "the data changed" in other.stderr


def test_cross_validation_folds_are_stratified(cli: Any, tmp_path: Path) -> None:
    """Folds were a plain permutation: a class of two rows missed a fold's training rows even
    at --folds 2 (exit 4), and folds without a positive row dropped out of ROC AUC's mean. They
    are stratified now, as scikit-learn's StratifiedKFold: two rows of a class are enough, and
    each of 5 folds of a table with 10 positives scores its ROC AUC."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    a = rng.normal(size=150)
    data = tmp_path / "rare.csv"
    y = np.where(np.arange(150) % 15 == 0, "yes", "no")
    pd.DataFrame({"a": a + (y == "yes"), "y": y}).to_csv(data, index=False)
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2",
           "PIPELINE_TRAIN__TEST_FRACTION": "0.1"}  # fmt: skip
    assert cli("train", env=env).exit_code == 0
    done = cli("evaluate", "--folds", "5", env=env)
    assert done.exit_code == 0, done.stderr
    folds = [e for e in events(done.stdout) if e["event"] == "evaluate.fold"]
    assert len(folds) == 5 and all(f.get("roc_auc") is not None for f in folds), folds
    three = tmp_path / "three.csv"
    pd.DataFrame({"a": a, "y": ["maybe", "maybe", *np.where(a[2:] > 0, "yes", "no")]}).to_csv(
        three, index=False
    )
    env3 = env | {"PIPELINE_DATA__SOURCE": str(three), "PIPELINE_TRAIN__TEST_FRACTION": "0.2"}
    assert cli("train", env=env3).exit_code == 0
    done = cli("evaluate", "--folds", "2", env=env3)
    assert done.exit_code == 0, done.stderr


def test_cross_validation_with_a_one_row_class_names_the_fold_and_the_class(
    cli: Any, tmp_path: Path
) -> None:
    """A class of one row (train warns: data.rare_classes) is held out by one fold, whose model
    never saw it: `evaluate --folds` failed at every K with "a class the model was not trained
    on", though the build was trained on it, naming no fold. Now the fold and the class, and
    what to do; plain `evaluate` still passes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    a = rng.normal(size=120)
    data = tmp_path / "rare.csv"
    pd.DataFrame({"a": a, "y": ["maybe", *np.where(a[1:] > 0, "yes", "no")]}).to_csv(
        data, index=False
    )
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}  # fmt: skip
    assert cli("train", env=env).exit_code == 0
    assert cli("evaluate", env=env).exit_code == 0
    refused = cli("evaluate", "--folds", "3", env=env)
    assert refused.exit_code == 4, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert "of 3: its training rows hold no row of class 'maybe' (1 row)" in line
    assert "merge or drop a class that rare, or evaluate without --folds" in line


def test_a_gate_on_a_metric_undefined_for_the_test_rows_fails_it(
    cli: Any, tmp_path: Path, store: Path
) -> None:
    """R² of test rows whose target is constant is null: PIPELINE_GATES__MIN_R2 said "this
    build does not have r2" with exit 3, blaming the setting. The gate fails (exit 6), saying
    why; a gate on a metric the task never has is still exit 3."""
    rows = [f"{k},{2.0 if k in (3, 50, 77) else 1.0}" for k in range(100)]
    data = tmp_path / "flat.csv"
    data.write_text("a,y\n" + "\n".join(rows) + "\n")
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y",
           "PIPELINE_DATA__DROP": "[]", "PIPELINE_DATA__TASK": "regression",
           "PIPELINE_TRAIN__MAX_EPOCHS": "2", "PIPELINE_SEED": "2"}  # fmt: skip
    assert cli("train", env=env).exit_code == 0
    gated = cli("evaluate", env=env | {"PIPELINE_GATES__MIN_R2": "0.5"})
    assert gated.exit_code == 6, gated.stderr
    assert "r2 is undefined on the test rows" in gated.stderr
    summary = event(gated.stdout, "evaluate.summary")
    assert summary["gates"]["min_r2"] == {"metric": "r2", "value": None, "bound": 0.5,
                                          "passed": False}  # fmt: skip
    other = cli("evaluate", "--folds", "3", env=env | {"PIPELINE_GATES__MIN_ACCURACY": "0.5"})
    assert other.exit_code == 3 and "needs test metric 'accuracy'" in other.stderr
    # Before the re-test and the folds (it came after them), and nothing stored.
    assert not [e for e in events(other.stdout) if e["event"] in ("evaluate.fold", "data.split")]
    assert not (store / "evaluations").exists()


def test_a_tiny_tables_warning_advises_folds_that_evaluate_accepts(
    cli: Any, tmp_path: Path
) -> None:
    """Eight rows of house prices: train's warning advised `evaluate --folds 5`, which then
    failed ("6 training rows cannot be split into 5 folds: use fewer"), and said it "scores
    every row once" (the test rows are not cross-validated). The warning names a fold count
    that works; the error names the largest one."""
    shipped = REPO / "src" / "pipeline" / "datasets" / "house-prices.csv"
    lines = shipped.read_text().splitlines()[:9]
    path = tmp_path / "eight.csv"
    path.write_text("\n".join(lines) + "\n")
    env = {"PIPELINE_DATA__SOURCE": str(path), "PIPELINE_TRAIN__MAX_EPOCHS": "3"}
    done = cli("train", "--id-file", str(tmp_path / "id"), env=env)
    assert done.exit_code == 0, done.output[-2000:]
    warned = [e["message"] for e in events(done.stdout) if e["event"] == "data.warning"]
    advice = next(m for m in warned if "metrics of so few rows" in m)
    assert "`pipeline evaluate --folds 3` scores each training and validation row once" in advice
    build = (tmp_path / "id").read_text().strip()
    assert cli("evaluate", build, "--folds", "3", env=env).exit_code == 0
    refused = cli("evaluate", build, "--folds", "5", env=env)
    assert refused.exit_code == 4 and "use --folds 3 or fewer" in refused.stderr


def test_a_binary_release_is_evaluated_at_its_threshold(cli: Any, built: tuple[str, dict]) -> None:
    """A release made with PIPELINE_RUN__THRESHOLD=0.7 predicts fewer survivors than the
    build's 0.5, yet `evaluate titanic@v1` scored (and gated) the build's accuracy at 0.5: a CI
    gate approved what the release does not do. It is scored at the release's threshold (the
    confusion matrix's predicted column is what predict writes), and a failed gate says so."""
    build_id, metrics = built
    packaged = cli("package", build_id, env=FAST)
    assert packaged.exit_code == 0, packaged.output
    package_id = event(packaged.stdout, "package.summary")["package_id"]
    for at in ("0.5", "0.7"):
        made = cli("release", "create", package_id, env={**FAST, "PIPELINE_RUN__THRESHOLD": at})
        assert made.exit_code == 0, made.output
    at_half = event(cli("evaluate", "titanic@v1", env=FAST).stdout, "evaluate.summary")
    assert at_half["threshold"] == 0.5  # said, as the build's own 0.5 (it was null)
    assert at_half["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], rel=1e-9)
    result = cli("evaluate", "titanic@v2", env=FAST)
    assert result.exit_code == 0, result.output
    summary = event(result.stdout, "evaluate.summary")
    assert summary["threshold"] == 0.7
    predicted_yes = sum(row[1] for row in summary["test"]["confusion_matrix"]["matrix"])
    before = sum(row[1] for row in metrics["test"]["confusion_matrix"]["matrix"])
    assert predicted_yes < before, (predicted_yes, before)
    assert summary["test"]["roc_auc"] == pytest.approx(metrics["test"]["roc_auc"], rel=1e-9)
    assert "evaluate.drift" not in result.stdout
    folds = cli("evaluate", "titanic@v2", "--folds", "2", env=FAST)  # the recipe's, at 0.5
    assert folds.exit_code == 0, folds.output
    said = [e["message"] for e in events(folds.stdout) if e["event"] == "evaluate.warning"]
    assert said == ["the cross-validation scores the recipe's classes at 0.5; the test metrics "
                    "are at the release's PIPELINE_RUN__THRESHOLD=0.7"], said  # fmt: skip
    bound = (summary["test"]["accuracy"] + metrics["test"]["accuracy"]) / 2
    if summary["test"]["accuracy"] < metrics["test"]["accuracy"]:  # a gate between the two
        gated = cli("evaluate", "titanic@v2",
                    env={**FAST, "PIPELINE_GATES__MIN_ACCURACY": f"{bound:.6f}"})  # fmt: skip
        assert gated.exit_code == 6, gated.output
        assert "at its release's PIPELINE_RUN__THRESHOLD=0.7" in gated.stderr
