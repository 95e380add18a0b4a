"""Package-stage command: `pipeline package`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import ID_FILE_HELP, run, store_of, write_id


def package(
    build: str = typer.Argument(None, help="Build id or unique prefix (default: the latest)."),
    id_file: Path = typer.Option(None, "--id-file", help=ID_FILE_HELP, dir_okay=False),
) -> None:
    """Seal a build into a reproducible archive packages/<name>/<version>.tar.gz in the store.

    Name and version come from PIPELINE_MODEL__NAME and PIPELINE_MODEL__VERSION; a version that
    is already packaged with different content is refused (exit 3): bump the version.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import package as stage

        result = stage.seal(loaded.settings, store_of(loaded.settings), build, log)
        write_id(id_file, result.package_id)

    run("package", body)
