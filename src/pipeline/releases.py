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
  ``@current`` ignore it). The next create, holding the lock, rolls it forward: it appends the
  missing event (marked ``recovered``), then creates its own release under the next number; if
  the orphan holds the same package and run settings, the orphan *is* that release. Numbers
  stay consecutive, and a number is bound to one content forever: an orphan may as well be a
  release whose event was lost, deployed by its number, and a record is whole once it exists.
  Only a file there that is no readable record of its number (never a release) is replaced;
* killed after the event, the release is complete and current; ``current`` is rewritten by the
  next command if the crash came before it.

Creates and rollbacks hold the store's exclusive lock ``.lock`` (``flock`` on a local disk),
which orders numbers, history and ``current``. History sequence numbers are claimed with an
exclusive create as well, so two writers can never share one even where the lock is not honoured.
Only the ``Store`` interface is used, so any store implementation keeps these guarantees. A
damaged history, record or sidecar is an ``IntegrityError`` naming the file and a way out; a
rollback reads only its target, so it also leads away from a lost current record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.errors import ConfigError, IntegrityError, NotFoundError, StoreError
from pipeline.settings import RunSettings
from pipeline.store import Store, canonical_json
from pipeline.store.numbered import DAMAGED as RESTORE
from pipeline.store.numbered import Key as _Key
from pipeline.store.numbered import claim as _claim
from pipeline.store.numbered import entries as _entries
from pipeline.store.numbered import read_json as _read_json
from pipeline.store.numbered import refuse_file as _refuse_file

FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EVENT = re.compile(r"^([0-9]{8,})\.json$")
_RECORD = re.compile(r"^v([1-9][0-9]*)\.json$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_REF = re.compile(r"^(?:(?P<name>[^@\s]+)@)?(?:v(?P<number>[1-9][0-9]*)|(?P<current>current))$")
_SIDECAR_KEYS = ("name", "version", "package_id", "build_id")
REF_HELP = "expected name@vN or name@current (or vN / current with PIPELINE_MODEL__NAME)"
RECOVERED = "a release record without its create event (a crash, or a lost event) was committed"


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
        return {"format": FORMAT, **dataclasses.asdict(self)}

    def content(self) -> dict[str, Any]:
        """What makes two records the same release: all but the number and the time."""
        return {**self.record(), "number": None, "created_at": None}


# --- references -------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it can name a release folder, else ConfigError."""
    if not _NAME.match(name):
        raise ConfigError(
            f"release name '{name}' is not usable: expected letters, digits, '.', '_' or '-' "
            "(as in PIPELINE_MODEL__NAME=house-prices)"
        )
    return name


def is_ref(text: str) -> bool:
    """Whether ``text`` reads as a release reference rather than a build or package id."""
    return _REF.match(text.strip()) is not None


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
    # packages/<name>/<version>.json: a sidecar claiming another name or version, or an id that
    # is no sha256, would send readers to another archive (or out of the store).
    parts = key.key.split("/")
    if not (
        isinstance(data, dict)
        and all(isinstance(data.get(k), str) for k in _SIDECAR_KEYS)
        and parts[1:] == [data["name"], f"{data['version']}.json"]
        and _SHA.match(data["package_id"])
        and _SHA.match(data["build_id"])
    ):
        raise IntegrityError(
            f"package sidecar {key} is malformed: expected string fields {list(_SIDECAR_KEYS)} "
            "naming its own folder and file, with sha256 ids; run `pipeline package` for its "
            "build again to rewrite it"
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


def _folder(store: Store, name: str) -> _Key:
    return _Key(store, f"releases/{check_name(name)}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _locked(folder: _Key) -> contextlib.AbstractContextManager[None]:
    """Hold the release folder's exclusive lock (orders creates and rollbacks)."""
    return folder.store.lock((folder / ".lock").key)


def _events(folder: _Key) -> list[dict[str, Any]]:
    """The history, oldest first: IntegrityError for a file there that is no release event."""
    history = folder / "history"
    _refuse_file(folder)
    events, created = [], set()
    for _, filename in _entries(history, _EVENT):
        key = history / filename
        try:
            event = _read_json(key)
        except KeyError:
            event = None  # listed, but not a file
        fields = event if isinstance(event, dict) else {}
        number, action = fields.get("release"), fields.get("action")
        ok = isinstance(number, int) and not isinstance(number, bool) and number >= 1
        if ok and action == "create":
            created.add(number)
        elif not ok or action != "rollback" or number not in created:
            raise IntegrityError(
                f"history event {key} is not a release event: expected a JSON object with "
                '"action" "create" (or "rollback" to a release created before it) and "release" '
                f"a number >= 1; {RESTORE} (or move it out of history/ to drop that event)"
            )
        events.append(event)
    return events


def _committed(folder: _Key) -> tuple[list[int], int | None]:
    """The release numbers the history has created, and the current one (its last event)."""
    events = _events(folder)
    numbers = sorted({int(e["release"]) for e in events if e["action"] == "create"})
    return numbers, (int(events[-1]["release"]) if events else None)


def _way_out(folder: _Key, numbers: list[int], broken: int) -> str:
    """What to run when release ``broken`` is damaged: make an intact one current, or create."""
    name = folder.key.rsplit("/", 1)[-1]
    intact = [n for n in numbers if n != broken and folder.store.exists(f"{folder.key}/v{n}.json")]
    if not intact:
        return f"; or create a new {name} release: `pipeline release create PACKAGE`"
    to = f"--name {name} --to v{intact[-1]}"
    return f"; or make an intact release current: `pipeline release rollback {to}`"


def _set_current(
    folder: _Key, number: int, action: str, previous: int | None, **extra: Any
) -> None:
    """Append the event that commits ``number`` as current, then refresh ``current``."""

    def event(seq: int) -> dict[str, Any]:
        return {
            "seq": seq,
            "action": action,
            "release": number,
            "previous": previous,
            "at": _now(),
            **extra,
        }

    _claim(folder / "history", _EVENT, "%08d.json", event)
    folder.store.write((folder / "current").key, f"{number}\n".encode())


def _parse(record: _Key, data: Any, name: str, number: int) -> Release:
    """The release in ``data``, read from ``record``; IntegrityError unless it is ``name@vN``."""
    fields = Release.__dataclass_fields__
    if not isinstance(data, dict) or not all(k in data for k in fields):
        problem = f"expected a JSON object with {sorted(fields)}"
    else:
        release = Release(**{k: data[k] for k in fields})
        strings = (release.version, release.created_at)
        if (release.name, release.number) != (name, number):
            problem = f"it records {release.name}@v{release.number}"
        elif not all(
            isinstance(x, str) and _SHA.match(x) for x in (release.package_id, release.build_id)
        ):
            problem = "package_id and build_id must be sha256 digests"
        elif not all(isinstance(s, str) for s in strings) or not isinstance(release.run, dict):
            problem = "version and created_at must be strings and run an object"
        elif data.get("format", FORMAT) != FORMAT:
            problem = f"format {data.get('format')!r}, expected {FORMAT}"
        else:
            try:
                RunSettings.model_validate(release.run)
                return release
            except ValidationError as exc:
                problem = f"its run settings are invalid ({exc.errors()[0]['msg']})"
    raise IntegrityError(
        f"{record} is not a release record of {name}@v{number} ({problem}): {RESTORE}"
    )


def _load(folder: _Key, name: str, number: int, existing: list[int] | None = None) -> Release:
    """Release ``number``; ``existing`` is the committed numbers, when the caller has read them."""
    record = folder / f"v{number}.json"
    existing = _committed(folder)[0] if existing is None else existing
    if number not in existing:  # absent, or an orphan that no create event committed
        have = f"v1..v{existing[-1]}" if existing else "none"
        raise NotFoundError(
            f"release {name}@v{number} does not exist (releases of {name}: {have}); "
            "`pipeline release list` shows them"
        )
    try:
        data = _read_json(record)
    except KeyError:
        raise IntegrityError(
            f"{folder}/history created {name}@v{number}, but {record} is missing or no file: "
            f"{RESTORE}{_way_out(folder, existing, number)}"
        ) from None
    try:
        return _parse(record, data, name, number)
    except IntegrityError as exc:
        raise IntegrityError(exc.message + _way_out(folder, existing, number)) from None


# --- the stage API ----------------------------------------------------------------------------


def _orphans(folder: _Key, name: str, committed: list[int]) -> list[Release]:
    """Release records on file that no create event committed, in number order. A file that is
    no readable record of its number is left out: it was never a release."""
    found = []
    for number, filename in _entries(folder, _RECORD):
        with contextlib.suppress(KeyError, IntegrityError):
            if number not in committed:
                found.append(_parse(folder / filename, _read_json(folder / filename), name, number))
    return found


def create(
    store: Store, package_id: str, run: RunSettings, name: str | None = None, log: Any = None
) -> Release:
    """Release the package ``package_id`` (id or prefix) with ``run``; make it current.

    ``name`` defaults to the package's model name. Numbers are consecutive per name from 1.
    Only setting names are recorded for ``run.required_secrets``; ``RunSettings`` holds no values.
    Orphan records are rolled forward first (see the module docstring); ``log`` is told of each.
    """
    package = find_package(store, package_id)
    name = check_name(name or package["name"])
    folder = _folder(store, name)
    ids = package["package_id"], package["build_id"], package["version"]
    wanted = Release(name, 0, *ids, run=run.model_dump(mode="json"), created_at=_now())
    with _locked(folder):
        numbers, previous = _committed(folder)
        for orphan in _orphans(folder, name, numbers):
            _set_current(folder, orphan.number, "create", previous, recovered=True)
            numbers.append(previous := orphan.number)
            if log is not None:
                log.warning("release.recovered", release=orphan.ref, message=RECOVERED)
            if orphan.content() == wanted.content():
                return orphan  # the very release asked for: a retried create makes no second one
        number = max(numbers, default=0) + 1
        key = (folder / f"v{number}.json").key
        record = canonical_json({**wanted.record(), "number": number})
        if not store.create(key, record, immutable=True):
            # Only a file that is no release record of this number can be here (a readable one
            # was rolled forward above): it was never shown or deployed, so its number is reused.
            store.delete(key)
            if not store.create(key, record, immutable=True):
                raise StoreError(
                    f"{folder}/v{number}.json appeared while this command held {folder}/.lock: "
                    "another writer ignores the lock (a file system without flock?); release from "
                    "one place"
                )
        _set_current(folder, number, "create", previous)
    return _load(folder, name, number)


def list_releases(store: Store, name: str) -> list[dict[str, Any]]:
    """Every release of ``name`` in number order: number, version, short package id, current."""
    folder = _folder(store, name)
    numbers, current = _committed(folder)  # one read of the history, not one per release
    rows = []
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
    return _committed(_folder(store, name))[1]


def show(store: Store, ref: str, default_name: str | None = None) -> Release:
    """The release named by ``ref`` (``name@vN``, ``name@current``; ``vN`` uses default_name)."""
    name, number = parse_ref(ref, default_name)
    folder = _folder(store, name)
    numbers, current = _committed(folder)
    if number is None:
        if current is None:
            raise NotFoundError(
                f"{name} has no current release: create one with `pipeline release create`"
            )
        number = current
    return _load(folder, name, number, numbers)


def history(store: Store, name: str) -> list[dict[str, Any]]:
    """The create and rollback events of ``name``, oldest first."""
    return _events(_folder(store, name))


def rollback(store: Store, name: str, to: int | None = None) -> tuple[int, int]:
    """Make release ``to`` current (default: the one numbered just below the current one).

    Returns ``(previous, new)`` current numbers. Releases themselves are never modified. Only
    the target's record is read, so a rollback also leads away from a current release whose
    record is damaged or lost.
    """
    folder = _folder(store, name)
    with _locked(folder):
        numbers, current = _committed(folder)
        if current is None:
            raise NotFoundError(
                f"{name} has no current release to roll back from: create one first"
            )
        if to is None:
            older = [n for n in numbers if n < current]
            if not older:
                raise NotFoundError(
                    f"{name}@v{current} is the first release: there is nothing to roll back to"
                )
            to = older[-1]
        _load(folder, name, to, numbers)  # NotFoundError if absent, IntegrityError if damaged
        _set_current(folder, to, "rollback", current)
    return current, to
