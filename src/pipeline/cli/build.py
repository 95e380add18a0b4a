"""Build-stage commands: `pipeline train` and `pipeline evaluate`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import ID_FILE_HELP, run, store_of, write_id


class Device(StrEnum):
    """``--device``'s choices: a typo is a usage error (exit 2) as for every option's choices."""

    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


def train(
    device: Device = typer.Option(
        None,
        "--device",
        help="cpu, cuda, or auto (CUDA when present). Overrides PIPELINE_TRAIN__DEVICE.",
        show_default=False,
        case_sensitive=False,
    ),
    id_file: Path = typer.Option(None, "--id-file", help=ID_FILE_HELP),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue from the checkpoint a stopped run (SIGTERM/Ctrl-C) left for the same "
        "data, settings and seed; the build id equals an uninterrupted run's.",
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        help="Train on Ray with N data-parallel workers (embedded, or the cluster at "
        "RAY_ADDRESS), each holding its shard of the rows. Overrides PIPELINE_TRAIN__WORKERS.",
        show_default=False,
    ),
) -> None:
    """Train a model on PIPELINE_DATA__SOURCE and write a content-addressed build to the store.

    SIGTERM or Ctrl-C stops after the current batch, saves a checkpoint and exits 130.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import train as stage

        # Checked before training, not after it: a read-only store or an --id-file inside it.
        store = store_of(loaded.settings, writes=True, outputs={"--id-file": id_file})
        result = stage.run(loaded.settings, store, log, resume=resume)
        write_id(id_file, result.build_id)

    overrides = {"PIPELINE_TRAIN__DEVICE": device.value} if device else {}
    if workers is not None:
        overrides["PIPELINE_TRAIN__WORKERS"] = str(workers)
    run("train", body, overrides=overrides or None, outputs={"--id-file": id_file})


def evaluate(
    build: str = typer.Argument(
        None,
        help="Build id or unique prefix, or a release (name@vN, name@current; vN or current "
        "with PIPELINE_MODEL__NAME): the build it holds. Default: the latest build.",
        show_default=False,
    ),
    folds: int | None = typer.Option(
        None, "--folds", "-k", help="Also run K-fold cross-validation (K >= 2).", show_default=False
    ),
) -> None:
    """Re-test a build on its test split, optionally cross-validate, and apply quality gates.

    Gates come from PIPELINE_GATES__* (e.g. PIPELINE_GATES__MIN_R2=0.85); a failed gate exits 6.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import evaluate as stage

        # --folds stores its results beside the build (for `report` and `diff`): checked first.
        store = store_of(loaded.settings, writes=folds is not None)
        stage.run(loaded.settings, store, build, folds, log)

    run("evaluate", body)
