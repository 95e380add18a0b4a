"""Releases in a damaged store: malformed history, records and sidecars, lost files and events.

Each case gets one ``error:`` line with its exit code (7 for a damaged store) and a way out, no
traceback; no release number whose record exists is ever given other content. In-process tests
run on each store implementation, as in ``tests/test_releases.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, event, events, one_error_line
from tests.test_releases import FOLDER, NAME, make_package

from pipeline import releases
from pipeline.errors import IntegrityError, NotFoundError
from pipeline.settings import RunSettings
from pipeline.store import LocalStore, MemoryStore, Store, canonical_json

ROWS = REPO / "tests" / "fixtures" / "house-prices-test.csv"


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, store: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A LocalStore in the test's store folder, or a MemoryStore the ``cli`` fixture opens too."""
    if request.param == "local":
        return LocalStore(store)
    memory = MemoryStore()
    monkeypatch.setattr(Store, "from_uri", staticmethod(lambda uri, **_: memory))
    return memory


def refused(result: Any, code: int, *named: str) -> str:
    """One ``error:`` line naming every part of ``named``, exit ``code``, a JSON error event."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for part in named:
        assert part in lines[0], (part, lines[0])
    assert event(result.stdout, "error")["exit_code"] == code
    return str(lines[0])


def two_releases(store: Store) -> tuple[str, str]:
    """Releases v1 (package 0.1.0) and v2 (package 0.2.0); returns their package ids."""
    pids = make_package(store, "0.1.0"), make_package(store, "0.2.0")
    for pid in pids:
        releases.create(store, pid, RunSettings())
    return pids


# --- item 6: a malformed history event ----------------------------------------------------------

BAD_EVENTS = {
    "no-release": b'{"seq": 3, "action": "create", "previous": 2}',
    "no-action": b'{"seq": 3, "release": 1, "previous": 2}',
    "array": b"[1, 2, 3]",
    "release-text": b'{"seq": 3, "action": "create", "release": "two", "previous": 2}',
    "release-bool": b'{"seq": 3, "action": "rollback", "release": true, "previous": 2}',
    "release-zero": b'{"seq": 3, "action": "create", "release": 0, "previous": 2}',
    "unknown-action": b'{"seq": 3, "action": "delete", "release": 1, "previous": 2}',
    "rollback-to-nothing": b'{"seq": 3, "action": "rollback", "release": 9, "previous": 2}',
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "not-json": b"{bad",  # said to restore it only, not how to drop it as the README says
}
COMMANDS = {
    "list": ("release", "list"),
    "show": ("release", "show", f"{NAME}@v1"),
    "create": ("release", "create", "@pid"),
    "rollback": ("release", "rollback"),
    "predict": ("predict", str(ROWS), "--release", f"{NAME}@current", "-o", "@out"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", BAD_EVENTS)
def test_a_malformed_history_event_is_an_integrity_error_for_every_command(
    cli: Any, backend: Store, tmp_path: Path, bad: str, command: str
) -> None:
    """A history event that is no event (no release, an array, "two", ...) exits 7 naming it."""
    pid = two_releases(backend)[0]
    backend.write(f"{FOLDER}/history/00000003.json", BAD_EVENTS[bad])
    before = {k: backend.read_bytes(k) for k in backend.walk("releases")}
    given = {"@pid": pid, "@out": str(tmp_path / "out.csv")}
    args = [given.get(a, a) for a in COMMANDS[command]]
    refused(cli(*args), 7, "00000003.json", "the store is damaged", "restore",
            "move it out of history/")  # fmt: skip
    assert {k: backend.read_bytes(k) for k in backend.walk("releases")} == before


def test_a_history_entry_that_is_a_folder_is_an_integrity_error(cli: Any, store: Path) -> None:
    """history/00000003.json as a folder is a damaged store (exit 7), not a crash."""
    local = LocalStore(store)
    two_releases(local)
    (store / FOLDER / "history" / "00000003.json").mkdir()
    refused(cli("release", "list"), 7, "00000003.json")


@pytest.mark.parametrize("folder", ["history", "release-folder"])
def test_a_history_or_release_folder_that_is_a_file_is_damage_not_emptiness(
    cli: Any, store: Path, folder: str
) -> None:
    """history/ (or releases/<name>/ itself) as a file exits 7 instead of listing no release."""
    two_releases(LocalStore(store))
    path = store / FOLDER / "history" if folder == "history" else store / FOLDER
    shutil.rmtree(path)
    path.write_text("{}")
    refused(cli("release", "list"), 7, str(path.relative_to(store)), "not a folder")
    refused(cli("release", "show", f"{NAME}@current"), 7, "not a folder")


def test_an_event_file_with_nine_digits_is_read_under_its_own_name(backend: Store) -> None:
    """history/000000003.json (nine digits) is read as it is named, not as 00000003.json."""
    two_releases(backend)
    event_ = {"seq": 3, "action": "rollback", "release": 1, "previous": 2, "at": "x"}
    backend.write(f"{FOLDER}/history/000000003.json", json.dumps(event_).encode())
    assert releases.current_number(backend, NAME) == 1


# --- record and sidecar siblings ---------------------------------------------------------------

BAD_RECORDS = {
    "package-id-number": {"package_id": 5},
    "run-not-an-object": {"run": "fast"},
    "run-unknown-setting": {"run": {"threshold": 0.5, "turbo": True}},
    "build-id-not-hex": {"build_id": "../../etc"},
    "future-format": {"format": 2},
}


@pytest.mark.parametrize("command", ["list", "show", "predict"])
@pytest.mark.parametrize("bad", BAD_RECORDS)
def test_a_record_with_fields_of_the_wrong_kind_is_an_integrity_error(
    cli: Any, store: Path, tmp_path: Path, bad: str, command: str
) -> None:
    """A v1.json whose fields have the wrong type or invalid run settings exits 7 naming it
    (`release list` lists v2 and warns: see the missing record's test below)."""
    local = LocalStore(store)
    two_releases(local)
    path = store / FOLDER / "v1.json"
    record = {**json.loads(path.read_text()), **BAD_RECORDS[bad]}
    path.chmod(0o644)
    path.write_text(json.dumps(record))
    args = {
        "list": ("release", "list"),
        "show": ("release", "show", f"{NAME}@v1"),
        "predict": ("predict", str(ROWS), "--release", f"{NAME}@v1", "-o", str(tmp_path / "o")),
    }[command]
    if command == "list":
        listed = cli(*args)
        assert listed.exit_code == 0, listed.output
        (warning,) = [e for e in events(listed.stdout) if e["event"] == "release.unreadable"]
        assert "v1.json" in warning["message"] and "not a release record" in warning["message"]
        message = warning["message"]
    else:
        message = refused(cli(*args), 7, "v1.json", "not a release record")
    # v2 is current: a rollback to it, once advised, did nothing.
    assert "--to v2" not in message and f"{NAME}@v2, does not need it" in message
    # A record this version cannot read may be a newer version's, not damage: it says so.
    newer = "a newer pipeline may have written it"
    assert (newer in message) == (bad in ("run-unknown-setting", "future-format")), message
    if bad == "run-unknown-setting":
        assert "'turbo'" in message


def test_a_record_that_is_a_folder_is_damage_not_absence(cli: Any, store: Path) -> None:
    """A committed v1.json that is a folder exits 7 (damaged), not 8 (no such release)."""
    local = LocalStore(store)
    two_releases(local)
    (store / FOLDER / "v1.json").unlink()
    (store / FOLDER / "v1.json").mkdir()
    refused(cli("release", "show", f"{NAME}@v1"), 7, "v1.json", "restore")


@pytest.mark.parametrize(
    "change",
    [{"name": "other-model"}, {"version": "9.9.9"}, {"package_id": "not-a-digest"}],
    ids=["another-name", "another-version", "id-not-sha256"],
)
def test_a_sidecar_that_disagrees_with_its_place_is_an_integrity_error(
    cli: Any, backend: Store, change: dict[str, str]
) -> None:
    """A package sidecar claiming another name or version than its path, or a non-sha256 id,
    exits 7 and releases nothing."""
    pid = make_package(backend)
    key = f"packages/{NAME}/0.1.0.json"
    backend.write(key, json.dumps({**backend.read_json(key), **change}).encode())
    refused(cli("release", "create", pid[:12]), 7, "0.1.0.json", "pipeline package")
    assert not backend.exists("releases")


# --- item 7: the current record is missing -----------------------------------------------------


def test_a_missing_current_record_names_a_rollback_that_works(cli: Any, store: Path) -> None:
    """v2.json lost while current: predict @current exits 7 advising `rollback --to v1`, which
    works; v1 stays showable throughout."""
    local = LocalStore(store)
    two_releases(local)
    (store / FOLDER / "v2.json").unlink()
    advice = f"pipeline release rollback --name {NAME} --to v1"
    out = str(store.parent / "out.csv")
    assert advice in refused(
        cli("predict", str(ROWS), "--release", f"{NAME}@current", "-o", out), 7
    )
    assert advice in refused(cli("release", "list"), 7, "v2.json")
    shown = cli("release", "show", f"{NAME}@v1")
    assert shown.exit_code == 0, shown.stderr
    assert event(shown.stdout, "release.show")["current"] is False
    rolled = cli("release", "rollback", "--to", "v1", "--name", NAME)
    assert rolled.exit_code == 0, rolled.stderr
    assert event(cli("release", "show", f"{NAME}@current").stdout, "release.show")["number"] == 1


def test_a_missing_record_that_is_not_current_is_listed_around_with_a_warning(
    cli: Any, store: Path
) -> None:
    """v1.json lost while v2 is current: `release list` lists v2 (exit 0) and warns once,
    naming v1 and its file; it failed whole (exit 7), advising `rollback --to v2`, the
    current release, which did nothing. `show v1` still refuses, advising only a restore."""
    local = LocalStore(store)
    two_releases(local)
    (store / FOLDER / "v1.json").unlink()
    listed = cli("release", "list")
    assert listed.exit_code == 0, listed.output
    answer = event(listed.stdout, "release.list")
    assert [r["ref"] for r in answer["releases"]] == [f"{NAME}@v2"] and answer["current"] == 2
    (warning,) = [e for e in events(listed.stdout) if e["event"] == "release.unreadable"]
    assert warning["level"] == "warning" and warning["release"] == f"{NAME}@v1"
    assert "v1.json is missing" in warning["message"] and "restore" in warning["message"]
    assert "rollback" not in warning["message"]
    message = refused(cli("release", "show", f"{NAME}@v1"), 7, "v1.json", "restore")
    assert "rollback" not in message and f"{NAME}@v2, does not need it" in message


def test_a_default_rollback_leads_away_from_a_missing_current_record(backend: Store) -> None:
    """`rollback` without --to works when the current record is gone."""
    two_releases(backend)
    backend.delete(f"{FOLDER}/v2.json")
    assert releases.rollback(backend, NAME) == (2, 1)
    assert releases.show(backend, f"{NAME}@current").number == 1


def test_with_no_intact_release_the_way_out_is_a_new_release(backend: Store) -> None:
    """The only release lost: the message says to create one, and creating one works."""
    pid = make_package(backend)
    releases.create(backend, pid, RunSettings())
    backend.delete(f"{FOLDER}/v1.json")
    with pytest.raises(IntegrityError, match="pipeline release create"):
        releases.show(backend, f"{NAME}@current")
    assert releases.create(backend, pid, RunSettings()).number == 2
    assert releases.show(backend, f"{NAME}@current").number == 2


# --- item 8: a lost history event never lets a number change content ---------------------------


def test_a_lost_last_event_rolls_v2_forward_and_the_new_release_is_v3(backend: Store) -> None:
    """History event 2 lost: the next create keeps v2.json byte for byte, commits it again
    (an event marked recovered) and releases the new package as v3."""
    two_releases(backend)
    v2 = backend.read_bytes(f"{FOLDER}/v2.json")
    backend.delete(f"{FOLDER}/history/00000002.json")
    created = releases.create(backend, make_package(backend, "0.3.0"), RunSettings())
    assert backend.read_bytes(f"{FOLDER}/v2.json") == v2
    assert (created.number, created.version) == (3, "0.3.0")
    assert [r["number"] for r in releases.list_releases(backend, NAME)] == [1, 2, 3]
    assert releases.show(backend, f"{NAME}@v2").version == "0.2.0"
    recovered = [e for e in releases.history(backend, NAME) if e.get("recovered")]
    assert [e["release"] for e in recovered] == [2]


def test_a_retried_create_of_the_orphans_own_release_reuses_it(backend: Store) -> None:
    """A create of the same package and settings as an orphan v2 commits that record as it
    is: no v3, and v2's bytes (its created_at too) unchanged."""
    pid2 = two_releases(backend)[1]
    v2 = backend.read_bytes(f"{FOLDER}/v2.json")
    backend.delete(f"{FOLDER}/history/00000002.json")
    again = releases.create(backend, pid2, RunSettings())
    assert again.number == 2 and backend.read_bytes(f"{FOLDER}/v2.json") == v2
    assert not backend.exists(f"{FOLDER}/v3.json")
    assert releases.current_number(backend, NAME) == 2
    assert releases.history(backend, NAME)[-1] | {"at": None} == {
        "seq": 2, "action": "create", "release": 2, "previous": 1, "at": None, "recovered": True
    }  # fmt: skip


def test_a_create_retried_after_a_death_before_current_moved_is_that_release(
    backend: Store,
) -> None:
    """Killed after its history event, before `current` moved (current still names v1): the
    CI job's retry with the same package and settings made v2, a second release of it. It is
    v2 itself, `current` moved; a create of other content then is v3, and after a complete
    create a retry is a new release as always (two creates, two releases)."""
    pid1, pid2 = two_releases(backend)
    v1_pointer = canonical_json({"release": 1, "seq": 1})
    backend.write(f"{FOLDER}/current", v1_pointer)  # as the killed create of v2 left it
    again = releases.create(backend, pid2, RunSettings())
    assert again.number == 2 and not backend.exists(f"{FOLDER}/v3.json")
    assert json.loads(backend.read_bytes(f"{FOLDER}/current")) == {"release": 2, "seq": 2}
    assert len(releases.history(backend, NAME)) == 2
    backend.write(f"{FOLDER}/current", canonical_json({"release": 1, "seq": 1}))
    other = releases.create(backend, pid1, RunSettings(threshold=0.7))
    assert other.number == 3 and releases.current_number(backend, NAME) == 3
    assert releases.create(backend, pid1, RunSettings(threshold=0.7)).number == 4


def test_a_lost_event_in_the_middle_is_committed_again_by_the_next_create(
    backend: Store,
) -> None:
    """Event 2 of 3 lost: v2 is missing from the list until the next create commits it again;
    the new release is v4 and v2 keeps its content."""
    pid1 = two_releases(backend)[0]
    releases.create(backend, pid1, RunSettings())
    v2 = backend.read_bytes(f"{FOLDER}/v2.json")
    backend.delete(f"{FOLDER}/history/00000002.json")
    assert releases.create(backend, make_package(backend, "0.4.0"), RunSettings()).number == 4
    assert [r["number"] for r in releases.list_releases(backend, NAME)] == [1, 2, 3, 4]
    assert backend.read_bytes(f"{FOLDER}/v2.json") == v2


def test_a_lost_history_rolls_every_record_forward_in_order(backend: Store) -> None:
    """history/ lost entirely: the next create commits v1 and v2 again, unchanged, then v3."""
    two_releases(backend)
    records = {n: backend.read_bytes(f"{FOLDER}/v{n}.json") for n in (1, 2)}
    for key in backend.walk(f"{FOLDER}/history"):
        backend.delete(key)
    assert releases.create(backend, make_package(backend, "0.3.0"), RunSettings()).number == 3
    assert {n: backend.read_bytes(f"{FOLDER}/v{n}.json") for n in (1, 2)} == records
    events = releases.history(backend, NAME)
    assert [(e["release"], e["previous"], e.get("recovered")) for e in events] == [
        (1, None, True),
        (2, 1, True),
        (3, 2, None),
    ]


def test_a_lost_event_and_a_cli_create_keep_v2_and_say_so(cli: Any, backend: Store) -> None:
    """Through the CLI: the create after a lost event logs release.recovered and makes v3."""
    two_releases(backend)
    digest = hashlib.sha256(backend.read_bytes(f"{FOLDER}/v2.json")).hexdigest()
    backend.delete(f"{FOLDER}/history/00000002.json")
    result = cli("release", "create", make_package(backend, "0.3.0"))
    assert result.exit_code == 0, result.stderr
    assert event(result.stdout, "release.recovered")["release"] == f"{NAME}@v2"
    assert event(result.stdout, "release.created")["number"] == 3
    assert hashlib.sha256(backend.read_bytes(f"{FOLDER}/v2.json")).hexdigest() == digest


@pytest.mark.parametrize("field", ["version", "build_id"])
def test_a_release_record_edited_to_disagree_with_its_package_is_refused(
    backend: Store, field: str
) -> None:
    """A record whose version or build id was edited (the package id kept) ran that package
    with the wrong record shown by `release show`; the run now refuses it (exit 7)."""
    from pipeline.predict.stage import _opened

    pid = make_package(backend)
    releases.create(backend, pid, RunSettings())
    key = f"{FOLDER}/v1.json"
    record = json.loads(backend.read_bytes(key))
    record[field] = "9.9.9" if field == "version" else "c" * 64
    if isinstance(backend, LocalStore):
        backend.path(key).chmod(0o644)
    backend.delete(key)
    backend.write(key, json.dumps(record).encode())
    with pytest.raises(IntegrityError, match="the release record was modified") as caught:
        _opened(backend, f"{NAME}@v1", None, None)
    assert caught.value.exit_code == 7


def test_a_create_kept_waiting_by_another_holder_of_the_lock_says_so(
    cli: Any, backend: Store
) -> None:
    """Another release or rollback of the model holds its lock for a second: `release create`
    waits for it, and says so in a release.waiting event (it waited silently, up to a lease
    of 10 s on an s3:// store whose holder died). A create that finds the lock free says
    nothing of it."""
    import threading

    pid = make_package(backend)
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with backend.lock(f"{FOLDER}/.lock"):
            held.set()
            done.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    timer = threading.Timer(1.0, done.set)
    timer.start()
    try:
        result = cli("release", "create", pid)
    finally:
        done.set()
        thread.join()
    assert result.exit_code == 0, result.stderr
    waiting = event(result.stdout, "release.waiting")
    assert f"another release or rollback of {NAME} holds its lock" in waiting["message"]
    assert event(result.stdout, "release.created")["number"] == 1
    again = cli("release", "create", make_package(backend, "0.2.0"))
    assert again.exit_code == 0 and '"release.waiting"' not in again.stdout


def test_release_list_and_show_answer_at_any_log_level(cli: Any, backend: Store) -> None:
    """At PIPELINE_LOG_LEVEL=warning or error, `release list` and `release show` printed
    nothing and exited 0: their answer is an info event, and the level filtered it out. The
    level quiets the log, not the answer; other info events stay filtered."""
    created = cli("release", "create", make_package(backend))
    assert created.exit_code == 0, created.stderr
    for level in ("warning", "error"):
        quiet = {"PIPELINE_LOG_LEVEL": level}
        listed = cli("release", "list", NAME, env=quiet)
        assert listed.exit_code == 0, listed.stderr
        assert [e["event"] for e in events(listed.stdout)] == ["release.list"]
        assert event(listed.stdout, "release.list")["current"] == 1
        shown = cli("release", "show", f"{NAME}@v1", env=quiet)
        assert event(shown.stdout, "release.show")["release"] == f"{NAME}@v1"
    assert cli("release", "create", make_package(backend, "0.2.0"), env=quiet).stdout == ""


def test_release_create_of_a_build_id_says_it_is_a_build(cli: Any, store: Path) -> None:
    """`release create <build id>` (the id `train` prints) said "no package with id ...":
    it now says the id is a build's and to package it first, and records nothing."""
    trained = cli("train", env={"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "1"})
    build = event(trained.stdout, "train.summary")["build_id"]
    result = cli("release", "create", build, env={"PIPELINE_PRESET": "titanic"})
    assert result.exit_code == 8, result.output
    line = result.stderr.strip()
    assert line == (
        f"error: build {build[:12]} is a build, not a package: run `pipeline package "
        f"{build[:12]}` and release the package id it prints"
    )
    assert not (store / "releases").exists()


class _SignalledAfterRecord(LocalStore):
    """A local store whose first exclusive create of a release record is followed at once by a
    SIGTERM to this process, as a `docker stop` landing between the record and its event."""

    sent = False

    def create(self, key: str, data: bytes, *, immutable: bool = False) -> bool:
        made = super().create(key, data, immutable=immutable)
        if key.startswith(f"{FOLDER}/v") and not self.sent:
            import os
            import signal

            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return made


def test_a_stop_between_a_release_record_and_its_event_waits_for_both(tmp_path: Path) -> None:
    """SIGTERM right after the record was written stopped the create there: the command said
    "nothing was written", and the next create rolled the cancelled release forward as v1. The
    record and its event are one step now: the release is whole, and the command goes on to its
    end; the CLI's own SIGTERM handler (a KeyboardInterrupt) is back afterwards."""
    import signal

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    store = _SignalledAfterRecord(tmp_path / "store")
    pid = make_package(store, "0.1.0")
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        made = releases.create(store, pid, RunSettings())
        assert store.sent and signal.getsignal(signal.SIGTERM) is stop
    except KeyboardInterrupt:
        pytest.fail("the stop broke the create off between its record and its event")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert made.number == 1
    assert releases.show(store, f"{NAME}@current").number == 1
    assert [r["number"] for r in releases.list_releases(store, NAME)] == [1]


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_rollback_refuses_a_release_whose_archive_would_not_load(
    backend: Store, damage: str
) -> None:
    """The way out of a bad release made current one whose archive was gone (predict: exit 8)
    or damaged (exit 7): now the rollback is refused the same way and current stays."""
    two_releases(backend)
    key = f"packages/{NAME}/0.1.0.tar.gz"
    if damage == "missing":
        backend.delete(key)
    else:
        backend.write(key, backend.read_bytes(key)[:-100])
    refused = NotFoundError if damage == "missing" else IntegrityError
    with pytest.raises(refused, match=f"{NAME}@v1 is not made current"):
        releases.rollback(backend, NAME, 1)
    assert releases.show(backend, f"{NAME}@current").number == 2


def test_an_edited_release_record_is_refused_by_every_command_that_reads_it(
    backend: Store,
) -> None:
    """v2's record edited to name v1's build: predict refused it (exit 7), but evaluate re-tested
    (and gated) v1's build, report and diff took the package's, and rollback made it current.
    Each reads a release through ``releases.released_package`` now."""
    from pipeline import evaluate
    from pipeline.diff import sides

    two_releases(backend)
    v1 = releases.show(backend, f"{NAME}@v1")
    key = f"{FOLDER}/v2.json"
    record = json.loads(backend.read_bytes(key))
    record["build_id"] = v1.build_id
    if isinstance(backend, LocalStore):
        backend.path(key).chmod(0o644)
    backend.delete(key)
    backend.write(key, json.dumps(record).encode())
    releases.rollback(backend, NAME, 1)
    for read in (
        lambda: evaluate._build_of(backend, f"{NAME}@v2", NAME),
        lambda: sides.resolve_one(backend, f"{NAME}@v2", NAME),
        lambda: releases.rollback(backend, NAME, 2),
    ):
        with pytest.raises(IntegrityError, match="the release record was modified"):
            read()
    assert releases.show(backend, f"{NAME}@current").number == 1


@pytest.mark.parametrize(
    ("field", "value"), [("threshold", 0.05), ("required_secrets", []), ("id_column", "x")]
)
def test_a_release_records_run_settings_edited_by_hand_are_refused(
    backend: Store, cli: Any, field: str, value: Any
) -> None:
    """A record's run settings edited by hand (the threshold from 0.5 to 0.05, the secrets it
    requires emptied) were read as written: predict turned every row positive, or ran without
    the secret, exit 0, and rollback made the edited record current. Each record now carries
    the sha256 of its content: an edited one is exit 7, naming it, for every command."""
    releases.create(
        backend, make_package(backend, "0.2.0"), RunSettings(required_secrets=["DB_PASSWORD"])
    )
    key = f"{FOLDER}/v1.json"
    record = json.loads(backend.read_bytes(key))
    assert record["sha256"] and record["run"]["required_secrets"] == ["DB_PASSWORD"]
    record["run"][field] = value
    if isinstance(backend, LocalStore):
        backend.path(key).chmod(0o644)
    backend.delete(key)
    backend.write(key, json.dumps(record).encode())
    with pytest.raises(IntegrityError, match=r"v1\.json .*the release record was modified"):
        releases.show(backend, f"{NAME}@v1")
    shown = cli("release", "show", f"{NAME}@v1")
    assert shown.exit_code == 7 and "the release record was modified" in one_error_line(shown)
    releases.create(backend, make_package(backend, "0.3.0"), RunSettings())
    back = cli("release", "rollback", "--to", "v1", env={"PIPELINE_MODEL__NAME": NAME})
    assert back.exit_code == 7, back.output
    assert releases.show(backend, f"{NAME}@current").number == 2
