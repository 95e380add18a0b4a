"""A release folder's ``current``: where the history's last event leads, derived from it and
moved by compare-and-swap, only ever forward (the package docstring tells the whole story)."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from pipeline.errors import StoreError
from pipeline.store import canonical_json
from pipeline.store.numbered import Key, entries, read_json

# history/<seq:08d>.json: one create or rollback event each.
EVENT = re.compile(r"^([0-9]{8,})\.json$")


def advance_current(folder: Key) -> None:
    """Move ``current`` to the history's last event by compare-and-swap, only ever forward.

    ``current`` records the event's sequence number with the release's, so a writer whose
    event was overtaken never moves it back, and equal bytes mean one state (no ABA). Every
    writer leaves ``current`` at or beyond its own event, so the last one leaves it at the end.
    """
    store, key = folder.store, (folder / "current").key
    for _ in range(1000):
        try:
            held: bytes | None = store.read_bytes(key)
        except KeyError:
            held = None
        seq, number = _last_event(folder)
        if _current_seq(held) >= seq:
            return  # already there, or a later writer moved it further
        if store.swap(key, held, canonical_json({"release": number, "seq": seq})):
            return
    raise StoreError(f"{folder}/current kept changing under 1000 compare-and-swap attempts")


def _last_event(folder: Key) -> tuple[int, int]:
    """``(seq, release)`` of the newest history event."""
    seq, filename = entries(folder / "history", EVENT)[-1]
    event = read_json(folder / "history" / filename)
    return seq, int(event["release"])


def _current_seq(held: bytes | None) -> int:
    """The history sequence number that ``current``'s bytes record (0: none, or unreadable)."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        seq = json.loads(held or b"")["seq"]
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return 0


def lagging(folder: Key) -> dict[str, Any] | None:
    """The history's last event when ``current`` is behind it (the command that wrote it died
    before moving it: nothing else leaves it behind under the folder's lock), else None."""
    events = entries(folder / "history", EVENT)
    if not events:
        return None
    try:
        held: bytes | None = folder.store.read_bytes((folder / "current").key)
    except KeyError:
        held = None
    seq, filename = events[-1]
    if _current_seq(held) >= seq:
        return None
    event: dict[str, Any] = read_json(folder / "history" / filename)
    return event
