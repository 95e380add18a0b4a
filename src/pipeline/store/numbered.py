"""Numbered objects in a store folder (``v1.json``, ``history/00000001.json``), on any store.

``Key`` names an object and reads like a path. ``entries`` lists a folder's numbered names,
refusing a file where the folder should be (it would read as an empty folder). ``claim``
publishes the next number with an exclusive ``Store.create``, so concurrent writers never share
or skip one. ``read_json`` reads an object, an ``IntegrityError`` when it is not JSON.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import IntegrityError
from pipeline.store import Store, canonical_json

DAMAGED = "the store is damaged: restore the file from a backup"


@dataclass(frozen=True)
class Key:
    """A name in the store; ``/`` appends a part (reads like a path, works on any store)."""

    store: Store
    key: str

    def __truediv__(self, part: str) -> Key:
        return Key(self.store, f"{self.key}/{part}")

    def __str__(self) -> str:
        return f"{self.store.uri}/{self.key}"


def read_json(key: Key) -> Any:
    """The JSON stored under ``key``: KeyError when absent, IntegrityError when not JSON."""
    data = key.store.read_bytes(key.key)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise IntegrityError(f"{key} is not valid JSON ({exc}): {DAMAGED}") from None


def refuse_file(folder: Key) -> None:
    """IntegrityError if ``folder`` is a file: listed, it would read as an empty folder."""
    if folder.store.exists(folder.key) and not folder.store.list(folder.key):
        with contextlib.suppress(KeyError):  # KeyError: an empty folder, as it should be
            folder.store.read_bytes(folder.key)
            raise IntegrityError(f"{folder} is a file, not a folder: {DAMAGED}")


def entries(folder: Key, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """``(number, name)`` of every entry whose name ``pattern`` matches, in number order.

    The pattern's first group is the number.
    """
    names = folder.store.list(folder.key)
    if not names:
        refuse_file(folder)
    return sorted((int(m[1]), n) for n in names if (m := pattern.match(n)))


def claim(folder: Key, pattern: re.Pattern[str], filename: str, make: Callable[[int], Any]) -> int:
    """Publish ``make(n)`` as ``filename % n`` for the first free ``n`` above the existing ones.

    ``Store.create`` is exclusive (a hard link on a local disk, a conditional put on an object
    store): the finished record appears under its final name in one step, or the name was taken
    and ``n + 1`` is tried. Each number has exactly one owner. Records are immutable.
    """
    n = max((number for number, _ in entries(folder, pattern)), default=0) + 1
    while not folder.store.create(
        (folder / (filename % n)).key, canonical_json(make(n)), immutable=True
    ):
        n += 1
    return n
