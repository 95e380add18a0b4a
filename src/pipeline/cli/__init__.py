"""The command line: parse, load settings, call one stage, map errors to exit codes.

Only ``typer`` is imported here; each command imports its stage inside the function so that
``pipeline --help`` starts without torch or pandas.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
import typer.core
from typer._click.core import Context, Parameter
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from pipeline import __version__, collector
from pipeline.cli import build, config, data, release, tune
from pipeline.cli import diff as diff_cmd
from pipeline.cli import package as package_cmd
from pipeline.cli import predict as predict_cmd
from pipeline.cli import report as report_cmd
from pipeline.cli import serve as serve_cmd
from pipeline.cli._common import began, settle


class _Group(typer.core.TyperGroup):
    """The root command group: a usage error (an unknown option, a bad option value, a missing
    argument), at any depth of sub-commands, is one line on stderr and exit 2, like every other
    mistake here, rather than typer's usage banner and framed box."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        with _one_line(), _help_on_stderr(not args):  # `pipeline` alone: help, exit 2
            _refuse_empty_options(ctx, args)
            with _named(ctx):
                rest = super().parse_args(ctx, args)
            _refuse_empty(ctx)
        return rest

    def invoke(self, ctx: Context) -> object:
        # `pipeline release` alone: the sub-group's help page, exit 2 (typer prints it as the
        # error is made, so stdout is pointed at stderr for that one call).
        rest = [*ctx._protected_args, *ctx.args]
        sub = self.get_command(ctx, rest[0]) if len(rest) == 1 else None
        bare = isinstance(sub, typer.core.TyperGroup) and sub.no_args_is_help
        with _one_line(), _help_on_stderr(bare):
            return super().invoke(ctx)

    def get_params(self, ctx: Context) -> list[Parameter]:
        return _plain_flags(super().get_params(ctx))


def _plain_flags(params: list[Parameter]) -> list[Parameter]:
    """A flag shown in --help without typer's ``<bool>``, which read as taking a value
    (`--resume <bool>`; `diff --all true` took "true" as build A)."""
    for param in params:
        if isinstance(param, typer.core.TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    """Every command (``_own_classes``): a usage error while parsing its arguments names it."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        return _plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        _refuse_empty_options(ctx, args)
        with _named(ctx):
            rest = super().parse_args(ctx, args)
        _refuse_empty(ctx)
        return rest


def _refuse_empty_options(ctx: Context, args: list[str]) -> None:
    """``_refuse_empty`` before parsing, for any option: click reads ``--id-file ""`` as the
    current folder, which said "file '' is a directory" (``predict -o ''`` wrote to ``.``), and
    ``--workers ""`` as a number that does not parse."""
    takes_value = {
        opt: param
        for param in ctx.command.params
        if isinstance(param, typer.core.TyperOption) and not param.is_flag
        for opt in (*param.opts, *param.secondary_opts)
    }
    at = 0
    while at < len(args) and args[at] != "--":
        name, equals, value = args[at].partition("=")
        param = takes_value.get(name if equals and name.startswith("--") else args[at])
        if param is not None and not equals:  # its value is the next token, if any
            # None left: click's own "requires an argument" says so, not this check.
            value, at = (args[at + 1] if at + 1 < len(args) else "missing"), at + 1
        if param is not None and not value.strip():
            _empty(ctx, param)
        at += 1


def _empty(ctx: Context, param: Parameter) -> NoReturn:
    if isinstance(param, typer.core.TyperArgument):
        name, kind = param.display_name_raw.upper(), "argument"
    else:
        name, kind = max(getattr(param, "opts", [param.name]), key=len), "option"
    default = "" if param.required else f", or leave the {kind} out for its default"
    raise UsageError(
        f"{kind} {name} is empty (an empty id file or variable?): give a value{default}", ctx
    )


def _refuse_empty(ctx: Context) -> None:
    """An argument or option given as an empty string is a usage error, never its default:
    `pipeline evaluate "$(cat build.id)"` with an empty id file evaluated the latest build, and
    its gate passed in CI on a build nobody meant (`--release ""` fell back the same way)."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        values = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            _empty(ctx, param)


@contextlib.contextmanager
def _named(ctx: Context) -> Iterator[None]:
    """A usage error raised without a context (click's parser says "option '-o' requires an
    argument" so) gets ``ctx``, the command being parsed: `pipeline predict -o` named
    `pipeline` and sent the user to `pipeline -h`."""
    try:
        yield
    except UsageError as exc:
        if exc.ctx is None:
            exc.ctx = ctx
        raise


def _help_on_stderr(bare: bool) -> contextlib.AbstractContextManager[Any]:
    """stdout pointed at stderr while a group called with nothing prints its help page: a usage
    error (exit 2), so on stderr, where every usage error goes; stdout is the event stream."""
    return contextlib.redirect_stdout(sys.stderr) if bare else contextlib.nullcontext()


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:  # `pipeline` or `pipeline release` alone: its help page (on
        raise  # stderr: ``_help_on_stderr``)
    except UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "pipeline"
        message = " ".join(exc.format_message().split())
        sys.stderr.write(
            f"error: {path}: {message[:1].lower()}{message[1:]} (`{path} -h` lists its usage)\n"
        )
        raise SystemExit(exc.exit_code) from None


app = typer.Typer(
    name="pipeline",
    cls=_Group,
    help=(
        "Twelve-factor machine learning. Build: `train` + `evaluate` turn the dataset named in "
        "PIPELINE_DATA__SOURCE into a content-addressed build. Settings come only from the "
        "environment (PIPELINE_*, .env, presets in config/); `pipeline config show` lists them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(release.app, name="release")
app.add_typer(tune.app, name="tune")
app.command("train")(build.train)
app.command("evaluate")(build.evaluate)
app.command("package")(package_cmd.package)
app.command("predict")(predict_cmd.predict)
app.command("serve")(serve_cmd.serve)
app.command("diff")(diff_cmd.diff)
app.command("report")(report_cmd.report)


def _reflow(text: str) -> str:
    """Each paragraph of a help text on one line (paragraphs stay apart; a ``\\b`` paragraph
    is kept as written, as click does). Docstrings are wrapped at 95 columns in the source;
    rich keeps those line breaks and wraps again at the terminal's width, which leaves ragged
    lines in an 80-column terminal."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)


def _reflow_help(group: typer.Typer) -> None:
    """``_reflow`` every command's help (its docstring unless given) in ``group`` and below."""
    for info in group.registered_commands:
        text = info.help if info.help is not None else inspect.getdoc(info.callback)
        if text:
            info.help = _reflow(text)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_help(sub.typer_instance)


_reflow_help(app)


def _own_classes(group: typer.Typer) -> None:
    """``_Command`` and ``_Group`` for every command and sub-group in ``group`` and below."""
    for info in group.registered_commands:
        if info.cls in (None, typer.core.TyperCommand):  # typer's default, or none given
            info.cls = _Command
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            sub.typer_instance.info.cls = _Group
            _own_classes(sub.typer_instance)


_own_classes(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Twelve-factor machine learning."""


def main() -> None:
    """Console-script entry point (through ``pipeline.__main__``)."""
    began(reset=True)
    stdout = None
    try:
        # Before anything loads torch's OpenMP, which reads this once: its idle worker threads
        # sleep instead of spinning. Spinning threads take the CPU from the thread they wait
        # for whenever the machine has other work; 2-thread training at batch 64 ran 20-50x
        # slower beside other processes on 2 cores. An OMP_WAIT_POLICY set by the user wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        stdout = _identity(1)
        app()
    except SystemExit as exc:
        collector.freeze_for_exit()
        if _from_ctrl_c(exc) and not began():
            # typer's answer to a Ctrl-C or SIGTERM while it parsed the command line: exit 130
            # without a word. The command's own stop says what was written; this one, nothing.
            typer.echo(_EARLY_STOP, err=True)
        # Typer exits 1, silently, when stdout's reader went away (`pipeline ... | head`),
        # after wrapping stdout so that nothing more is written; rich (the help pages) exits 1
        # after pointing stdout at /dev/null. 1 means a bug here, and a Unix tool cut off by its
        # reader exits 141 (128 + SIGPIPE).
        code = 141 if exc.code == 1 and _reader_went_away(stdout) else exc.code
        settle()
        if "ray" in sys.modules:
            _leave_past_ray(code)
        if code != exc.code:
            raise SystemExit(code) from None
        raise
    except KeyboardInterrupt:  # while typer built the command tree, before its own handler
        collector.freeze_for_exit()
        if began():
            raise
        typer.echo(_EARLY_STOP, err=True)
        settle()
        raise SystemExit(130) from None
    except BaseException:
        collector.freeze_for_exit()
        raise


_EARLY_STOP = (
    "error: pipeline interrupted before the command began: nothing was written; run it again"
)


def _from_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` (typer's exit) answers a ``KeyboardInterrupt``: typer raises its
    ``Exit(130)`` from it, then ``SystemExit`` while handling that."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; a loop in it is not followed forever
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _leave_past_ray(code: int | str | None) -> NoReturn:
    """Exit with ``code`` (``SystemExit``'s meaning) once Ray has run in this process: Python's
    own exit work (threads joined, atexit handlers, Ray's shutdown among them, and weakref
    finalizers; stdio flushed), then ``os._exit``, without the C library's exit handlers.

    One of those destroys Ray's C++ core worker while that worker's I/O thread still runs its
    periodic metrics (ray 2.60: ``TaskManager::RecordMetrics`` on a freed object, in a core
    dump): about 1 in 6 `pipeline tune` runs stopped by SIGTERM during their trials died of
    SIGSEGV (exit 139) instead of exiting 130, 5 s late."""
    import atexit
    import threading

    status = code if isinstance(code, int) else 0 if code is None else 1
    try:
        if isinstance(code, str):  # as the interpreter reports SystemExit("message")
            sys.stderr.write(f"{code}\n")
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    finally:
        os._exit(status)


def _identity(what: int | str) -> tuple[int, int] | None:
    """The device and inode a descriptor is open on (or a path names); None if there is none."""
    try:
        status = os.fstat(what) if isinstance(what, int) else Path(what).stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _reader_went_away(stdout: tuple[int, int] | None) -> bool:
    """Whether an exit 1 is typer's or rich's answer to a closed stdout (EPIPE)."""
    if type(sys.stdout).__name__ == "PacifyFlushWrapper":  # typer's
        return True
    now = _identity(1)  # rich's: descriptor 1 moved onto /dev/null
    return now is not None and now != stdout and now == _identity(os.devnull)
