"""`pipeline data ...`: dataset commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of, write_id

app = typer.Typer(
    help="Fetch datasets into the store's content-addressed cache.", no_args_is_help=True
)


@app.command("fetch")
def fetch(
    id_file: Path = typer.Option(
        None, "--id-file", help="Also write the dataset's sha256 to this file."
    ),
) -> None:
    """Fetch PIPELINE_DATA__SOURCE (caching remote data by sha256) and report its digest."""

    def body(loaded: Any, log: Any) -> None:
        from pipeline.data import sources

        fetched = sources.fetch(
            loaded.settings, store_of(loaded.settings, outputs={"--id-file": id_file})
        )
        if fetched.warning:
            log.warning("data.warning", message=fetched.warning)
        log.info(
            "data.summary",
            uri=fetched.uri,
            sha256=fetched.sha256,
            bytes=fetched.size,
            path=fetched.location or str(fetched.path),
            cached=fetched.cached,
        )
        write_id(id_file, fetched.sha256)

    run("data", body, outputs={"--id-file": id_file})
