"""Releases: numbered immutable records, history, rollback, and safe concurrent creation.

The in-process tests run on each store implementation (the ``backend`` fixture); the CLI ones
open the same store through PIPELINE_STORE. The test with real processes needs a local folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import event, store_files

from pipeline import releases
from pipeline.errors import ConfigError, NotFoundError, StoreError
from pipeline.settings import RunSettings
from pipeline.store import LocalStore, MemoryStore, Store

NAME = "house-prices"
FOLDER = f"releases/{NAME}"


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, store: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store a test runs on: a LocalStore in the test's store folder, or a MemoryStore that
    the CLI (the ``cli`` fixture) opens too, in place of what PIPELINE_STORE names."""
    if request.param == "local":
        return LocalStore(store)
    memory = MemoryStore()
    monkeypatch.setattr(Store, "from_uri", staticmethod(lambda uri, **_: memory))
    return memory


def placeholder_build(tag: str) -> Any:
    """A verifiable ``artifacts.Build`` of placeholder files (its ids consistent), untrained."""
    from pipeline import artifacts
    from pipeline.store import canonical_json

    inputs = {"seed": 1, "tag": tag}
    files = {n: f"placeholder {n} of {tag}".encode() for n in artifacts.ID_FILES}
    files["provenance.json"] = canonical_json({"inputs": inputs})
    digests = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    bid = artifacts.build_id(digests, inputs)
    entries = {n: {"sha256": digests[n], "size": len(d)} for n, d in files.items()}
    manifest = {"kind": "build", "build_id": bid, "format": 1, "files": entries}
    return artifacts.Build(bid, manifest, {**files, "manifest.json": canonical_json(manifest)})


def make_package(store: Store, version: str = "0.1.0", name: str = NAME, pid: str = "") -> str:
    """Write a package archive and its sidecar the way `pipeline package` lays them out.

    The archive is a real, verifiable package (`release create` opens and checks it) of a
    build made of placeholder files, its ids consistent, without training anything. ``pid``
    overrides the id the sidecar records (for prefix tests; such a package cannot be released).
    """
    from pipeline import package

    build = placeholder_build(f"{name} {version}")
    bid = build.id
    body = package.build_archive(build, name, version)
    folder = f"packages/{name}"
    store.write(f"{folder}/{version}.tar.gz", body)
    pid = pid or hashlib.sha256(body).hexdigest()
    sidecar = {"name": name, "version": version, "package_id": pid, "build_id": bid}
    store.write(f"{folder}/{version}.json", json.dumps(sidecar).encode())
    return pid


def assert_read_only(store: Store, key: str) -> None:
    """The record at ``key`` cannot be rewritten: a 0444 file on disk, refused in memory."""
    if isinstance(store, LocalStore):
        assert stat.S_IMODE(store.path(key).stat().st_mode) == 0o444
    else:
        with pytest.raises(StoreError, match="immutable"):
            store.write(key, b"changed")


def test_create_create_rollback_leaves_v1_current_and_a_three_event_history(
    backend: Store,
) -> None:
    """Two creates then a default rollback make v1 current, with create, create, rollback logged."""
    s = backend
    pid1, pid2 = make_package(s, "0.1.0"), make_package(s, "0.2.0")
    r1 = releases.create(s, pid1, RunSettings())
    r2 = releases.create(s, pid2[:8], RunSettings(threshold=0.7))
    assert (r1.ref, r2.ref) == (f"{NAME}@v1", f"{NAME}@v2")
    assert r2.version == "0.2.0" and r2.run["threshold"] == 0.7
    assert releases.current_number(s, NAME) == 2

    assert releases.rollback(s, NAME) == (2, 1)
    assert releases.show(s, f"{NAME}@current").number == 1
    events = releases.history(s, NAME)
    assert [e["action"] for e in events] == ["create", "create", "rollback"]
    assert [(e["seq"], e["release"], e["previous"]) for e in events] == [
        (1, 1, None),
        (2, 2, 1),
        (3, 1, 2),
    ]


def test_a_record_without_its_create_event_is_no_release_and_its_number_is_reused(
    backend: Store,
) -> None:
    """A crash between writing v2.json and its history event leaves no visible release: list,
    show and @current ignore the orphan, and the next create replaces it as v2."""
    s = backend
    pid1, pid2 = make_package(s, "0.1.0"), make_package(s, "0.2.0")
    releases.create(s, pid1, RunSettings())
    orphan = f"{FOLDER}/v2.json"
    s.write(orphan, json.dumps({"name": NAME, "number": 2, "half": "of a create"}).encode())
    assert [r["number"] for r in releases.list_releases(s, NAME)] == [1]
    assert releases.show(s, f"{NAME}@current").number == 1
    with pytest.raises(NotFoundError, match="v2 does not exist"):
        releases.show(s, f"{NAME}@v2")
    again = releases.create(s, pid2, RunSettings())
    assert (again.number, again.version) == (2, "0.2.0")
    assert s.read_json(orphan)["package_id"] == pid2
    # A crash after the event but before `current` was rewritten: the history still decides.
    s.write(f"{FOLDER}/current", b'{"release":1,"seq":1}')
    assert releases.current_number(s, NAME) == 2


def test_a_create_whose_lock_failed_never_removes_another_writers_record(
    backend: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock that did not hold (a lease holder that stalled, no flock): the other writer's v1,
    made between this create's read and its own write, is left as it is; this one takes v2."""
    s = backend
    mine, theirs = make_package(s), make_package(s, "0.2.0")
    monkeypatch.setattr(releases, "_locked", lambda folder, log=None: contextlib.nullcontext())
    real, raced = s.create, []

    def racing(key: str, data: bytes, *, immutable: bool = False) -> bool:
        if key.endswith("/v1.json") and not raced:
            raced.append(key)
            assert releases.create(s, theirs, RunSettings()).number == 1  # the other writer
        return real(key, data, immutable=immutable)

    monkeypatch.setattr(s, "create", racing)
    assert releases.create(s, mine, RunSettings()).number == 2
    assert releases.show(s, f"{NAME}@v1").package_id == theirs
    assert releases.show(s, f"{NAME}@v2").package_id == mine
    assert [e["release"] for e in releases.history(s, NAME)] == [1, 2]
    assert s.read_json(f"{FOLDER}/current") == {"release": 2, "seq": 2}


def test_current_moves_by_compare_and_swap_only_forward_along_the_history(
    backend: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose `current` update lost a race (the bytes it read changed before its swap)
    reads again, and never moves `current` back behind an event another writer recorded."""
    s = backend
    pid = make_package(s)
    for _ in range(2):
        releases.create(s, pid, RunSettings())
    monkeypatch.setattr(releases, "_locked", lambda folder, log=None: contextlib.nullcontext())
    real, raced = s.swap, []

    def racing(key: str, expected: bytes | None, data: bytes) -> bool:
        if not raced:  # the rollback's swap: a create overtakes it first, and wins
            raced.append(key)
            assert releases.create(s, pid, RunSettings()).number == 3
        return real(key, expected, data)

    monkeypatch.setattr(s, "swap", racing)
    assert releases.rollback(s, NAME, 1) == (2, 1)
    assert [e["action"] for e in releases.history(s, NAME)][-2:] == ["rollback", "create"]
    assert s.read_json(f"{FOLDER}/current") == {"release": 3, "seq": 4}
    assert releases.current_number(s, NAME) == 3
    # A current that some writer already moved further is never moved back.
    s.write(f"{FOLDER}/current", b'{"release":3,"seq":9}')
    releases.rollback(s, NAME, 2)
    assert s.read_json(f"{FOLDER}/current") == {"release": 3, "seq": 9}


def test_numbers_are_never_reused_after_a_rollback(backend: Store) -> None:
    """After rolling back from v2, the next release is v3 and becomes current."""
    s = backend
    pid = make_package(s)
    releases.create(s, pid, RunSettings())
    releases.create(s, pid, RunSettings())
    releases.rollback(s, NAME, 1)
    assert releases.create(s, pid, RunSettings()).number == 3
    assert [r["current"] for r in releases.list_releases(s, NAME)] == [False, False, True]


def test_cli_rollback_to_a_number_and_to_missing_releases(cli: Any, backend: Store) -> None:
    """`rollback --to v1` works; a missing target or nothing below v1 exits 8, changing nothing."""
    pid = make_package(backend)
    for _ in range(3):
        assert cli("release", "create", pid).exit_code == 0
    result = cli("release", "rollback", "--to", "v1")
    assert result.exit_code == 0, result.output
    assert event(result.stdout, "release.rolled_back")["current"] == 1
    assert event(result.stdout, "release.rolled_back")["previous"] == 3

    missing = cli("release", "rollback", "--to", "v9", "--name", NAME)
    assert missing.exit_code == 8
    assert "house-prices@v9 does not exist" in missing.stderr
    assert cli("release", "rollback").exit_code == 8  # v1 is current: nothing before it
    assert backend.read_json(f"{FOLDER}/current") == {"release": 1, "seq": 4}
    assert len(releases.history(backend, NAME)) == 4

    again = cli("release", "rollback", "--to", "v1")  # already current: nothing changes
    assert again.exit_code == 0, again.output
    assert "release.rolled_back" not in again.stdout
    assert event(again.stdout, "release.rollback_skipped")["current"] == 1
    assert backend.read_json(f"{FOLDER}/current") == {"release": 1, "seq": 4}
    assert len(releases.history(backend, NAME)) == 4


def test_cli_rollback_takes_the_reference_release_list_prints(cli: Any, backend: Store) -> None:
    """`rollback --to house-prices@v1` (the reference `release list` prints, which a user
    copies) rolls back as `--to v1` does; it was "malformed release number". A reference to
    the current release, or one whose model is not --name's, is exit 3 changing nothing."""
    pid = make_package(backend)
    for _ in range(2):
        assert cli("release", "create", pid).exit_code == 0
    for to, extra, says in (
        (f"{NAME}@current", [], "names the current release"),
        (f"{NAME}@v1", ["--name", "titanic"], f"is a release of {NAME}, but --name says titanic"),
    ):
        refused = cli("release", "rollback", "--to", to, *extra)
        assert refused.exit_code == 3 and says in refused.stderr, refused.output
    assert backend.read_json(f"{FOLDER}/current") == {"release": 2, "seq": 2}
    done = cli("release", "rollback", "--to", f"{NAME}@v1", "--name", NAME)
    assert done.exit_code == 0, done.output
    assert event(done.stdout, "release.rolled_back")["release"] == f"{NAME}@v1"
    assert backend.read_json(f"{FOLDER}/current") == {"release": 1, "seq": 3}


def test_cli_list_takes_the_model_name_as_an_argument(cli: Any, backend: Store) -> None:
    """`release list titanic` lists titanic's releases as `--name titanic` does (it was a usage
    error); a name and a different --name is exit 3."""
    pid = make_package(backend)
    assert cli("release", "create", pid).exit_code == 0
    listed = cli("release", "list", NAME, env={"PIPELINE_MODEL__NAME": "titanic"})
    assert listed.exit_code == 0, listed.output
    assert event(listed.stdout, "release.list")["name"] == NAME
    assert event(listed.stdout, "release.list")["count"] == 1
    # A model with neither a package nor a release is a misspelt name or the wrong store:
    # exit 8 (a CI job read "count": 0 and went on); one packaged, not released, lists none.
    other = cli("release", "list", "titanic")
    assert other.exit_code == 8 and other.stderr.count("\n") == 1, other.output
    assert "no model 'titanic' in store" in other.stderr and f"its models: {NAME}" in other.stderr
    near = cli("release", "list", NAME + "s")
    assert near.exit_code == 8 and f"did you mean '{NAME}'?" in near.stderr
    # A failed rollback of the misspelt name made its folder (a lock): then it listed 0.
    assert cli("release", "rollback", "--name", NAME + "s").exit_code == 8
    assert cli("release", "list", NAME + "s").exit_code == 8
    make_package(backend, name="titanic")
    assert event(cli("release", "list", "titanic").stdout, "release.list")["count"] == 0
    both = cli("release", "list", NAME, "--name", "titanic")
    assert both.exit_code == 3 and "give one model" in both.stderr


def test_cli_show_current_named_and_bare_references(cli: Any, backend: Store) -> None:
    """`show` resolves name@current, name@v2 and a bare v1 (via PIPELINE_MODEL__NAME)."""
    pid = make_package(backend)
    cli("release", "create", pid)
    cli("release", "create", pid)

    shown = event(cli("release", "show", f"{NAME}@current").stdout, "release.show")
    assert (shown["number"], shown["current"], shown["package_id"]) == (2, True, pid)
    # The machine's settings (chunk_rows, workers) are not a release's: never recorded.
    assert shown["run"] == RunSettings().released()
    assert "chunk_rows" not in shown["run"] and "workers" not in shown["run"]
    assert event(cli("release", "show", f"{NAME}@v2").stdout, "release.show")["release"] == (
        f"{NAME}@v2"
    )
    bare = cli("release", "show", "v1", env={"PIPELINE_MODEL__NAME": NAME})
    assert event(bare.stdout, "release.show")["current"] is False


def test_cli_list_reports_every_release_and_the_current_one(cli: Any, backend: Store) -> None:
    """`list` reports number, version, a 12-character package id and which release is current."""
    pid1, pid2 = make_package(backend, "0.1.0"), make_package(backend, "0.2.0")
    cli("release", "create", pid1)
    cli("release", "create", pid2)
    listed = event(cli("release", "list").stdout, "release.list")
    assert (listed["count"], listed["current"]) == (2, 2)
    rows = listed["releases"]
    assert [(r["number"], r["version"], r["package_id"], r["current"]) for r in rows] == [
        (1, "0.1.0", pid1[:12], False),
        (2, "0.2.0", pid2[:12], True),
    ]
    assert cli("release", "list", "--name", "other").exit_code == 8  # no such model
    make_package(backend, name="other")
    assert event(cli("release", "list", "--name", "other").stdout, "release.list")["count"] == 0


def test_cli_create_from_tarball_path_writes_the_reference_to_the_id_file(
    cli: Any, backend: Store, tmp_path: Path
) -> None:
    """A package given as its .tar.gz in the store is released; --id-file receives name@vN."""
    make_package(backend)
    tarball = backend.location(f"packages/{NAME}/0.1.0.tar.gz")  # a path, or the memory URI
    result = cli("release", "create", tarball, "--id-file", str(tmp_path / "ref"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ref").read_text() == f"{NAME}@v1\n"
    assert event(result.stdout, "release.created")["number"] == 1

    outside = tmp_path / "elsewhere.tar.gz"
    outside.write_bytes(b"x")
    assert cli("release", "create", str(outside)).exit_code == 3


def test_cli_unknown_package_exits_8_naming_the_searched_folder(cli: Any, backend: Store) -> None:
    """A package id that no sidecar carries exits 8 and says where it looked."""
    make_package(backend)
    result = cli("release", "create", "deadbeef" * 8)
    assert result.exit_code == 8
    assert "packages/*/*.json" in result.stderr
    assert not backend.exists("releases")


def test_cli_ambiguous_package_prefix_exits_8_as_a_build_prefix_does(
    cli: Any, backend: Store
) -> None:
    """`release create` with a prefix two packages share: exit 8 listing them, nothing made."""
    make_package(backend, "0.1.0", pid="abcdef01" + "0" * 56)
    make_package(backend, "0.2.0", pid="abcdef01" + "1" * 56)
    result = cli("release", "create", "abcdef01")
    assert result.exit_code == 8, result.stderr
    assert "ambiguous (2 packages match: abcdef010000" in result.stderr
    assert not backend.exists("releases")


def test_ambiguous_or_short_package_prefixes_are_refused(backend: Store) -> None:
    """A prefix shared by two packages (the message lists them) is not found (exit 8, as an
    ambiguous build prefix is); one shorter than 4 hex digits (as for builds: packages asked
    for 8) is not a package id (exit 3)."""
    s = backend
    make_package(s, "0.1.0", pid="abcdef01" + "0" * 56)
    make_package(s, "0.2.0", pid="abcdef01" + "1" * 56)
    with pytest.raises(NotFoundError, match="ambiguous") as caught:
        releases.find_package(s, "abcdef01")
    listed = "abcdef010000 (house-prices 0.1.0), abcdef011111 (house-prices 0.2.0)"
    assert listed in caught.value.message
    assert releases.find_package(s, "abcdef011")["version"] == "0.2.0"
    make_package(s, "0.3.0", pid="f00d" + "2" * 60)
    assert releases.find_package(s, "f00d")["version"] == "0.3.0"
    with pytest.raises(ConfigError, match="at least 4 hex"):
        releases.find_package(s, "f00")


@pytest.mark.parametrize("ref", ["house-prices@2", "house-prices@v0", "a@b@v1", "@v1", "latest"])
def test_cli_malformed_reference_exits_3(cli: Any, ref: str) -> None:
    """A reference that is not name@vN or name@current exits 3 with the expected form."""
    result = cli("release", "show", ref)
    assert result.exit_code == 3
    assert "expected name@vN or name@current" in result.stderr


def test_parse_ref_accepts_the_documented_forms() -> None:
    """name@vN, name@current and a bare vN/current with a default name parse to (name, N|None)."""
    assert releases.parse_ref("m@v12") == ("m", 12)
    assert releases.parse_ref("m@current") == ("m", None)
    assert releases.parse_ref("v3", "m") == ("m", 3)
    assert releases.parse_ref("current", "m") == ("m", None)
    with pytest.raises(ConfigError):
        releases.parse_ref("../x@v1")


def test_required_secret_names_are_recorded_but_no_value_reaches_the_store(
    cli: Any, backend: Store, store: Path
) -> None:
    """required_secrets names go into the record; the secret's value is in no stored file."""
    pid = make_package(backend)
    secret = "kaggle-secret-value-0123456789"
    env = {"PIPELINE_RUN__REQUIRED_SECRETS": '["KAGGLE_KEY"]', "KAGGLE_KEY": secret}
    result = cli("release", "create", pid, env=env)
    assert result.exit_code == 0, result.output
    assert secret not in result.stdout
    record = backend.read_json(f"{FOLDER}/v1.json")
    assert record["run"]["required_secrets"] == ["KAGGLE_KEY"]
    assert record["format"] == 1 and len(record["build_id"]) == 64
    keys = backend.walk("")
    assert keys
    assert not [k for k in keys if secret.encode() in backend.read_bytes(k)]
    if isinstance(backend, LocalStore):  # hidden files too: locks, temp files
        files = store_files(store)
        assert files
        assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_release_records_are_read_only_and_unchanged_by_rollback(
    backend: Store, store: Path
) -> None:
    """Rollbacks move only `current` and history: every v<N>.json keeps its bytes and stays
    read-only (0444 on disk)."""
    s = backend
    pid = make_package(s)
    for _ in range(3):
        releases.create(s, pid, RunSettings())
    records = [f"{FOLDER}/{n}" for n in s.list(FOLDER) if n.startswith("v")]
    assert len(records) == 3
    before = {k: s.read_bytes(k) for k in records}
    releases.rollback(s, NAME)
    releases.rollback(s, NAME, 3)
    releases.rollback(s, NAME)
    assert {k: s.read_bytes(k) for k in records} == before
    for key in records:
        assert_read_only(s, key)
    if isinstance(s, LocalStore):
        assert not [p for p in (store / "releases" / NAME).rglob("*.tmp")]
    with pytest.raises(NotFoundError):
        releases.rollback(s, NAME, 7)


def test_claim_by_exclusive_create_gives_each_concurrent_writer_its_own_number(
    backend: Store,
) -> None:
    """Without any lock, threads racing to claim history numbers by exclusive create (os.link on
    a disk) never share or skip one."""
    key = releases._Key(backend, "claims")
    claimed: list[int] = []

    def worker() -> None:
        for _ in range(25):
            n = releases._claim(key, releases._pointer.EVENT, "%08d.json", lambda n: {"number": n})
            claimed.append(n)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 151))
    for n in claimed:
        assert backend.read_json(f"claims/{n:08d}.json") == {"number": n}


def test_threads_creating_releases_at_once_get_consecutive_numbers(backend: Store) -> None:
    """Four threads each creating 5 releases yield v1..v20 with no gap, one event each, in order."""
    pid = make_package(backend)
    numbers: list[int] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        numbers.extend(releases.create(backend, pid, RunSettings()).number for _ in range(5))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(numbers) == list(range(1, 21))
    assert [r["number"] for r in releases.list_releases(backend, NAME)] == list(range(1, 21))
    events = releases.history(backend, NAME)
    assert [(e["seq"], e["release"], e["action"]) for e in events] == [
        (n, n, "create") for n in range(1, 21)
    ]
    assert releases.current_number(backend, NAME) == 20


def test_two_processes_creating_releases_at_once_lose_and_duplicate_nothing(store: Path) -> None:
    """Two real processes each creating 20 releases yield v1..v40 and 40 distinct create events."""
    pid = make_package(LocalStore(store))
    start_at = time.time() + 2.0  # both interpreters are up before either starts creating
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from pipeline import releases
        from pipeline.settings import RunSettings
        from pipeline.store import LocalStore as Store
        s = Store(Path({str(store)!r}))
        time.sleep(max(0.0, {start_at} - time.time()))
        print(",".join(str(releases.create(s, {pid!r}, RunSettings()).number) for _ in range(20)))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    numbers = [int(n) for out in outs for n in out.strip().split(",")]
    assert sorted(numbers) == list(range(1, 41))

    folder = store / "releases" / NAME
    records = [json.loads(p.read_text()) for p in folder.glob("v*.json")]
    assert sorted(r["number"] for r in records) == list(range(1, 41))
    events = [json.loads(p.read_text()) for p in sorted((folder / "history").glob("*.json"))]
    assert [e["seq"] for e in events] == list(range(1, 41))
    assert [e["action"] for e in events] == ["create"] * 40
    # Creates are ordered by the lock: history follows number order and v40 ends current.
    assert [e["release"] for e in events] == list(range(1, 41))
    assert [e["previous"] for e in events] == [None, *range(1, 40)]
    assert releases.current_number(LocalStore(store), NAME) == 40
    assert not list(folder.rglob("*.tmp"))


def test_a_damaged_archive_is_not_released_and_packaging_again_repairs_it(
    backend: Store,
) -> None:
    """An archive damaged in the store (one byte flipped) was released and made current, and
    every predict of it then failed (exit 7); packaging its build again said 'already packaged
    with different content, bump the version'. Now release create refuses it (exit 7, nothing
    recorded), and packaging the build again writes the archive anew."""
    import structlog

    from pipeline import artifacts, package
    from pipeline.errors import IntegrityError
    from pipeline.settings import ModelSettings, Settings

    build = placeholder_build("damaged")
    files = {n: d for n, d in build.files.items() if n != "manifest.json"}
    artifacts.publish(
        backend, f"builds/{build.id}", files, build.manifest, (artifacts.LATEST, build.id)
    )
    settings = Settings(model=ModelSettings(name=NAME, version="0.1.0"))
    log = structlog.get_logger()
    sealed = package.seal(settings, backend, build.id, log)
    key = f"packages/{NAME}/0.1.0.tar.gz"
    good = backend.read_bytes(key)
    backend.delete(key)  # a local store's archive is read-only: replaced, as damage would
    backend.write(key, good[:200] + bytes([good[200] ^ 1]) + good[201:])
    with pytest.raises(IntegrityError, match="is not released") as caught:
        releases.create(backend, sealed.package_id, RunSettings())
    assert caught.value.exit_code == 7 and not backend.exists(f"{FOLDER}/v1.json")
    assert caught.value.message.count("package its build again") == 1, caught.value.message
    assert package.seal(settings, backend, build.id, log).package_id == sealed.package_id
    assert backend.read_bytes(key) == good
    assert releases.create(backend, sealed.package_id, RunSettings()).number == 1
