"""Run-stage options that cannot go together: which model (`predict`, `serve`), and where to."""

from __future__ import annotations

from pathlib import Path


def refuse_release_and_package(release: str | None, package: str | None) -> None:
    """--release and --package name two different models: refuse rather than pick one.

    PIPELINE_RELEASE with --package is no conflict: the option is the more specific choice (as
    every option beats its variable); only the two options together are.
    """
    if release is not None and package is not None:
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"--release {release} and --package {package} both given: they name two models; "
            "pass only one (--package runs an archive, --release a release in the store)"
        )


def refuse_output_over_source(source: Path, output: Path | None) -> None:
    """Predictions written over the rows they come from would destroy the input: refuse."""
    if output is not None and output.resolve() == source.resolve():
        from pipeline.errors import ConfigError

        what = "folder" if source.is_dir() else "file"
        raise ConfigError(
            f"--output {output} is the input {what} {source}: the predictions would replace the "
            f"rows they come from; write them to another {what}"
        )
