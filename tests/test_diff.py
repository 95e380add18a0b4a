"""`pipeline diff`: two builds, releases or packages compared, and the regression gate."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, event, invoke_isolated, run_cli

FAST = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "15",
    "PIPELINE_MODEL__HIDDEN": "[64]",
}
# The same recipe with one setting changed, and one stopped after an epoch (a worse model).
OTHER_RATE = {**FAST, "PIPELINE_TRAIN__LEARNING_RATE": "0.002"}
ONE_EPOCH = {**FAST, "PIPELINE_TRAIN__MAX_EPOCHS": "1"}
# A house-prices build (another model) trained in a moment.
ONE_HOUSE = {"PIPELINE_TRAIN__MAX_EPOCHS": "1", "PIPELINE_MODEL__HIDDEN": "[16]"}
VERDICTS = {"better", "worse", "same", "within CV noise", "missing"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three small Titanic builds in one store, trained once per module: ``base``, ``rate``
    (another learning rate) and ``short`` (one epoch), the latest; ``base`` is packaged and
    released as titanic@v1. Tests work on a copy of the store (``ids``)."""
    root = tmp_path_factory.mktemp("diff")
    ids: dict[str, Any] = {"root": root}
    for name, env in (("base", FAST), ("rate", OTHER_RATE), ("short", ONE_EPOCH)):
        result = invoke_isolated("train", "--id-file", str(root / name), root=root, env=env)
        assert result.exit_code == 0, result.output
        ids[name] = (root / name).read_text().strip()
    result = invoke_isolated(
        "package", ids["base"], "--id-file", str(root / "package"), root=root, env=FAST
    )
    assert result.exit_code == 0, result.output
    ids["package"] = (root / "package").read_text().strip()
    result = invoke_isolated("release", "create", ids["package"], root=root, env=FAST)
    assert result.exit_code == 0, result.output
    return ids


@pytest.fixture
def ids(trained: dict[str, Any], store: Path) -> dict[str, Any]:
    """The module's builds, package and release, copied into this test's store."""
    shutil.copytree(trained["root"] / "store", store)
    return trained


def _doc(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("diff", *args, "--format", "json", env=FAST)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_a_build_against_itself_has_no_differences(cli: Any, ids: dict[str, Any]) -> None:
    """`diff A A` says so in the table, and in JSON (the default when stdout is piped) is
    identical with nothing changed."""
    table = cli("diff", ids["base"], ids["base"][:8], "--format", "table", env=FAST)
    assert table.exit_code == 0, table.output
    assert "no differences" in table.stdout
    piped = cli("diff", ids["base"], ids["base"], env=FAST)
    doc = json.loads(piped.stdout)
    assert doc["identical"] is True and doc["identity"]["same_build"] is True
    assert doc["settings"] == [] and all(r["same"] for r in doc["inputs"])
    assert {r["verdict"] for part in doc["metrics"].values() for r in part} == {"same"}
    assert doc["confusion"]["cells"] == [] and doc["epochs"]["same"] is True
    assert doc["verdict"] == "same"
    summary = event(piped.stderr, "diff.summary")  # the events go to stderr, the diff to stdout
    assert summary["identical"] is True and summary["verdict"] == "same"


@pytest.mark.slow
def test_one_changed_setting_is_the_only_difference_in_settings_and_inputs(
    cli: Any, ids: dict[str, Any]
) -> None:
    """Builds that differ in PIPELINE_TRAIN__LEARNING_RATE show exactly that key, no input;
    --all lists the unchanged settings too."""
    doc = _doc(cli, ids["base"], ids["rate"])
    assert doc["settings"] == [
        {"key": "train.learning_rate", "a": 0.001, "b": 0.002, "same": False}
    ]
    assert [r["key"] for r in doc["inputs"] if not r["same"]] == []
    assert doc["identical"] is False
    everything = _doc(cli, ids["base"], ids["rate"], "--all")
    keys = {r["key"]: r["same"] for r in everything["settings"]}
    assert keys["train.learning_rate"] is False and keys["model.hidden"] is True
    assert keys["seed"] is True and len(keys) > 10
    table = cli("diff", ids["base"], ids["rate"], "--format", "table", env=FAST).stdout
    assert "train.learning_rate" in table and "model.hidden" not in table


@pytest.mark.slow
def test_a_worse_build_fails_the_regression_gate_and_the_reverse_passes(
    cli: Any, ids: dict[str, Any]
) -> None:
    """One epoch instead of 15 is worse on the primary metric (test log loss): B = that build
    exits 6 after printing the diff; swapped, it is an improvement and exits 0; a tolerance
    above the delta lets it pass, one below does not."""
    base, short = ids["base"], ids["short"]
    doc = _doc(cli, base, short)
    primary = doc["primary"]
    assert primary["metric"] == "log_loss" and primary["direction"] == "lower"
    assert primary["b"] > primary["a"] and primary["verdict"] == doc["verdict"] == "worse"
    assert doc["settings"] == [{"key": "train.max_epochs", "a": 15, "b": 1, "same": False}]
    assert doc["epochs"]["b"] == {"best_epoch": 1, "selection": 1, "refit": 1}

    failed = cli("diff", base, short, "--fail-on-regression", "--format", "json", env=FAST)
    assert failed.exit_code == 6
    assert json.loads(failed.stdout) == doc  # printed first
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: B build ") and "log_loss" in message
    assert "tolerance 0" in message and base[:12] in message and short[:12] in message
    assert "Traceback" not in failed.output

    assert cli("diff", short, base, "--fail-on-regression", env=FAST).exit_code == 0
    delta = primary["delta"]
    loose = cli(
        "diff", base, short, "--fail-on-regression", "--tolerance", f"{delta + 0.01}", env=FAST
    )
    assert loose.exit_code == 0, loose.output
    tight = cli(
        "diff", base, short, "--fail-on-regression", "--tolerance", f"{delta / 2}", env=FAST
    )
    assert tight.exit_code == 6
    markdown = cli("diff", base, short, "--format", "markdown", env=FAST).stdout
    assert "### settings" in markdown and "| log_loss | lower |" in markdown


@pytest.mark.slow
def test_a_build_of_another_target_is_incomparable_and_fails_the_gate(
    cli: Any, ids: dict[str, Any], tmp_path: Path
) -> None:
    """B trained on another target of the same table (Titanic's sex, not survived: binary too)
    passed --fail-on-regression as 'better' for its lower log loss (QA: house prices' YearBuilt
    against SalePrice). Another target is incomparable, as another task is: exit 3."""
    other = {**FAST, "PIPELINE_DATA__TARGET": "sex"}
    done = cli("train", "--id-file", str(tmp_path / "sex.id"), env=other)
    assert done.exit_code == 0, done.output[-2000:]
    sex = (tmp_path / "sex.id").read_text().strip()
    doc = _doc(cli, ids["base"], sex)
    assert doc["primary"] is None and doc["verdict"] == "incomparable"
    assert (doc["identity"]["a"]["target"], doc["identity"]["b"]["target"]) == ("survived", "sex")
    table = cli("diff", ids["base"], sex, "--format", "table", env=FAST).stdout
    assert "verdict: incomparable (A and B solve different targets)" in table
    # The identity table shows each side's target (it showed the task alone, the same here).
    rows = [line.split() for line in table.splitlines() if line.split()[:1] in (["A"], ["B"])]
    assert [r[-1] for r in rows[:2]] == ["survived", "sex"], table
    gated = cli("diff", ids["base"], sex, "--fail-on-regression", env=FAST)
    assert gated.exit_code == 3, gated.output
    assert "A predicts 'survived' and B 'sex'" in gated.stderr.splitlines()[-1]


def test_a_negative_or_pointless_tolerance_is_a_config_error(cli: Any) -> None:
    """--tolerance below 0 or without --fail-on-regression exits 3 before anything is read."""
    for args in (["--fail-on-regression", "--tolerance", "-0.1"], ["--tolerance", "0.1"]):
        result = cli("diff", "a", "b", *args)
        assert result.exit_code == 3, result.output
        assert result.stderr.strip().splitlines()[-1].startswith("error: --tolerance")


def test_an_html_diff_named_for_another_format_is_a_config_error(cli: Any, tmp_path: Path) -> None:
    """--html diff.pdf would hold HTML: exit 3 before anything is read, nothing written."""
    result = cli("diff", "a", "b", "--html", str(tmp_path / "diff.pdf"))
    assert result.exit_code == 3, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.endswith("a .pdf name would hold HTML: name it .html")  # no --format markdown
    assert not (tmp_path / "diff.pdf").exists()


def _check_shape(doc: dict[str, Any]) -> None:
    """The JSON document's keys and types (format 1): what tools may rely on."""
    optional_number = (int, float, type(None))
    assert set(doc) == {"format", "identical", "identity", "inputs", "settings",
                        "release_settings", "metrics", "cv", "primary", "verdict", "confusion",
                        "epochs"}  # fmt: skip
    assert doc["format"] == 1 and isinstance(doc["identical"], bool)
    assert set(doc["identity"]) == {"a", "b", "same_build"}
    for side in ("a", "b"):
        ident = doc["identity"][side]
        assert set(ident) == {
            "asked", "kind", "build_id", "release", "package_id", "task", "target"
        }  # fmt: skip
        assert ident["kind"] in ("build", "release", "package") and len(ident["build_id"]) == 64
        assert all(isinstance(ident[k], str | None) for k in ("release", "package_id"))
    for row in doc["inputs"] + doc["settings"] + doc["release_settings"]:
        assert set(row) == {"key", "a", "b", "same"} and isinstance(row["same"], bool)
    assert [r["key"] for r in doc["inputs"]] == [
        "code.digest", "code.version", "dataset.rows", "dataset.sha256", "dataset.uri", "seed",
        "split.digest", "split.test", "split.train", "split.val",
    ]  # fmt: skip
    assert set(doc["metrics"]) == {"validation", "test"}
    for row in [*doc["metrics"]["validation"], *doc["metrics"]["test"], doc["primary"]]:
        assert set(row) == {"metric", "direction", "a", "b", "delta", "delta_pct", "verdict"}
        assert row["direction"] in ("higher", "lower") and row["verdict"] in VERDICTS
        assert all(isinstance(row[k], optional_number) for k in ("a", "b", "delta", "delta_pct"))
    assert doc["verdict"] in VERDICTS | {"incomparable"}
    assert set(doc["cv"]) == {"a", "b"}
    for cv in doc["cv"].values():
        if cv is not None:
            assert isinstance(cv["folds"], int)
            assert all(set(s) == {"mean", "std"} for s in cv["metrics"].values())
    confusion = doc["confusion"]
    assert set(confusion) == {"labels", "cells"} and set(confusion["labels"]) == {"a", "b", "same"}
    for cell in confusion["cells"]:
        assert set(cell) == {"true", "predicted", "a", "b"} and isinstance(cell["true"], str)
    assert set(doc["epochs"]) == {"a", "b", "same"}
    assert all(set(doc["epochs"][s]) == {"best_epoch", "selection", "refit"} for s in "ab")


@pytest.mark.slow
def test_the_json_document_has_a_stable_shape(cli: Any, ids: dict[str, Any]) -> None:
    """Every key and type of the document, for a release against a build (with --all too)."""
    doc = _doc(cli, "titanic@v1", ids["short"])
    _check_shape(doc)
    assert len(doc["confusion"]["cells"]) > 0
    _check_shape(_doc(cli, "titanic@v1", ids["short"], "--all"))


@pytest.mark.slow
def test_releases_and_packages_resolve_to_their_builds(
    cli: Any, ids: dict[str, Any], store: Path
) -> None:
    """A release (name@vN, vN, name@current, the default A), a package id or prefix and its
    .tar.gz (in the store, or copied anywhere) all name the released build; B defaults to the
    latest build."""
    base, package = ids["base"], ids["package"]
    archive = store / "packages" / "titanic" / "0.1.0.tar.gz"
    outside = ids["root"] / "copied.tar.gz"
    shutil.copyfile(archive, outside)
    for ref in ("titanic@v1", "v1", "titanic@current", package, package[:8], str(archive),
                str(outside)):  # fmt: skip
        doc = _doc(cli, ref, base)
        assert doc["identical"] is True, ref
        a = doc["identity"]["a"]
        assert a["asked"] == ref and a["build_id"] == base and a["package_id"] == package
        assert a["kind"] == ("release" if "@" in ref or ref == "v1" else "package")
    assert _doc(cli, "v1", base)["identity"]["a"]["release"] == "titanic@v1"
    default = _doc(cli)["identity"]
    assert default["a"]["asked"] == "titanic@current" and default["a"]["release"] == "titanic@v1"
    assert default["b"]["asked"] == "latest" and default["b"]["build_id"] == ids["short"]
    one = _doc(cli, ids["rate"])["identity"]
    assert one["a"]["build_id"] == ids["rate"] and one["b"]["build_id"] == ids["short"]


@pytest.mark.slow
def test_two_releases_of_one_build_differ_in_their_run_settings(
    cli: Any, ids: dict[str, Any]
) -> None:
    """Two releases of one package, at thresholds 0.5 and 0.7, predict other classes: diff
    said `identical: true`, "no differences: A and B are the same build". It lists the release
    settings that changed (the metrics are the build's and stay the same); a release against
    its own build, or against a release with the same settings, is identical."""
    env = {**FAST, "PIPELINE_RUN__THRESHOLD": "0.7"}
    assert cli("release", "create", ids["package"], env=env).exit_code == 0
    doc = _doc(cli, "titanic@v1", "titanic@v2")
    assert doc["identical"] is False and doc["identity"]["same_build"] is True
    assert doc["release_settings"] == [
        {"key": "run.threshold", "a": 0.5, "b": 0.7, "same": False}
    ], doc["release_settings"]
    assert doc["verdict"] == "same" and doc["settings"] == []
    table = cli("diff", "titanic@v1", "titanic@v2", "--format", "markdown", env=FAST)
    assert "release settings" in table.stdout and "run.threshold" in table.stdout
    # The headline says the metrics are not the releases' own (the verdict read "same").
    assert ("released with other settings (run.threshold 0.5 -> 0.7); the metrics are the "
            "builds', whose classes are at threshold 0.5") in table.stdout  # fmt: skip
    assert _doc(cli, "titanic@v1", ids["base"])["identical"] is True
    assert cli("release", "create", ids["package"], env=FAST).exit_code == 0  # v3: v1's
    same = cli("diff", "titanic@v1", "titanic@v3", env=FAST)
    assert same.exit_code == 0
    assert json.loads(same.stdout)["identical"] is True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ref", "code", "words"),
    [("titanic@v9", 8, "does not exist"), ("x@@1", 3, "malformed release reference"),
     ("deadbeefdead", 8, "no build or package"), ("nothex", 8, "no build 'nothex'"),
     ("missing/nowhere.tar.gz", 8, "does not exist")],
)  # fmt: skip
def test_unknown_references_are_one_line_errors(
    cli: Any, ids: dict[str, Any], ref: str, code: int, words: str
) -> None:
    """A reference that names nothing is the resolvers' one-line error and exit code."""
    result = cli("diff", ref, ids["base"], env=FAST)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1]
    assert "Traceback" not in result.output


def test_defaults_that_cannot_be_resolved_say_what_is_missing(cli: Any) -> None:
    """In an empty store the default A (the current release) is missing: exit 8, saying what
    to create or name."""
    result = cli("diff", env={"PIPELINE_MODEL__NAME": "churn"})
    assert result.exit_code == 8
    line = result.stderr.strip().splitlines()[-1]
    assert "A defaults to the current release of churn" in line
    assert "pipeline release create" in line and "pipeline diff A [B]" in line


@pytest.mark.slow
def test_the_default_b_is_never_another_models_latest_build(cli: Any, ids: dict[str, Any]) -> None:
    """A house-prices build trained last in the store is not the default B of titanic's diff
    (A titanic@current, or a titanic build): exit 8 asking to name B, where it compared them,
    every verdict "incomparable", exit 0. Named, B is compared as before."""
    other = cli("train", env={"PIPELINE_PRESET": "house-prices", **ONE_HOUSE})
    assert other.exit_code == 0, other.output
    for args in ((), (ids["rate"],)):
        result = cli("diff", *args, env=FAST)
        assert result.exit_code == 8, (args, result.output)
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert "another model's" in line and "Traceback" not in result.output
        assert "predicts 'SalePrice', not 'survived'" in line and "pipeline diff A B" in line
    assert _doc(cli, "titanic@current", ids["short"])["identity"]["b"]["build_id"] == ids["short"]


@pytest.mark.slow
def test_builds_tested_on_other_rows_say_so_in_the_headline(
    cli: Any, ids: dict[str, Any], store: Path
) -> None:
    """Builds of two seeds are tested on other rows: the headline said "better" or "worse" as
    if the rows were the same. It says they differ and how to compare over every row; builds
    of one split do not get the line."""
    id_file = store.parent / "seed7"
    other = cli("train", "--id-file", str(id_file), env={**FAST, "PIPELINE_SEED": "7"})
    assert other.exit_code == 0, other.output
    seed7 = id_file.read_text().strip()
    table = cli("diff", ids["base"], seed7, "--format", "table", env=FAST).stdout
    assert ("the test rows differ (another split: other data or seed), so the metrics are of "
            "other rows: `pipeline evaluate --folds 5` of each") in table  # fmt: skip
    same_rows = cli("diff", ids["base"], ids["rate"], "--format", "table", env=FAST).stdout
    assert "the test rows differ" not in same_rows


@pytest.mark.slow
def test_a_delta_below_the_stored_cv_noise_is_within_it(
    cli: Any, ids: dict[str, Any], store: Path
) -> None:
    """With K-fold results stored for A (where `pipeline evaluate --folds K` keeps them), a
    metric whose delta is below the larger std is "within CV noise", one with a std of 0 keeps
    its verdict; the result with the most folds is used, and the cv section shows it."""
    from pipeline import artifacts
    from pipeline.store import Store, canonical_json

    base, rate = ids["base"], ids["rate"]
    before = {r["metric"]: r for r in _doc(cli, base, rate)["metrics"]["test"]}
    noise = abs(before["log_loss"]["delta"]) * 2

    def summary(folds: int, log_loss_std: float) -> dict[str, Any]:
        per_fold = [{"accuracy": 0.78, "log_loss": 0.5} for _ in range(folds)]
        return {"folds": folds, "per_fold": per_fold, "accuracy_mean": 0.78, "accuracy_std": 0.0,
                "log_loss_mean": 0.5, "log_loss_std": log_loss_std}  # fmt: skip

    backend = Store.from_uri(str(store))
    backend.write(artifacts.cv_key(base, 5), canonical_json(summary(5, noise)))
    backend.write(artifacts.cv_key(base, 2), canonical_json(summary(2, 0.0)))
    doc = _doc(cli, base, rate)
    test = {r["metric"]: r for r in doc["metrics"]["test"]}
    assert test["log_loss"]["verdict"] == doc["verdict"] == "within CV noise"
    assert test["accuracy"]["verdict"] == before["accuracy"]["verdict"]
    assert doc["cv"] == {
        "a": {"folds": 5, "metrics": {"accuracy": {"mean": 0.78, "std": 0.0},
                                      "log_loss": {"mean": 0.5, "std": noise}}},
        "b": None,
    }  # fmt: skip
    table = cli("diff", base, rate, "--format", "table", env=FAST).stdout
    assert "within CV noise" in table and "cross-validation" in table
    # The gate still fails the worse one (the tolerance decides), and says the diff called
    # the change noise (the headline said "within CV noise" above a failed gate, unexplained).
    gated = [
        cli("diff", x, y, "--fail-on-regression", env=FAST) for x, y in ((base, rate), (rate, base))
    ]
    failed = [g for g in gated if g.exit_code == 6]
    assert len(failed) == 1, [g.output for g in gated]
    assert "(the diff calls it within the K-fold noise); improve B" in failed[0].stderr
    # The same spread measured with 100 folds: each fold holds a twentieth of 5 folds' rows,
    # so its std is sqrt(20) times larger. Scaled to the test rows, it is the same noise: the
    # verdict must not follow the fold count (unscaled, every change was within noise).
    close = abs(before["log_loss"]["delta"]) * 0.9
    backend.write(artifacts.cv_key(base, 5), canonical_json(summary(5, close)))
    at_5 = {r["metric"]: r for r in _doc(cli, base, rate)["metrics"]["test"]}["log_loss"]
    backend.write(artifacts.cv_key(base, 100), canonical_json(summary(100, close * 20**0.5)))
    at_100 = {r["metric"]: r for r in _doc(cli, base, rate)["metrics"]["test"]}["log_loss"]
    assert at_5["verdict"] == at_100["verdict"] == before["log_loss"]["verdict"]
    backend.write(artifacts.cv_key(base, 200), b"[1, 2]")  # the most folds: the one read
    damaged = cli("diff", base, rate, env=FAST)
    assert damaged.exit_code == 7 and "evaluations" in damaged.stderr


@pytest.mark.slow
def test_json_output_is_byte_identical_across_processes_and_environments(
    ids: dict[str, Any], store: Path
) -> None:
    """The JSON and --html bytes depend on the builds only: not on the time zone, the locale,
    the hash seed, the working folder's matplotlibrc or the font cache of the process."""
    hostile = store.parent / "hostile"
    hostile.mkdir()
    (hostile / "matplotlibrc").write_text("svg.hashsalt: evil\nfont.family: serif\n")
    outputs, pages = [], []
    cases = (("Pacific/Kiritimati", "C", "0", hostile), ("UTC", "de_DE.UTF-8", "123", store.parent))
    for i, (tz, lang, seed, cwd) in enumerate(cases):
        env = {"PIPELINE_STORE": str(store), "PIPELINE_CONFIG_DIR": str(REPO / "config"),
               "PIPELINE_ENV_FILE": os.devnull, "PIPELINE_PRESET": "titanic",
               "TZ": tz, "LANG": lang, "LC_ALL": lang, "PYTHONHASHSEED": seed,
               "MPLCONFIGDIR": str(store.parent / f"mpl-{i}")}  # fmt: skip
        page = store.parent / f"diff-{i}.html"
        done = run_cli(
            "diff", "titanic@v1", ids["short"], "--format", "json", "--all", "--html", str(page),
            env=env, cwd=cwd,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.encode())
        pages.append(page.read_bytes())
    assert outputs[0] == outputs[1]
    assert pages[0] == pages[1]
    assert json.loads(outputs[0])["identity"]["b"]["build_id"] == ids["short"]


@pytest.mark.slow
def test_the_html_diff_overlays_both_builds_plots(
    cli: Any, ids: dict[str, Any], tmp_path: Path
) -> None:
    """--html: one self-contained page with the diff's tables and each plot of the task drawn
    for A and B on the same axes (the confusion matrix only as changed cells)."""
    page = tmp_path / "diff.html"
    result = cli(
        "diff", ids["base"], ids["rate"], "--format", "json", "--html", str(page), env=FAST
    )
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "default-src 'none'" in text and "<script" not in text
    assert re.findall(r'<figure data-plot="([a-z_]+)">', text) == [
        "learning_curve", "roc", "pr", "calibration", "threshold_metrics",
    ]  # fmt: skip
    assert "train.learning_rate" in text and "<h2>Test metrics</h2>" in text
    assert page.stat().st_size < 1_000_000


PROBE = """
import json, sys
from typer.testing import CliRunner
from pipeline.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in ("torch", "pandas", "pyarrow", "numpy", "ray", "matplotlib")
               if m in sys.modules)
print(json.dumps({"code": result.exit_code, "heavy": heavy, "out": result.output[:200]}))
"""


def _probe(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, env=env
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_diff_imports_neither_torch_nor_pandas(ids: dict[str, Any], store: Path) -> None:
    """`pipeline diff --help`, and a diff itself, import none of the heavy libraries: it reads
    JSON files, and starts as fast as `--help`."""
    probe = _probe("diff", "--help")
    assert probe["code"] == 0 and "Usage" in probe["out"] and probe["heavy"] == []
    env = {"PATH": "/usr/bin:/bin", "PIPELINE_STORE": str(store), "PIPELINE_PRESET": "titanic",
           "PIPELINE_CONFIG_DIR": str(REPO / "config"),
           "PIPELINE_ENV_FILE": os.devnull}  # fmt: skip
    probe = _probe("diff", "titanic@v1", ids["base"], "--format", "table", env=env)
    assert probe["code"] == 0 and "no differences" in probe["out"] and probe["heavy"] == []


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("transform", ["log", "none"])
def test_the_primary_metric_is_the_default_tune_metric(task: str, transform: str) -> None:
    """diff judges by the metric `pipeline tune` ranks by when PIPELINE_TUNE__METRIC=auto
    (``search.metric_for`` with ``auto``: one rule, ``space.default_metric``)."""
    from pipeline import diff, search
    from pipeline.settings import load

    settings = load().settings
    assert settings.tune.metric == "auto"
    schema = {"task": task, "target_transform": transform}
    assert diff.primary_metric(schema, schema) == search.metric_for(settings, task, transform)
    other = {"task": "binary" if task == "regression" else "regression"}
    assert diff.primary_metric(schema, other) is None
    assert diff.primary_metric(schema | {"target": "a"}, schema | {"target": "b"}) is None
    if task == "regression":
        mixed = {"task": task, "target_transform": "none" if transform == "log" else "log"}
        assert diff.primary_metric(schema, mixed) == "rmse"
