"""Stopped training checkpoints; `pipeline train --resume` reproduces the uninterrupted build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import event, events, invoke_isolated, run_cli, start_cli

# Every test stops real `pipeline train` processes with signals.
pytestmark = pytest.mark.slow

# Short enough to keep the module quick, long enough to stop in either phase. The network is
# narrower than the default (the 4 members stay) but the epochs are not fewer: a signal sent at
# epoch 3 still has some 20 epochs of its phase, most of a second, to arrive in.
ENV = {
    "PIPELINE_LOG_FORMAT": "json",
    "PIPELINE_TRAIN__MAX_EPOCHS": "24",
    "PIPELINE_TRAIN__PATIENCE": "8",
    "PIPELINE_MODEL__HIDDEN": "[64]",
}


def _env(tmp: Path, store: Path, **extra: str) -> dict[str, str]:
    env = {**ENV, "PIPELINE_STORE": str(store), "PIPELINE_ENV_FILE": os.devnull}
    return {**env, **extra}


def _train_and_signal(
    env: dict[str, str], phase_event: str, after: int, sig: signal.Signals
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline train`, send ``sig`` once ``after`` events of ``phase_event`` were logged."""
    proc = start_cli("train", env=env)
    assert proc.stdout is not None and proc.stderr is not None
    lines, seen = [], 0
    for line in proc.stdout:
        lines.append(line)
        if json.loads(line).get("event") == phase_event:
            seen += 1
            if seen == after:
                proc.send_signal(sig)
                break
    lines.extend(proc.stdout)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines), err)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The build id of an uninterrupted run with the same inputs (in-process: only the runs
    that are stopped by a signal need processes of their own)."""
    tmp = tmp_path_factory.mktemp("reference")
    done = invoke_isolated("train", root=tmp, env=_env(tmp, tmp / "store"))
    assert done.exit_code == 0, done.output[-2000:]
    summary = event(done.stdout, "train.summary")
    assert summary["epochs"] > 4 and summary["best_epoch"] > 4  # both phases have epochs to stop in
    return str(summary["build_id"])


@pytest.mark.parametrize(
    ("phase_event", "sig", "phase"),
    [
        ("train.epoch", signal.SIGTERM, "selection"),
        ("train.refit_epoch", signal.SIGINT, "refit"),
    ],
)
def test_stop_checkpoints_and_resume_gives_the_uninterrupted_build_id(
    cli: Any, tmp_path: Path, reference: str, phase_event: str, sig: signal.Signals, phase: str
) -> None:
    """A signal mid-phase exits 130 with a checkpoint and a resume hint; --resume finishes the
    same build an uninterrupted run makes, and removes the checkpoint."""
    store = tmp_path / "store"
    env = _env(tmp_path, store)
    stopped = _train_and_signal(env, phase_event, 3, sig)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.count("\n") == 1 and "pipeline train --resume" in stopped.stderr
    interrupted = event(stopped.stdout, "train.interrupted")
    assert interrupted["phase"] == phase and interrupted["signal"] == sig.name
    assert interrupted["resume"] == "pipeline train --resume"
    checkpoint = store / interrupted["checkpoint"]
    assert checkpoint.is_file()
    assert not (store / "builds").exists()  # a stopped run publishes no build

    # Resumed with another worker count (part of the checkpoint's identity): refused before Ray
    # starts, naming the way the checkpoint there was made.
    other = cli("train", "--resume", env={**env, "PIPELINE_TRAIN__WORKERS": "2"})
    assert other.exit_code != 0
    assert "there is one for the same run without --workers: resume it without" in other.stderr
    assert checkpoint.is_file()

    resumed = cli("train", "--resume", env=env)  # in-process: the stopped run was the real one
    assert resumed.exit_code == 0, resumed.output[-2000:]
    started = event(resumed.stdout, "train.resume")
    assert started["phase"] == phase and started["epoch"] >= 3
    assert event(resumed.stdout, "train.summary")["build_id"] == reference
    assert not checkpoint.exists()


def test_periodic_checkpoint_survives_sigkill(cli: Any, tmp_path: Path, reference: str) -> None:
    """With PIPELINE_TRAIN__CHECKPOINT_EVERY, a run killed by SIGKILL resumes from its last
    epoch checkpoint and still yields the uninterrupted build id."""
    store = tmp_path / "store"
    env = _env(tmp_path, store, PIPELINE_TRAIN__CHECKPOINT_EVERY="2")
    # Killed at its first checkpoint (epoch 2 of at least 13): far from the end, so the kill
    # cannot arrive after the run finished and removed its checkpoint, even on a slow machine.
    killed = _train_and_signal(env, "train.checkpoint", 1, signal.SIGKILL)
    tail = killed.stdout[-3000:] + killed.stderr
    assert killed.returncode == -signal.SIGKILL, tail
    saved = [e for e in events(killed.stdout) if e["event"] == "train.checkpoint"]
    assert saved[0]["epoch"] == 3, tail  # the state at the start of the next epoch
    assert "train.summary" not in killed.stdout, tail
    resumed = cli("train", "--resume", env=env)  # in-process: the killed run was the real one
    assert resumed.exit_code == 0, (resumed.output[-2000:], tail, sorted(store.rglob("*")))
    assert event(resumed.stdout, "train.resume")["epoch"] >= 3
    assert event(resumed.stdout, "train.summary")["build_id"] == reference


def test_resume_without_a_checkpoint_or_with_a_damaged_one_fails_cleanly(tmp_path: Path) -> None:
    """--resume with nothing to resume exits 8; a corrupted checkpoint exits 7; one line each."""
    store = tmp_path / "store"
    env = _env(tmp_path, store, PIPELINE_TRAIN__MAX_EPOCHS="2")
    missing = run_cli("train", "--resume", env=env)
    assert missing.returncode == 8
    assert "no checkpoint" in missing.stderr and "without --resume" in missing.stderr
    assert "Traceback" not in missing.stderr

    stopped = _train_and_signal(
        {**env, "PIPELINE_TRAIN__MAX_EPOCHS": "24"}, "train.epoch", 1, signal.SIGTERM
    )
    assert stopped.returncode == 130
    key = event(stopped.stdout, "train.interrupted")["checkpoint"]
    # One byte changed in the middle of the weights: it loaded without a word and resumed to
    # another build id (QA). The file carries the sha256 of its bytes now.
    flipped = bytearray((store / key).read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    (store / key).write_bytes(bytes(flipped))
    bitflip = run_cli("train", "--resume", env={**env, "PIPELINE_TRAIN__MAX_EPOCHS": "24"})
    assert bitflip.returncode == 7, bitflip.stderr
    assert "do not match its sha256" in bitflip.stderr and bitflip.stderr.count("\n") == 1
    assert (store / key).exists()  # kept for the user to inspect or delete
    (store / key).write_bytes(b"not a checkpoint")
    damaged = run_cli("train", "--resume", env={**env, "PIPELINE_TRAIN__MAX_EPOCHS": "24"})
    assert damaged.returncode == 7, damaged.stderr
    assert "unreadable" in damaged.stderr and damaged.stderr.count("\n") == 1
    # A pickle torch refuses: torch's advice to load it with weights_only=False (which would
    # run its code) was relayed, and its warning about the protocol went to stderr too.
    import pickle

    from pipeline.checkpoints import _sealed

    (store / key).write_bytes(_sealed(pickle.dumps({"format": 1, "x": {1, 2}}, protocol=4)))
    refused = run_cli("train", "--resume", env={**env, "PIPELINE_TRAIN__MAX_EPOCHS": "24"})
    assert refused.returncode == 7, refused.stderr
    assert "not a checkpoint: torch refused to unpickle it" in refused.stderr
    assert "weights_only" not in refused.stderr and refused.stderr.count("\n") == 1
    # Other settings are other inputs: their run has no checkpoint to resume.
    other = run_cli("train", "--resume", env={**env, "PIPELINE_TRAIN__MAX_EPOCHS": "25"})
    assert other.returncode == 8


@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_after_training_waits_for_the_build_and_a_second_stops_at_once(
    cli: Any, store: Path, monkeypatch: pytest.MonkeyPatch, signals: int
) -> None:
    """SIGTERM after the refit (while the build is tested and written) stopped with "nothing
    was written", losing the whole training for a second's work. Now the build is written
    and the run ends normally, with a train.stop_deferred warning; a second signal stops it
    at once, writing nothing."""
    from pipeline import artifacts

    real = artifacts.write_build

    def stopped_first(*args: Any, **kwargs: Any) -> str:
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(artifacts, "write_build", stopped_first)
    result = cli("train", env={"PIPELINE_TRAIN__MAX_EPOCHS": "2"})
    assert event(result.stdout, "train.stop_deferred")["signal"] == "SIGTERM"
    if signals == 1:
        assert result.exit_code == 0, result.stderr
        build = event(result.stdout, "train.summary")["build_id"]
        assert (store / "builds" / build / "manifest.json").is_file()
    else:
        assert result.exit_code == 130 and "nothing was written" in result.stderr
        assert not (store / "builds").exists() or not any((store / "builds").iterdir())


def test_signals_after_the_stop_is_reported_keep_its_exit_status(tmp_path: Path) -> None:
    """SIGTERM sent again while a stopped `pipeline train` shuts down (a supervisor that
    signals twice) killed it with the signal's own 143 after it had reported exit 130 and
    its checkpoint; now the status stays 130 and the checkpoint stays."""
    import time

    store = tmp_path / "store"
    proc = start_cli("train", env=_env(tmp_path, store))
    assert proc.stdout is not None and proc.stderr is not None
    lines, sent = [], False
    for line in proc.stdout:
        lines.append(line)
        name = json.loads(line).get("event")
        if name == "train.epoch" and not sent:
            proc.send_signal(signal.SIGTERM)
            sent = True
        if name == "error":  # reported: from here the process only exits
            break
    while proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:  # it exited between the poll and the signal
            break
        time.sleep(0.02)
    proc.wait(timeout=60)  # exited, maybe not yet reaped (returncode None: a flaky failure)
    lines.extend(proc.stdout)
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    key = event("".join(lines), "train.interrupted")["checkpoint"]
    assert (store / key).is_file()


def test_a_reader_that_goes_away_stops_training_with_a_checkpoint_and_exit_141(
    cli: Any, tmp_path: Path, reference: str
) -> None:
    """`pipeline train | head` ended 141 with nothing saved and not a word: the epochs trained
    were lost. A closed stdout now stops training as SIGTERM does (a checkpoint, one line on
    stderr saying how to resume), with the exit status of a Unix tool cut off by its reader."""
    store = tmp_path / "store"
    env = _env(tmp_path, store)
    proc = start_cli("train", env=env)
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == "train.epoch" and json.loads(line)["epoch"] == 3:
            break
    proc.stdout.close()  # `head` exits
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "stdout's reader went away" in err and "pipeline train --resume" in err, err
    [checkpoint] = (store / "checkpoints").iterdir()
    assert not (store / "builds").exists()
    resumed = cli("train", "--resume", env=env)
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert event(resumed.stdout, "train.summary")["build_id"] == reference
    assert not checkpoint.exists()
