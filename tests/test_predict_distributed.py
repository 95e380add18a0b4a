"""`pipeline predict --workers N` on Ray: the single-process bytes, partitioned, with a manifest.

One small Titanic release (in-process set-up) and eight input files (CSV and Parquet, one with a
bad cell). Embedded Ray and the suite's real two-node cluster (``ray_cluster``) must both write,
part by part, the bytes single-process `pipeline predict` writes for each file; the refusals
happen before Ray starts, and a failing run leaves nothing at the output path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import TITANIC_CSV, _process_env, event, events, invoke_isolated
from tests.conftest import run_fresh as run_cli
from tests.ray_cluster import descendants_named

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "15",
    "PIPELINE_MODEL__HIDDEN": "[64]",
    # Bad cells become an `error` column: the parts must carry the same messages (row, file).
    "PIPELINE_RUN__ON_ERROR": "column",
}
FILES = 8


def _done(result: Any) -> Any:
    assert result.exit_code == 0, result.output[-2000:]
    return result


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A released Titanic model, its input split into 8 files, and each file's single-process
    predictions (``ref/<stem>.csv``), all under one folder that commands run in."""
    root = tmp_path_factory.mktemp("dist")
    env = {**FAST, "PIPELINE_STORE": str(root / "store")}
    _done(invoke_isolated("train", root=root, env=env))
    _done(invoke_isolated("package", "--id-file", str(root / "package.id"), root=root, env=env))
    package_id = (root / "package.id").read_text().strip()
    release = ("release", "create", package_id, "--id-file", str(root / "release.id"))
    _done(invoke_isolated(*release, root=root, env=env))
    text = pd.read_csv(TITANIC_CSV, dtype=str, keep_default_na=False).drop(columns=["survived"])
    typed = pd.read_csv(TITANIC_CSV).drop(columns=["survived"])
    text.loc[3, "age"] = "abc"  # a bad cell in t0.csv, data row 4
    (root / "in").mkdir()
    n = len(text)
    for i in range(FILES):
        rows = slice(i * n // FILES, (i + 1) * n // FILES)
        if i % 2:
            typed.iloc[rows].to_parquet(root / "in" / f"t{i}.parquet", index=False)
        else:
            text.iloc[rows].to_csv(root / "in" / f"t{i}.csv", index=False)
    text.to_csv(root / "all.csv", index=False)
    (root / "nested" / "year=2026").mkdir(parents=True)  # a partition folder, and no file
    text.iloc[:5].to_csv(root / "nested" / "year=2026" / "t.csv", index=False)
    (root / "ref").mkdir()
    env = {"PIPELINE_RELEASE": (root / "release.id").read_text().strip()}
    cwd = Path.cwd()
    os.chdir(root)  # relative paths, as a user types them: they label the error messages
    try:
        for path in [*sorted(Path("in").iterdir()), Path("all.csv")]:
            out = f"ref/{path.name.split('.')[0]}.csv"
            _done(invoke_isolated("predict", str(path), "-o", out, root=root, env=env))
    finally:
        os.chdir(cwd)
    return {"root": root, "package_id": package_id, "env": env}


def _predict(
    chain: dict[str, Any], *args: str, address: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    root = chain["root"]
    env = {
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_LOG_FORMAT": "json",
        "RAY_ADDRESS": address,
        "RAY_AUTH_MODE": "disabled",
        **chain["env"],
        **extra,
    }
    return run_cli("predict", *args, env=env, cwd=root, timeout=300)


def _parts(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _no_leftovers(root: Path) -> None:
    """No staging folder or temporary file beside the outputs."""
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def embedded(chain: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The folder predicted by two workers on an embedded Ray runtime."""
    done = _predict(chain, "in", "--workers", "2", "-o", "out-embedded")
    return done, chain["root"] / "out-embedded"


def test_a_folder_on_two_embedded_workers_writes_the_single_process_bytes(
    chain: dict[str, Any], embedded: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    """Eight CSV/Parquet files -> eight parts, each byte-identical to single-process predict of
    its file (the bad cell's error message included); stdout is the event stream only, and
    stderr is empty (Ray's core worker logs a line there for every Ray Data actor it creates
    with restarts, ray-project/ray#53727: dropped)."""
    done, out = embedded
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    events(done.stdout)  # every stdout line is a JSON event
    summary = event(done.stdout, "predict.summary")
    assert summary["files"] == FILES and summary["rows"] == 1309 and summary["errors"] == 1
    assert summary["embedded"] is True and summary["workers"] == 2
    parts = _parts(out)
    stems = [f"t{i}" for i in range(FILES)]
    assert list(parts) == ["manifest.json"] + [f"part-{i:05d}-{s}.csv" for i, s in enumerate(stems)]
    for i, stem in enumerate(stems):
        assert (
            parts[f"part-{i:05d}-{stem}.csv"]
            == (chain["root"] / "ref" / f"{stem}.csv").read_bytes()
        )
    assert b"'abc' is not a finite number" in parts["part-00000-t0.csv"]
    _no_leftovers(chain["root"])


def test_the_manifest_lists_every_part_with_its_sha256_rows_and_package(
    chain: dict[str, Any], embedded: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    """manifest.json: all 8 parts in order, each with its input, rows and the right sha256."""
    _, out = embedded
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["package_id"] == chain["package_id"]
    assert manifest["release"] == chain["env"]["PIPELINE_RELEASE"]
    assert manifest["rows"] == 1309 and len(manifest["files"]) == FILES
    for entry in manifest["files"]:
        data = (out / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["size"] == len(data)
        assert entry["rows"] == data.count(b"\n") - 1  # no quoted newlines in these outputs
    assert [e["input"] for e in manifest["files"]] == [
        str(Path("in") / p.name) for p in sorted((chain["root"] / "in").iterdir())
    ]


def test_a_glob_on_the_two_node_cluster_writes_the_same_folder(
    chain: dict[str, Any],
    embedded: tuple[subprocess.CompletedProcess[str], Path],
    ray_cluster: str,
) -> None:
    """RAY_ADDRESS names the test cluster (a head and a worker node): a glob of the same files
    gives the very same folder, manifest included, byte for byte."""
    done = _predict(chain, "in/t*", "--workers", "2", "-o", "out-cluster", address=ray_cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = event(done.stdout, "predict.summary")
    assert summary["embedded"] is False and summary["nodes"] == 2
    assert _parts(chain["root"] / "out-cluster") == _parts(embedded[1])


def test_one_file_is_shared_out_chunk_by_chunk_on_the_cluster(
    chain: dict[str, Any], ray_cluster: str
) -> None:
    """A single file with PIPELINE_RUN__CHUNK_ROWS=300 -> 5 parts; header plus parts' rows are
    the single-process output of the whole file."""
    done = _predict(
        chain, "all.csv", "-o", "out-one", address=ray_cluster,
        PIPELINE_RUN__WORKERS="2", PIPELINE_RUN__CHUNK_ROWS="300",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    parts = _parts(chain["root"] / "out-one")
    names = [f"part-{i:05d}-all.csv" for i in range(5)]
    assert list(parts) == ["manifest.json", *names]
    header, _, first = parts[names[0]].partition(b"\n")
    body = first + b"".join(parts[n].partition(b"\n")[2] for n in names[1:])
    assert parts[names[0]].startswith(header) and all(parts[n].startswith(header) for n in names)
    assert header + b"\n" + body == (chain["root"] / "ref" / "all.csv").read_bytes()


def test_embedded_workers_beyond_the_cores_start_one_actor_per_core(
    chain: dict[str, Any],
) -> None:
    """--workers 6 on this machine's cores, one file in 300-row chunks: one Ray Data actor per
    core (each holds a predictor: 16 on 2 cores held 7.4 GB), and the same rows as always; -o
    named .parquet gives Parquet parts (they were CSV whatever the name)."""
    done = _predict(chain, "all.csv", "--workers", "6", "-o", "out-six.parquet",
                    PIPELINE_RUN__CHUNK_ROWS="300")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    started = event(done.stdout, "predict.cluster")
    cores = len(os.sched_getaffinity(0))
    assert started["asked"] == 6 and started["workers"] == min(6, cores) == started["cpus"]
    fewer = event(done.stdout, "predict.fewer_workers")  # said, not only counted
    assert fewer["asked"] == 6 and fewer["workers"] == started["workers"]
    names = [f"part-{i:05d}-all.parquet" for i in range(5)]
    assert sorted(p.name for p in (chain["root"] / "out-six.parquet").iterdir()) == [
        "manifest.json",
        *names,
    ]
    got = pd.concat(pd.read_parquet(chain["root"] / "out-six.parquet" / n) for n in names)
    ref = pd.read_csv(chain["root"] / "ref" / "all.csv", dtype=str, keep_default_na=False)
    assert list(got.columns) == list(ref.columns) and len(got) == len(ref) == 1309
    for name in ref.columns:
        column = got[name].reset_index(drop=True)
        if column.dtype.kind == "f":  # the probabilities: the same float bits
            actual = [None if pd.isna(x) else x for x in column.tolist()]
            assert actual == [float(v) if v else None for v in ref[name]], name
        else:  # the labels and the error message (None in Parquet, empty in CSV)
            assert column.fillna("").astype(str).tolist() == ref[name].tolist(), name


def test_files_named_one_by_one_as_a_shell_expands_a_glob(chain: dict[str, Any]) -> None:
    """`predict in/t3.parquet in/t1.parquet --workers 2` (what an unquoted 'in/*.parquet' becomes
    after the shell: typer said "Got unexpected extra argument"): one part per file, in name
    order, each the single-process bytes."""
    done = _predict(chain, "in/t3.parquet", "in/t1.parquet", "--workers", "2", "-o", "out-named")
    assert done.returncode == 0, done.stderr[-3000:]
    parts = _parts(chain["root"] / "out-named")
    assert list(parts) == ["manifest.json", "part-00000-t1.csv", "part-00001-t3.csv"]
    for i, stem in enumerate(("t1", "t3")):
        assert (
            parts[f"part-{i:05d}-{stem}.csv"]
            == (chain["root"] / "ref" / f"{stem}.csv").read_bytes()
        )


def test_a_bad_row_fails_as_single_process_does_and_writes_nothing(
    chain: dict[str, Any], ray_cluster: str
) -> None:
    """With on_error=fail (a package run takes the environment's), the worker's DataError is
    the command's: exit 4, the single-process message, no output folder, no staging left."""
    package = next((chain["root"] / "store" / "packages").rglob("*.tar.gz"))
    env = {"PIPELINE_RELEASE": "", "PIPELINE_RUN__ON_ERROR": "fail"}
    single = _predict(chain, "in/t0.csv", "--package", str(package), "-o", "x.csv", **env)
    done = _predict(
        chain, "in", "--package", str(package), "--workers", "2", "-o", "out-bad",
        address=ray_cluster, **env,
    )  # fmt: skip
    assert single.returncode == done.returncode == 4
    assert done.stderr == single.stderr  # one line, and nothing of Ray's
    assert "data row 4" in single.stderr
    assert not (chain["root"] / "out-bad").exists() and not (chain["root"] / "x.csv").exists()
    _no_leftovers(chain["root"])


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["in", "--workers", "2"], 3, "pass -o FOLDER"),
        (["in", "--workers", "2", "-o", "all.csv"], 3, "is a file"),
        (["in", "--workers", "2", "-o", "ref"], 3, "not empty"),
        (["nothing/*.csv", "--workers", "2", "-o", "o"], 4, "matches no file"),
        (["ref/", "--workers", "0", "-o", "o"], 3, "from option --workers"),
        (["in", "-o", "ref"], 3, "is a folder"),
        (
            ["in", "-o", "x.csv"],
            4,
            "not a file: pass the path of a CSV, Parquet or JSON-lines "
            "file, or --workers N -o FOLDER to predict a folder's files",
        ),
        (["in", "--workers", "2", "-o", "in"], 3, "is the input folder in"),
        (["in", "--workers", "2", "-o", "parts.xlsx"], 3, "is named .xlsx"),
        (["nested", "--workers", "2", "-o", "o"], 4, "sub-folders are not read"),
        (["in/t0.csv", "in/t2.csv", "-o", "o.csv"], 3, "reads one without --workers"),
        (["in/t0.csv", "in", "--workers", "2", "-o", "o"], 4, "is a folder or a pattern among"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    chain: dict[str, Any], args: list[str], code: int, says: str
) -> None:
    """No -o, -o a file or a non-empty folder, a glob matching nothing, N < 1, a folder for
    single-process -o, a folder named for a format predict does not write, a folder of
    sub-folders only: refused before any Ray start, one line, nothing written."""
    before = sorted(p.name for p in chain["root"].iterdir())
    done = _predict(chain, *args, PIPELINE_LOG_FORMAT="console")
    assert done.returncode == code, done.stderr[-2000:]
    assert says in done.stderr
    if code != 2:  # usage errors are typer's box
        assert len(done.stderr.strip().splitlines()) == 1
    assert "ray" not in done.stderr.lower().replace("array", "")
    assert sorted(p.name for p in chain["root"].iterdir()) == before


@pytest.mark.parametrize(("source", "named"), [("t1.parquet", "b.csv"), ("t0.jsonl", "b.csv")])
def test_a_file_named_for_another_format_gets_predicts_own_error_before_ray(
    chain: dict[str, Any], source: str, named: str
) -> None:
    """Parquet bytes named b.csv in a folder: `--workers 2` died of a UnicodeDecodeError
    traceback from a Ray worker (exit 1), where single-process predict says "holds Parquet
    data: rename it .parquet"; JSON lines named .csv "lacked required columns". Now the
    single-process line, exit 4, from the driver before Ray starts, nothing written."""
    root = chain["root"]
    folder = root / f"misnamed-{named}-{source}"
    folder.mkdir()
    shutil.copyfile(root / "in" / "t0.csv", folder / "a.csv")
    if source.endswith(".jsonl"):
        frame = pd.read_csv(root / "in" / "t0.csv", dtype=str, keep_default_na=False)
        frame.to_json(folder / named, orient="records", lines=True)
    else:
        shutil.copyfile(root / "in" / source, folder / named)
    rel = folder.relative_to(root)
    single = _predict(chain, str(rel / named), "-o", "x.csv")
    done = _predict(chain, str(rel), "--workers", "2", "-o", "out-misnamed")
    assert single.returncode == done.returncode == 4, done.stderr[-2000:]
    assert done.stderr == single.stderr and "by its name, but holds" in done.stderr
    assert '"predict.cluster"' not in done.stdout and "Traceback" not in done.stderr
    assert not (root / "out-misnamed").exists() and not (root / "x.csv").exists()


REFUSED = ["empty.csv", "lacking.csv", "lacking.parquet", "header-only.csv", "no-rows.parquet",
           "blank.jsonl", "missing.csv"]  # fmt: skip


@pytest.mark.parametrize("bad", REFUSED)
def test_a_file_refused_by_its_header_is_named_before_ray_starts(
    chain: dict[str, Any], bad: str
) -> None:
    """An empty file, or one without a column the model reads, among good ones: a worker said
    so once Ray had started (15 s here), now the driver does before, with single-process
    predict's line (a Parquet file's now suggests a rename from all its columns), exit 4. So
    too a file with a header and no rows, a Parquet file of no rows, a JSON-lines file of
    blank lines, and a path that does not exist (a worker said those 12-19 s in)."""
    root = chain["root"]
    folder = root / f"refused-{bad}"
    folder.mkdir()
    shutil.copyfile(root / "in" / "t0.csv", folder / "a.csv")
    frame = pd.read_parquet(root / "in" / "t1.parquet").rename(columns={"age": "Age"})
    if bad == "missing.csv":
        folder = folder / bad  # the input is the path itself
    elif bad == "empty.csv":
        (folder / bad).write_bytes(b"")
    elif bad == "header-only.csv":
        (folder / bad).write_text((root / "in" / "t0.csv").read_text().splitlines()[0] + "\n\n")
    elif bad == "no-rows.parquet":
        pd.read_parquet(root / "in" / "t1.parquet").head(0).to_parquet(folder / bad)
    elif bad == "blank.jsonl":
        (folder / bad).write_text("\n  \n")
    elif bad.endswith(".csv"):
        frame.to_csv(folder / bad, index=False)
    else:
        frame.to_parquet(folder / bad, index=False)
    rel = folder.relative_to(root)
    single = _predict(chain, str(rel if bad == "missing.csv" else rel / bad), "-o", "x.csv")
    done = _predict(chain, str(rel), "--workers", "2", "-o", "out-refused")
    assert single.returncode == done.returncode == 4, done.stderr[-2000:]
    assert done.stderr == single.stderr and bad in done.stderr
    says = {"empty.csv": "is empty", "missing.csv": "does not exist"}
    expected = says.get(bad, "rename 'Age' to 'age'" if "lacking" in bad else "has no rows")
    assert expected in done.stderr
    assert '"predict.cluster"' not in done.stdout and "Traceback" not in done.stderr
    assert not (root / "out-refused").exists() and not (root / "x.csv").exists()


@pytest.mark.parametrize("text_first", [True, False], ids=["text-first", "numbers-first"])
def test_a_json_lines_file_shared_out_keeps_the_files_id_kind(
    chain: dict[str, Any], text_first: bool
) -> None:
    """JSON lines' ids are values of their own kinds, and the file's first decides the
    column's. Shared out chunk by chunk, each part took its own first chunk's: text ids then
    numbers came out as numbers in the later parts (single-process writes them as text), and
    numbers then text passed where single-process refuses (exit 4). Now the parts joined are
    single-process's bytes, and the refusal is its line."""
    root = chain["root"]
    rows = pd.read_parquet(root / "in" / "t1.parquet").head(40).reset_index(drop=True)
    text, numbers = [f"A-{i}" for i in range(20)], list(range(1000, 1020))
    ids = text + numbers if text_first else numbers + text
    rows.insert(0, "row_id", pd.Series(ids, dtype=object))
    name = f"ids-{'text' if text_first else 'numbers'}-first"
    rows.to_json(root / f"{name}.jsonl", orient="records", lines=True)
    env = {"PIPELINE_STORE": str(root / "store"), "PIPELINE_RUN__ID_COLUMN": "row_id"}
    release = ("release", "create", chain["package_id"], "--id-file", str(root / f"{name}.id"))
    _done(invoke_isolated(*release, root=root, env=env))
    chunks = {"PIPELINE_RELEASE": (root / f"{name}.id").read_text().strip(),
              "PIPELINE_RUN__CHUNK_ROWS": "10"}  # fmt: skip
    single = _predict(chain, f"{name}.jsonl", "-o", f"{name}.csv", **chunks)
    done = _predict(chain, f"{name}.jsonl", "--workers", "2", "-o", f"{name}-parts", **chunks)
    if not text_first:
        assert single.returncode == done.returncode == 4, done.stderr[-2000:]
        assert done.stderr == single.stderr and "where earlier rows held int" in done.stderr
        assert not (root / f"{name}-parts").exists()
        return
    assert single.returncode == done.returncode == 0, done.stderr[-2000:]
    parts = sorted((root / f"{name}-parts").glob("part-*.csv"))
    assert len(parts) == 4
    texts = [p.read_text() for p in parts]
    header = texts[0].splitlines(keepends=True)[0]
    assert all(t.startswith(header) for t in texts)
    joined = header + "".join(t[len(header) :] for t in texts)
    assert joined == (root / f"{name}.csv").read_text()
    assert '"1000"' in joined


def test_a_worker_killed_mid_file_is_restarted_its_rows_predicted_again_and_said(
    chain: dict[str, Any],
) -> None:
    """SIGKILL a Ray Data worker while it writes its share of one big file: Ray restarts it and
    the job runs again from the start, so the parts still join into single-process predict's
    bytes; a `predict.worker_restarted` warning names the input (the run said nothing, so a
    flaky node went unseen)."""
    root = chain["root"]
    header, body = (root / "all.csv").read_text().split("\n", 1)
    (root / "big.csv").write_text(header + "\n" + body * 150)  # 196,350 rows
    chunks = {"PIPELINE_RUN__CHUNK_ROWS": "1000"}
    assert _predict(chain, "big.csv", "-o", "big-ref.csv", **chunks).returncode == 0
    env = {"PIPELINE_STORE": str(root / "store"), "PIPELINE_ENV_FILE": os.devnull,
           "PIPELINE_LOG_FORMAT": "json", "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled",
           **chain["env"], **chunks}  # fmt: skip
    command = [sys.executable, "-m", "pipeline", "predict", "big.csv", "--workers", "2"]
    proc = subprocess.Popen(
        [*command, "-o", "big-parts"], cwd=root, env=_process_env(env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed = False
    try:
        deadline = time.monotonic() + 120
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            staging = [p for p in root.glob(".big-parts.*.tmp") if any(p.glob("part-*"))]
            # A worker in the middle of its job: its title names the call it runs.
            busy = [pid for pid in descendants_named(proc.pid, "ray::MapWorker") if _busy(pid)]
            if staging and busy:
                os.kill(busy[0], signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert killed, "the run ended before a worker could be killed"
    assert proc.returncode == 0, err[-3000:]
    warning = event(out, "predict.worker_restarted")
    assert warning["inputs"] == ["big.csv"] and warning["jobs"] == 1
    texts = [p.read_text() for p in sorted((root / "big-parts").glob("part-*.csv"))]
    head = texts[0].splitlines(keepends=True)[0]
    assert head + "".join(t[len(head) :] for t in texts) == (root / "big-ref.csv").read_text()
    assert not (root / "big-parts" / ".starts").exists()


def _busy(pid: int) -> bool:
    """Whether the Ray Data worker ``pid`` runs a call (``...PartWriter)).submit``)."""
    try:
        return b".submit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_folders_notes_are_skipped_with_a_warning_not_read_as_rows(
    chain: dict[str, Any],
) -> None:
    """notes.txt beside the data in an input folder was read as CSV and failed the run (exit
    4, "lacks required column(s)"); README.md was skipped without a word. A folder now
    contributes its .csv(.gz), .parquet/.pq and .jsonl/.ndjson files, and the others are named
    in a `predict.files_skipped` warning."""
    import shutil

    root = chain["root"]
    (root / "mixed").mkdir()
    shutil.copy(root / "in" / "t0.csv", root / "mixed" / "t0.csv")
    (root / "mixed" / "notes.txt").write_text("hello notes\n")
    (root / "mixed" / "README.md").write_text("# inputs\n")
    done = _predict(chain, "mixed", "--workers", "2", "-o", "mixed-out")
    assert done.returncode == 0, done.stderr[-2000:]
    warned = event(done.stdout, "predict.files_skipped")
    assert (warned["count"], warned["first"]) == (2, ["README.md", "notes.txt"])
    manifest = json.loads((root / "mixed-out" / "manifest.json").read_text())
    assert [f["input"] for f in manifest["files"]] == [str(Path("mixed") / "t0.csv")]


def test_a_file_named_twice_is_read_once_with_a_warning(chain: dict[str, Any]) -> None:
    """`predict a.csv a.csv --workers 2` wrote one part of a.csv's rows without a word: the
    user may have meant another file. Read once, and a `predict.inputs_repeated` warning."""
    root = chain["root"]
    done = _predict(chain, "in/t0.csv", "in/t0.csv", "in/t2.csv", "--workers", "2",
                    "-o", "twice-out")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    warned = event(done.stdout, "predict.inputs_repeated")
    assert (warned["count"], warned["first"]) == (1, [str(Path("in") / "t0.csv")])
    manifest = json.loads((root / "twice-out" / "manifest.json").read_text())
    assert [f["input"] for f in manifest["files"]] == [
        str(Path("in") / "t0.csv"),
        str(Path("in") / "t2.csv"),
    ]


def test_workers_from_the_environment_do_not_turn_a_file_output_into_a_folder(
    chain: dict[str, Any],
) -> None:
    """PIPELINE_RUN__WORKERS set for the machine made a script's `predict x.csv -o preds.csv`
    write a folder named preds.csv; without -o it asked for "--workers", which the script
    never passed. Both now name the variable; a file's name is refused (the option still
    writes a folder so named: `-o out-six.parquet` above)."""
    before = sorted(p.name for p in chain["root"].iterdir())
    env = {"PIPELINE_RUN__WORKERS": "2", "PIPELINE_LOG_FORMAT": "console"}
    named = _predict(chain, "in/t0.csv", "-o", "preds.csv", **env)
    assert named.returncode == 3, named.stderr[-2000:]
    assert named.stderr.strip() == (
        "error: -o preds.csv names a file, but PIPELINE_RUN__WORKERS=2 (env var "
        "PIPELINE_RUN__WORKERS) writes a folder of parts: pass --workers to write a folder of "
        "that name, or unset PIPELINE_RUN__WORKERS to write one file"
    )
    bare = _predict(chain, "in/t0.csv", **env)
    assert bare.returncode == 3 and "PIPELINE_RUN__WORKERS=2 (env var" in bare.stderr
    # From a .env file: its line is named once (it was named twice), and the way out is to
    # remove that line ("unset the variable" named no variable of the environment).
    dotenv = chain["root"].parent / "workers.env"
    dotenv.write_text("PIPELINE_RUN__WORKERS=2\n")
    filed = _predict(chain, "in/t0.csv", "-o", "preds.csv", PIPELINE_ENV_FILE=str(dotenv),
                     PIPELINE_LOG_FORMAT="console")  # fmt: skip
    assert filed.returncode == 3, filed.stderr[-2000:]
    assert filed.stderr.strip() == (
        "error: -o preds.csv names a file, but PIPELINE_RUN__WORKERS=2 writes a folder of "
        "parts: pass --workers to write a folder of that name, or remove its line to write one "
        f"file (PIPELINE_RUN__WORKERS came from {dotenv} line 1)"
    )
    assert sorted(p.name for p in chain["root"].iterdir()) == before


def test_a_pipe_given_to_workers_is_named_a_pipe(chain: dict[str, Any]) -> None:
    """`predict <(cat f.csv) --workers 2`: each worker opened the shell's /dev/fd/63 of its
    own and the run said the input "does not exist". A pipe (here a FIFO) is named as one."""
    fifo = chain["root"] / "rows.fifo"
    os.mkfifo(fifo)
    try:
        done = _predict(chain, str(fifo), "--workers", "2", "-o", "from-a-pipe")
    finally:
        fifo.unlink()
    assert done.returncode == 3, done.stderr[-2000:]  # the options contradict: not bad rows
    assert f"input {fifo} is a pipe or a device, not a file" in done.stderr
    assert not (chain["root"] / "from-a-pipe").exists()


@pytest.mark.parametrize("given", ["fifo", "fifo/*.csv"])
def test_a_fifo_among_a_folders_files_is_named_not_skipped(
    chain: dict[str, Any], given: str
) -> None:
    """A FIFO named b.csv beside a.csv (in a folder, or matched by a glob) was skipped without
    a word: one part, rc 0. Now exit 4 naming it, before Ray starts, nothing written."""
    root = chain["root"]
    folder = root / "fifo"
    if not folder.exists():
        folder.mkdir()
        shutil.copyfile(root / "in" / "t0.csv", folder / "a.csv")
        os.mkfifo(folder / "b.csv")
    done = _predict(chain, given, "--workers", "2", "-o", "out-fifo", PIPELINE_LOG_FORMAT="console")
    assert done.returncode == 4, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert "fifo/b.csv, a pipe or a device, not a file" in done.stderr
    assert "predict.cluster" not in done.stdout and not (root / "out-fifo").exists()


def test_a_broken_link_in_a_folder_is_named_and_a_linked_output_folder_is_its_target(
    chain: dict[str, Any],
) -> None:
    """A link to nothing among a folder's files was skipped without a word (its rows missing,
    exit 0); -o naming a link to an empty folder failed after all the work ("Not a
    directory", exit 9), and an empty -o folder's permissions were replaced by the parts'."""
    import shutil

    root = chain["root"]
    (root / "linked").mkdir()
    shutil.copy(root / "in" / "t0.csv", root / "linked" / "t0.csv")
    (root / "linked" / "gone.csv").symlink_to(root / "no-such-file.csv")
    broken = _predict(chain, "linked", "--workers", "2", "-o", "o-broken")
    assert broken.returncode == 4, broken.stderr[-2000:]
    assert broken.stderr.strip().splitlines()[-1] == (
        f"error: input folder linked holds gone.csv, a link to {root / 'no-such-file.csv'}, "
        "which does not exist: fix the link or remove it"
    )
    assert not (root / "o-broken").exists()
    (root / "linked" / "gone.csv").unlink()
    (root / "target").mkdir(mode=0o700)
    (root / "target").chmod(0o700)
    (root / "to-target").symlink_to(root / "target")
    done = _predict(chain, "linked", "--workers", "2", "-o", "to-target")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (root / "to-target").is_symlink()  # the link stays, the parts are in its target
    assert sorted(p.name for p in (root / "target").iterdir()) == [
        "manifest.json",
        "part-00000-t0.csv",
    ]
    assert (root / "target").stat().st_mode & 0o777 == 0o700
    _no_leftovers(root)


def test_single_process_predict_does_not_import_ray(chain: dict[str, Any]) -> None:
    """Without --workers, predict runs as before and never imports Ray."""
    code = (
        "import sys\nfrom pipeline.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('RAY' if 'ray' in sys.modules else 'NO-RAY', code, file=sys.stderr)\n"
    )
    root = chain["root"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
        "PIPELINE_STORE": str(root / "store"), "PIPELINE_ENV_FILE": os.devnull,
        **chain["env"],
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, "predict", "in/t1.parquet", "-o", "plain.csv"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    (root / "plain.csv").unlink(missing_ok=True)
    assert done.stderr.strip().splitlines()[-1] == "NO-RAY 0", done.stderr[-2000:]
