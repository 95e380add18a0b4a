"""Releases: a package plus the run-stage settings, frozen under a consecutive number.

Layout under ``store/releases/<name>/``::

    v<N>.json               one immutable record per release (read-only, never rewritten)
    history/<seq:08d>.json  append-only events, create and rollback: the commit log
    current                 the current release number, for people and scripts (derived)
    .lock                   the lock that orders creates and rollbacks

The history is the truth. A release exists once its ``create`` event is in the history, and the
current release is the one the last event names. Creating a release writes its record, then its
event; each is an exclusive ``Store.create`` (on a local disk an fsynced temp file, then a hard
link), so a crash or a SIGKILL at any moment leaves either the old state or the new one:

* killed before the event, the record is an orphan that no reader counts (``list``, ``show`` and
  ``@current`` ignore it), and the next create, holding the lock, removes it and reuses its
  number, so numbers stay consecutive;
* killed after the event, the release is complete and current; ``current`` is rewritten by the
  next command if the crash came before it.

Creates and rollbacks hold the store's exclusive lock ``.lock`` (``flock`` on a local disk),
which orders numbers, history and ``current``. History sequence numbers are claimed with an
exclusive create as well, so two writers can never share one even where the lock is not honoured.
Only the ``Store`` interface is used, so any store implementation keeps these guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import ConfigError, IntegrityError, NotFoundError, StoreError
from pipeline.settings import RunSettings
from pipeline.store import Store, canonical_json

FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EVENT = re.compile(r"^([0-9]{8,})\.json$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_REF = re.compile(r"^(?:(?P<name>[^@\s]+)@)?(?:v(?P<number>[1-9][0-9]*)|(?P<current>current))$")
_SIDECAR_KEYS = ("name", "version", "package_id", "build_id")
REF_HELP = "expected name@vN or name@current (or vN / current with PIPELINE_MODEL__NAME)"


@dataclass(frozen=True)
class Release:
    """One release record as stored in ``v<N>.json``."""

    name: str
    number: int
    package_id: str
    build_id: str
    version: str
    run: dict[str, Any]
    created_at: str

    @property
    def ref(self) -> str:
        """The release's reference, ``name@vN``."""
        return f"{self.name}@v{self.number}"

    def record(self) -> dict[str, Any]:
        """The JSON record written to the store."""
        return {
            "format": FORMAT,
            "name": self.name,
            "number": self.number,
            "package_id": self.package_id,
            "build_id": self.build_id,
            "version": self.version,
            "run": self.run,
            "created_at": self.created_at,
        }


# --- references -------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it can name a release folder, else ConfigError."""
    if not _NAME.match(name):
        raise ConfigError(
            f"release name '{name}' is not usable: expected letters, digits, '.', '_' or '-' "
            "(as in PIPELINE_MODEL__NAME=house-prices)"
        )
    return name


def parse_ref(ref: str, default_name: str | None = None) -> tuple[str, int | None]:
    """Split ``name@vN`` / ``name@current`` (or ``vN`` / ``current`` with ``default_name``).

    Returns ``(name, N)``, with ``None`` for the current release.
    """
    match = _REF.match(ref.strip())
    if match is None:
        raise ConfigError(f"malformed release reference '{ref}': {REF_HELP}")
    name = match["name"] or default_name
    if not name:
        raise ConfigError(f"release reference '{ref}' names no model: {REF_HELP}")
    number = int(match["number"]) if match["number"] else None
    return check_name(name), number


def parse_number(text: str) -> int:
    """``vN`` or ``N`` as a release number (for ``--to``)."""
    match = re.fullmatch(r"v?([1-9][0-9]*)", text.strip())
    if match is None:
        raise ConfigError(f"malformed release number '{text}': expected vN, e.g. --to v3")
    return int(match[1])


# --- packages ---------------------------------------------------------------------------------


def _read_sidecar(key: _Key) -> dict[str, Any]:
    try:
        data = _read_json(key)
    except KeyError:
        raise NotFoundError(
            f"package sidecar {key} does not exist: package the build first (`pipeline package`)"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in _SIDECAR_KEYS):
        raise IntegrityError(
            f"package sidecar {key} is malformed: expected string fields {list(_SIDECAR_KEYS)}; "
            "re-create the package"
        )
    return data


def find_package(store: Store, ref: str) -> dict[str, Any]:
    """The sidecar of the package whose id is ``ref`` or starts with it (>= 8 hex digits)."""
    ref = ref.strip().lower()
    if not _HEX.match(ref):
        raise ConfigError(
            f"'{ref}' is not a package id: expected its sha256 or a prefix of at least 8 hex "
            "digits, or the path of a .tar.gz in the store's packages folder"
        )
    root = _Key(store, "packages")
    found: dict[str, dict[str, Any]] = {}
    for model in store.list(root.key):
        for entry in store.list((root / model).key):
            if not entry.endswith(".json"):
                continue
            sidecar = _read_sidecar(root / model / entry)
            if sidecar["package_id"].startswith(ref):
                found.setdefault(sidecar["package_id"], sidecar)
    if not found:
        raise NotFoundError(
            f"no package with id {ref} in {root} (searched packages/*/*.json): "
            "check the id, PIPELINE_STORE, or package a build first"
        )
    if len(found) > 1:
        raise ConfigError(
            f"package id prefix {ref} is ambiguous ({len(found)} packages match): give more digits"
        )
    return next(iter(found.values()))


def resolve_package(store: Store, arg: str) -> dict[str, Any]:
    """The sidecar for ``arg``: a package id/prefix, or where its ``.tar.gz`` is in the store.

    The location is a path for a folder store (a URI for an object store): ``Store.key_of``.
    """
    if not (arg.endswith(".tar.gz") or os.sep in arg):
        return find_package(store, arg)
    key = store.key_of(arg)
    if key is None or not key.startswith("packages/") or not key.endswith(".tar.gz"):
        raise ConfigError(
            f"'{arg}' is not a package: expected a .tar.gz inside {store.location('packages')}, "
            "or a package id"
        )
    if not store.exists(key):
        raise NotFoundError(
            f"package {store.location(key)} does not exist: check the path or PIPELINE_STORE"
        )
    return _read_sidecar(_Key(store, key.removesuffix(".tar.gz") + ".json"))


# --- low-level store access -------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """A name in the store; ``/`` appends a part (reads like a path, works on any store)."""

    store: Store
    key: str

    def __truediv__(self, part: str) -> _Key:
        return _Key(self.store, f"{self.key}/{part}")

    def __str__(self) -> str:
        return f"{self.store.uri}/{self.key}"


def _read_json(key: _Key) -> Any:
    """The JSON stored under ``key``: KeyError when absent, IntegrityError when not JSON."""
    data = key.store.read_bytes(key.key)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"{key} is not valid JSON ({exc}): the store is damaged") from None


def _folder(store: Store, name: str) -> _Key:
    return _Key(store, f"releases/{check_name(name)}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _numbers(folder: _Key, pattern: re.Pattern[str]) -> list[int]:
    names = folder.store.list(folder.key)
    return sorted(int(m[1]) for n in names if (m := pattern.match(n)))


def _claim(folder: _Key, pattern: re.Pattern[str], filename: str, make: Any) -> int:
    """Publish ``make(n)`` as ``filename % n`` for the first free ``n`` above the existing ones.

    ``Store.create`` is exclusive (a hard link on a local disk, a conditional put on an object
    store): the finished record appears under its final name in one step, or the name was taken
    and ``n + 1`` is tried. Each number has exactly one owner.
    """
    n = max(_numbers(folder, pattern), default=0) + 1
    while not folder.store.create(
        (folder / (filename % n)).key, canonical_json(make(n)), immutable=True
    ):
        n += 1
    return n


def _locked(folder: _Key) -> contextlib.AbstractContextManager[None]:
    """Hold the release folder's exclusive lock (orders creates and rollbacks)."""
    return folder.store.lock((folder / ".lock").key)


def _events(folder: _Key) -> list[dict[str, Any]]:
    history = folder / "history"
    return [_read_json(history / f"{seq:08d}.json") for seq in _numbers(history, _EVENT)]


def _committed(folder: _Key) -> tuple[list[int], int | None]:
    """The release numbers the history has created, and the current one (its last event)."""
    events = _events(folder)
    numbers = sorted({int(e["release"]) for e in events if e["action"] == "create"})
    return numbers, (int(events[-1]["release"]) if events else None)


def _current(folder: _Key) -> int | None:
    current = _committed(folder)[1]
    if current is not None and not folder.store.exists((folder / f"v{current}.json").key):
        raise IntegrityError(
            f"{folder}/history names v{current} as current, but {folder}/v{current}.json is "
            "missing: the store is damaged; restore it or roll back (`pipeline release rollback "
            "--to vN`)"
        )
    return current


def _set_current(folder: _Key, number: int, action: str, previous: int | None) -> None:
    """Append the event that commits ``number`` as current, then refresh ``current``."""

    def event(seq: int) -> dict[str, Any]:
        return {
            "seq": seq,
            "action": action,
            "release": number,
            "previous": previous,
            "at": _now(),
        }

    _claim(folder / "history", _EVENT, "%08d.json", event)
    folder.store.write((folder / "current").key, f"{number}\n".encode())


def _load(folder: _Key, name: str, number: int, existing: list[int] | None = None) -> Release:
    """Release ``number``; ``existing`` is the committed numbers, when the caller has read them."""
    record = folder / f"v{number}.json"
    existing = _committed(folder)[0] if existing is None else existing
    try:
        if number not in existing:
            raise KeyError(record.key)  # absent, or an orphan that no create event committed
        data = _read_json(record)
    except KeyError:
        have = f"v1..v{existing[-1]}" if existing else "none"
        raise NotFoundError(
            f"release {name}@v{number} does not exist (releases of {name}: {have}); "
            "`pipeline release list` shows them"
        ) from None
    try:
        release = Release(**{k: data[k] for k in Release.__dataclass_fields__})
    except (KeyError, TypeError):
        raise IntegrityError(f"{record} is not a release record: the store is damaged") from None
    if release.number != number or release.name != name:
        raise IntegrityError(f"{record} records {release.ref}: the store is damaged")
    return release


# --- the stage API ----------------------------------------------------------------------------


def create(store: Store, package_id: str, run: RunSettings, name: str | None = None) -> Release:
    """Release the package ``package_id`` (id or prefix) with ``run``; make it current.

    ``name`` defaults to the package's model name. Numbers are consecutive per name from 1.
    Only setting names are recorded for ``run.required_secrets``; ``RunSettings`` holds no values.
    """
    package = find_package(store, package_id)
    name = check_name(name or package["name"])
    folder = _folder(store, name)
    run_config = run.model_dump(mode="json")
    created_at = _now()

    def record(number: int) -> dict[str, Any]:
        return Release(
            name=name,
            number=number,
            package_id=package["package_id"],
            build_id=package["build_id"],
            version=package["version"],
            run=run_config,
            created_at=created_at,
        ).record()

    with _locked(folder):
        numbers, previous = _committed(folder)
        number = (numbers[-1] if numbers else 0) + 1
        key = (folder / f"v{number}.json").key
        # A record without its create event is what a crash between the two writes leaves: it
        # never became a release. Only a create holding the lock removes it, and reuses its number.
        store.delete(key)
        if not store.create(key, canonical_json(record(number)), immutable=True):
            raise StoreError(
                f"{folder}/v{number}.json appeared while this command held {folder}/.lock: another "
                "writer ignores the lock (a file system without flock?); release from one place"
            )
        _set_current(folder, number, "create", previous)
    return _load(folder, name, number)


def list_releases(store: Store, name: str) -> list[dict[str, Any]]:
    """Every release of ``name`` in number order: number, version, short package id, current."""
    folder = _folder(store, name)
    current = _current(folder)
    rows = []
    numbers = _committed(folder)[0]  # one read of the history, not one per release
    for number in numbers:
        release = _load(folder, name, number, numbers)
        rows.append(
            {
                "ref": release.ref,
                "number": number,
                "version": release.version,
                "package_id": release.package_id[:12],
                "created_at": release.created_at,
                "current": number == current,
            }
        )
    return rows


def current_number(store: Store, name: str) -> int | None:
    """The current release number of ``name``, or None before the first release."""
    return _current(_folder(store, name))


def show(store: Store, ref: str, default_name: str | None = None) -> Release:
    """The release named by ``ref`` (``name@vN``, ``name@current``; ``vN`` uses default_name)."""
    name, number = parse_ref(ref, default_name)
    folder = _folder(store, name)
    if number is None:
        number = _current(folder)
        if number is None:
            raise NotFoundError(
                f"{name} has no current release: create one with `pipeline release create`"
            )
    return _load(folder, name, number)


def history(store: Store, name: str) -> list[dict[str, Any]]:
    """The create and rollback events of ``name``, oldest first."""
    return _events(_folder(store, name))


def rollback(store: Store, name: str, to: int | None = None) -> tuple[int, int]:
    """Make release ``to`` current (default: the one numbered just below the current one).

    Returns ``(previous, new)`` current numbers. Releases themselves are never modified.
    """
    folder = _folder(store, name)
    with _locked(folder):
        current = _current(folder)
        if current is None:
            raise NotFoundError(
                f"{name} has no current release to roll back from: create one first"
            )
        if to is None:
            older = [n for n in _committed(folder)[0] if n < current]
            if not older:
                raise NotFoundError(
                    f"{name}@v{current} is the first release: there is nothing to roll back to"
                )
            to = older[-1]
        _load(folder, name, to)  # NotFoundError if absent, IntegrityError if damaged
        _set_current(folder, to, "rollback", current)
    return current, to
