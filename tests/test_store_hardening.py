"""The store's edges: what PIPELINE_STORE may name, outputs kept out of it, stale temp files.

A store value that names no usable folder, a store that is a file, lies under one or is
read-only is refused before any work with exit 9; an output (-o, --id-file) inside the store
is refused with exit 3 and the store keeps every byte; a `predict -o` killed with SIGKILL
leaves a temporary file that the next run writing the same output removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import REPO, events, invoke_isolated
from tests.test_releases import make_package

from pipeline.errors import ConfigError
from pipeline.store import LocalStore, MemoryStore, Store

ROWS = REPO / "tests" / "fixtures" / "house-prices-test.csv"
FAST = {"PIPELINE_TRAIN__MAX_EPOCHS": "1", "PIPELINE_MODEL__HIDDEN": "[8]"}
NAME = "house-prices"


def refused(result: Any, code: int, *named: str) -> str:
    """One ``error:`` line naming every part of ``named``, exit ``code``, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for part in named:
        assert part in lines[0], (part, lines[0])
    return str(lines[0])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (hidden ones too)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- the interface: contains and check_writable, on both implementations -----------------------


@pytest.fixture(params=["local", "memory"])
def either(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each implementation."""
    return LocalStore(tmp_path / "store") if request.param == "local" else MemoryStore()


def test_contains_is_true_for_the_store_and_what_lies_inside_it(
    either: Store, tmp_path: Path
) -> None:
    """contains() holds for the store itself and every location inside it, nowhere else."""
    either.write("releases/m/v1.json", b"{}")
    inside = either.location("releases/m/v1.json")
    root = inside.removesuffix("/releases/m/v1.json")
    assert either.contains(inside) and either.contains(root)
    assert either.contains(either.location("releases/m/v9.json"))  # not there yet: still inside
    assert not either.contains(str(tmp_path / "elsewhere.csv"))
    assert not either.contains(root + "-sibling/x")
    either.check_writable()  # an empty, fresh store can be written


def test_contains_sees_through_relative_paths_and_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path or a symlinked folder that leads into a local store is inside it."""
    store = LocalStore(tmp_path / "store")
    store.write("releases/m/v1.json", b"{}")
    (tmp_path / "link").symlink_to(tmp_path / "store" / "releases")
    monkeypatch.chdir(tmp_path)
    assert store.contains("store/releases/m/v1.json")
    assert store.contains(str(tmp_path / "link" / "m" / "v1.json"))
    assert not store.contains("predictions.csv")


# --- item 9: what PIPELINE_STORE may name ------------------------------------------------------

BAD_URIS = {
    "empty": "",
    "blank": "   ",
    "unknown-user": "~nouser-pipeline-test/st",
    "file-uri-with-host": "file://fileserver/srv/store",
    "file-uri-relative": "file:store",
    "file-uri-with-query": "file:///srv/store?version=2",
    "other-scheme": "gs://bucket/store",
    "s3-without-bucket": "s3:///store",
    "s3-bucket-with-space": "s3://my bucket/store",
}


@pytest.mark.parametrize("uri", BAD_URIS.values(), ids=BAD_URIS.keys())
def test_a_store_value_that_names_no_folder_here_is_a_setting_error(
    cli: Any, uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty, ~unknown-user, file:// with a host, relative or with a query, another scheme, a
    malformed s3:// URI: exit 3 (a setting's value, like every other one), naming
    PIPELINE_STORE, and nothing is written (the working folder is no store). It was exit 9,
    which says the store itself failed."""
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="PIPELINE_STORE"):
        Store.from_uri(uri)
    refused(cli("release", "list", env={"PIPELINE_STORE": uri}), 3, "PIPELINE_STORE")
    refused(cli("data", "fetch", env={"PIPELINE_STORE": uri}), 3, "PIPELINE_STORE")
    assert sorted(tmp_path.rglob("*")) == before
    local = Store.from_uri(f"file://localhost{tmp_path}/s")  # the host of this machine is fine
    assert isinstance(local, LocalStore) and local.root == tmp_path / "s"


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
def test_readers_refuse_a_store_that_is_a_file_instead_of_listing_nothing(
    cli: Any, tmp_path: Path, where: str
) -> None:
    """`release list`/`show` and `predict` exit 9 saying the store is (under) a file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a store\n")
    store = blocker if where == "is-a-file" else blocker / "store"
    env = {"PIPELINE_STORE": str(store)}
    what = "is a file" if where == "is-a-file" else f"lies under the file {blocker}"
    refused(cli("release", "list", env=env), 9, what)
    refused(cli("release", "show", f"{NAME}@current", env=env), 9, what)
    out = str(tmp_path / "out.csv")
    refused(cli("predict", str(ROWS), "--release", f"{NAME}@v1", "-o", out, env=env), 9, what)
    refused(cli("release", "create", "a" * 64, env=env), 9, what)
    assert blocker.read_text() == "not a store\n"


def test_train_refuses_a_store_that_is_a_file_before_training(cli: Any, tmp_path: Path) -> None:
    """A store that is a file stops `train` before it reads the data, without "free space"."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = cli("train", env={"PIPELINE_STORE": str(blocker / "store"), **FAST})
    message = refused(result, 9, "PIPELINE_STORE", str(blocker))
    assert "free space" not in message
    assert [e["event"] for e in events(result.stdout)] == ["error"]  # no data.fetched, no epoch


# Runs inside a private mount namespace: a read-only tmpfs as the store, then `pipeline train`.
READ_ONLY = r"""
import json, subprocess, sys
store = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", store], check=True)
done = subprocess.run([sys.executable, "-m", "pipeline", "train"], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
"""


def test_train_refuses_a_read_only_store_before_training(tmp_path: Path) -> None:
    """A read-only store stops `train` at once (exit 9, "read-only", no "free space" advice),
    not after the whole training."""
    store = tmp_path / "store"
    store.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    env.update(PIPELINE_STORE=str(store), PIPELINE_LOG_FORMAT="json", **FAST)
    env["PIPELINE_ENV_FILE"] = os.devnull
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", READ_ONLY, str(store)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"no private mount namespace here: {done.stderr[-300:]}")
    result = json.loads(done.stdout)
    assert result["rc"] == 9, result["stderr"]
    lines = result["stderr"].splitlines()
    assert len(lines) == 1 and "read-only" in lines[0] and "free space" not in lines[0], lines
    assert [e["event"] for e in events(result["stdout"])] == ["error"]


# --- item 5: outputs never land in the store ---------------------------------------------------


def test_release_create_with_its_id_file_in_the_store_releases_nothing(
    cli: Any, store: Path
) -> None:
    """--id-file naming a release record is refused (exit 3) before any release is made."""
    pid = make_package(LocalStore(store))
    assert cli("release", "create", pid).exit_code == 0
    record = store / "releases" / NAME / "v1.json"
    before = snapshot(store)
    refused(cli("release", "create", pid, "--id-file", str(record)), 3, "--id-file", "store")
    assert snapshot(store) == before


def test_train_with_its_id_file_in_the_store_is_refused_before_training(
    cli: Any, store: Path
) -> None:
    """`train --id-file <store>/refs/x` exits 3 at once: no training, nothing written."""
    result = cli("train", "--id-file", str(store / "refs" / "build.id"), env=FAST)
    refused(result, 3, "--id-file")
    assert [e["event"] for e in events(result.stdout)] == ["error"]
    assert not store.exists()


def test_an_id_file_in_a_missing_folder_is_refused_before_training(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """`train --id-file missing/build.id` exits 3 at once (not after training), naming the
    folder; nothing is written."""
    result = cli("train", "--id-file", str(tmp_path / "missing" / "build.id"), env=FAST)
    refused(result, 3, "--id-file")
    assert f"the folder {tmp_path / 'missing'} does not exist" in result.stderr
    assert [e["event"] for e in events(result.stdout)] == ["error"]
    assert not store.exists() and not (tmp_path / "missing").exists()


def test_a_failed_run_leaves_no_stale_id_file(cli: Any, store: Path, tmp_path: Path) -> None:
    """`train --id-file build.id` that fails (here on data without its target) removes the
    previous run's id, as `docker build --iidfile` does: a script's next step
    (`pipeline package $(cat build.id)`) took the stale id for this run's. Settings that
    cannot be read (a bad value, an unknown variable: the file was kept) remove it too when it
    holds what the tool writes there; any other file at that path is left as it was."""
    data = tmp_path / "no-target.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    id_file = tmp_path / "build.id"
    id_file.write_text("0" * 64 + "\n")
    env = FAST | {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y"}
    result = cli("train", "--id-file", str(id_file), env=env)
    assert result.exit_code == 4, result.output
    assert not id_file.exists()
    for bad in ({"PIPELINE_MODEL__HIDDEN": "[0]"}, {"PIPELINE_MODEL__HIDEN": "[8]"}):
        id_file.write_text("0" * 64 + "\n")
        refused(cli("train", "--id-file", str(id_file), env=env | bad), 3, "PIPELINE_MODEL__HID")
        assert not id_file.exists()
    ref = tmp_path / "release.id"
    ref.write_text("house-prices@v12\n")
    refused(cli("release", "create", "0" * 8, "--id-file", str(ref), env={"PIPELINE_SEED": "x"}),
            3, "PIPELINE_SEED")  # fmt: skip
    assert not ref.exists()
    id_file.write_text("a,b\n1,2\n")  # not an id: with the settings unread, it may be the data
    refused(cli("train", "--id-file", str(id_file), env=env | {"PIPELINE_MODEL__HIDDEN": "[0]"}),
            3, "PIPELINE_MODEL__HIDDEN")  # fmt: skip
    assert id_file.read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize(
    ("outputs", "says"),
    [
        (["--id-file", "{same}", "--preset-out", "{same}"], "name the same file"),
        (["--preset-out", "{preset}"], "is the preset this command reads"),
        (["--preset-out", "{file}/tuned.toml"], "is a file, not a folder"),
        (["--preset-out", "{txt}"], "is not a .toml file, which PIPELINE_PRESET could not load"),
        # A folder no file can be made in, though its permissions (or root) allow it: the
        # search ran to its end, then failed to write the preset (exit 9).
        (
            ["--preset-out", "/proc/tuned.toml"],
            "the folder /proc cannot be written (No such file or directory): make it writable",
        ),
    ],
)
def test_tune_outputs_that_collide_or_cannot_be_written_are_refused_before_the_search(
    cli: Any, store: Path, tmp_path: Path, outputs: list[str], says: str
) -> None:
    """--id-file and --preset-out naming one file (the preset was lost), --preset-out naming the
    preset being read (overwritten, its [tune] section gone), under a file, or not a .toml file
    (written, then refused by PIPELINE_PRESET): exit 3 at once, not after the search; nothing
    written."""
    preset = tmp_path / "mine.toml"
    preset.write_text("[train]\nmax_epochs = 3\n")
    (tmp_path / "afile").write_text("x")
    names = {"same": tmp_path / "out.toml", "preset": preset, "file": tmp_path / "afile",
             "txt": tmp_path / "winner.txt"}  # fmt: skip
    args = [a.format(**names) for a in outputs]
    result = cli("tune", "--trials", "2", *args, env={"PIPELINE_PRESET": str(preset)})
    refused(result, 3, says)
    assert not store.exists() and not (tmp_path / "out.toml").exists()
    assert not (tmp_path / "winner.txt").exists()
    assert preset.read_text() == "[train]\nmax_epochs = 3\n"


def test_a_failed_tune_leaves_no_stale_preset(cli: Any, store: Path, tmp_path: Path) -> None:
    """`tune --preset-out tuned.toml` that fails sets the previous run's winner aside, as it
    removes the --id-file: `PIPELINE_PRESET=tuned.toml pipeline train`, a script's next step,
    trained the stale winner silently. It is renamed tuned.toml.prev, not deleted: a typo or a
    Ctrl-C cost the only copy of the last search's result."""
    data = tmp_path / "no-target.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    preset = tmp_path / "tuned.toml"
    winner = "# Written by `pipeline tune`: tune 0123, trial 2 of the search,\n[train]\n"
    preset.write_text(winner)
    env = {"PIPELINE_DATA__SOURCE": str(data), "PIPELINE_DATA__TARGET": "y"}
    result = cli("tune", "--trials", "2", "--preset-out", str(preset), env=env)
    assert result.exit_code == 4, result.output
    assert not preset.exists()
    assert (tmp_path / "tuned.toml.prev").read_text() == winner
    preset.write_text(winner.replace("0123", "4567"))  # settings that do not load: the same
    result = cli("tune", "--preset-out", str(preset), env={**env, "PIPELINE_TUNE__TRAILS": "3"})
    assert result.exit_code == 3, result.output
    assert not preset.exists() and "4567" in (tmp_path / "tuned.toml.prev").read_text()


def test_an_output_of_the_other_kind_is_refused_and_nothing_is_removed(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """--preset-out naming a file that holds an id, or --id-file a preset `tune` wrote: each
    was taken for the tool's own output and deleted (a preset given to --id-file was replaced
    by a 64-character id, exit 0). Refused now, exit 3, and the other output is kept too."""
    an_id = "ab" * 32 + "\n"
    winner = "# Written by `pipeline tune`: tune 0123, trial 2 of the search,\n[train]\n"
    (tmp_path / "b.id").write_text(an_id)
    (tmp_path / "z.toml").write_text(an_id)
    result = cli("tune", "--trials", "2", "--id-file", str(tmp_path / "b.id"),
                 "--preset-out", str(tmp_path / "z.toml"), env=FAST)  # fmt: skip
    refused(result, 3, f"--preset-out {tmp_path / 'z.toml'} exists and holds something other")
    assert (tmp_path / "b.id").read_text() == an_id == (tmp_path / "z.toml").read_text()
    (tmp_path / "w.toml").write_text(winner)
    result = cli("tune", "--trials", "2", "--id-file", str(tmp_path / "w.toml"), env=FAST)
    refused(result, 3, f"--id-file {tmp_path / 'w.toml'} exists and holds something other")
    assert (tmp_path / "w.toml").read_text() == winner


@pytest.mark.parametrize(
    ("command", "option", "name", "what"),
    [(["tune", "--trials", "2"], "--preset-out", "tuned.toml", "a preset `pipeline tune` wrote"),
     (["train"], "--id-file", "notes.txt", "an id")],
)  # fmt: skip
def test_an_output_file_that_holds_other_work_is_refused_and_kept(
    cli: Any, store: Path, tmp_path: Path, command: list[str], option: str, name: str, what: str
) -> None:
    """A hand-written preset at --preset-out (or notes at --id-file) was deleted as the
    previous run's winner, and lost for good when the search then failed. It is refused
    before any work, exit 3, and kept; an empty file is replaced as before."""
    kept = tmp_path / name
    kept.write_text("# my notes\n[train]\nmax_epochs = 3\n")
    result = cli(*command, option, str(kept), env=FAST)
    refused(result, 3, f"{option} {kept} exists and holds something other than {what}")
    assert kept.read_text() == "# my notes\n[train]\nmax_epochs = 3\n"
    assert not (store / "builds").exists() and not (store / "tunes").exists()


def test_data_fetch_with_its_id_file_in_the_store_is_refused(cli: Any, store: Path) -> None:
    """`data fetch --id-file` inside the store exits 3 and writes no id there."""
    target = store / "datasets" / "latest.id"
    refused(cli("data", "fetch", "--id-file", str(target)), 3, "--id-file")
    assert not target.exists()


@dataclass
class Chain:
    """A store with a trained build, its package and release house-prices@v1."""

    root: Path
    store: Path
    env: dict[str, str]

    def invoke(self, *args: str, **extra: str) -> Any:
        return invoke_isolated(*args, root=self.root, env={**self.env, **extra})


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """train -> package -> release create, on a one-epoch model."""
    root = tmp_path_factory.mktemp("chain")
    env = {"PIPELINE_STORE": str(root / "store"), **FAST}
    state = Chain(root, root / "store", env)
    assert state.invoke("train").exit_code == 0
    assert state.invoke("package", "--id-file", str(root / "package.id")).exit_code == 0
    package_id = (root / "package.id").read_text().strip()
    assert state.invoke("release", "create", package_id).exit_code == 0
    yield state


def _inside(chain: Chain, where: str) -> str:
    store = chain.store
    return {
        "release-record": str(store / "releases" / NAME / "v1.json"),
        "history-event": str(store / "releases" / NAME / "history" / "00000002.json"),
        "package-sidecar": str(store / "packages" / NAME / "0.1.0.json"),
        "package-archive": str(store / "packages" / NAME / "0.1.0.tar.gz"),
        "new-file": str(store / "predictions.csv"),
        "through-a-symlink": str(chain.root / "to-releases" / NAME / "v1.json"),
    }[where]


@pytest.mark.parametrize(
    "where",
    ["release-record", "history-event", "package-sidecar", "package-archive", "new-file",
     "through-a-symlink"],
)  # fmt: skip
def test_predict_output_inside_the_store_is_refused_and_the_release_keeps_working(
    chain: Chain, where: str
) -> None:
    """`predict -o` into the store (a record, an event, a package, a new file, via a symlink)
    exits 3 naming -o; the store keeps every byte and predicts afterwards."""
    link = chain.root / "to-releases"
    if not link.exists():
        link.symlink_to(chain.store / "releases")
    before = snapshot(chain.store)
    result = chain.invoke(
        "predict", str(ROWS), "--release", f"{NAME}@v1", "-o", _inside(chain, where)
    )
    refused(result, 3, "-o", "inside the store")
    assert snapshot(chain.store) == before
    out = chain.root / "after.csv"
    again = chain.invoke("predict", str(ROWS), "--release", f"{NAME}@v1", "-o", str(out))
    assert again.exit_code == 0, again.stderr


def test_package_id_file_onto_its_own_sidecar_is_refused(chain: Chain) -> None:
    """`package --id-file <its sidecar>` exits 3 and the sidecar keeps its bytes."""
    sidecar = chain.store / "packages" / NAME / "0.1.0.json"
    before = sidecar.read_bytes()
    refused(chain.invoke("package", "--id-file", str(sidecar)), 3, "--id-file")
    assert sidecar.read_bytes() == before


def test_predict_into_a_folder_that_is_a_file_is_one_line(chain: Chain) -> None:
    """-o under a regular file exits 3 at once with one line naming the path and the file in
    the way (no traceback; it was exit 9 at the end, as a write failure)."""
    blocker = chain.root / "plain-file"
    blocker.write_text("x")
    out = blocker / "out.csv"
    result = chain.invoke("predict", str(ROWS), "--release", f"{NAME}@v1", "-o", str(out))
    refused(result, 3, str(out), "-o", f"{blocker} is a file, not a folder")


# --- item 10: a killed predict leaves no temporary file for good -------------------------------


def _temps(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


def test_a_predict_killed_with_sigkill_leaves_a_temp_file_the_next_run_removes(
    chain: Chain,
) -> None:
    """SIGKILL in the middle of `predict -o` leaves .out.csv.<id>.tmp; the next predict to the
    same output removes it and writes the output."""
    big = chain.root / "big.csv"
    if not big.exists():
        pd.concat([pd.read_csv(ROWS)] * 60).to_csv(big, index=False)  # ~88,000 rows
    out = chain.root / "killed" / "out.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAGGLE_"))}
    env.update(chain.env, PIPELINE_LOG_FORMAT="json", PIPELINE_RUN__CHUNK_ROWS="200")
    env.update(PIPELINE_ENV_FILE=os.devnull)
    args = [sys.executable, "-m", "pipeline", "predict", str(big), "--release", f"{NAME}@v1"]
    proc = subprocess.Popen([*args, "-o", str(out)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _temps(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "predict finished before it was killed"
    left = _temps(out)
    assert len(left) == 1 and not out.exists()

    result = chain.invoke("predict", str(ROWS), "--release", f"{NAME}@v1", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert _temps(out) == [] and len(pd.read_csv(out)) == len(pd.read_csv(ROWS))


# A writer in its own process: writes one chunk to its temp file, then waits for a line on
# stdin; "commit" commits, anything else (or a kill) leaves the temp file as it is.
WRITER = """
import sys
from pathlib import Path
import pandas as pd
from pipeline.predict.writers import Writer
w = Writer(Path(sys.argv[1]), "csv")
w.write(pd.DataFrame({"prediction": [1.0, 2.0]}))
print(w.tmp, flush=True)
if sys.stdin.readline().strip() == "commit":
    w.commit()
"""


def test_the_sweep_removes_a_dead_runs_temp_file_and_keeps_a_live_ones(tmp_path: Path) -> None:
    """Two writers of one output: the killed one's temp file is removed by the next writer,
    the live one's is kept, and the live one still commits."""
    out = tmp_path / "out.csv"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    dead, live = procs
    temps = [Path(p.stdout.readline().strip()) for p in procs if p.stdout is not None]
    dead.kill()
    dead.wait(timeout=30)
    assert all(t.exists() for t in temps)

    from pipeline.predict.writers import Writer

    writer = Writer(out, "csv")
    writer.write(pd.DataFrame({"prediction": [3.0]}))
    writer.commit()
    assert not temps[0].exists() and temps[1].exists()
    assert live.stdin is not None
    live.communicate("commit\n", timeout=30)
    assert live.returncode == 0
    assert not temps[1].exists() and pd.read_csv(out)["prediction"].tolist() == [1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


# Stages a folder in a store of its own process, then waits for a line on stdin (or a kill).
STAGER = """
import sys
from pathlib import Path
from pipeline.store import LocalStore
with LocalStore(Path(sys.argv[1])).staging() as folder:
    (folder / "weights.pt").write_bytes(bytes(1000))
    print(folder, flush=True)
    sys.stdin.readline()
"""


def test_a_killed_runs_staging_folder_is_removed_by_the_next_staging(tmp_path: Path) -> None:
    """A train killed with SIGKILL leaves its staging folder under tmp/; the next staging()
    removes it and keeps the folder of a run still at work."""
    root = tmp_path / "store"
    procs = [
        subprocess.Popen([sys.executable, "-c", STAGER, str(root)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    dead, live = procs
    staged = [Path(p.stdout.readline().strip()) for p in procs if p.stdout is not None]
    dead.kill()
    dead.wait(timeout=30)
    assert all(folder.exists() for folder in staged)
    with LocalStore(root).staging() as mine:
        assert not staged[0].exists() and staged[1].exists() and mine.exists()
    live.communicate("\n", timeout=30)
    assert live.returncode == 0
    assert list((root / "tmp").iterdir()) == []


def test_running_a_command_again_repairs_its_damaged_record(cli: Any, store: Path) -> None:
    """A build whose file was edited is refused (exit 7, "retrain it"); training the same
    recipe again gives the same id and used to find the folder there and keep it damaged.
    The folder is now the rerun's build (a stray file removed), as a tune's would be."""
    from tests.conftest import event

    build = event(cli("train", env=FAST).stdout, "train.summary")["build_id"]
    folder = store / "builds" / build
    original = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "metrics.json").write_text("{}")
    (folder / "stray.txt").write_text("x")
    refused(cli("evaluate", build, env=FAST), 7, build)
    assert event(cli("train", env=FAST).stdout, "train.summary")["build_id"] == build
    repaired = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(repaired) == sorted(original) and cli("evaluate", build).exit_code == 0
    # A sound record is kept as the first run wrote it (its timings too), not rewritten.
    assert event(cli("train", env=FAST).stdout, "train.summary")["build_id"] == build
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == repaired


def test_a_lost_or_garbled_latest_build_pointer_is_named_as_such(cli: Any, store: Path) -> None:
    """`refs/latest-build` removed (a partial copy of the store) said "no build in store: run
    pipeline train first" beside a build; garbage in it blamed a build named 'garbage' as
    damaged (exit 7). Both now name the pointer, count the builds, and `package BUILD` works."""
    env = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "1"}
    trained = cli("train", env=env)
    assert trained.exit_code == 0, trained.output
    pointer = store / "refs" / "latest-build"
    build = pointer.read_text().strip()
    for state, said in ((None, "is missing"), ("garbage\n", "names 'garbage', no build there")):
        pointer.unlink(missing_ok=True)
        if state is not None:
            pointer.write_text(state)
        refused = cli("package", env=env)
        assert refused.exit_code == 8, refused.output
        line = refused.stderr.strip()
        assert f"refs/latest-build {said}, and builds/ holds 1 build(s): name the build" in line
        assert "Traceback" not in refused.output and not (store / "packages").exists()
    assert cli("package", build[:8], env=env).exit_code == 0


def test_a_file_missing_from_a_build_is_named_missing(cli: Any, store: Path) -> None:
    """A build's file deleted by hand was reported as "does not match its manifest digest"
    (its bytes read as empty); it is named missing now, exit 7, nothing packaged."""
    trained = cli("train", env={"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "1"})
    assert trained.exit_code == 0, trained.output
    build = (store / "refs" / "latest-build").read_text().strip()
    (store / "builds" / build / "history.json").unlink()
    result = cli("package", build[:8], env={"PIPELINE_PRESET": "titanic"})
    assert result.exit_code == 7, result.output
    assert result.stderr.strip() == (
        f"error: file history.json of build {build} is missing, though its manifest lists it: "
        "the build is damaged; retrain it"
    )
    assert not (store / "packages").exists()
