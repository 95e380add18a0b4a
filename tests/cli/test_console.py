"""A person at a terminal: the console format is short aligned lines, the bar keeps its own line.

The command runs in a real pseudo-terminal (120 columns), as a person would run it, so the
progress bar is drawn and the console renderer is chosen by ``PIPELINE_LOG_FORMAT=auto``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from pipeline.log import ConsoleRenderer

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EVENT = re.compile(r"^\d\d:\d\d:\d\d (debug|info|warning|error) +[a-z_.]+")


def _in_terminal(args: list[str], env: dict[str, str], cols: int = 120, rc: int = 0) -> str:
    """Run ``args`` with stdout and stderr on one pty of ``cols`` columns; what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**clean, **env})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == rc, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_train_at_a_terminal_keeps_events_and_the_progress_bar_apart(tmp_path: Path) -> None:
    """Every event starts its own line, lines fit the terminal, and the bar was drawn."""
    env = {"PIPELINE_STORE": str(tmp_path / "store"), "PIPELINE_TRAIN__MAX_EPOCHS": "25",
           "PIPELINE_MODEL__HIDDEN": "[64]", "PIPELINE_MODEL__MEMBERS": "2",
           "PIPELINE_ENV_FILE": os.devnull}  # fmt: skip
    drawn = _in_terminal([sys.executable, "-m", "pipeline", "train"], env)
    assert "train:" in drawn and "refit:" in drawn  # the bar, in both phases
    screen_lines = [ANSI.sub("", part) for part in re.split(r"\r\n|\r|\n", drawn)]
    events = [line for line in screen_lines if EVENT.match(line)]
    assert any(" train.summary " in line for line in events)
    assert len([line for line in events if " train.epoch " in line]) >= 3
    for line in screen_lines:
        if "epoch=" in line or "build_id=" in line:  # an event's text, never after bar text
            assert "%|" not in line, line
        assert len(line.rstrip()) <= 120, line


def test_console_lines_wrap_at_the_width_and_flatten_one_level() -> None:
    """Fields wrap onto indented lines within the width; nested metrics read as a.b=value."""
    render = ConsoleRenderer(colors=False, width=80)
    text = render(None, "info", {
        "event": "train.summary", "level": "info", "timestamp": "2026-12-03T01:02:03.4Z",
        "run_id": "abc", "build_id": "f" * 64, "test": {"rmse": 0.123456789, "r2": 0.91},
        "stopped_early": False, "classes": list(range(20)),
    })  # fmt: skip
    lines = text.splitlines()
    assert lines[0].startswith("01:02:03 info    train.summary        build_id=" + "f" * 64)
    assert all(line.startswith(" " * 17) for line in lines[1:])
    assert all(len(line) <= 80 for line in lines[1:])
    assert "test.rmse=0.1235" in text and "test.r2=0.91" in text and "stopped_early=false" in text
    assert "run_id" not in text
    assert "... 20 items]" in text


def test_a_config_error_at_a_terminal_is_said_once(tmp_path: Path) -> None:
    """A bad setting at a terminal is one `error:` line, not that line and an error event too."""
    env = {"PIPELINE_TRAIN__MAX_EPOCHS": "x", "PIPELINE_ENV_FILE": os.devnull}
    drawn = ANSI.sub("", _in_terminal([sys.executable, "-m", "pipeline", "train"], env, rc=3))
    lines = [line for line in re.split(r"\r\n|\r|\n", drawn) if line.strip()]
    assert len(lines) == 1, drawn
    assert lines[0].startswith("error: invalid setting train.max_epochs")


def test_a_list_of_records_renders_as_a_table() -> None:
    """`release list` at a terminal: one aligned row per release under a header, no Python repr."""
    render = ConsoleRenderer(colors=False, width=100)
    text = render(None, "info", {
        "event": "release.list", "level": "info", "timestamp": "2026-12-03T01:02:03.4Z",
        "name": "titanic", "count": 2,
        "releases": [
            {"ref": "titanic@v1", "number": 1, "current": False, "notes": None},
            {"ref": "titanic@v10", "number": 10, "current": True, "notes": "hot fix"},
        ],
    })  # fmt: skip
    lines = text.splitlines()
    assert lines[0].startswith("01:02:03 info    release.list         name=titanic count=2")
    assert "{" not in text and "'" not in text
    assert lines[1].split() == ["ref", "number", "current", "notes"]
    assert lines[2].split() == ["titanic@v1", "1", "false", "-"]
    assert lines[3].split() == ["titanic@v10", "10", "true", "hot", "fix"]
    assert lines[1].index("number") == lines[2].index(" 1 ") + 1 == lines[3].index(" 10 ") + 1
