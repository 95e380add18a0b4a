"""Start-up: `pipeline --help` and `--version` beside `python -c pass` and `import torch`.

Every command runs as a fresh process, round-robin, several times; the table gives median wall
seconds. Target: `--help` costs at most 0.15x of `python -c "import torch"`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import Ratio, Report, checked, clean_env, measured, median, pipeline_cmd, secs, table


def run(quick: bool, workdir: Path) -> Report:
    """Time the four commands; the report and the --help ratio."""
    env = clean_env(workdir)
    commands = {
        "pipeline --help": [*pipeline_cmd(), "--help"],
        "pipeline --version": [*pipeline_cmd(), "--version"],
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    repeats = 1 if quick else 7
    for argv in [] if quick else commands.values():  # warm the page cache; not counted
        checked(measured(argv, env), " ".join(argv))
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            samples[name].append(checked(measured(argv, env), name).seconds)
    torch_s = median(samples['python -c "import torch"'])
    rows = [
        (
            f"`{name}`",
            secs(median(s)),
            secs(min(s)),
            secs(max(s)),
            f"{median(s) / torch_s:.3f}",
        )
        for name, s in samples.items()
    ]
    body = f"Median wall time of {repeats} fresh processes each, run round-robin.\n\n" + table(
        ["command", "median", "min", "max", "÷ import torch"], rows
    )
    help_s = median(samples["pipeline --help"])
    version_s = median(samples["pipeline --version"])
    ratios = [
        Ratio(
            "start-up",
            "--help ÷ import torch",
            secs(help_s),
            secs(torch_s),
            help_s / torch_s,
            "<=",
            0.15,
        ),
        Ratio(
            "start-up",
            "--version ÷ import torch",
            secs(version_s),
            secs(torch_s),
            version_s / torch_s,
            "<=",
            0.15,
        ),
    ]
    return Report("startup", body, ratios)


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone("startup", run))
