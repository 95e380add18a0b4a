"""Releases: a package plus the run-stage settings, frozen under a consecutive number.

Layout under ``store/releases/<name>/``::

    v<N>.json               one immutable record per release (read-only, never rewritten)
    history/<seq:08d>.json  append-only events, create and rollback: the commit log
    current                 {"release": N, "seq": S}: where history event S leads (derived)
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
  next command if the crash came before it, and a create retried then is that release.

Creates and rollbacks hold the store's exclusive lock ``.lock`` (``flock`` on a local disk),
which orders numbers, history and ``current``. Nothing relies on the lock alone: release records
and history sequence numbers are claimed with an exclusive create, and a create never removes a
readable record it finds (it takes the next number), so two writers can never share a number
even where the lock fails (a lease holder that stalled, a file system without flock); ``current``
moves by compare-and-swap, only forward along the history.
Only the ``Store`` interface is used, so any store keeps these guarantees. A damaged history,
record or sidecar is an ``IntegrityError`` naming the file and a way out; a rollback reads only
its target, so it also leads away from a lost current record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline import __version__, signals
from pipeline.errors import IntegrityError, NotFoundError, StoreError
from pipeline.releases import pointer as _pointer
from pipeline.releases.refs import (
    REF_HELP,
    check_archive,
    check_name,
    find_package,
    is_ref,
    open_stored,
    parse_number,
    parse_ref,
    released_package,
    resolve_package,
    rollback_target,
)
from pipeline.settings import RunSettings
from pipeline.store import Store, canonical_json
from pipeline.store.numbered import DAMAGED as RESTORE
from pipeline.store.numbered import Key as _Key
from pipeline.store.numbered import claim as _claim
from pipeline.store.numbered import entries as _entries
from pipeline.store.numbered import read_json as _read_json
from pipeline.store.numbered import refuse_file as _refuse_file

__all__ = [
    "FORMAT",
    "RECOVERED",
    "REF_HELP",
    "Release",
    "check_name",
    "create",
    "current_number",
    "find_package",
    "history",
    "is_ref",
    "list_releases",
    "open_stored",
    "parse_number",
    "parse_ref",
    "released_package",
    "resolve_package",
    "rollback",
    "rollback_target",
    "show",
]

FORMAT = 1
_RECORD = re.compile(r"^v([1-9][0-9]*)\.json$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
RECOVERED = "a release record without its create event (a crash, or a lost event) was committed"
UNMOVED = "this release was created by a command that stopped before it moved `current`"


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


# --- low-level store access -------------------------------------------------------------------


def _folder(store: Store, name: str) -> _Key:
    return _Key(store, f"releases/{check_name(name)}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _locked(folder: _Key, log: Any = None) -> contextlib.AbstractContextManager[None]:
    """Hold the release folder's exclusive lock (orders creates and rollbacks); ``log`` hears
    when another release or rollback of this model makes it wait."""

    def waiting() -> None:
        if log is not None:
            log.info("release.waiting", message=f"another release or rollback of "
                     f"{folder.key.removeprefix('releases/')} holds its lock: waiting for it "
                     "(an s3:// store takes over a dead holder's lease after 10 s)")  # fmt: skip

    return folder.store.lock((folder / ".lock").key, on_wait=waiting)


def _events(folder: _Key) -> list[dict[str, Any]]:
    """The history, oldest first: IntegrityError for a file there that is no release event."""
    history = folder / "history"
    _refuse_file(folder)
    events, created = [], set()
    for _, filename in _entries(history, _pointer.EVENT):
        key = history / filename
        try:
            event = _read_json(key)
        except KeyError:
            event = None  # listed, but not a file
        except IntegrityError as exc:  # not JSON at all: the same two ways out
            raise IntegrityError(f"{exc.message} (or move it out of history/ to drop that "
                                 "event)") from None  # fmt: skip
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


def _way_out(folder: _Key, committed: tuple[list[int], int | None], broken: int) -> str:
    """What else to do when release ``broken`` is damaged: when it is current, make an intact
    one current, or create one; when not, nothing runs it (a rollback "to" current did nothing)."""
    name, (numbers, current) = folder.key.rsplit("/", 1)[-1], committed
    if broken != current:
        return f" (the current release, {name}@v{current}, does not need it)" if current else ""
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

    _claim(folder / "history", _pointer.EVENT, "%08d.json", event)
    _pointer.advance_current(folder)


def _parse(record: _Key, data: Any, name: str, number: int) -> Release:
    """The release in ``data``, read from ``record``; IntegrityError unless it is ``name@vN``."""
    fields = Release.__dataclass_fields__
    newer = False  # what this version cannot read may be a newer version's, not damage
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
            newer = isinstance(data.get("format"), int) and data["format"] > FORMAT
        else:
            try:
                RunSettings.model_validate(release.run)
                if "sha256" not in data or data["sha256"] == _sealed(data)["sha256"]:
                    return release
                problem = "its content is not what its sha256 says: the release record was modified"
            except ValidationError as exc:
                unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
                newer = bool(unknown)  # a setting added after this version, or a hand edit
                problem = (
                    f"it binds run settings {unknown[:5]} unknown to pipeline {__version__}"
                    if newer
                    else f"its run settings are invalid ({exc.errors()[0]['msg']})"
                )
    if newer:
        problem += "; a newer pipeline may have written it: run it with that version"
    raise IntegrityError(
        f"{record} is not a release record of {name}@v{number} ({problem}): "
        f"{'if none did, ' if newer else ''}{RESTORE}"
    )


def _sealed(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the sha256 of the rest of it: a hand edit of a record (a threshold, the
    secrets it requires) changed what predict did without a word; now it is exit 7."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return {**body, "sha256": hashlib.sha256(canonical_json(body)).hexdigest()}


def _load(
    folder: _Key, name: str, number: int, committed: tuple[list[int], int | None] | None = None
) -> Release:
    """Release ``number``; ``committed`` is ``_committed``'s answer, if the caller has read it."""
    record = folder / f"v{number}.json"
    committed = _committed(folder) if committed is None else committed
    existing = committed[0]
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
            f"{RESTORE}{_way_out(folder, committed, number)}"
        ) from None
    try:
        return _parse(record, data, name, number)
    except IntegrityError as exc:
        raise IntegrityError(exc.message + _way_out(folder, committed, number)) from None


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
    check_archive(store, package)
    folder = _folder(store, name)
    ids = package["package_id"], package["build_id"], package["version"]
    wanted = Release(name, 0, *ids, run=run.released(), created_at=_now())
    with _locked(folder, log):
        numbers, previous = _committed(folder)
        if (behind := _pointer.lagging(folder)) is not None:
            _pointer.advance_current(folder)  # its last create died there: a retry is that release
            with contextlib.suppress(IntegrityError, KeyError):  # damaged: create anew
                last = _load(folder, name, int(behind["release"]))
                if behind["action"] == "create" and last.content() == wanted.content():
                    if log is not None:
                        log.warning("release.recovered", release=last.ref, message=UNMOVED)
                    return last
        for orphan in _orphans(folder, name, numbers):
            _set_current(folder, orphan.number, "create", previous, recovered=True)
            numbers.append(previous := orphan.number)
            if log is not None:
                log.warning("release.recovered", release=orphan.ref, message=RECOVERED)
            if orphan.content() == wanted.content():
                return orphan  # the very release asked for: a retried create makes no second one
        # Its record and its event, whole or not at all: a stop request waits for both (cut
        # between them, the release the user cancelled was rolled forward by the next create).
        with signals.held(then_stop=False, second_stops=True):
            number = _claim_record(folder, name, wanted, max(numbers, default=0) + 1)
            _set_current(folder, number, "create", previous)
    return _load(folder, name, number)


def _claim_record(folder: _Key, name: str, wanted: Release, number: int) -> int:
    """Create ``wanted``'s record under the first free number from ``number``; that number.

    Under the lock nothing else is there, but a lock can fail (a holder that stalled past its
    lease, a file system without flock): a readable record found here is another writer's and
    is never touched, so the next number is tried. Only a file that is no release record of its
    number (never a release: nobody was shown or deployed it) is replaced.
    """
    store = folder.store
    for _ in range(1000):
        key = folder / f"v{number}.json"
        record = canonical_json(_sealed({**wanted.record(), "number": number}))
        if store.create(key.key, record, immutable=True):
            return number
        try:
            _parse(key, _read_json(key), name, number)
            number += 1  # another writer's release (committed or on its way): leave it be
        except KeyError:
            pass  # removed meanwhile: try the same number again
        except IntegrityError:
            store.delete(key.key)
    raise StoreError(f"{folder}: no release number could be claimed in 1000 attempts")


def list_releases(store: Store, name: str, log: Any = None) -> list[dict[str, Any]]:
    """Every release of ``name`` in number order: number, version, short package id, current.
    With ``log``, a record other than the current one that is lost or damaged is left out with
    a ``release.unreadable`` warning naming it (one lost v1.json failed the whole list)."""
    folder = _folder(store, name)
    numbers, current = committed = _committed(folder)  # one read of the history
    rows = []
    for number in numbers:
        try:
            release = _load(folder, name, number, committed)
        except IntegrityError as exc:
            if log is None or number == current:
                raise
            log.warning("release.unreadable", release=f"{name}@v{number}", message=exc.message)
            continue
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
    return _load(folder, name, number, (numbers, current))


def history(store: Store, name: str) -> list[dict[str, Any]]:
    """The create and rollback events of ``name``, oldest first."""
    return _events(_folder(store, name))


def rollback(store: Store, name: str, to: int | None = None, log: Any = None) -> tuple[int, int]:
    """Make release ``to`` current (default: the one numbered just below the current one).

    Returns ``(previous, new)`` current numbers (equal when ``to`` is already current: then
    nothing is written). Releases themselves are never modified. Only the target's record (and
    its package) is read, so a rollback leads away from a damaged or lost current record."""
    folder = _folder(store, name)
    if _committed(folder)[1] is None:  # before the lock: a misspelt name leaves no folder
        raise NotFoundError(f"{name} has no current release to roll back from: create one")
    with _locked(folder, log):
        numbers, current = _committed(folder)
        if current is None:
            raise NotFoundError(f"{name} has no current release to roll back from: create one")
        if to is None:
            older = [n for n in numbers if n < current]
            if not older:
                raise NotFoundError(f"{name}@v{current} is the first release: none to roll back to")
            to = older[-1]
        target = _load(folder, name, to, (numbers, current))  # NotFoundError, IntegrityError
        if to != current:  # already current: nothing changes, and the history says nothing
            try:  # it must load: a rollback made current a release whose archive was gone
                released_package(store, target)
            except (IntegrityError, NotFoundError) as exc:
                raise type(exc)(f"{name}@v{to} is not made current: {exc.message}") from None
            _set_current(folder, to, "rollback", current)
    return current, to
