"""Build-stage search: `pipeline tune` and `pipeline tune show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of, write_id

app = typer.Typer(
    help=(
        "Search the recipe's settings on Ray (embedded, or the cluster at RAY_ADDRESS): trials "
        "scored on the training rows only, reproducible from the seed. The space and the search "
        "are PIPELINE_TUNE__* settings; `tune show` ranks the trials of a search."
    ),
    invoke_without_command=True,
)


@app.callback()
def tune(
    ctx: typer.Context,
    trials: int = typer.Option(
        None, "--trials", "-n", help="Trials to run (overrides PIPELINE_TUNE__TRIALS)."
    ),
    id_file: Path = typer.Option(None, "--id-file", help="Also write the tune id to this file."),
    preset_out: Path = typer.Option(
        None,
        "--preset-out",
        help="Write the winning recipe as a preset: PIPELINE_PRESET=FILE pipeline train.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Keep the finished trials of an interrupted search with the same inputs; run the "
        "rest. The result equals an uninterrupted search's.",
    ),
) -> None:
    """Search the recipe's settings; rank the trials; write the winner as a preset."""
    if ctx.invoked_subcommand is not None:
        return

    def body(loaded: Any, log: Any) -> None:
        from pipeline import tune as stage

        outputs = {"--id-file": id_file, "--preset-out": preset_out}
        settings = _without_workers(loaded.settings, log)
        store = store_of(settings, writes=True, outputs=outputs, preset=loaded.preset)
        result = stage.run(settings, store, log, resume=resume, preset_out=preset_out)
        write_id(id_file, result.tune_id)

    # Validated as the setting is (at most 10,000), the option named where the value came from.
    overrides = {"PIPELINE_TUNE__TRIALS": str(trials)} if trials is not None else None
    run(
        "tune",
        body,
        overrides=overrides,
        outputs={"--id-file": id_file, "--preset-out": preset_out},
    )


@app.command("show")
def show(
    ref: str = typer.Argument(None, help="Tune id or unique prefix (default: the latest)."),
) -> None:
    """The trials of a search, best first: rank, trial, score, epochs, status, configuration;
    a failed trial's error."""

    def body(loaded: Any, log: Any) -> None:
        from pipeline import tune as stage
        from pipeline.log import answer

        tid, files = stage.load(store_of(loaded.settings), ref)
        winner = files["winner.json"]
        rows = [
            {"rank": t["rank"], "trial": t["trial"], "score": t["score"], "status": t["status"],
             "epochs": t["epochs"], **({"folds": t["folds"]} if "folds" in t else {}),
             **({"error": t["error"]} if t.get("error") else {}), **t["config"]}
            for t in files["trials.json"]
        ]  # fmt: skip
        answer(
            "tune.show", tune_id=tid, metric=winner["metric"], winner=winner["trial"],
            score=winner["score"], trials=rows,
        )  # fmt: skip

    run("tune", body)


def _without_workers(settings: Any, log: Any) -> Any:
    """``settings`` without PIPELINE_TRAIN__WORKERS, said in a warning: each trial trains in one
    process, so N was recorded in the result and the preset though no trial trained with it."""
    if settings.train.workers is None:
        return settings
    log.warning(
        "tune.workers_ignored", workers=settings.train.workers,
        message="PIPELINE_TRAIN__WORKERS is ignored by tune: each trial trains in one process, "
        "and neither the result nor --preset-out records it; set it when training the winner "
        "(its weights then differ from the scored trial's)",
    )  # fmt: skip
    train = settings.train.model_copy(update={"workers": None})
    return settings.model_copy(update={"train": train})
