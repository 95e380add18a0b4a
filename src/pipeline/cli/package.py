"""Package-stage command: `pipeline package`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import ID_FILE_HELP, run, store_of, write_id


class Format(StrEnum):
    """What `pipeline package` writes."""

    tar = "tar"
    wheel = "wheel"


def package(
    build: str = typer.Argument(None, help="Build id or unique prefix (default: the latest)."),
    id_file: Path = typer.Option(None, "--id-file", help=ID_FILE_HELP),
    fmt: Format = typer.Option(
        Format.tar,
        "--format",
        help="tar: the package archive. wheel: the archive and, beside it, a pip-installable "
        "wheel of the same files exposing predict(frame).",
    ),
) -> None:
    """Seal a build into a reproducible archive packages/<name>/<version>.tar.gz in the store.

    Name and version come from PIPELINE_MODEL__NAME and PIPELINE_MODEL__VERSION; a version that
    is already packaged with different content is refused (exit 3): bump the version.
    --id-file receives the archive's package id in both formats.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import package as stage

        result = stage.seal(
            loaded.settings,
            store_of(loaded.settings, outputs={"--id-file": id_file}),
            build,
            log,
            with_wheel=fmt is Format.wheel,
            named=loaded.settings.is_set("model", "name"),
        )
        write_id(id_file, result.package_id)

    run("package", body, outputs={"--id-file": id_file})
