"""Private temporary folders: marked with their process, swept once it is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline import scratch


def test_a_killed_commands_folder_is_swept_by_the_next_and_a_running_ones_kept(
    tmp_path: Path,
) -> None:
    """A process killed with SIGKILL (here: one that exits without its cleanup) leaves its
    folder; the next folder of that prefix made there removes it. A folder whose process still
    runs (this one), one without a mark and one of another prefix are kept."""
    code = (
        "import os, sys; from pipeline import scratch; "
        "print(scratch.make('pipeline-ray-', sys.argv[1])); sys.stdout.flush(); os._exit(0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    left = Path(done.stdout.strip())
    assert left.is_dir() and (left / scratch.MARK).read_text().split()[0] != str(os.getpid())
    (left / "session_x").mkdir()
    running = scratch.make("pipeline-ray-", tmp_path)
    unmarked = tmp_path / "pipeline-ray-unmarked"
    unmarked.mkdir()
    other = scratch.make("pipeline-tune-", tmp_path)
    assert not left.exists()
    fresh = scratch.make("pipeline-ray-", tmp_path)
    assert running.is_dir() and unmarked.is_dir() and other.is_dir() and fresh.is_dir()
    with scratch.folder("pipeline-serve-", tmp_path) as path:
        assert path.is_dir() and path.name.startswith("pipeline-serve-")
    assert not path.exists()
