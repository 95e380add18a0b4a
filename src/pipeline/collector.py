"""Python's cyclic garbage collector around a short process's heavy imports and its exit.

Importing torch and pandas creates about 320,000 long-lived objects (modules, classes,
functions, registries). With the collector on, the import runs many full collections that walk
them again and again, and the interpreter's last collection at exit walks them once more: about
0.07 s of the import and 0.35 s of the exit of a one-row ``pipeline predict`` on this machine,
next to torch's own 0.75 s. ``paused`` loads them with the collector off and then freezes them
(``gc.freeze``: no later collection visits them; they were never garbage, as a module is kept
until exit); ``freeze_for_exit`` does the same for what a command leaves when it ends. Objects
created later are collected as usual, so a long run (training, a server) keeps its memory bound.

A freeze also keeps whatever cyclic garbage exists at that moment, so ``paused`` acts only in
a process that has not loaded the module yet (a fresh command's, where that garbage is a few
objects of the CLI's own); anywhere else (a test session, a second load) it does nothing.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def paused(first: str) -> Iterator[None]:
    """Run the body (heavy imports, ``first`` among them) with the collector off and freeze
    what it left alive; only when ``first`` is not loaded yet and the collector is on."""
    if first in sys.modules or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def freeze_for_exit() -> None:
    """The command is done: the interpreter's last collection skips what is alive now.

    Files, sockets and temporary folders are closed by the code that opened them, and atexit
    handlers still run; only objects in reference cycles that are garbage now are left to the
    operating system instead of being finalized one by one."""
    gc.freeze()
