"""PIPELINE_LOG_LEVEL and PIPELINE_LOG_FORMAT reach the events every command body writes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def test_log_level_warning_silences_info_events(cli: Any) -> None:
    """With PIPELINE_LOG_LEVEL=warning the command's info summary is not written (a command
    whose answer is an event, such as `release list`, still gives it: test_release_hardening)."""
    loud = cli("data", "fetch")
    assert json.loads(loud.stdout.splitlines()[-1])["event"] == "data.summary"
    quiet = cli("data", "fetch", env={"PIPELINE_LOG_LEVEL": "warning"})
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_log_format_console_renders_text_not_json(cli: Any) -> None:
    """PIPELINE_LOG_FORMAT=console gives key=value text lines instead of JSON."""
    result = cli("data", "fetch", env={"PIPELINE_LOG_FORMAT": "console"})
    line = result.stdout.splitlines()[-1]
    assert "data.summary" in line and "cached=false" in line and not line.startswith("{")


def test_python_warnings_are_events_not_stray_stderr_text() -> None:
    """numpy's RuntimeWarning or a library's UserWarning: a ``python.warning`` event on the event
    stream (once per place, as Python shows it), nothing on stderr."""
    code = (
        "import warnings, numpy as np\n"
        "from pipeline import log\n"
        "log.configure('json')\n"
        "for _ in range(3):\n"
        "    np.log(np.array([-1.0]))\n"
        "warnings.warn('a library says so')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr == ""
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event"], e["category"], e["level"]) for e in shown] == [
        ("python.warning", "RuntimeWarning", "warning"),
        ("python.warning", "UserWarning", "warning"),
    ]
    assert shown[0]["message"] == "invalid value encountered in log"
    assert shown[1]["where"] == "<string>:6"
