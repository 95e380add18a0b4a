"""Run-stage command: `pipeline predict`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of
from pipeline.cli._models import refuse_output_over_source, refuse_release_and_package


def predict(
    source: list[str] = typer.Argument(
        ...,
        help="Input rows: CSV, Parquet or JSON lines. With --workers also a folder of such "
        "files, a quoted glob ('in/*.parquet'), or several files (an unquoted glob).",
        metavar="SOURCE",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Where predictions go (format from the suffix, or PIPELINE_RUN__OUTPUT_FORMAT). "
        "Without it (or with -), CSV goes to stdout and the log stream to stderr. With "
        "--workers: a new or empty folder of parts and a manifest.",
    ),
    release: str = typer.Option(
        None,
        "--release",
        help="name@vN or name@current. Overrides PIPELINE_RELEASE.",
        show_default=False,
    ),
    package: str = typer.Option(
        None,
        "--package",
        help="Run straight from a package archive (a path, or its s3:// URI in the store) "
        "instead of a release.",
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        help="Predict on Ray with N workers (embedded, or the cluster at RAY_ADDRESS), one part "
        "file per input file. Overrides PIPELINE_RUN__WORKERS.",
        show_default=False,
    ),
) -> None:
    """Predict every row of SOURCE with a release (or a package), streaming in chunks.

    Columns are checked against the model's input schema: a missing one is an error (exit 4),
    extra ones are ignored with a warning, unseen categories go to the unknown bucket and are
    counted. A bad value fails the run naming its row and column, unless
    PIPELINE_RUN__ON_ERROR=column, which reports it in an `error` column instead.

    With --workers N (PIPELINE_RUN__WORKERS) the rows are predicted on Ray into the folder -o:
    part-NNNNN-<input name>.<format> per input file (or per chunk of a single file) holding the
    bytes single-process predict writes for those rows, and manifest.json.
    """

    # None: stdout ("-" too, as most Unix tools read it).
    sink: Path | None = None if output is None or str(output) == "-" else output

    def body(loaded: Any, log: Any) -> None:
        from pipeline import log as logging_
        from pipeline import predict as stage
        from pipeline.errors import ConfigError
        from pipeline.settings import provides

        refuse_release_and_package(release, package)
        s, secrets = loaded.settings, partial(provides, loaded.settings)
        _check_inputs(inputs := _as_paths(source), sink, s.run.workers)
        store = store_of(s, outputs={"-o": sink})  # predictions never land in the store
        ready = stage.load(store, release or s.release, package, s.model.name, s.run, secrets)
        logging_.bind(package_id=ready.predictor.package_id, release=ready.release)
        if ready.overridden:
            log.warning("predict.settings_ignored", **ready.ignored_event())
        if ready.run.workers is None and sink is not None and sink.is_dir():
            raise ConfigError(
                f"-o {sink} is a folder: pass a file path, or --workers N to write a "
                "folder of parts"
            )
        with _advice_for(ready.release):
            if ready.run.workers is None:
                stage.run(ready, inputs[0], sink, log)
            else:  # only this path imports Ray
                from pipeline.predict import distributed

                distributed.run(ready, inputs, sink, s, log)

    overrides = {"PIPELINE_RUN__WORKERS": str(workers)} if workers is not None else None
    run("predict", body, overrides=overrides, log_to_stderr=_log_to_stderr(sink))


def _log_to_stderr(sink: Path | None) -> bool | Callable[[Any], bool]:
    """Whether the log stream goes to stderr: when predictions go to stdout, which they never
    do with workers (a missing -o is refused: the refusal was the error event and the error
    line, both on stderr), so that is decided once the settings say the workers."""
    return (lambda s: s.run.workers is None) if sink is None or _is_stdout(sink) else False


def _is_stdout(path: Path) -> bool:
    """Whether ``-o`` names this process's stdout (``/dev/stdout``, ``/dev/fd/1``, or the file
    stdout is redirected to): the log stream then goes to stderr, as for ``-o -``; the events
    were written between the predictions."""
    import os

    try:
        return os.path.samestat(path.stat(), os.fstat(1))
    except (OSError, ValueError):  # not there yet, or no stdout at all
        return False


_ON_ERROR = "set PIPELINE_RUN__ON_ERROR=column to report bad rows in an error column"
_ON_ERROR_RELEASED = (
    "report bad rows in an error column with a release created under "
    "PIPELINE_RUN__ON_ERROR=column (a release keeps the setting it was created with), or with "
    "--package and that setting"
)
_ID_COLUMN = "(PIPELINE_RUN__ID_COLUMN): set it to an existing column or unset it"
_ID_COLUMN_RELEASED = (
    "(PIPELINE_RUN__ID_COLUMN, which a release keeps as it was created with): add the column, "
    "or use a release created with another id column, or --package"
)


def _as_paths(source: list[str]) -> list[Path]:
    """SOURCE as paths: a ``file://`` URI is its local path; refused, what a path would
    misquote: an empty argument (Path('') is '.', "input . is not a file") and another URI
    (Path('s3://b/x') is 's3:/b/x')."""
    from urllib.parse import unquote, urlsplit

    from pipeline.errors import DataError, SourceError

    paths = []
    for text in source:
        if not text.strip():
            raise DataError("input '' is empty: pass the path of a CSV, Parquet or JSON-lines file")
        local = urlsplit(text) if text.lower().startswith("file://") else None
        if local is not None and local.netloc in ("", "localhost"):
            paths.append(Path(unquote(local.path)))
        elif "://" in text:
            from pipeline.log import redacted_uri

            raise SourceError(
                f"input {redacted_uri(text)} looks like a URI, but predict reads local files "
                "only (and file:// URIs): download it and pass its path"
            )
        else:
            paths.append(Path(text))
    return paths


def _check_inputs(source: list[Path], sink: Path | None, workers: int | None) -> None:
    """No input overwritten by -o; several inputs only with --workers (ConfigError)."""
    from pipeline.errors import ConfigError

    for path in source:
        refuse_output_over_source(path, sink)
    if len(source) > 1 and workers is None:
        shown = ", ".join(str(p) for p in source[:3]) + (", ..." if len(source) > 3 else "")
        raise ConfigError(
            f"predict got {len(source)} inputs ({shown}): it reads one without --workers; "
            "pass --workers N -o FOLDER to predict them all (one part each), or one file"
        )


@contextlib.contextmanager
def _advice_for(release: str | None) -> Iterator[None]:
    """A bad row's error under a release: the advice a release allows (it fixes
    PIPELINE_RUN__ON_ERROR and PIPELINE_RUN__ID_COLUMN, so setting them now changes nothing)."""
    from pipeline.errors import DataError

    try:
        yield
    except DataError as exc:
        if release is None or (_ON_ERROR not in exc.message and _ID_COLUMN not in exc.message):
            raise
        message = exc.message.replace(_ON_ERROR, _ON_ERROR_RELEASED)
        raise DataError(message.replace(_ID_COLUMN, _ID_COLUMN_RELEASED)) from None
