"""Distributed predict: rows/s of `pipeline predict --workers 1` and `--workers 2` on Ray beside
the in-process path, and the peak RSS of each Ray worker.

One house-prices package (``predict_memory.train_and_package``, shared with the other
benchmarks) and a folder of generated CSV files (``predict_memory.generate_csv``: test.csv rows,
79 columns). Three runs, each a set of fresh processes:

- in-process: `pipeline predict FILE -o OUT` once per file, one after another (what a user
  without Ray runs: a shell loop);
- `pipeline predict FOLDER --workers 1 -o OUT` on embedded Ray (``RAY_ADDRESS`` is dropped: the
  figures are this machine's);
- the same with ``--workers 2``.

Rates are rows over each command's own timer (the ``predict.summary`` event's seconds; summed
over the files for the in-process loop). The timer starts before Ray does, so a Ray run pays for
the runtime's start, the actors' start (each imports torch and receives the predictor) and the
shutdown, while the in-process loop leaves out every process's start-up and model load: the
ratios are conservative for Ray. Whole-process wall rates are shown beside. Peak RSS per worker
is the kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``) of each Ray actor process
(process title ``ray::...PartWriter...``) below this process, sampled every 0.2 s while it lives.
Targets (the issue's, for training, applied to predict): 2 workers >= 1.5x one; one worker
>= 0.85x the in-process loop. Every Ray part must hold the in-process bytes of its file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from pathlib import Path

from _common import (
    Report,
    checked,
    clean_env,
    events,
    measured,
    mib,
    pipeline_cmd,
    rate,
    worker_ratios,
)
from _common import table as md_table
from predict_memory import generate_csv, train_and_package

WORKERS = (1, 2)
SAMPLE_SECONDS = 0.2


class WorkerPeaks:
    """Samples the high-water RSS of every Ray prediction actor below this process.

    The actors are raylet's children, which is the embedded runtime's child, which is the
    measured `pipeline` process's: so every process started for a run is a descendant of this
    one, and others' Ray processes on a shared machine are not counted.
    """

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}  # pid -> MiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for pid in _descendants(os.getpid()):
                hwm = _actor_hwm_mib(pid)
                if hwm is not None:
                    self.peaks[pid] = max(hwm, self.peaks.get(pid, 0.0))


def _descendants(root: int) -> list[int]:
    """Every live process whose chain of parents reaches ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) is in parentheses and may hold spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _actor_hwm_mib(pid: int) -> float | None:
    """``VmHWM`` of ``pid`` in MiB when it is a Ray prediction actor, else None."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
        if not title.startswith(b"ray::") or b"PartWriter" not in title:
            return None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(quick: bool, workdir: Path) -> Report:
    """The three runs; the report and the two ratios."""
    env = clean_env(workdir)
    env.pop("RAY_ADDRESS", None)
    package = train_and_package(workdir, env, epochs=1 if quick else 5)
    files, size = (4, 300_000) if quick else (8, 40_000_000)
    folder = workdir / "ray-inputs"
    folder.mkdir()
    rows = [generate_csv(folder / f"h{i}.csv", size, seed=10 + i) for i in range(files)]
    total = sum(rows)
    megabytes = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    base = [*pipeline_cmd(), "predict", "--package", str(package)]

    # The in-process loop: one `pipeline predict` per file, one after another.
    single = workdir / "ray-single"
    single.mkdir()
    own = wall = 0.0
    for path, n in zip(sorted(folder.iterdir()), rows, strict=True):
        done = checked(measured([*base, str(path), "-o", str(single / path.name)], env), "predict")
        summary = events(done.output, "predict.summary")[-1]
        if summary["rows"] != n:
            raise RuntimeError(f"{path.name}: predicted {summary['rows']} rows of {n}")
        own += float(summary["seconds"])
        wall += done.seconds
    results = {0: (total / own, total / wall)}

    peaks: dict[int, list[float]] = {}
    for workers in WORKERS:
        out = workdir / f"ray-{workers}"
        argv = [*base, str(folder), "--workers", str(workers), "-o", str(out)]
        with WorkerPeaks() as sampler:
            done = checked(measured(argv, env), f"predict --workers {workers}")
        summary = events(done.output, "predict.summary")[-1]
        if summary["rows"] != total or summary["workers"] != workers:
            raise RuntimeError(f"--workers {workers}: {summary}")
        manifest = json.loads((out / "manifest.json").read_text())
        for entry in manifest["files"]:
            name = Path(entry["input"]).name
            if entry["sha256"] != _sha256(single / name):
                raise RuntimeError(f"--workers {workers}: {entry['name']} differs from {name}'s")
        peaks[workers] = sorted(sampler.peaks.values())
        results[workers] = (total / float(summary["seconds"]), total / done.seconds)

    for path in (folder, single, *(workdir / f"ray-{w}" for w in WORKERS)):
        shutil.rmtree(path)  # the other benchmarks share the workdir (and its disk)
    labels = {0: f"in-process: `pipeline predict FILE` x {files}, one after another"}
    labels |= {w: f"`pipeline predict FOLDER --workers {w}` (embedded Ray)" for w in WORKERS}
    lines = []
    for key, (own_rate, wall_rate) in results.items():
        workers_rss = ", ".join(mib(p) for p in peaks.get(key, [])) or "—"
        lines.append((labels[key], rate(own_rate), rate(wall_rate), workers_rss))
    one, two, loop = results[1][0], results[2][0], results[0][0]
    body = (
        f"Input: a folder of {files} CSV files, {total:,} house-prices rows in all "
        f"({megabytes:,.0f} MB), default chunk of "
        "100,000 rows; one run each. Every Ray part equals the in-process output of its file "
        "(sha256).\n\n"
        + md_table(
            ["run", "rows/s (command's timer)", "rows/s (whole processes)", "peak RSS per worker"],
            lines,
        )
        + f"\n\n2 workers: {two / one:.2f}x one worker; one worker: {one / loop:.2f}x the "
        f"in-process loop (whose timer leaves out {files} start-ups and model loads; Ray's "
        "includes the runtime's and the actors' start).\n"
    )
    ratios = worker_ratios("predict_ray", "predict", one, two, loop)
    return Report("predict_ray", body, ratios)


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone("predict_ray", run))
