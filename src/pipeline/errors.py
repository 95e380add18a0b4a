"""The project's errors and the exit code each one maps to.

A user's mistake raises a ``PipelineError`` subclass whose message says what happened, what was
expected and what to do. Only the CLI turns these into exit codes; the codes are part of the public
interface (documented in the README) so CI jobs can branch on them.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for every error that is the user's to fix (never a bug)."""

    exit_code = 1
    kind = "error"
    # The command's answer on stdout already says it (`config show`'s `unknown` list): no
    # `error` event after it, which would make stdout two documents.
    answered = False

    def __init__(self, message: str) -> None:
        # Errors are shown as one line: collapse any newline that a wrapped message carried in.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(PipelineError):
    """A setting is missing, malformed, unknown or inconsistent."""

    exit_code = 3
    kind = "config"


class DataError(PipelineError):
    """The dataset cannot be used as it is: unreadable, empty, missing a column, bad values.

    An error about one cell also carries it as fields, for callers that render it other than
    as a line of text (the server's field-level detail): ``column``, ``row`` (the 1-based data
    row, header excluded) and ``value`` (the cell as the message shows it). They are None for
    an error about the whole file.
    """

    exit_code = 4
    kind = "data"

    def __init__(
        self,
        message: str,
        *,
        column: str | None = None,
        row: int | None = None,
        value: str | None = None,
    ) -> None:
        super().__init__(message)
        self.column, self.row, self.value = column, row, value


class SourceError(PipelineError):
    """A dataset could not be fetched: unknown scheme, network failure, missing credentials."""

    exit_code = 5
    kind = "source"


class TrialsFailed(PipelineError):
    """Every trial of a search failed: there is no winner (the message has the first error)."""

    exit_code = 6
    kind = "tune"


class GateError(PipelineError):
    """A quality gate failed: the model is worse than the configured bound."""

    exit_code = 6
    kind = "gate"


class IntegrityError(PipelineError):
    """A stored file does not match the digest its manifest records."""

    exit_code = 7
    kind = "integrity"


class NotFoundError(PipelineError):
    """A build, package or release that was asked for is not in the store."""

    exit_code = 8
    kind = "not_found"


class StoreError(PipelineError):
    """The artifact store cannot be written or read (permissions, full disk, bad URI)."""

    exit_code = 9
    kind = "store"


class StoreUnavailable(StoreError):
    """The store did not answer: a server down, hanging past its timeout, or overloaded (503)
    after the bounded retries. Worth retrying later, unlike a refusal (``StoreError``)."""

    exit_code = 10
    kind = "store_unavailable"


class OutputClosed(PipelineError):
    """The reader of stdout went away before the output was complete (``| head``): the exit
    status a Unix tool gets from SIGPIPE, 128 + 13."""

    exit_code = 141
    kind = "output_closed"


class Interrupted(PipelineError):
    """The process was asked to stop (SIGINT/SIGTERM) before the stage finished."""

    exit_code = 130
    kind = "interrupted"


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        ConfigError,
        DataError,
        SourceError,
        GateError,
        IntegrityError,
        NotFoundError,
        StoreError,
        StoreUnavailable,
        OutputClosed,
        Interrupted,
    )
}
