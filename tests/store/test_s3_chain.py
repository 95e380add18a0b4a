"""The CLI with ``PIPELINE_STORE=s3://...`` against the suite's real S3-compatible server.

The CI chain runs through the real entry points, and the processes that predict and serve see
only the store's URL and credentials: nothing of the process that trained and released.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.conftest import TITANIC_CSV, event
from tests.conftest import run_fresh as run_cli
from tests.serve.conftest import Served

from pipeline import releases
from pipeline.store import Store

pytestmark = [pytest.mark.s3, pytest.mark.slow]

SMALL = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "15",
    "PIPELINE_MODEL__HIDDEN": "[64]",
    "PIPELINE_MODEL__MEMBERS": "2",
    "PIPELINE_SEED": "0",
}


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output[-3000:]
    return result


def test_the_ci_chain_runs_on_the_object_store_and_another_process_serves_the_release(
    cli: Any, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train -> evaluate gate -> package -> release create/list/show/rollback -> predict -> serve,
    all on s3://; predict and serve run as separate processes given only the URL and the
    AWS_* credentials; nothing of the store is written to the local disk, and the secret key
    appears in no output and no stored object."""
    s3 = s3_server.env(f"chain-{uuid.uuid4().hex[:8]}")
    env = {**s3, **SMALL}
    _ok(cli("train", "--id-file", str(tmp_path / "build.id"), env=env))
    gate = _ok(cli("evaluate", env={**env, "PIPELINE_GATES__MIN_ACCURACY": "0.6"}))
    assert event(gate.stdout, "evaluate.summary")["passed"] is True
    packaged = _ok(cli("package", "--id-file", str(tmp_path / "package.id"), env=env))
    package_id = (tmp_path / "package.id").read_text().strip()
    where = event(packaged.stdout, "package.summary")["path"]  # not the local scratch copy's
    assert where.startswith(s3["PIPELINE_STORE"] + "/packages/titanic/"), where
    _ok(cli("release", "create", package_id, env=env))
    _ok(cli("release", "create", package_id, env=env))
    listed = event(_ok(cli("release", "list", env=env)).stdout, "release.list")
    assert [r["ref"] for r in listed["releases"]] == ["titanic@v1", "titanic@v2"]
    assert listed["current"] == 2
    _ok(cli("release", "rollback", env=env))
    shown = event(_ok(cli("release", "show", "titanic@current", env=env)).stdout, "release.show")
    assert shown["release"] == "titanic@v1"
    assert not (tmp_path / "store").exists()  # the cli fixture's local store: never used

    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(TITANIC_CSV.read_text().splitlines()[:51]) + "\n")
    elsewhere = tmp_path / "elsewhere"  # another working folder: only the URL leads to the store
    elsewhere.mkdir()
    only_url = {**s3, "PIPELINE_LOG_FORMAT": "json", "PIPELINE_ENV_FILE": os.devnull}
    done = run_cli("predict", "--release", "titanic@current", str(rows), "-o",
                   str(tmp_path / "p.csv"), env=only_url, cwd=elsewhere)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 51
    server = Served([], {**only_url, "PIPELINE_RELEASE": "titanic@current",
                         "PIPELINE_SERVE__WORKERS": "1", "PIPELINE_SERVE__PORT": "0"},
                    elsewhere)  # fmt: skip
    try:
        server.wait_ready()
        got = httpx2.post(f"{server.url}/v1/predict", content=rows.read_bytes(),
                         headers={"Content-Type": "text/csv"}).json()  # fmt: skip
        assert got["release"] == "titanic@v1" and len(got["predictions"]) == 50
        assert server.stop() == 0
    finally:
        server.kill()
    assert list(elsewhere.iterdir()) == []
    # The secret key is in no output and no object of the store.
    outputs = done.stdout + done.stderr + server.stderr + "".join(server.lines)
    assert s3["AWS_SECRET_ACCESS_KEY"] not in outputs
    store = _open(s3, monkeypatch)
    for key in store.walk(""):
        assert s3["AWS_SECRET_ACCESS_KEY"].encode() not in store.read_bytes(key), key


def test_eight_processes_creating_five_releases_each_get_v1_to_v40(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 real processes creating 5 releases each on one s3:// store yield v1..v40, one create
    event each in number order, and v40 current: no gap, no duplicate, no lost event."""
    s3 = s3_server.env(f"race-{uuid.uuid4().hex[:8]}")
    from tests.test_releases import NAME, make_package

    opened = _open(s3, monkeypatch)
    pid = make_package(opened)
    start_at = time.time() + 3.0  # every interpreter is up before any starts creating
    script = textwrap.dedent(
        f"""
        import time
        from pipeline import releases
        from pipeline.settings import RunSettings
        from pipeline.store import Store
        s = Store.from_uri({s3["PIPELINE_STORE"]!r}, allow_http=True)
        time.sleep(max(0.0, {start_at} - time.time()))
        print(",".join(str(releases.create(s, {pid!r}, RunSettings()).number) for _ in range(5)))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_process_env(s3)
        )
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    numbers = [int(n) for out in outs for n in out.strip().split(",")]
    assert sorted(numbers) == list(range(1, 41))
    assert [r["number"] for r in releases.list_releases(opened, NAME)] == list(range(1, 41))
    events = releases.history(opened, NAME)
    assert [(e["seq"], e["release"], e["action"]) for e in events] == [
        (n, n, "create") for n in range(1, 41)
    ]
    assert releases.current_number(opened, NAME) == 40
    assert not opened.exists(f"releases/{NAME}/.lock")


def _open(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store in this process (the client reads the AWS_* variables from the environment)."""
    for name, value in s3.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return Store.from_uri(s3["PIPELINE_STORE"], allow_http=True)


def _process_env(s3: dict[str, str]) -> dict[str, str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "AWS_"))}
    return {**base, **s3}


def test_the_release_history_on_s3_is_json_the_local_tools_read(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history event on s3:// is the same canonical JSON as on a local store."""
    s3 = s3_server.env(f"json-{uuid.uuid4().hex[:8]}")
    from tests.test_releases import NAME, make_package

    from pipeline.settings import RunSettings

    opened = _open(s3, monkeypatch)
    release = releases.create(opened, make_package(opened), RunSettings())
    event_ = json.loads(opened.read_bytes(f"releases/{NAME}/history/00000001.json"))
    assert event_["release"] == release.number == 1 and event_["action"] == "create"


def test_a_damaged_local_copy_is_fetched_again_and_package_takes_an_s3_uri(
    cli: Any, s3_server: Any, tmp_path: Path
) -> None:
    """The local copy of a release's archive, damaged after a predict (same size: one byte
    changed), failed every later predict with exit 7 naming the copy, though the object in the
    bucket was intact. Now the copy is downloaded again once and the run goes on. And
    `--package s3://...` (the URI `pipeline package` prints) runs that archive."""
    s3 = s3_server.env(f"scratch-{uuid.uuid4().hex[:8]}")
    env = {**s3, **SMALL}
    _ok(cli("train", env=env))
    _ok(cli("package", "--id-file", str(tmp_path / "package.id"), env=env))
    _ok(cli("release", "create", (tmp_path / "package.id").read_text().strip(), env=env))
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(TITANIC_CSV.read_text().splitlines()[:21]) + "\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    alone = {**s3, "PIPELINE_LOG_FORMAT": "json", "PIPELINE_ENV_FILE": os.devnull,
             "TMPDIR": str(scratch)}  # fmt: skip
    predict = ("predict", "--release", "titanic@current", str(rows))
    first = run_cli(*predict, "-o", str(tmp_path / "a.csv"), env=alone, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    [copy] = scratch.rglob("*.tar.gz")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.chmod(0o644)
    copy.write_bytes(bytes(data))
    again = run_cli(*predict, "-o", str(tmp_path / "b.csv"), env=alone, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert str(scratch) not in again.stderr
    # --package takes the archive's URI in the store (it was read as the path 's3:/...').
    uri = f"{s3['PIPELINE_STORE']}/packages/titanic/0.1.0.tar.gz"
    direct = run_cli("predict", "--package", uri, str(rows), "-o", str(tmp_path / "c.csv"),
                     env=alone, cwd=tmp_path)  # fmt: skip
    assert direct.returncode == 0, direct.stderr[-3000:]
    assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "a.csv").read_bytes()
    relative = run_cli("predict", "--package", "packages/titanic/0.1.0.tar.gz", str(rows),
                       env=alone, cwd=tmp_path)  # fmt: skip
    assert relative.returncode == 8 and f"named by its URI, {s3['PIPELINE_STORE']}/packages/" in (
        relative.stderr
    ), relative.stderr


def test_the_download_cache_keeps_at_most_its_cap_least_recently_used_out_first(
    cli: Any, s3_server: Any, tmp_path: Path
) -> None:
    """The local copies of an s3:// store's objects only grew (a CI runner scoring a release a
    day kept every package it fetched). Now, after each download, copies least recently used
    go until the cache holds PIPELINE_STORE_CACHE_BYTES; a copy used in the last minutes is
    kept (a concurrent predict may be about to open it), and a copy removed is fetched again."""
    s3 = s3_server.env(f"cache-{uuid.uuid4().hex[:8]}")
    env = {**s3, **SMALL}
    _ok(cli("train", env=env))
    for version in ("0.1.0", "0.2.0", "0.3.0"):
        ids = tmp_path / f"{version}.id"
        _ok(cli("package", "--id-file", str(ids), env={**env, "PIPELINE_MODEL__VERSION": version}))
        _ok(cli("release", "create", ids.read_text().strip(), env=env))
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(TITANIC_CSV.read_text().splitlines()[:21]) + "\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    alone = {**s3, "PIPELINE_LOG_FORMAT": "json", "PIPELINE_ENV_FILE": os.devnull,
             "TMPDIR": str(scratch)}  # fmt: skip

    def predict(ref: str, cap: int | None = None) -> bytes:
        out = tmp_path / "p.csv"
        capped = {} if cap is None else {"PIPELINE_STORE_CACHE_BYTES": str(cap)}
        done = run_cli("predict", "--release", ref, str(rows), "-o", str(out),
                       env={**alone, **capped}, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return out.read_bytes()

    def copies() -> dict[str, Path]:  # the cached archives: name -> its folder
        return {p.name: p.parent for p in scratch.glob("pipeline-s3-scratch-*/files/*/*.tar.gz")}

    def used_ago(seconds: float, *folders: Path) -> None:  # time passing, not a mock
        for folder in folders or scratch.glob("pipeline-s3-scratch-*/files/*"):
            os.utime(folder, (time.time() - seconds,) * 2)

    def cached_bytes() -> int:
        return sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file())

    first = predict("titanic@v1")
    predict("titanic@v2", cap=1)  # v1's copies were used seconds ago: kept
    assert sorted(copies()) == ["0.1.0.tar.gz", "0.2.0.tar.gz"]
    used_ago(3600)
    predict("titanic@v3", cap=1)  # the others, an hour old, go; this run's copies stay
    assert sorted(copies()) == ["0.3.0.tar.gz"]
    assert predict("titanic@v1") == first  # removed, fetched again; 5 GiB keeps both
    assert sorted(copies()) == ["0.1.0.tar.gz", "0.3.0.tar.gz"]
    # Least recently used first: v3's archive (two hours) goes, v1's (one hour) stays.
    used_ago(3600)
    used_ago(7200, copies()["0.3.0.tar.gz"])
    archive = copies()["0.1.0.tar.gz"] / "0.1.0.tar.gz"
    half = (copies()["0.3.0.tar.gz"] / "0.3.0.tar.gz").stat().st_size // 2
    predict("titanic@v2", cap=cached_bytes() + half)  # room for v2's record, not its archive
    assert sorted(copies()) == ["0.1.0.tar.gz", "0.2.0.tar.gz"]
    assert archive.exists()
