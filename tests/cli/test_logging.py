"""PIPELINE_LOG_LEVEL and PIPELINE_LOG_FORMAT reach the events every command body writes."""

from __future__ import annotations

import json
from typing import Any


def test_log_level_warning_silences_info_events(cli: Any) -> None:
    """With PIPELINE_LOG_LEVEL=warning the command's info summary is not written."""
    loud = cli("release", "list")
    assert json.loads(loud.stdout.splitlines()[-1])["event"] == "release.list"
    quiet = cli("release", "list", env={"PIPELINE_LOG_LEVEL": "warning"})
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_log_format_console_renders_text_not_json(cli: Any) -> None:
    """PIPELINE_LOG_FORMAT=console gives key=value text lines instead of JSON."""
    result = cli("release", "list", env={"PIPELINE_LOG_FORMAT": "console"})
    line = result.stdout.splitlines()[-1]
    assert "release.list" in line and "count=0" in line and not line.startswith("{")
