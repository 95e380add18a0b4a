"""What every command shares: settings, logging, and turning errors into exit codes."""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")

ID_FILE_HELP = "Also write the resulting id to this file (like `docker build --iidfile`)."

# The store this command opened (``store_of``): ``write_id`` refuses to write into it.
_OPENED: contextvars.ContextVar[Any] = contextvars.ContextVar("pipeline_store", default=None)
# Whether a command's ``run`` has begun in this process (``began``).
_BEGAN: list[bool] = [False]


def began(reset: bool = False) -> bool:
    """Whether a command's ``run`` has begun in this process; ``reset``: forget it (the entry
    point, as a command line starts)."""
    if reset:
        _BEGAN[0] = False
    return _BEGAN[0]


def run(
    stage: str,
    body: Callable[[Any, Any], T],
    *,
    overrides: Mapping[str, str] | None = None,
    allow_unknown: bool = False,
    log_to_stderr: bool | Callable[[Any], bool] = False,
    outputs: Mapping[str, Path | None] | None = None,
    serve_settings: bool = False,
) -> T:
    """Load settings, configure logging, run ``body(loaded, log)``, map errors to exit codes.

    A ``PipelineError`` is the user's to fix: one line on stderr, an ``error`` event in the log
    stream, and the error class's exit code. Anything else is a bug and keeps its traceback.
    ``serve_settings``: the command reads the ``serve`` section (`serve`, `config show`), so an
    invalid value there is its error; other commands leave such a value at its default.
    ``log_to_stderr``: stdout carries data; a function of the settings decides once read.
    """
    import sys

    from pipeline import log as logging_
    from pipeline.errors import Interrupted, PipelineError
    from pipeline.settings import load, unknown_error

    # SIGTERM (docker stop, a CI cancel) takes Ctrl-C's path: writes in progress clean up their
    # temp files and the command exits 130 with one line. Training installs its own handler to
    # stop at a batch boundary and checkpoint; serve lets its server handle it.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # after an earlier `_reported`
    stream = sys.stderr if log_to_stderr else None  # stdout carries data (predictions) then
    _OPENED.set(None)
    logging_.reset()
    logging_.configure(stream=stream)
    logging_.bind(run_id=uuid.uuid4().hex[:12], stage=stage)
    logger = logging_.get_logger()
    # Until the settings are read, the format is the variable's (a config error included).
    early_format = os.environ.get("PIPELINE_LOG_FORMAT", "auto").strip().lower()
    json_logs = early_format == "json" or (
        early_format != "console" and not (stream or sys.stdout).isatty()
    )
    loaded = None
    try:
        try:
            _BEGAN[0] = True  # from here a stop is this command's to report
            loaded = load(overrides=overrides, judge_serve=serve_settings)
            s = loaded.settings
            _register_secrets(s)
            if callable(log_to_stderr):
                stream = sys.stderr if log_to_stderr(s) else None
            logging_.configure(s.log_format, s.log_level, stream=stream)
            json_logs = s.log_format == "json" or (
                s.log_format == "auto" and not (stream or sys.stdout).isatty()
            )
            if loaded.unknown and not allow_unknown:
                raise unknown_error(loaded.unknown)
            return body(loaded, logger)
        except KeyboardInterrupt:
            raise Interrupted(f"{stage} interrupted: nothing was written; run it again") from None
    except PipelineError as exc:
        _reported()
        if _OPENED.get() is None:  # failed before ``store_of`` (bad or unknown settings)
            clear_written_ids(outputs or {})
        message = logging_.mask(_with_sources(exc.message, loaded))
        if json_logs and not exc.answered:  # else stdout's document already says it
            with contextlib.suppress(BrokenPipeError):  # stdout's reader gone: stderr says it
                logger.error("error", kind=exc.kind, exit_code=exc.exit_code, message=message)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _register_secrets(s: Any) -> None:
    """Every secret the settings hold, masked in whatever the log stream writes from here."""
    from pipeline import log as logging_

    secrets = (s.kaggle_key, s.kaggle_api_token, s.serve.token, s.aws_secret_access_key,
               s.aws_session_token)  # fmt: skip
    logging_.register_secrets([s.kaggle_username] + [x.get_secret_value() for x in secrets if x])
    logging_.register_secrets(s.uri_secrets())


def _reported() -> None:
    """The command failed and is about to say so: from here a signal is noted and dropped, not
    raised between the error line and the exit (where ``settle`` takes over). Handlers that
    Python calls, not the system's "ignore": a process this one starts later (the test suite
    runs commands in-process, then starts others) must not inherit an ignored Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, _dropped)


def _dropped(_signum: int, _frame: Any) -> None:
    pass


def settle() -> None:
    """The command has finished and reported (a checkpoint written, the error line printed):
    from here on a signal must not change its exit status. SIGTERM and SIGINT are ignored
    while the process exits. A second SIGTERM sent while the interpreter shut down (a
    supervisor that signals twice) killed the process with the signal's own 143 in place of its
    130 (3 of 3 runs, 0.05-0.3 s after the first): torch's and Python's teardown runs after
    Python has put the default handlers back. A Ctrl-C as `predict --workers` ended raised in
    Ray's shutdown (a traceback; ending at once instead would leave Ray's processes behind).
    A supervisor's SIGKILL still ends an exit that hangs. Only the entry point calls it, as
    the process ends: an ignored signal is inherited by every process started afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)


def _with_sources(message: str, loaded: Any) -> str:
    """``message`` with where each setting it names came from, when not from the environment:
    an error about PIPELINE_DATA__TARGET set by a preset named a variable the user never set
    (`PIPELINE_PRESET=titanic` on another table: "no column 'survived' (PIPELINE_DATA__TARGET)")."""
    import re

    if loaded is None:  # settings did not load: their own errors say where each came from
        return message
    notes = []
    # A name suggested for a misspelt one ("did you mean PIPELINE_TUNE__TRIALS?") is no
    # setting of this error: where its value came from is beside the point.
    named = re.finditer(r"(?<!did you mean )\bPIPELINE_[A-Z0-9_]+", message)
    for env in dict.fromkeys(m.group() for m in named):
        path = tuple(part.lower() for part in env.removeprefix("PIPELINE_").split("__"))
        where = loaded.settings.source_of(*path).removesuffix(f" ({env})")  # named already
        if where != "default" and not where.startswith("env var") and where not in message:
            notes.append(f"{env} came from {where}")
    return message + (f" ({'; '.join(notes)})" if notes else "")


def _terminate(signum: int, _frame: Any) -> None:
    from pipeline import signals

    signals.LAST.append(signum)  # which one, for a stop deferred after it (tune.stop_deferred)
    raise KeyboardInterrupt


def store_of(
    settings: Any,
    *,
    writes: bool = False,
    outputs: Mapping[str, Path | None] | None = None,
    preset: Path | None = None,
) -> Any:
    """The artifact store named by PIPELINE_STORE, checked before the command's work starts.

    ``writes``: StoreError now if the store cannot be written (not after minutes of training).
    ``outputs``: the command's output files by option (``{"--id-file": path}``); ConfigError if
    one lies inside the store, whose records only the stages write, or two name one file, or
    one is ``preset`` (the preset file this command reads).
    """
    from pipeline.errors import ConfigError
    from pipeline.store import Store

    store = Store.from_uri(settings.store, **settings.store_options())
    _OPENED.set(store)
    named: dict[Path, str] = {}
    for option, path in (outputs or {}).items():
        store.refuse_inside(path, option)
        if path is not None:
            _not_a_uri(path, option)
            _not_the_data(path, option, settings.data.source)
            _no_file_above(path, option)
            if option == "--preset-out" and path.suffix.lower() != ".toml":
                raise ConfigError(  # PIPELINE_PRESET takes a .toml path or a preset's name
                    f"--preset-out {path} is not a .toml file, which PIPELINE_PRESET could "
                    f"not load: name it {path.with_suffix('.toml').name}"
                )
        if option in _ID_OUTPUTS and path is not None:
            _folder_exists(path, option)
            _one_output(path, option, named, preset)
    stale = [
        (option, path)
        for option in _ID_OUTPUTS  # its path checked above; before the store's own checks
        if _check_id_file(path := (outputs or {}).get(option), option) and path is not None
    ]
    for option, path in stale:  # once every output passed: a refused one removes none
        with contextlib.suppress(OSError):  # then the final write says what is wrong
            _set_aside(path, option)
    if writes:
        store.check_writable()
    return store


# What an --id-file or --preset-out holds when this tool wrote it there: a build, package, tune
# or dataset id, or a release reference; a tune's winner. Only an option's own kind counts: a
# preset given to --id-file (or an id to --preset-out) is someone's work, never removed.
_OURS = {
    "--id-file": re.compile(rb"([0-9a-f]{64}|[A-Za-z0-9][A-Za-z0-9._-]*@v[0-9]+)\n?"),
    "--preset-out": re.compile(rb"# Written by `pipeline tune`.*", re.S),
}


def _ours(path: Path, option: str) -> bool:
    """Whether ``path`` is a file this tool wrote through ``option`` (empty counts)."""
    size = path.stat().st_size
    return size == 0 or (size <= 1 << 16 and _OURS[option].fullmatch(path.read_bytes()) is not None)


def _set_aside(path: Path, option: str) -> None:
    """A stale output out of the way: an id removed; a winner `tune` wrote renamed to
    ``NAME.prev`` (replacing an older one), as ``cp --backup`` keeps one: a misspelt variable
    or a Ctrl-C cost the only copy of the last search's result."""
    if option == "--preset-out":
        path.replace(path.with_name(path.name + ".prev"))
    else:
        path.unlink()


def clear_written_ids(outputs: Mapping[str, Path | None]) -> None:
    """The --id-file / --preset-out files of a command whose settings could not be read, removed
    where they hold what this tool writes there: a stale id must not outlive a failed run (a
    CI script's `pipeline evaluate $(cat build.id)`), yet with the settings unknown a path
    cannot be told apart from the data or a preset, so any other file is left alone."""
    for option, path in outputs.items():
        try:
            if path is not None and path.is_file() and path.stat().st_size and _ours(path, option):
                _set_aside(path, option)
        except OSError:
            continue


def _check_id_file(path: Path | None, option: str) -> bool:
    """Whether an existing --id-file (or `tune --preset-out`) is to be removed before the work
    starts, as `docker build --iidfile` does: a run that fails must not leave the previous
    run's id (or winner) there for the next step of a script (`pipeline package $(cat
    build.id)`, `PIPELINE_PRESET=tuned.toml pipeline train`) to take as its own. A file that
    holds anything else (a preset written by hand, notes, an id given to --preset-out, a
    preset to --id-file) is refused, exit 3, and kept: it was deleted, and lost when the
    search then failed. Every output is checked before any is removed."""
    from pipeline.errors import ConfigError

    if path is None or not path.is_file():
        return False
    try:
        ours = _ours(path, option)
    except OSError:
        return False  # then the final write says what is wrong
    if not ours:
        what = "a preset `pipeline tune` wrote" if option == "--preset-out" else "an id"
        raise ConfigError(
            f"{option} {path} exists and holds something other than {what}: it would be "
            "replaced; choose another path, or remove the file first"
        )
    return True


# Small files written at the end of a command, into a folder that must already exist: checked
# at its start, not after minutes of training or searching (predict -o, report -o and diff
# --html create their folders).
_ID_OUTPUTS = ("--id-file", "--preset-out")


# A URI's scheme and its "//", as a Path keeps them: Path("s3://b/x") is "s3:/b/x".
_URI_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def _not_a_uri(path: Path, option: str) -> None:
    """ConfigError for an output named by a URI (``-o s3://bucket/r.html``, ``file:///...``):
    it was written to a local folder named ``s3:`` (or ``file:``) and the command said where
    as if that were what was asked."""
    from pipeline.errors import ConfigError

    if _URI_PATH.match(str(path)):
        scheme = str(path).partition(":")[0]
        raise ConfigError(
            f"{option} {scheme}://...: outputs are written to local files, not URIs; give a "
            "path here (then copy it where it goes, e.g. with `aws s3 cp`)"
        )


def _no_file_above(path: Path, option: str) -> None:
    """ConfigError when the nearest existing folder above ``path`` is a file (``-o notes.txt/x``):
    the write would fail at the end, naming a temporary file (exit 9)."""
    from pipeline.errors import ConfigError

    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"{option} {path}: {parent} is a file, not a folder: choose another path"
                )
            return


def _folder_exists(path: Path, option: str) -> None:
    from pipeline.errors import ConfigError

    folder = path.parent  # a file above it was refused already (_no_file_above)
    why = (
        "does not exist" if not folder.is_dir()
        else "cannot be written" if not os.access(folder, os.W_OK | os.X_OK)
        else _unwritable(folder)
    )  # fmt: skip
    if why:
        fix = "create it" if why == "does not exist" else "make it writable"
        raise ConfigError(
            f"{option} {path}: the folder {folder} {why}: {fix} or choose another path "
            "(checked before the work starts)"
        )
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder: name a file in it")


def _unwritable(folder: Path) -> str:
    """Why no file can be made in ``folder`` ("" when one can): a file made and removed.
    Permissions alone passed /proc and /sys, and a read-only mount, for root: the search ran
    to its end, then failed to write its --preset-out (exit 9)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".pipeline-write-check-", dir=folder)
    except OSError as exc:
        return f"cannot be written ({exc.strerror or exc})"
    os.close(fd)
    with contextlib.suppress(OSError):
        Path(probe).unlink()
    return ""


def _not_the_data(path: Path, option: str, source: str) -> None:
    """ConfigError when ``path`` is the dataset PIPELINE_DATA__SOURCE names: `train --id-file
    data.csv` replaced the user's data with a 65-byte id."""
    from pipeline.data.sources import local_source
    from pipeline.errors import ConfigError

    data = local_source(source)
    try:
        same = data is not None and path.exists() and path.samefile(data)
    except OSError:
        same = False
    if same:
        raise ConfigError(
            f"{option} {path} is the dataset PIPELINE_DATA__SOURCE names: it would be "
            "overwritten; choose another path"
        )


def _one_output(path: Path, option: str, named: dict[Path, str], preset: Path | None) -> None:
    """ConfigError when ``path`` is also another option's output, or the preset being read."""
    from pipeline.errors import ConfigError

    resolved = path.resolve()
    if preset is not None and preset.resolve() == resolved:
        raise ConfigError(
            f"{option} {path} is the preset this command reads (PIPELINE_PRESET): it would be "
            "overwritten; write the new one to another file"
        )
    if resolved in named:
        raise ConfigError(
            f"{named[resolved]} and {option} name the same file {path}: each needs its own"
        )
    named[resolved] = option


def write_id(path: Path | None, value: str) -> None:
    """Write ``value`` to ``path`` atomically (for --id-file), never into the store."""
    if path is None:
        return
    from pipeline.store import write_output

    store = _OPENED.get()
    if store is not None:
        store.refuse_inside(path, "--id-file")
    write_output(path, (value + "\n").encode(), "choose another --id-file path")
