"""Stop requests (SIGTERM, Ctrl-C) held while work that must not be cut in two runs.

The CLI turns both signals into ``KeyboardInterrupt`` (exit 130, "nothing was written"). A few
steps must not be broken off part-way: the writes that make one release or one package (cut
between them, the store held the release a user had cancelled, rolled forward by the next
`release create`, and the command said "nothing was written"), and the shutdown of an embedded
Ray runtime (cut, its processes left their temporary folder behind). Blocking the signals would
not do: the kernel hands a process's signal to any thread that does not block it, and Ray's
threads do not; so the handlers note them instead.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

# The SIGTERMs the CLI's handler turned into KeyboardInterrupt (Ctrl-C is Python's own).
LAST: list[int] = []


def last_name() -> str | None:
    """``SIGTERM`` once the CLI's handler took one, else None (a KeyboardInterrupt then came
    from Ctrl-C)."""
    return signal.Signals(LAST[-1]).name if LAST else None


@contextlib.contextmanager
def held(*, then_stop: bool, second_stops: bool) -> Iterator[None]:
    """SIGTERM and SIGINT noted, not acted on, while the block runs (in the main thread; others
    cannot take signals). ``then_stop``: once the block is done, a noted signal stops the
    command as it would have (``KeyboardInterrupt``); otherwise the command goes on to its end,
    the work it was asked to stop being whole by then. ``second_stops``: a second signal stops
    at once (a write that hangs on a store's timeout is not waited for twice)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum: int, _frame: Any) -> None:
        noted.append(signum)
        if second_stops and len(noted) > 1:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if noted and then_stop:
        raise KeyboardInterrupt


@contextlib.contextmanager
def finishing(log: Any, stage: str, done: str) -> Iterator[list[int]]:
    """Inside the block a first SIGTERM or Ctrl-C is noted (the list gets its number, a
    ``<stage>.stop_deferred`` warning is logged, saying ``done``) and the block runs on; a
    second one stops it at once. For the moment after the work, while its result is written
    (a build after training, a search's record after its last trial): stopping there lost
    the whole work with "nothing was written", where finishing takes a moment (and a
    container's stop grace period is 10-30 s). Outside the main thread it does nothing.
    """
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def note(signum: int, _frame: Any) -> None:
        if got:
            raise KeyboardInterrupt
        got.append(signum)
        log.warning(
            f"{stage}.stop_deferred", signal=signal.Signals(signum).name,
            message=f"{done}; send the signal again to stop at once (nothing is written then)",
        )  # fmt: skip

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, note)
    try:
        yield got
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
