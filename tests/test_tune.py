"""`pipeline tune` on Ray, through the command users run, in real processes.

Embedded (no RAY_ADDRESS) and on the test suite's real local cluster (a head and a worker node,
tests/ray_cluster.py): the same search gives the same trials, scores, winner and tune id,
whatever the concurrency and wherever it runs. Faults: a killed worker, Ctrl-C and --resume,
every trial failing, a cluster that does not answer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import event, events
from tests.conftest import run_fresh as run_cli

from pipeline import trials as trials_

pytestmark = pytest.mark.ray

# A quick search on the built-in Titanic: few epochs, four trials.
QUICK = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "6",
    "PIPELINE_TRAIN__PATIENCE": "3",
    "PIPELINE_TUNE__SCORING": "validation",
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **QUICK,
        "PIPELINE_STORE": str(tmp_path / "store"),
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_LOG_FORMAT": "json",
        "RAY_ADDRESS": "",
        **extra,
    }


def _tune(tmp_path: Path, *args: str, **extra: str) -> dict[str, Any]:
    done = run_cli("tune", *args, env=_env(tmp_path, **extra), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return event(done.stdout, "tune.summary")


def _trials(tmp_path: Path, tune_id: str) -> list[dict[str, Any]]:
    path = tmp_path / "store" / "tunes" / tune_id / "trials.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One embedded search with one trial at a time: what every other way must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    return root, _tune(root, "--trials", "4", PIPELINE_TUNE__CONCURRENCY="1")


def test_two_trials_at_a_time_give_the_same_search(
    reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Concurrency 1 and 2: identical trials tables (configurations, scores), winner and id.
    The second search also has PIPELINE_TRAIN__WORKERS=2, which tune ignores and says so: it
    was recorded (another tune id, `workers = 2` in the preset) though no trial used it."""
    root, first = reference
    env = _env(tmp_path, PIPELINE_TUNE__CONCURRENCY="2", PIPELINE_TRAIN__WORKERS="2")
    done = run_cli("tune", "--trials", "4", "--preset-out", str(tmp_path / "w.toml"), env=env,
                   timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert event(done.stdout, "tune.workers_ignored")["workers"] == 2
    assert "workers" not in (tmp_path / "w.toml").read_text()
    second = event(done.stdout, "tune.summary")
    assert second["tune_id"] == first["tune_id"]
    assert _trials(tmp_path, second["tune_id"]) == _trials(root, first["tune_id"])
    assert second["winner"] == first["winner"] and second["score"] == first["score"]
    trials = _trials(tmp_path, second["tune_id"])
    assert [t["status"] for t in trials] == ["ok"] * 4
    assert len({json.dumps(t["config"], sort_keys=True) for t in trials}) == 4
    assert not (tmp_path / "store" / "tune-partial").exists()  # no empty folder left behind


def test_another_seed_gives_other_trials(
    reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, first = reference
    other = _tune(tmp_path, "--trials", "4", PIPELINE_SEED="7")
    configs = [t["config"] for t in _trials(tmp_path, other["tune_id"])]
    reference_configs = [t["config"] for t in _trials(root, first["tune_id"])]
    assert other["tune_id"] != first["tune_id"]
    assert sorted(map(json.dumps, configs)) != sorted(map(json.dumps, reference_configs))


def test_the_cluster_gives_the_embedded_result(
    reference: tuple[Path, dict[str, Any]], tmp_path: Path, ray_cluster: str
) -> None:
    """RAY_ADDRESS: trials run on the test cluster's two nodes; the result is the same."""
    _, first = reference
    done = run_cli("tune", "--trials", "4", env=_env(tmp_path, RAY_ADDRESS=ray_cluster))
    assert done.returncode == 0, done.stderr[-3000:]
    where = event(done.stdout, "tune.cluster")
    assert where["embedded"] is False and where["nodes"] == 2
    assert event(done.stdout, "tune.summary")["tune_id"] == first["tune_id"]


def test_stdout_is_the_event_stream_and_the_winner_trains_as_a_preset(
    reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Only JSON events on stdout (no Ray banner or table); one tune.trial per trial; the
    --preset-out file trains the winner, twice to the same build id; `tune show` ranks."""
    preset = tmp_path / "tuned.toml"
    done = run_cli(
        "tune", "--trials", "4", "--preset-out", str(preset), "--id-file", str(tmp_path / "id"),
        env=_env(tmp_path, PIPELINE_TUNE__SCORING="auto"),  # Titanic is small: 5-fold cv
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stream = events(done.stdout)  # fails on any line that is not JSON
    assert sorted(e["trial"] for e in stream if e["event"] == "tune.trial") == [0, 1, 2, 3]
    assert event(done.stdout, "tune.start")["scoring"] == "5-fold cv"
    summary = event(done.stdout, "tune.summary")
    assert (tmp_path / "id").read_text().strip() == summary["tune_id"]
    assert summary["tune_id"] != reference[1]["tune_id"]  # scored otherwise

    env = {**_env(tmp_path), "PIPELINE_PRESET": str(preset)}
    builds = []
    for _ in range(2):
        trained = run_cli("train", env=env)
        assert trained.returncode == 0, trained.stderr[-2000:]
        builds.append(event(trained.stdout, "train.summary")["build_id"])
    assert builds[0] == builds[1]
    config = json.loads((tmp_path / "store" / "builds" / builds[0] / "config.json").read_text())
    for key, value in summary["config"].items():
        section, name = key.split(".", 1)
        assert config[section][name] == value, key

    shown = run_cli("tune", "show", summary["tune_id"][:8], env=_env(tmp_path))
    assert shown.returncode == 0, shown.stderr
    table = event(shown.stdout, "tune.show")["trials"]
    assert [row["rank"] for row in table] == [1, 2, 3, 4]
    assert table[0]["trial"] == summary["winner"]
    scores = [row["score"] for row in table]
    assert scores == sorted(scores)  # log_loss: lower is better


def test_every_trial_failing_is_exit_6_with_the_first_error(tmp_path: Path) -> None:
    """A learning rate that diverges in every trial: exit 6, one line, nothing recorded."""
    space = {"train.learning_rate": {"loguniform": [1e30, 1e31]}}
    done = run_cli(
        "tune", "--trials", "2",
        env=_env(tmp_path, PIPELINE_TRAIN__LEARNING_RATE="1e30",
                 PIPELINE_TUNE__SPACE=json.dumps(space)),
    )  # fmt: skip
    assert done.returncode == 6, done.stderr[-2000:]
    assert done.stderr.startswith("error: all 2 trials failed; the first (trial 0)")
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "store" / "tunes").exists()
    # Trial 0 is the settings: lowering the variable is the advice. Trial 1 drew its rate from
    # the space, where that advice changed nothing: it says where the rate came from.
    errors = {e["trial"]: e["error"] for e in events(done.stdout) if e["event"] == "tune.trial"}
    assert errors[0].endswith("lower PIPELINE_TRAIN__LEARNING_RATE (the default is 0.001)")
    assert "this trial drew train.learning_rate=" in errors[1]
    assert errors[1].endswith("narrow that dimension of PIPELINE_TUNE__SPACE)")


def test_a_time_budget_that_runs_out_names_what_it_cut(tmp_path: Path) -> None:
    """PIPELINE_TUNE__TIME_BUDGET shorter than any trial: the trials running when it ran out
    are stopped and say so, the one never started says that, and the exit 6 line says to
    raise the budget. Every cut trial said "not run", the running ones included, and the
    exit 6 line did not name the budget as the cause."""
    long = {
        "PIPELINE_TRAIN__MAX_EPOCHS": "3000",
        "PIPELINE_TRAIN__PATIENCE": "3000",
        "PIPELINE_TRAIN__BATCH_SIZE": "16",
        "PIPELINE_TUNE__CONCURRENCY": "2",
        "PIPELINE_TUNE__TIME_BUDGET": "45",
    }  # fmt: skip (Ray's start is part of it)
    t0 = time.monotonic()
    done = run_cli("tune", "--trials", "3", env=_env(tmp_path, **long), timeout=600)
    assert done.returncode == 6, done.stderr[-2000:]
    assert time.monotonic() - t0 < 180  # stopped, not run to their 3,000 epochs
    line = done.stderr.strip()
    assert line.startswith("error: all 3 trials failed; the first (trial 0): stopped: "), line
    assert line.endswith("; raise PIPELINE_TUNE__TIME_BUDGET or unset it"), line
    errors = {e["trial"]: e["error"] for e in events(done.stdout) if e["event"] == "tune.trial"}
    at_once = event(done.stdout, "tune.cluster")["concurrency"]  # 2 on two cores or more
    assert errors == {
        trial: "stopped: PIPELINE_TUNE__TIME_BUDGET ran out while it ran"
        if trial < at_once
        else "not run: PIPELINE_TUNE__TIME_BUDGET ran out before it started"
        for trial in range(3)
    }
    assert not (tmp_path / "store" / "tunes").exists()


def test_roc_auc_folds_without_two_classes_held_out_are_exit_4_before_ray(
    tmp_path: Path,
) -> None:
    """Scored by ROC AUC, a fold whose held-out rows hold one class has no score, and the
    trials' mean left it out: "5-fold cv" meant 2 folds, without a word. Exit 4 before Ray,
    naming the fold and the folds that would hold both classes; with that many it runs."""
    import numpy as np
    import pandas as pd

    a = np.random.default_rng(0).normal(size=200)
    y = np.zeros(200, dtype=int)
    y[[3, 50, 90, 140, 180]] = 1  # 5 positives: about 3 among the training + validation rows
    data = tmp_path / "rare.csv"
    pd.DataFrame({"a": a, "y": y}).to_csv(data, index=False)
    env = _env(tmp_path, PIPELINE_PRESET=None, PIPELINE_DATA__SOURCE=str(data),
               PIPELINE_DATA__TARGET="y", PIPELINE_DATA__DROP="[]", PIPELINE_TUNE__SCORING="cv",
               PIPELINE_TUNE__FOLDS="5", PIPELINE_TUNE__METRIC="roc_auc")  # fmt: skip
    done = run_cli("tune", "--trials", "2", env=env)
    assert done.returncode == 4, done.stderr[-2000:]
    line = done.stderr.strip()
    assert "of 5: its " in line and "held-out rows hold one class only" in line, line
    fewer = re.search(r"use PIPELINE_TUNE__FOLDS=(\d+) or fewer", line)
    assert fewer is not None and 2 <= int(fewer.group(1)) < 5, line
    assert "tune.cluster" not in done.stdout  # before Ray started
    ran = run_cli("tune", "--trials", "2", env={**env, "PIPELINE_TUNE__FOLDS": fewer.group(1)})
    assert ran.returncode == 0, ran.stderr[-2000:]


def test_a_class_missing_from_a_folds_training_rows_is_exit_4_before_ray(tmp_path: Path) -> None:
    """One row of class 'maybe': every cross-validated trial failed on it after Ray started
    (exit 6), advising fewer folds, which cannot help. Now exit 4 before any trial, naming the
    fold, the class and what does help."""
    import numpy as np
    import pandas as pd

    a = np.random.default_rng(0).normal(size=120)
    data = tmp_path / "rare.csv"
    pd.DataFrame({"a": a, "y": ["maybe", *np.where(a[1:] > 0, "yes", "no")]}).to_csv(
        data, index=False
    )
    env = _env(tmp_path, PIPELINE_PRESET=None, PIPELINE_DATA__SOURCE=str(data),
               PIPELINE_DATA__TARGET="y", PIPELINE_DATA__DROP="[]",
               PIPELINE_TUNE__SCORING="cv", PIPELINE_TUNE__FOLDS="2")  # fmt: skip
    done = run_cli("tune", "--trials", "2", env=env)
    assert done.returncode == 4, done.stderr[-2000:]
    line = done.stderr.strip()
    assert "of 2: its training rows hold no row of class 'maybe' (1 row)" in line, line
    assert line.endswith("(PIPELINE_TUNE__SCORING=validation)"), line
    assert "tune.cluster" not in {e["event"] for e in events(done.stdout)}  # Ray never started


def test_a_failed_trial_is_recorded_and_tune_show_gives_its_error(tmp_path: Path) -> None:
    """Trial 0 (the configured settings) trains; trial 1's learning rate diverges. The search
    finishes with trial 0 as the winner, and `tune show` gives trial 1's error, which it used
    to leave out (only trials.json held it). A concurrency above the CPUs is reported as
    what runs at once (it was reported as asked)."""
    space = {"train.learning_rate": {"choice": [1e30]}}
    done = run_cli(
        "tune", "--trials", "2",
        env=_env(tmp_path, PIPELINE_TUNE__SPACE=json.dumps(space), PIPELINE_TUNE__CONCURRENCY="64"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    where = event(done.stdout, "tune.cluster")
    assert where["concurrency"] == where["cpus"] < 64  # one CPU a trial
    assert event(done.stdout, "tune.summary")["winner"] == 0
    shown = run_cli("tune", "show", env=_env(tmp_path))
    assert shown.returncode == 0, shown.stderr
    rows = {row["trial"]: row for row in event(shown.stdout, "tune.show")["trials"]}
    assert rows[0]["status"] == "ok" and "error" not in rows[0]
    assert rows[1]["status"] == "failed"
    assert rows[1]["error"].startswith("training diverged at epoch 1")


def test_a_reader_that_goes_away_during_the_trials_is_exit_141_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`pipeline tune | head -2`: stdout's reader leaves after the first trial's event. The
    event written in Tune's callback raised BrokenPipeError inside a TuneError: exit 1 and a
    130-line traceback. Now a cut-off Unix tool's exit 141, silently."""
    from tests.conftest import _process_env

    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "tune", "--trials", "3"],
        env=_process_env(_env(tmp_path, PIPELINE_TUNE__CONCURRENCY="1")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:
        if '"tune.trial"' in line:
            break
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr[-3000:]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-3000:]


def test_a_cluster_that_does_not_answer_is_exit_5_within_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_cli(
        "tune", "--trials", "2",
        env=_env(tmp_path, RAY_ADDRESS="127.0.0.1:9", PIPELINE_TUNE__CONNECT_TIMEOUT="3"),
    )  # fmt: skip
    assert done.returncode == 5, done.stderr[-2000:]
    assert "RAY_ADDRESS=127.0.0.1:9" in done.stderr and done.stderr.count("\n") == 1
    assert time.monotonic() - started < 60


def test_a_trial_that_needs_more_cpus_than_the_cluster_has_is_exit_3(tmp_path: Path) -> None:
    """Ray would keep the trial pending forever: refused at once, one line, nothing stored."""
    env = _env(tmp_path, PIPELINE_TUNE__CPUS_PER_TRIAL="200")
    done = run_cli("tune", "--trials", "2", env=env, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stderr.startswith("error: PIPELINE_TUNE__CPUS_PER_TRIAL=200 needs")
    # Embedded, the CPUs are this machine's: "the Ray cluster has 2" sent the user to a
    # cluster they never named.
    assert "this machine has" in done.stderr and "or set RAY_ADDRESS" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "store" / "tunes").exists()


def test_a_trial_no_node_can_hold_is_exit_3(tmp_path: Path, ray_cluster: str) -> None:
    """2 CPUs a trial on the test cluster's two nodes of 1 CPU: the check compared the
    cluster's total (2), and the search waited forever without a word. A trial runs on one
    node: refused, naming the largest."""
    env = _env(tmp_path, PIPELINE_TUNE__CPUS_PER_TRIAL="2", RAY_ADDRESS=ray_cluster)
    done = run_cli("tune", "--trials", "2", env=env, timeout=180)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "the largest node of the Ray cluster has 1 (of 2 in all)" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "store" / "tunes").exists()


def test_a_bad_space_is_refused_before_ray_starts(tmp_path: Path) -> None:
    done = run_cli(
        "tune", env=_env(tmp_path, PIPELINE_TUNE__SPACE='{"train.lr": {"uniform": [0, 1]}}')
    )
    assert done.returncode == 3
    assert "key 'train.lr'" in done.stderr and done.stderr.count("\n") == 1


def _start(tmp_path: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "tune", *args],
        env={**base, **_env(tmp_path, **extra)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_trials(proc: subprocess.Popen[str], n: int) -> list[str]:
    """Read the event stream until ``n`` tune.trial events arrived; the lines read."""
    assert proc.stdout is not None
    lines = []
    while sum('"tune.trial"' in line for line in lines) < n:
        line = proc.stdout.readline()
        assert line, "the search ended before the trials arrived"
        lines.append(line)
    return lines


# Successive halving on 3-fold cv: six trials on the first fold, the best two on all three.
HALVING = {"PIPELINE_TUNE__SCORING": "cv", "PIPELINE_TUNE__FOLDS": "3",
           "PIPELINE_TUNE__SCHEDULER": "halving"}  # fmt: skip


def test_successive_halving_is_the_same_search_at_any_concurrency(tmp_path: Path) -> None:
    """PIPELINE_TUNE__SCHEDULER=halving: every trial is scored on fold 0, the best third go on
    to every fold, and only those can win. The decision is taken from the scores alone: one and
    two trials at a time give the same trials table, winner and id."""
    runs = []
    for concurrency in ("1", "2"):
        where = tmp_path / concurrency
        env = _env(where, PIPELINE_TUNE__CONCURRENCY=concurrency, **HALVING)
        done = run_cli("tune", "--trials", "6", env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = event(done.stdout, "tune.summary")
        runs.append((summary, _trials(where, summary["tune_id"]), done.stdout))
    (first, trials, out), (second, again, _) = runs
    assert second["tune_id"] == first["tune_id"] and again == trials
    assert event(out, "tune.start")["schedule"] == [1, 3]
    rung = event(out, "tune.rung")
    # The survivors: the two best first-fold scores (log loss: lower is better), and trial 0,
    # the current configuration, which always finishes.
    runs_done = [e for e in events(out) if e["event"] == "tune.trial"]
    fold0 = [e for e in runs_done if e.get("folds") == [0]]
    assert len(fold0) == 6
    # The survivors' second runs name their folds by number (the span [1, 3) was "[1, 3]").
    assert {tuple(e["folds"]) for e in runs_done if e not in fold0} == {(1, 2)}
    best = sorted(fold0, key=lambda e: (e["score"], e["trial"]))[:2]
    assert rung["kept"] == sorted({0, *(e["trial"] for e in best)})
    assert rung["folds"] == 1 and sorted(rung["kept"] + rung["stopped"]) == list(range(6))
    finished = {t["trial"] for t in trials if t["status"] == "ok"}
    assert finished == set(rung["kept"]) and all(
        t["folds"] == 3 for t in trials if t["status"] == "ok"
    )
    assert all(t["folds"] == 1 for t in trials if t["status"] == "stopped")
    assert trials[0]["status"] == "ok" and first["winner"] == trials[0]["trial"]
    assert first["stopped"] == 6 - len(finished)
    assert len(runs_done) == 6 + len(finished)  # 6 runs on fold 0, the survivors' on folds 1-2
    # Ctrl-C while the second rung runs, then --resume: the stored fold scores take the same
    # decision again, and the search ends as the uninterrupted one did.
    again = {"PIPELINE_TUNE__CONCURRENCY": "1", **HALVING}
    resumed = _interrupted_then_resumed(tmp_path / "resumed", 7, "--trials", "6", **again)
    assert resumed["tune_id"] == first["tune_id"]


def _interrupted_then_resumed(where: Path, after: int, *args: str, **extra: str) -> dict[str, Any]:
    """Ctrl-C a search once ``after`` trial runs have finished (exit 130), then run it again
    with --resume: the resumed run's summary."""
    proc = _start(where, *args, **extra)
    _wait_for_trials(proc, after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    return _tune(where, *args, "--resume", **extra)


# Slower trials, so that a signal lands while one runs.
SLOW = {"PIPELINE_TRAIN__MAX_EPOCHS": "40", "PIPELINE_TRAIN__PATIENCE": "40",
        "PIPELINE_TUNE__CONCURRENCY": "1"}  # fmt: skip


def test_ctrl_c_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    uninterrupted = _tune(tmp_path / "a", "--trials", "3", **SLOW)
    resumed = _interrupted_then_resumed(tmp_path / "b", 1, "--trials", "3", **SLOW)
    assert resumed["tune_id"] == uninterrupted["tune_id"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_before_any_trial_finished_is_exit_130_and_keeps_nothing(
    tmp_path: Path, signum: int
) -> None:
    """A Ctrl-C or SIGTERM once Ray was up (tune.cluster) and before the first trial finished
    was exit 8 "no interrupted search ... to resume; run without --resume" (a command run
    without --resume): the stop looked for kept trials and found none. Now exit 130, one line
    saying nothing was kept, and the store holds no partial search."""
    proc = _start(tmp_path, "--trials", "3", **SLOW)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"tune.cluster"' in line:
            break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert '"tune.trial"' not in out, "a trial finished before the stop: the test needs slower"
    assert proc.returncode == 130, err[-2000:]
    assert err == (
        "error: tune interrupted before any trial finished: nothing kept; run it again\n"
    ), err[-2000:]
    assert not list((tmp_path / "store").glob("tune-partial/*/*"))


def test_a_sigterm_after_the_last_trial_writes_the_record_and_exits_0(
    tmp_path: Path, reference: tuple[Path, dict[str, Any]]
) -> None:
    """SIGTERM once the last trial had reported (while Ray shut down) ended 130 with "the
    results of 4 trial(s) of 4 are kept; --resume runs the rest", and no record: the search
    was whole. Now its record is written (a tune.stop_deferred warning), exit 0, the same
    tune id as the uninterrupted search."""
    proc = _start(tmp_path, "--trials", "4", PIPELINE_TUNE__CONCURRENCY="1")
    lines = _wait_for_trials(proc, 4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    stream = "".join(lines) + out
    deferred = event(stream, "tune.stop_deferred")
    assert deferred["message"].startswith("every trial has finished")
    assert deferred["signal"] == "SIGTERM"  # it was null when Ray's shutdown took the stop
    assert event(stream, "tune.summary")["tune_id"] == reference[1]["tune_id"]
    assert (tmp_path / "store" / "tunes" / reference[1]["tune_id"] / "trials.json").is_file()


def test_an_edited_kept_record_is_named_and_run_again_on_resume(tmp_path: Path) -> None:
    """A kept trial's score (and its metrics, consistently) edited between Ctrl-C and
    `--resume` was used as it was: no warning, and the forged trial won. Each record carries
    the sha256 of its content: the edited one is a tune.resume_record_damaged warning naming
    it, its trial runs again, and the search ends as the uninterrupted one did."""
    from pipeline.search import better

    uninterrupted = _tune(tmp_path / "a", "--trials", "3", **SLOW)
    where = tmp_path / "b"
    proc = _start(where, "--trials", "3", **SLOW)
    _wait_for_trials(proc, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    store = where / "store"
    path = sorted(store.glob("tune-partial/*/*.json"))[0]
    kept = json.loads(path.read_text())
    metric = uninterrupted["metric"]
    forged = 1.0 if better(metric) == "max" else 1e-6  # a score that wins
    assert kept["metrics"][metric] == kept["score"] != forged
    kept["score"] = kept["metrics"][metric] = forged
    path.write_text(json.dumps(kept))
    done = run_cli("tune", "--trials", "3", "--resume", env=_env(where, **SLOW), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    warned = [e for e in events(done.stdout) if e["event"] == "tune.resume_record_damaged"]
    key = path.relative_to(store).as_posix()
    assert [e["key"] for e in warned] == [key] and key in warned[0]["message"]
    resumed = event(done.stdout, "tune.summary")
    assert resumed["tune_id"] == uninterrupted["tune_id"]
    assert resumed["winner"] == uninterrupted["winner"] and resumed["score"] != forged
    assert _trials(where, resumed["tune_id"]) == _trials(tmp_path / "a", resumed["tune_id"])


def test_a_second_sigterm_while_the_runtime_stops_leaves_no_temporary_folder(
    tmp_path: Path,
) -> None:
    """A second SIGTERM 0.3 s after the first broke off the embedded runtime's shutdown: exit
    130 as it should, but its temporary folder (/tmp/pipeline-ray-*) stayed for good. The
    shutdown now runs to its end, the signal noted."""
    import glob
    import time

    before = set(glob.glob("/tmp/pipeline-ray-*"))
    proc = _start(tmp_path, "--trials", "3", **SLOW)
    _wait_for_trials(proc, 1)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.count("\n") == 1 and err.startswith("error: tune interrupted"), err[-2000:]
    assert set(glob.glob("/tmp/pipeline-ray-*")) <= before


def test_the_temporary_folders_of_a_search_killed_with_sigkill_go_with_the_next_search(
    tmp_path: Path,
) -> None:
    """SIGKILL (an out-of-memory kill, a CI timeout) leaves no time to clean up: the embedded
    runtime's folder (/tmp/pipeline-ray-*) and Ray Tune's (pipeline-tune-*) stayed for good.
    Each is marked with its process; the next search removes those whose process is gone."""
    import glob
    import time

    def ours() -> set[str]:
        return set(glob.glob("/tmp/pipeline-ray-*")) | set(glob.glob("/tmp/pipeline-tune-*"))

    before = ours()
    proc = _start(tmp_path, "--trials", "3", **SLOW)
    _wait_for_trials(proc, 1)
    proc.kill()
    proc.communicate(timeout=60)
    left = ours() - before
    assert {Path(p).name.rsplit("-", 1)[0] for p in left} == {"pipeline-ray", "pipeline-tune"}
    time.sleep(1)  # a killed driver's Ray processes are gone, or going
    resumed = _tune(tmp_path, "--trials", "3", "--resume", **SLOW)
    assert resumed["tune_id"]
    assert not left & ours()


def test_a_cluster_lost_mid_search_is_exit_5_and_resume_finishes_it(tmp_path: Path) -> None:
    """The cluster at RAY_ADDRESS stops (its head and worker node killed) after the first
    trial: one line and an `error` event, exit 5, within the connect timeout plus a few
    seconds (Ray's core worker ended the process after 60 s with exit 1 and its own lines).
    The finished trials are kept: `--resume`, embedded, ends as the uninterrupted run."""
    from tests import ray_cluster as local

    uninterrupted = _tune(tmp_path / "a", "--trials", "3", **SLOW)
    cluster = local.start(timeout=90)
    try:
        proc = _start(tmp_path / "b", "--trials", "3", RAY_ADDRESS=cluster.address,
                      PIPELINE_TUNE__CONNECT_TIMEOUT="10", **SLOW)  # fmt: skip
        _wait_for_trials(proc, 1)
    finally:
        cluster.stop()
    lost = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err[-3000:]
    assert time.monotonic() - lost < 45  # 10 s of silence, then at most a probe's timeout
    assert err.count("\n") == 1 and err.startswith("error: the Ray cluster at RAY_ADDRESS=")
    assert "stopped answering during the run" in err and "tune --resume" in err
    failure = event(out, "error")
    assert failure["exit_code"] == 5 and failure["stage"] == "tune"
    resumed = _tune(tmp_path / "b", "--trials", "3", "--resume", **SLOW)
    assert resumed["tune_id"] == uninterrupted["tune_id"]


def test_a_killed_worker_is_retried_or_recorded_failed_and_the_search_finishes(
    tmp_path: Path,
) -> None:
    """SIGKILL the worker of the running trial: the search finishes (exit 0). The trial is
    retried (when Ray sees it die while running) or recorded failed with its error (when it
    died between trials); every other trial is exactly the uninterrupted run's."""
    uninterrupted = _tune(tmp_path / "a", "--trials", "3", **SLOW)
    proc = _start(tmp_path / "b", "--trials", "3", **SLOW)
    _wait_for_trials(proc, 1)
    killed = _kill_a_trial_worker(proc.pid)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert killed, "no trial worker was found to kill"
    summary = event(out, "tune.summary")
    reference = {t["trial"]: t for t in _trials(tmp_path / "a", uninterrupted["tune_id"])}
    trials = _trials(tmp_path / "b", summary["tune_id"])
    failed = [t for t in trials if t["status"] != "ok"]
    assert len(failed) <= 1 and all(t["error"] for t in failed)
    for t in trials:
        if t["status"] == "ok":
            ref = reference[t["trial"]]
            assert (t["score"], t["config"]) == (ref["score"], ref["config"])
    retried = [e for e in events(out) if e["event"] == "tune.trial_retried"]
    if not failed:  # killed while it ran: retried, and said so (it was silent)
        assert summary["tune_id"] == uninterrupted["tune_id"]
        assert len(retried) == 1 and retried[0]["level"] == "warning", retried
        assert retried[0]["failures"] == 1 and retried[0]["of"] == 2
        assert retried[0]["error"] not in ("", trials_.WORKER_FAILED), retried  # Ray's own


def _kill_a_trial_worker(driver: int) -> bool:
    """SIGKILL the Ray worker process running a trial of this search: a descendant of the
    driver (the embedded runtime's processes are its children) named ray::ImplicitFunc."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listing = subprocess.run(
            ["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True
        ).stdout
        parent = {}
        workers = []
        for line in listing.splitlines():
            pid, ppid, args = line.split(None, 2) if len(line.split(None, 2)) == 3 else (0, 0, "")
            parent[int(pid)] = int(ppid)
            if "ray::ImplicitFunc" in args:
                workers.append(int(pid))
        for pid in workers:
            up = pid
            while up > 1 and up != driver:
                up = parent.get(up, 0)
            if up == driver:
                os.kill(pid, signal.SIGKILL)
                return True
        time.sleep(0.2)
    return False
