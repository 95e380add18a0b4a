"""`pipeline train --workers N` on Ray Train: the in-process build contract, N shards, DDP.

House prices with a small recipe (5 epochs, one ensemble member), each run a real subprocess.
Two embedded workers must train a build that packages, releases and predicts; the same run twice
must give the same build id; the preprocessing statistics must be the in-process bytes; one
worker must give the in-process weights; the suite's two-node cluster must give the embedded
build; a worker killed mid-epoch must fail the run with one line and no build; and a run
stopped by SIGTERM must checkpoint every worker and resume to the build of a run never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import event, events, one_error_line
from tests.conftest import run_fresh as run_cli
from tests.ray_cluster import descendants_named

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMALL = {
    "PIPELINE_PRESET": "house-prices",
    "PIPELINE_TRAIN__MAX_EPOCHS": "5",
    "PIPELINE_MODEL__MEMBERS": "1",
}
HOUSE_PRICES = Path(__file__).parents[1] / "src" / "pipeline" / "datasets" / "house-prices.csv"


def _env(root: Path, address: str = "", **extra: str) -> dict[str, str]:
    return {
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_LOG_FORMAT": "json",
        "RAY_ADDRESS": address,
        "RAY_AUTH_MODE": "disabled",
        **SMALL,
        **extra,
    }


def _train(root: Path, *args: str, address: str = "", **extra: str) -> dict[str, Any]:
    """Run `pipeline train ARGS` in ``root``; its events by name (exit 0 asserted)."""
    root.mkdir(parents=True, exist_ok=True)
    done = run_cli("train", *args, env=_env(root, address, **extra), cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]  # Ray's notices never reach the terminal
    stream = events(done.stdout)  # every stdout line is a JSON event
    named = {e["event"]: e for e in stream}
    named["build"] = root / "store" / "builds" / named["train.summary"]["build_id"]
    named["stream"] = stream
    return named


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The in-process build of the small recipe."""
    return _train(tmp_path_factory.mktemp("in-process"))


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The build of two embedded Ray workers."""
    return _train(tmp_path_factory.mktemp("two"), "--workers", "2")


def test_two_embedded_workers_train_a_build_that_predicts(
    two: dict[str, Any], tmp_path: Path
) -> None:
    """Two workers, each with about half of the training rows, write a build whose package
    and release predict every row as an in-process build's would."""
    assert two["train.cluster"]["embedded"] is True and two["train.cluster"]["workers"] == 2
    assert two["train.cluster"]["backend"] == "gloo"
    workers = two["train.workers"]["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert len({w["pid"] for w in workers}) == 2
    # 1,460 rows: 1,168 train + validation (refit rows), split between the two workers
    assert sum(w["rows"] for w in workers) == 1168 and abs(workers[0]["rows"] - 584) <= 1
    summary = two["train.summary"]
    assert summary["epochs"] == 5 and summary["validation"]["r2"] > 0.5
    store = two["build"].parents[1]
    env = {"PIPELINE_STORE": str(store), "PIPELINE_ENV_FILE": os.devnull,
           "PIPELINE_MODEL__NAME": "house-prices"}  # fmt: skip
    done = run_cli("package", "--id-file", str(tmp_path / "package.id"), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    package_id = (tmp_path / "package.id").read_text().strip()
    done = run_cli(
        "release", "create", package_id, "--id-file", str(tmp_path / "release.id"), env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(HOUSE_PRICES).drop(columns=["SalePrice"]).head(200)
    rows.to_csv(tmp_path / "in.csv", index=False)
    release = (tmp_path / "release.id").read_text().strip()
    out = tmp_path / "out.csv"
    done = run_cli(
        "predict", str(tmp_path / "in.csv"), "-o", str(out), env=env | {"PIPELINE_RELEASE": release}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = pd.read_csv(out)
    assert len(predicted) == 200 and predicted.notna().all().all()


def test_the_same_run_twice_gives_the_same_build(two: dict[str, Any], tmp_path: Path) -> None:
    """Same data, settings, seed and N: the same build id (so byte-identical weights), also
    when the second run has one core for its two workers: it says they share it
    (`train.oversubscribed`, as `--workers 64` on 2 cores said nothing) and is not refused,
    since N is part of the build's identity and a small machine reproduces a large one's."""
    one = min(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", "--workers", "2"],
        env=env | _env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, {one}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    named = {e["event"]: e for e in events(done.stdout)}
    warned = named["train.oversubscribed"]
    assert (warned["workers"], warned["cores"]) == (2, 1) and "--workers 1 or fewer" in warned[
        "message"
    ]
    assert named["train.summary"]["build_id"] == two["train.summary"]["build_id"]
    build = tmp_path / "store" / "builds" / two["train.summary"]["build_id"]
    assert (build / "weights.pt").read_bytes() == (two["build"] / "weights.pt").read_bytes()
    if len(os.sched_getaffinity(0)) >= 2:  # two workers on two cores: nothing to say
        assert "train.oversubscribed" not in {e["event"] for e in two["stream"]}


def test_two_threads_a_worker_on_the_embedded_runtime_warn_and_train_the_same_build(
    two: dict[str, Any], tmp_path: Path
) -> None:
    """`--workers 2` with PIPELINE_TRAIN__THREADS=2 on 2 cores was refused ("needs 4 CPUs, and
    the Ray cluster has 2", naming neither the threads nor a cluster, which there was not),
    where more workers than cores only warn: the embedded runtime takes what the workers
    hold, `train.oversubscribed` says they share the cores, and the threads leave the build
    as it was (thread counts never change a weight)."""
    threads = max(2, len(os.sched_getaffinity(0)))  # 2 workers of them: more than the cores
    done = _train(tmp_path, "--workers", "2", PIPELINE_TRAIN__THREADS=str(threads))
    warned = done["train.oversubscribed"]
    assert warned["workers"] == 2 and f"2 workers of {threads} CPU(s) each" in warned["message"]
    assert done["train.summary"]["build_id"] == two["train.summary"]["build_id"]


def test_statistics_and_split_equal_the_in_process_build(
    two: dict[str, Any], in_process: dict[str, Any]
) -> None:
    """preprocessing.json and schema.json are the in-process bytes; N is in the recorded
    config (and so in the id), which an in-process build's config leaves out."""
    for name in ("preprocessing.json", "schema.json"):
        assert (two["build"] / name).read_bytes() == (in_process["build"] / name).read_bytes()
    assert two["data.split"] == {**in_process["data.split"], "run_id": two["data.split"]["run_id"],
                                 "timestamp": two["data.split"]["timestamp"]}  # fmt: skip
    config = json.loads((two["build"] / "config.json").read_text())
    assert config["train"]["workers"] == 2
    assert "workers" not in json.loads((in_process["build"] / "config.json").read_text())["train"]
    assert two["train.summary"]["build_id"] != in_process["train.summary"]["build_id"]


def test_ray_tasks_read_and_fit_the_input_columns_and_the_driver_only_the_target(
    two: dict[str, Any],
) -> None:
    """No process holds the whole table: the driver reads the target column alone, and Ray
    tasks, each in a process of its own, read every input column once, in file order, for every
    row (the statistics above are theirs)."""
    tasks = two["train.columns"]["tasks"]
    header = pd.read_csv(HOUSE_PRICES, nrows=0).columns.tolist()
    inputs = [c for c in header if c not in ("Id", "SalePrice")]
    assert len(tasks) >= 2 and all(len(t["columns"]) < len(inputs) for t in tasks)
    assert [c for t in tasks for c in t["columns"]] == inputs
    assert all(t["rows"] == 1460 for t in tasks)
    assert two["data.schema"]["rows"] == 1460 and two["data.schema"]["numeric"] == 36


def test_rows_without_a_target_and_a_bad_cell_behave_as_in_process(tmp_path: Path) -> None:
    """Rows whose target is missing are left out by the same file rows (one worker gives the
    in-process weights on such a table); a table with an infinity in an early column and a
    stray word in a later one is refused with the in-process error (the word: every column is
    typed before any is fitted), exit 4, nothing stored."""
    table = pd.read_csv(HOUSE_PRICES)
    table.loc[[3, 50, 700], "SalePrice"] = None
    table.to_csv(tmp_path / "gaps.csv", index=False)
    runs = [
        _train(tmp_path / name, *args, PIPELINE_DATA__SOURCE=str(tmp_path / "gaps.csv"))
        for name, args in (("in", ()), ("one", ("--workers", "1")))
    ]
    assert runs[1]["data.schema"]["rows"] == 1457
    for name in ("preprocessing.json", "weights.pt"):
        assert (runs[0]["build"] / name).read_bytes() == (runs[1]["build"] / name).read_bytes()
    bad = table.assign(LotArea=table["LotArea"].astype(float), GarageArea=table["GarageArea"])
    bad.loc[1000, "LotArea"] = float("inf")
    bad["GarageArea"] = bad["GarageArea"].astype(object)
    bad.loc[900, "GarageArea"] = "abc"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    errors = []
    for args in ((), ("--workers", "2")):
        root = tmp_path / f"bad{len(args)}"
        root.mkdir()
        env = _env(root, PIPELINE_DATA__SOURCE=str(tmp_path / "bad.csv"))
        done = run_cli("train", *args, env=env, cwd=root, timeout=600)
        assert done.returncode == 4, done.stderr[-2000:]
        errors.append(one_error_line(done))
        assert not (root / "store" / "builds").exists() or not any(
            (root / "store" / "builds").iterdir()
        )
    assert errors[0] == errors[1] and "'GarageArea'" in errors[0] and "row 901" in errors[0]


def test_the_ridge_on_a_narrow_table_is_fitted_on_its_rows(tmp_path: Path) -> None:
    """700,000 rows of 6 numeric columns: the ridge beside the network fits (595,000 training
    rows x 6 inputs is within its 4M cells, where 700,000 rows x 6 columns is not), so the
    driver gathers every row for it, and one worker (one torch thread) gives the in-process
    build's weights, ridge and metrics (as many threads as cores at batch 1024)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(700_000, 6))
    table = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)])
    table["y"] = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0]) + rng.normal(0, 0.5, len(x))
    table.to_parquet(tmp_path / "narrow.parquet", index=False)
    narrow = {
        "PIPELINE_PRESET": None, "PIPELINE_DATA__SOURCE": str(tmp_path / "narrow.parquet"),
        "PIPELINE_DATA__TARGET": "y", "PIPELINE_DATA__DROP": "[]", "PIPELINE_MODEL__NAME": "n",
        "PIPELINE_TRAIN__MAX_EPOCHS": "1", "PIPELINE_TRAIN__BATCH_SIZE": "1024",
    }  # fmt: skip
    runs = [_train(tmp_path / name, *args, **narrow)
            for name, args in (("in", ()), ("one", ("--workers", "1")))]  # fmt: skip
    linear = json.loads((runs[1]["build"] / "metrics.json").read_text())["linear"]
    assert linear is not None and linear["ridge_share"] > 0
    for name in ("weights.pt", "metrics.json"):
        assert (runs[0]["build"] / name).read_bytes() == (runs[1]["build"] / name).read_bytes()


def test_a_table_bagged_in_one_process_says_that_the_workers_do_not_bag_it(
    tmp_path: Path,
) -> None:
    """200 rows of house prices (160 training + validation rows): `train` in one process bags
    them (5 folds), `--workers 1` trains one network, and said so only by `bag_folds: null`
    (a 30-row table's validation R² -0.15 against 0.81). A `train.warning` names the rows and
    the way to the bagged model; the full table (1,168 such rows, never bagged) has none."""
    pd.read_csv(HOUSE_PRICES).head(200).to_csv(tmp_path / "few.csv", index=False)
    few = _train(
        tmp_path / "few", "--workers", "1", PIPELINE_DATA__SOURCE=str(tmp_path / "few.csv")
    )
    warned = [e for e in few["stream"] if e["event"] == "train.warning"]
    assert len(warned) == 1, warned
    assert warned[0]["message"].startswith("160 training + validation rows: in one process")
    assert "train without --workers for the bagged model" in warned[0]["message"]
    assert few["train.summary"]["bag_folds"] is None


def test_rows_scored_on_ray_give_the_in_process_metrics(tmp_path: Path) -> None:
    """Without the ridge (a large table's case), the driver holds no validation or test row:
    Ray tasks score them in chunks and send outputs back. One worker's metrics and curves are
    the in-process bytes."""
    off = {"PIPELINE_MODEL__LINEAR_BLEND": "false"}
    runs = [_train(tmp_path / name, *args, **off)
            for name, args in (("in", ()), ("one", ("--workers", "1")))]  # fmt: skip
    assert json.loads((runs[1]["build"] / "metrics.json").read_text())["linear"] is None
    files = sorted(p.name for p in runs[1]["build"].iterdir() if p.name.startswith("curve_"))
    assert files  # the test curves, computed from the same outputs
    for name in ("weights.pt", "metrics.json", *files):
        assert (runs[0]["build"] / name).read_bytes() == (runs[1]["build"] / name).read_bytes()


def test_one_worker_gives_the_in_process_weights(
    in_process: dict[str, Any], tmp_path: Path
) -> None:
    """N=1 on Ray runs the in-process loop's arithmetic: the same weights, curves and metrics
    bit for bit (the build id differs: N is part of it)."""
    one = _train(tmp_path, "--workers", "1")
    for name in ("weights.pt", "history.json", "metrics.json"):
        assert (one["build"] / name).read_bytes() == (in_process["build"] / name).read_bytes()


def test_the_cluster_gives_the_embedded_build(
    two: dict[str, Any], ray_cluster: str, tmp_path: Path
) -> None:
    """N=2 on the suite's two-node cluster (one worker per node) gives the embedded build."""
    remote = _train(tmp_path, address=ray_cluster, PIPELINE_TRAIN__WORKERS="2")
    cluster = remote["train.cluster"]
    assert cluster["embedded"] is False and cluster["nodes"] == 2
    assert len({w["node"] for w in remote["train.workers"]["workers"]}) == 2
    weights = [(run["build"] / "weights.pt").read_bytes() for run in (remote, two)]
    assert weights[0] == weights[1]
    assert remote["train.summary"]["build_id"] == two["train.summary"]["build_id"]


def test_a_worker_no_node_can_hold_is_exit_3_on_the_cluster(
    ray_cluster: str, tmp_path: Path
) -> None:
    """One worker of 2 threads on the test cluster's two nodes of 1 CPU: the check compared
    the cluster's total (2), and Ray Train waited forever without a word. A worker runs on
    one node: refused, naming the nodes."""
    done = run_cli(
        "train", "--workers", "1",
        env=_env(tmp_path, address=ray_cluster, PIPELINE_TRAIN__THREADS="2"), timeout=180,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    line = one_error_line(done)
    assert "on nodes of [1, 1] CPUs, where 0 such worker(s) fit" in line, line
    assert not (tmp_path / "store" / "builds").exists()


def _start_a_long_run(root: Path, **extra: str) -> subprocess.Popen[str]:
    """`pipeline train --workers 2` with epochs enough to still be training when the test acts."""
    long = {"PIPELINE_TRAIN__MAX_EPOCHS": "3000", "PIPELINE_TRAIN__PATIENCE": "3000"} | extra
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", "--workers", "2"],
        env=env | _env(root, **long),
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_killed_mid_epoch_fails_the_run_and_writes_nothing(tmp_path: Path) -> None:
    """SIGKILL one training worker while it trains: exit 5 with one line on stderr, no
    traceback, and no build (nor anything else) in the store."""
    proc = _start_a_long_run(tmp_path)
    try:
        seen = _until_the_first_epoch(proc)
        killed = _kill_a_training_worker(proc.pid)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert killed, "no training worker was found to kill"
    out = "".join(seen) + out
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 5, err[-3000:]
    line = one_error_line(done)
    assert "a Ray training worker was lost" in line and "nothing was written" in line
    events(out)  # stdout stayed an event stream: Ray's notice of the dead worker is not in it
    assert not (tmp_path / "store" / "builds").exists() or not any(
        (tmp_path / "store" / "builds").iterdir()
    )
    assert event(out, "error")["exit_code"] == 5


# 60 selection epochs (patience as long: no early stop) and 60 refit epochs, a checkpoint every
# 10: long enough for a signal to land in either phase, short enough to resume in seconds.
RESUMABLE = {
    "PIPELINE_TRAIN__MAX_EPOCHS": "60",
    "PIPELINE_TRAIN__PATIENCE": "60",
    "PIPELINE_TRAIN__CHECKPOINT_EVERY": "10",
    # Small batches make each epoch long enough that the refit is still running when a test
    # has seen its first relayed epoch and signals (at batch 128 a fast machine finished the
    # whole refit in the relay's latency, and the run exited 0).
    "PIPELINE_TRAIN__BATCH_SIZE": "16",
}


def _checkpoints(root: Path) -> list[Path]:
    folder = root / "store" / "checkpoints"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted two-worker run of the resumable recipe."""
    return _train(tmp_path_factory.mktemp("whole"), "--workers", "2", **RESUMABLE)


def test_checkpoints_hold_every_workers_state_and_go_once_the_build_is_written(
    whole: dict[str, Any],
) -> None:
    """PIPELINE_TRAIN__CHECKPOINT_EVERY with --workers: a checkpoint every 10 epochs of each
    phase (every worker's state in one file), removed once the build exists."""
    root = whole["build"].parents[2]
    saved = [(e["phase"], e["epoch"]) for e in whole["stream"] if e["event"] == "train.checkpoint"]
    refit_epochs = whole["train.summary"]["best_epoch"]  # the refit trains that many epochs
    assert saved == [("selection", e) for e in (11, 21, 31, 41, 51)] + [
        ("refit", e) for e in range(11, refit_epochs + 1, 10)
    ]
    assert _checkpoints(root) == []


@pytest.mark.parametrize(
    ("phase", "signum"),
    [("selection", signal.SIGTERM), ("refit", signal.SIGTERM), ("selection", signal.SIGINT)],
    ids=["selection-SIGTERM", "refit-SIGTERM", "selection-SIGINT"],
)
def test_a_signal_checkpoints_every_worker_and_resume_gives_the_uninterrupted_build(
    whole: dict[str, Any], tmp_path: Path, phase: str, signum: signal.Signals
) -> None:
    """SIGTERM or Ctrl-C (SIGINT) to `pipeline train --workers 2` while it trains (in the
    selection or the refit phase): every worker stops after the same step, exit 130 with one
    line saying where the checkpoint is (Ray's own SIGTERM handler, a stack dump, and Ray
    Train's SIGINT handler, which aborted the run, do not take over), no build, the embedded
    runtime's processes gone with it; `--resume` then gives the build id of the run that was
    never stopped."""
    proc = _start_a_long_run(tmp_path, **RESUMABLE)
    wanted = {"selection": '"train.epoch"', "refit": '"train.refit_epoch"'}[phase]
    try:
        seen = _until_the_first_epoch(proc, wanted)
        runtime = descendants_named(proc.pid, "ray::")  # the workers, the controller, ...
        assert runtime
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)
    assert done.returncode == 130, err[-3000:]
    line = one_error_line(done)
    assert f"training stopped by {signum.name} in {phase}" in line, line
    assert "run `pipeline train --workers 2 --resume`" in line, line
    assert event(done.stdout, "train.interrupted")["phase"] == phase
    assert not (tmp_path / "store" / "builds").exists()
    assert len(_checkpoints(tmp_path)) == 1
    deadline = time.monotonic() + 30
    while [pid for pid in runtime if _title(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in runtime if _title(pid)] == []

    resumed = _train(tmp_path, "--workers", "2", "--resume", **RESUMABLE)
    assert resumed["train.resume"]["phase"] == phase
    assert resumed["train.summary"]["build_id"] == whole["train.summary"]["build_id"]
    assert _checkpoints(tmp_path) == []


def test_stdouts_reader_going_away_stops_the_workers_with_a_checkpoint(
    whole: dict[str, Any], tmp_path: Path
) -> None:
    """`pipeline train --workers 2 | head`: the relay of epochs died with the pipe, the run
    trained on to its end and exited 141 without a word or a checkpoint. Now the workers stop
    as for SIGTERM: exit 141, one line naming SIGPIPE and `--workers 2 --resume`, a checkpoint,
    no build; `--resume` gives the uninterrupted build."""
    proc = _start_a_long_run(tmp_path, **RESUMABLE)
    try:
        _until_the_first_epoch(proc)
        assert proc.stdout is not None
        proc.stdout.close()  # the reader goes away, as `head` does once it has its lines
        err = proc.stderr.read() if proc.stderr is not None else ""
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 141, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stdout's reader went away (SIGPIPE)" in lines[0], err[-3000:]
    assert "run `pipeline train --workers 2 --resume`" in lines[0]
    assert not (tmp_path / "store" / "builds").exists()
    assert len(_checkpoints(tmp_path)) == 1
    resumed = _train(tmp_path, "--workers", "2", "--resume", **RESUMABLE)
    assert resumed["train.summary"]["build_id"] == whole["train.summary"]["build_id"]


@pytest.mark.parametrize("during", ["ray.init", "the workers' start"])
def test_ctrl_c_while_ray_starts_stops_at_once_and_leaves_no_ray_process(
    tmp_path: Path, during: str
) -> None:
    """Ctrl-C while the embedded runtime starts (its agents are up, ``ray.init`` waits for its
    node) or while Ray Train starts its workers (a second after the schema; 10 to 30 s):

    - Ray Train's own SIGINT handler once took over and exited 1 with no word; then the stop
      waited for the workers' start-up and their first steps to checkpoint them (14 s here);
      now it stops at once: exit 130, one line, nothing written;
    - the runtime's dashboard and runtime-env agents (the raylet's children) outlived a
      command stopped while ``ray.init`` ran by a minute, reparented to init: every process
      the run started is gone within seconds of its exit."""
    proc = _start_a_long_run(tmp_path, **RESUMABLE)
    try:
        if during == "ray.init":
            seen = _until_the_first_epoch(proc, '"data.split"')
            assert _wait_for_descendant(proc.pid, "ray::RuntimeEnvAgent")
        else:
            seen = _until_the_first_epoch(proc, '"data.schema"')
            time.sleep(1)
        started = set(descendants_named(proc.pid, ""))
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:  # those it starts meanwhile
            started |= set(descendants_named(proc.pid, ""))
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)
    assert done.returncode == 130, (done.returncode, err[-3000:])
    assert one_error_line(done) == "error: train interrupted: nothing was written; run it again\n"
    assert '"train.epoch"' not in done.stdout
    assert not (tmp_path / "store" / "builds").exists()
    assert _checkpoints(tmp_path) == []
    assert len(started) >= 3, started  # the runtime was up: gcs, raylet, its agents, workers
    deadline = time.monotonic() + 10
    while (left := [p for p in started if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], [_title(p) for p in left]


def _wait_for_descendant(driver: int, title: str) -> bool:
    """Whether a descendant of ``driver`` titled ``title`` appears within 30 s."""
    deadline = time.monotonic() + 30
    while not descendants_named(driver, title):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited and not yet reaped by init, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _until_the_first_epoch(proc: subprocess.Popen[str], wanted: str = '"train.epoch"') -> list[str]:
    """The run's stdout lines up to the first that holds ``wanted``: rank 0 has finished an
    epoch, so both workers are past Ray Train's setup calls and in the training loop (a worker
    lost during setup is not a training failure: Ray Train starts the group again)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the epochs are relayed live, as they end on rank 0
        seen.append(line)
        if wanted in line:
            break
    return seen


def _kill_a_training_worker(driver: int) -> bool:
    """SIGKILL one of this run's two Ray Train workers: a descendant of the driver (the
    embedded runtime's processes are its children) whose title is ``ray::RayTrainWorker``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ours = descendants_named(driver, "ray::RayTrainWorker")
        if len(ours) == 2:
            os.kill(max(ours), signal.SIGKILL)
            return True
        time.sleep(0.2)
    return False


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_million_row_table_trains_on_two_workers_each_holding_half(tmp_path: Path) -> None:
    """A generated 1M-row table (20 numeric + 2 categorical columns, Parquet) trains with N=2:
    each worker reports its half of the training rows, the column tasks read every row of
    their columns, and the build predicts (the same table's in-process fit is not repeated
    here: the house-prices tests above compare those bytes)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    from _common import synthetic

    data = tmp_path / "million.parquet"
    synthetic(data, 1_000_000, 20, 2, seed=5)
    big = {
        "PIPELINE_PRESET": None,
        "PIPELINE_DATA__SOURCE": str(data),
        "PIPELINE_DATA__TARGET": "y",
        "PIPELINE_DATA__DROP": "[]",
        "PIPELINE_TRAIN__MAX_EPOCHS": "1",
        "PIPELINE_TRAIN__REFIT": "false",
        "PIPELINE_TRAIN__BATCH_SIZE": "1024",
        "PIPELINE_MODEL__NAME": "million",
    }
    trained = _train(tmp_path / "run", "--workers", "2", **big)
    ranks = trained["train.workers"]["workers"]
    rows = [int(r["rows"]) for r in ranks]
    schema_rows = trained["data.schema"]["rows"]
    assert schema_rows == 1_000_000 and len(rows) == 2 and abs(rows[0] - rows[1]) <= 1
    assert 0.5 * schema_rows < sum(rows) < schema_rows  # the training rows only, split in two
    assert trained["train.summary"]["epochs"] == 1
    tasks = trained["train.columns"]["tasks"]
    assert [c for t in tasks for c in t["columns"]] == [*(f"x{i}" for i in range(20)), "c0", "c1"]
    assert len(tasks) >= 2 and all(t["rows"] == 1_000_000 for t in tasks)
    sample = tmp_path / "sample.parquet"
    pd.read_parquet(data).head(100).drop(columns=["y"]).to_parquet(sample)
    env = _env(tmp_path / "run", **big)
    for args in (["package", "--id-file", str(tmp_path / "package.id")],
                 ["release", "create", "--id-file", str(tmp_path / "release.id")]):  # fmt: skip
        if args[0] == "release":
            args.insert(2, (tmp_path / "package.id").read_text().strip())
        done = run_cli(*args, env=env, cwd=tmp_path / "run")
        assert done.returncode == 0, done.stderr[-3000:]
    release = (tmp_path / "release.id").read_text().strip()
    done = run_cli("predict", str(sample), "-o", str(tmp_path / "p.csv"),
                   env=env | {"PIPELINE_RELEASE": release}, cwd=tmp_path / "run")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "p.csv")) == 100
