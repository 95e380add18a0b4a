"""The Store contract, checked on every implementation: LocalStore and MemoryStore."""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import run_cli

from pipeline.errors import ConfigError, StoreError
from pipeline.store import LocalStore, MemoryStore, Store


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each implementation (overrides the conftest's store folder)."""
    return LocalStore(tmp_path / "store") if request.param == "local" else MemoryStore()


def _race(count: int, work: Callable[[int], object]) -> None:
    """Run ``work(i)`` in ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)


def test_write_read_exists_list_and_delete(store: Store) -> None:
    """Written bytes read back; folders exist and list their visible names; delete removes."""
    store.write("a/b/c.json", b"{}")
    store.write("a/b/d", b"one")
    store.write("a/b/d", b"two")  # replaces
    store.write("a/.hidden", b"x")
    assert store.read_bytes("a/b/c.json") == b"{}" and store.read_bytes("a/b/d") == b"two"
    assert store.exists("a") and store.exists("a/b") and store.exists("a/b/d")
    assert not store.exists("a/x") and not store.exists("b")
    assert (store.list("a"), store.list("a/b"), store.list("nothing")) == (
        ["b"],
        ["c.json", "d"],
        [],
    )
    assert store.list("a/b/d") == []  # an object has nothing below it
    store.delete("a/b/d")
    store.delete("a/b/d")  # deleting what is gone is no error
    assert not store.exists("a/b/d") and store.list("a/b") == ["c.json"]


def test_delete_all_empties_a_prefix_and_leaves_no_empty_folder(store: Store) -> None:
    """A search's partial results (tune-partial/<hash>/) went, but their folders stayed, one
    empty folder per search. Now the emptied folders go too, up to the first that holds more;
    an object store has none to leave."""
    store.write("partial/aaa/0.json", b"{}")
    store.write("partial/aaa/1.json", b"{}")
    store.write("kept/x.json", b"{}")
    store.delete_all("partial/aaa")
    assert store.list("partial/aaa") == [] and not store.exists("partial")
    assert store.read_bytes("kept/x.json") == b"{}"
    store.write("partial/bbb/0.json", b"{}")
    store.write("partial/ccc/0.json", b"{}")
    store.delete_all("partial/bbb")
    assert store.list("partial") == ["ccc"]  # another search's folder: kept, and its parent
    store.delete_all("nothing/here")  # no such prefix: no error
    if isinstance(store, LocalStore):
        assert sorted(p.name for p in store.root.iterdir()) == ["kept", "partial"]


def test_json_helpers_write_canonical_json_and_read_it_back(store: Store) -> None:
    """write_json stores sorted, newline-terminated JSON that read_json parses back."""
    store.write_json("x.json", {"b": 1, "a": [1, 2]})
    assert store.read_bytes("x.json").startswith(b'{\n  "a"') and store.read_bytes(
        "x.json"
    ).endswith(b"}\n")
    assert store.read_json("x.json") == {"a": [1, 2], "b": 1}


def test_missing_keys_raise_key_error(store: Store) -> None:
    """Reading an absent key, or a folder, raises KeyError; local_file too."""
    store.write("folder/file", b"x")
    for key in ("absent", "folder", "folder/absent"):
        with pytest.raises(KeyError):
            store.read_bytes(key)
        with pytest.raises(KeyError):
            store.local_file(key)


@pytest.mark.parametrize("key", ["", "/", "../x", "a/../b", "a/./b"])
def test_keys_with_dot_parts_or_no_name_are_refused(store: Store, key: str) -> None:
    """A key that is empty or climbs out of the store is a StoreError, whatever the method."""
    with pytest.raises(StoreError, match="invalid store key"):
        store.write(key, b"x")
    with pytest.raises(StoreError, match="invalid store key"):
        store.read_bytes(key)


def test_walk_lists_every_object_below_a_prefix_except_hidden_ones(store: Store) -> None:
    """walk returns full keys at any depth, sorted, without dot files or dot folders; "" is all."""
    for key in ("r/v1.json", "r/history/00000001.json", "r/current", "r/.tmp/x", "other/y"):
        store.write(key, b"x")
    with store.lock("r/.lock"):
        pass
    assert store.walk("r") == ["r/current", "r/history/00000001.json", "r/v1.json"]
    assert store.walk("absent") == [] and store.walk("r/current") == []
    assert store.walk("") == ["other/y", "r/current", "r/history/00000001.json", "r/v1.json"]


def test_create_is_exclusive_and_keeps_the_first_bytes(store: Store) -> None:
    """A second create of a key returns False and leaves the first writer's bytes."""
    assert store.create("k", b"first") is True
    assert store.create("k", b"second") is False
    assert store.read_bytes("k") == b"first"
    store.write("folder/inside", b"x")
    assert store.create("folder", b"y") is False  # a folder takes the name too


def test_create_from_racing_threads_has_exactly_one_winner(store: Store) -> None:
    """Eight threads creating one key at once: one True, seven False, the winner's bytes kept."""
    results: dict[int, bool] = {}
    _race(8, lambda i: results.__setitem__(i, store.create("race/k", f"writer {i}".encode())))
    winners = [i for i, won in results.items() if won]
    assert len(results) == 8 and len(winners) == 1
    assert store.read_bytes("race/k") == f"writer {winners[0]}".encode()


def check_swap(store: Store) -> None:
    """Compare-and-swap: replaces only the bytes the caller read; one winner among racers."""
    assert store.swap("cas/current", None, b"1") is True  # None: only if absent
    assert store.swap("cas/current", None, b"2") is False
    assert store.swap("cas/current", b"0", b"2") is False  # not what is there
    assert store.read_bytes("cas/current") == b"1"
    assert store.swap("cas/current", b"1", b"2") is True
    assert store.read_bytes("cas/current") == b"2"
    assert store.swap("cas/absent", b"1", b"2") is False and not store.exists("cas/absent")
    results: dict[int, bool] = {}
    _race(8, lambda i: results.__setitem__(i, store.swap("cas/current", b"2", b"%d" % (10 + i))))
    winners = [i for i, won in results.items() if won]
    assert len(results) == 8 and len(winners) == 1
    assert store.read_bytes("cas/current") == b"%d" % (10 + winners[0])
    assert store.list("cas") == ["current"]  # no lock or temp file shows


def test_swap_is_a_compare_and_swap_with_one_winner(store: Store) -> None:
    check_swap(store)


def test_immutable_create_is_exclusive_and_can_be_deleted(store: Store) -> None:
    """An immutable record is never replaced by a create; delete removes it (release orphans)."""
    assert store.create("rec/v1.json", b"record", immutable=True)
    assert not store.create("rec/v1.json", b"other", immutable=True)
    assert store.read_bytes("rec/v1.json") == b"record"
    store.delete("rec/v1.json")
    assert store.create("rec/v1.json", b"again", immutable=True)
    assert store.read_bytes("rec/v1.json") == b"again"


def test_local_immutable_records_are_read_only_files(tmp_path: Path) -> None:
    """On a local disk an immutable record is a 0444 file; a plain create stays owner-writable."""
    local = LocalStore(tmp_path)
    local.create("rec", b"x", immutable=True)
    local.create("plain", b"x")
    assert stat.S_IMODE(local.path("rec").stat().st_mode) == 0o444
    assert stat.S_IMODE(local.path("plain").stat().st_mode) & 0o200


def test_memory_store_refuses_to_rewrite_an_immutable_record() -> None:
    """MemoryStore.write over an immutable record is a StoreError and changes nothing."""
    memory = MemoryStore()
    memory.create("rec", b"x", immutable=True)
    with pytest.raises(StoreError, match="immutable"):
        memory.write("rec", b"y")
    assert memory.read_bytes("rec") == b"x"


def test_staging_then_publish_makes_every_file_appear_and_removes_the_scratch(
    store: Store,
) -> None:
    """Nothing of a staged folder is visible before publish; after it every file is."""
    with store.staging() as staged:
        (staged / "sub").mkdir()
        (staged / "a.json").write_bytes(b"a")
        (staged / "sub" / "b.bin").write_bytes(b"b")
        assert not store.exists("builds/x") and store.walk("builds") == []
        assert store.publish(staged, "builds/x") is True
    assert not staged.exists()
    assert store.walk("builds/x") == ["builds/x/a.json", "builds/x/sub/b.bin"]
    assert store.read_bytes("builds/x/sub/b.bin") == b"b"
    assert store.list("builds") == ["x"]


def test_a_second_publish_of_the_same_key_returns_false_and_keeps_the_first(
    store: Store,
) -> None:
    """Content-addressed folders are published once: a later publish is dropped."""
    for content, expected in ((b"first", True), (b"second", False)):
        with store.staging() as staged:
            (staged / "f").write_bytes(content)
            assert store.publish(staged, "datasets/d") is expected
    assert store.read_bytes("datasets/d/f") == b"first"


def test_staging_is_removed_when_the_block_fails(store: Store) -> None:
    """An exception inside staging() propagates and the scratch folder is gone."""
    with pytest.raises(RuntimeError, match="boom"), store.staging() as staged:
        (staged / "half").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not staged.exists() and not store.exists("builds")


def test_readers_see_a_published_folder_whole_or_not_at_all(store: Store) -> None:
    """A reader walking the key while 200 files are published never sees a part of them."""
    names = [f"f{i:03d}" for i in range(200)]
    expected = [f"builds/x/{n}" for n in names]
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            found = store.walk("builds/x")
            seen.append(len(found))
            if found == expected:
                return

    reader = threading.Thread(target=read)
    with store.staging() as staged:
        for n in names:
            (staged / n).write_bytes(n.encode())
        reader.start()
        store.publish(staged, "builds/x")
    reader.join(timeout=10)
    stop.set()
    assert set(seen) <= {0, 200} and seen[-1] == 200


def test_refs_are_none_until_written_and_then_the_last_value(store: Store) -> None:
    """read_ref is None for a reference never written, then whatever write_ref set last."""
    assert store.read_ref("latest-build") is None
    store.write_ref("latest-build", "abc")
    store.write_ref("latest-build", "def")
    assert store.read_ref("latest-build") == "def"
    assert store.read_bytes("refs/latest-build") == b"def\n"


def test_lock_excludes_a_second_thread_until_released(store: Store) -> None:
    """While one thread holds a lock a second one waits for it, and gets it once released."""
    held, release, acquired = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with store.lock("releases/m/.lock"):
            held.set()
            release.wait(timeout=10)

    def waiter() -> None:
        with store.lock("releases/m/.lock"):
            acquired.set()

    first = threading.Thread(target=holder)
    first.start()
    assert held.wait(timeout=10)
    second = threading.Thread(target=waiter)
    second.start()
    assert not acquired.wait(timeout=0.05)  # blocked while the first thread holds it
    release.set()
    assert acquired.wait(timeout=10)
    first.join(timeout=10)
    second.join(timeout=10)
    with store.lock("releases/other/.lock"), store.lock("releases/m/.lock"):
        pass  # locks of other names are independent, and a released lock can be taken again


def test_local_file_is_a_readable_file_named_like_the_object(store: Store) -> None:
    """local_file gives a local path holding the object's bytes, under the object's file name."""
    store.write("packages/m/0.1.0.tar.gz", b"\x1f\x8b package bytes")
    path = store.local_file("packages/m/0.1.0.tar.gz")
    assert path.name == "0.1.0.tar.gz" and path.read_bytes() == b"\x1f\x8b package bytes"
    assert store.local_file("packages/m/0.1.0.tar.gz").read_bytes() == path.read_bytes()


def test_location_and_key_of_are_inverses(store: Store, tmp_path: Path) -> None:
    """key_of(location(k)) is k; a location outside the store, or the store itself, is None."""
    store.write("packages/m/0.1.0.tar.gz", b"x")
    where = store.location("packages/m/0.1.0.tar.gz")
    assert where.endswith("/packages/m/0.1.0.tar.gz")
    assert store.key_of(where) == "packages/m/0.1.0.tar.gz"
    assert store.key_of(str(tmp_path / "elsewhere.tar.gz")) is None
    assert store.key_of(store.location("packages").removesuffix("/packages")) is None


def test_from_uri_opens_a_folder_store_and_refuses_other_schemes(tmp_path: Path) -> None:
    """A path or file:// URI opens a LocalStore there; s3:// an S3Store (tests/store/test_s3.py);
    any other scheme is a ConfigError (exit 3)."""
    opened = Store.from_uri(f"file://{tmp_path}/s")
    assert isinstance(opened, LocalStore) and opened.root == tmp_path / "s"
    assert isinstance(Store.from_uri(str(tmp_path)), LocalStore)
    with pytest.raises(ConfigError, match=r"unsupported store URI .* or s3://bucket/prefix"):
        Store.from_uri("gs://bucket/store")


@pytest.mark.parametrize("uri", ["s3://some-bucket/ml?token=Leak4", "s3://some-bucket/ml#frag"])
def test_an_s3_store_uri_with_a_query_or_fragment_is_refused_without_echoing_it(
    uri: str, tmp_path: Path
) -> None:
    """``s3://bucket/ml?token=...`` was accepted: every key began ``ml?token=...``, so the
    token was in key names anyone listing the bucket saw. Now exit 3 before any request, the
    query masked in the line."""
    from pipeline.store.s3 import S3Store

    with pytest.raises(ConfigError, match=r"has a '\?' or '#'") as caught:
        Store.from_uri(uri)
    assert "Leak4" not in str(caught.value)
    done = run_cli("report", env={"PIPELINE_STORE": uri, "AWS_ACCESS_KEY_ID": "k",
                                  "AWS_SECRET_ACCESS_KEY": "s"}, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 3 and "Leak4" not in done.stdout + done.stderr, done.stderr
    # A URI's scheme is case-insensitive: S3:// was refused with the bucket-name rule.
    upper = Store.from_uri("S3://some-bucket/ml")
    assert isinstance(upper, S3Store) and (upper.bucket, upper.prefix) == ("some-bucket", "ml")


def test_an_http_endpoint_without_allow_http_is_a_config_error_before_any_request(
    tmp_path: Path,
) -> None:
    """AWS_ENDPOINT_URL=http://... with AWS_ALLOW_HTTP unset was exit 9 once a request had
    been tried and refused; two settings that contradict each other are exit 3, at once."""
    with pytest.raises(ConfigError, match="AWS_ALLOW_HTTP is not true"):
        Store.from_uri("s3://some-bucket/x", s3={"endpoint": "http://127.0.0.1:9"})
    env = {"PIPELINE_STORE": "s3://some-bucket/x", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_ALLOW_HTTP": "false", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}  # fmt: skip
    done = run_cli("report", env=env, cwd=tmp_path)
    assert done.returncode == 3 and "set AWS_ALLOW_HTTP=true" in done.stderr, done.stderr


def test_an_s3_stores_local_scratch_is_this_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies of an s3:// store's objects went to one /tmp/pipeline-s3-scratch shared by
    every user (0755, files 0444: readable by all). Now a folder per user, mode 0700; a temp
    folder that cannot hold it is a StoreError saying to set TMPDIR (no request is made)."""
    import os
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    Store.from_uri("s3://some-bucket/x")
    scratch = tmp_path / f"pipeline-s3-scratch-{os.getuid()}"
    assert scratch.is_dir() and stat.S_IMODE(scratch.stat().st_mode) == 0o700
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the temp folder should be")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    with pytest.raises(StoreError, match="set TMPDIR"):
        Store.from_uri("s3://some-bucket/x")
