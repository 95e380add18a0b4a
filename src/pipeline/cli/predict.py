"""Run-stage command: `pipeline predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of
from pipeline.cli._models import refuse_output_over_source, refuse_release_and_package


def predict(
    source: Path = typer.Argument(..., help="Input rows: CSV, Parquet or JSON lines."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Where predictions go (format from the suffix, or PIPELINE_RUN__OUTPUT_FORMAT). "
        "Without it, CSV goes to stdout and the log stream to stderr.",
        dir_okay=False,
    ),
    release: str = typer.Option(
        None,
        "--release",
        help="name@vN or name@current. Overrides PIPELINE_RELEASE.",
        show_default=False,
    ),
    package: Path = typer.Option(
        None, "--package", help="Run straight from a package archive instead of a release."
    ),
) -> None:
    """Predict every row of SOURCE with a release (or a package), streaming in chunks.

    Columns are checked against the model's input schema: a missing one is an error (exit 4),
    extra ones are ignored with a warning, unseen categories go to the unknown bucket and are
    counted. A bad value fails the run naming its row and column, unless
    PIPELINE_RUN__ON_ERROR=column, which reports it in an `error` column instead.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import log as logging_
        from pipeline import predict as stage

        refuse_release_and_package(release, package)
        refuse_output_over_source(source, output)
        s = loaded.settings
        store = store_of(s, outputs={"-o": output})  # predictions never land in the store
        ready = stage.load(store, release or s.release, package, s.model.name, s.run)
        logging_.bind(package_id=ready.predictor.package_id, release=ready.release)
        stage.run(ready, source, output, log)

    run("predict", body, log_to_stderr=output is None)
