"""`pipeline report` and the curves behind it, on real builds of each task (no browser here:
tests/report/test_browser.py opens the pages in Chromium)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TITANIC_CSV, event, invoke_isolated, run_cli
from tests.report.builds import EXPECTED_PLOTS, env_of, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One cross-validated build per task in one store."""
    root = tmp_path_factory.mktemp("report")
    return root, {task: train(root, task) for task in EXPECTED_PLOTS}


def _report(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return invoke_isolated("report", *args, root=root, env=env)


def _plots(page: str) -> list[str]:
    return re.findall(r'<figure data-plot="([a-z_]+)">', page)


def test_each_task_stores_its_curves_as_plain_json_lists_covered_by_the_build_id(
    builds: tuple[Path, dict[str, str]],
) -> None:
    """Every curve is a JSON list of flat objects (what DVC's plot templates read), bounded in
    size, listed in the manifest, and covered by the build id: editing one breaks the build."""
    root, ids = builds
    expected = {
        "regression": {"predicted_actual", "residual_histogram", "error_by_decile"},
        "binary": {"roc", "pr", "calibration", "threshold_sweep"},
        "multiclass": {"per_class", "roc_ovr", "confidence"},
    }
    for task, bid in ids.items():
        folder = root / "store" / "builds" / bid
        names = {p.name[len("curve_") : -len(".json")] for p in folder.glob("curve_*.json")}
        assert names == expected[task], task
        manifest = json.loads((folder / "manifest.json").read_text())
        assert "curve_*.json" in manifest["id_covers"]
        for name in names:
            path = folder / f"curve_{name}.json"
            rows = json.loads(path.read_text())
            assert isinstance(rows, list) and rows, (task, name)
            assert all(isinstance(r, dict) for r in rows)
            assert all(not isinstance(v, dict | list) for r in rows for v in r.values())
            assert path.stat().st_size < 200_000
            assert f"curve_{name}.json" in manifest["files"]
    roc = json.loads((root / "store" / "builds" / ids["binary"] / "curve_roc.json").read_text())
    assert roc[0] == {"fpr": 0.0, "threshold": None, "tpr": 0.0} and roc[-1]["tpr"] == 1.0
    assert all(a["fpr"] <= b["fpr"] and a["tpr"] <= b["tpr"] for a, b in itertools.pairwise(roc))
    pairs = root / "store" / "builds" / ids["regression"] / "curve_predicted_actual.json"
    assert len(json.loads(pairs.read_text())) == 292  # every test row of house prices

    # A curve is part of what the id covers: a changed one is refused, not reported.
    tampered = root / "tampered"
    (tampered / "store").mkdir(parents=True)
    shutil.copytree(root / "store" / "builds", tampered / "store" / "builds")
    path = tampered / "store" / "builds" / ids["binary"] / "curve_roc.json"
    path.write_text(path.read_text().replace('"tpr": 1.0', '"tpr": 0.9', 1))
    done = invoke_isolated("report", ids["binary"], "-o", str(tampered / "r.html"), root=tampered)
    assert done.exit_code == 7, done.output
    assert "curve_roc.json" in done.stderr and not (tampered / "r.html").exists()


def test_the_html_report_has_every_plot_of_its_task_and_nothing_external(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Each task's page: the task's figures (with captions and alt text), the metrics and the
    confusion matrix as tables, a CSP that forbids scripts and remote loads, under 1 MB."""
    root, ids = builds
    for task, bid in ids.items():
        out = tmp_path / f"{task}.html"
        done = _report(root, bid[:10], "-o", str(out))
        assert done.exit_code == 0, done.output
        summary = event(done.stdout, "report.summary")
        assert summary["build_id"] == bid and summary["path"] == str(out.resolve())
        page = out.read_text()
        assert _plots(page) == EXPECTED_PLOTS[task]
        assert summary["plots"] == EXPECTED_PLOTS[task]
        assert out.stat().st_size <= 1_000_000
        assert "Content-Security-Policy" in page and "default-src 'none'" in page
        assert "<script" not in page.lower()
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
        assert page.count("<figcaption>") == len(EXPECTED_PLOTS[task])
        assert len(
            re.findall(
                r'<img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+" alt="[^"]{20,}', page
            )
        ) == len(EXPECTED_PLOTS[task])
        assert "<h2>Metrics</h2>" in page and bid in page
        if task != "regression":
            assert "<h2>Confusion matrix (test)</h2>" in page
        assert "Cross-validation (2 folds)" in page


def test_report_bytes_do_not_depend_on_the_process_environment(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The same build gives the same bytes from two processes that differ in working folder
    (one holding a hostile matplotlibrc), TZ, LANG, PYTHONHASHSEED and a cold font cache."""
    root, ids = builds
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "matplotlibrc").write_text(
        "svg.fonttype: none\nsvg.hashsalt: evil\nfont.family: serif\nlines.linewidth: 7\n"
        "axes.grid: False\nfigure.dpi: 300\naxes.prop_cycle: cycler('color', ['red'])\n"
    )
    envs = [
        {"TZ": "UTC", "LANG": "C", "PYTHONHASHSEED": "0"},
        {
            "TZ": "Pacific/Kiritimati",
            "LANG": "de_DE.UTF-8",
            "LC_ALL": "de_DE.UTF-8",
            "PYTHONHASHSEED": "123",
            "MPLCONFIGDIR": str(tmp_path / "cold-font-cache"),
        },
    ]
    for task, bid in ids.items():
        digests = []
        for i, (env, cwd) in enumerate(zip(envs, [tmp_path, hostile], strict=True)):
            out = tmp_path / f"{task}-{i}.html"
            done = run_cli(
                "report", bid, "-o", str(out),
                env={**env, "PIPELINE_STORE": str(root / "store"), "PIPELINE_LOG_FORMAT": "json"},
                cwd=cwd,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        assert digests[0] == digests[1], task
    assert (tmp_path / "cold-font-cache").is_dir()  # the second process did build its own cache


def test_retraining_gives_the_same_build_id_and_the_same_report(tmp_path: Path) -> None:
    """Same data, settings and seed in a fresh store: same build id, report sha256 equal."""
    digests, ids = [], []
    for i in range(2):
        root = tmp_path / str(i)
        bid = train(root, "binary", cv_folds=None)
        out = tmp_path / f"{i}.html"
        assert _report(root, "-o", str(out)).exit_code == 0
        ids.append(bid)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert ids[0] == ids[1] and digests[0] == digests[1]


def test_markdown_writes_report_md_and_one_svg_per_plot(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """--format markdown: report.md links exactly the SVGs written beside it."""
    root, ids = builds
    out = tmp_path / "md"
    done = _report(root, ids["binary"], "--format", "markdown", "-o", str(out))
    assert done.exit_code == 0, done.output
    text = (out / "report.md").read_text()
    linked = re.findall(r"\]\(([a-z_]+\.svg)\)", text)
    assert linked == [f"{p}.svg" for p in EXPECTED_PLOTS["binary"]]
    assert sorted(p.name for p in out.glob("*.svg")) == sorted(linked)
    for name in linked:
        assert (out / name).read_bytes().startswith(b"<?xml")
    assert "| roc_auc |" in text and "| true \\ predicted |" in text


def test_markdown_into_an_earlier_reports_folder_replaces_it_and_refuses_other_folders(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A regression report written where a binary one was: the binary report's plots that the
    new one lacks are removed (they stayed beside it). A folder of other files (no report.md)
    is refused before any work, exit 3, untouched (its files of a plot's name were
    overwritten)."""
    root, ids = builds
    out = tmp_path / "md"
    assert _report(root, ids["binary"], "--format", "markdown", "-o", str(out)).exit_code == 0
    (out / ".hidden").write_text("kept")
    done = _report(root, ids["regression"], "--format", "markdown", "-o", str(out))
    assert done.exit_code == 0, done.output
    wanted = sorted(f"{p}.svg" for p in EXPECTED_PLOTS["regression"])
    assert sorted(p.name for p in out.glob("*.svg")) == wanted
    assert (out / ".hidden").read_text() == "kept"

    other = tmp_path / "notes"
    other.mkdir()
    (other / "roc.svg").write_text("mine")
    done = _report(root, ids["binary"], "--format", "markdown", "-o", str(other))
    assert done.exit_code == 3
    assert "is a folder of other files (no report.md)" in done.stderr
    assert sorted(p.name for p in other.iterdir()) == ["roc.svg"]
    assert (other / "roc.svg").read_text() == "mine"


def test_a_release_is_reported_by_its_reference(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """`pipeline report name@vN` and `report current` open the release's build."""
    root, ids = builds
    env = env_of("binary")
    package = invoke_isolated("package", ids["binary"], root=root, env=env)
    assert package.exit_code == 0, package.output
    package_id = event(package.stdout, "package.summary")["package_id"]
    created = invoke_isolated("release", "create", package_id, root=root, env=env)
    assert created.exit_code == 0, created.output
    ref = event(created.stdout, "release.created")["release"]
    for arg in (ref, "current"):
        out = tmp_path / "release.html"
        done = _report(root, arg, "-o", str(out), env=env)
        assert done.exit_code == 0, done.output
        assert event(done.stdout, "report.summary")["subject"] == ref
        assert f"{ref} · build {ids['binary']}" in out.read_text()
        assert f"<tr><td>release</td><td>{ref}</td></tr>" in out.read_text()
    # A release's version and threshold: one at 0.7 predicts other classes than the metrics'.
    env_07 = {**env, "PIPELINE_RUN__THRESHOLD": "0.7"}
    created = invoke_isolated("release", "create", package_id, root=root, env=env_07)
    assert created.exit_code == 0, created.output
    ref = event(created.stdout, "release.created")["release"]
    out = tmp_path / "release-07.html"
    assert _report(root, ref, "-o", str(out), env=env).exit_code == 0
    assert (
        "<tr><td>release settings</td><td>version 0.1.0; threshold 0.7 (the metrics below are "
        "at 0.5); id column –</td></tr>"
    ) in out.read_text()


def test_a_package_is_reported_by_a_prefix_of_its_id_as_release_create_takes_it(
    tmp_path: Path,
) -> None:
    """`report 8f16` (4+ hex digits of a package id, as `release create` and `predict
    --package` take it) reports the package's build: fewer than 8 digits said "no build". An
    unknown prefix is the one-line exit 8 of an unknown id."""
    build = train(tmp_path, "regression", cv_folds=None)
    packaged = invoke_isolated("package", build, root=tmp_path, env=env_of("regression"))
    assert packaged.exit_code == 0, packaged.output
    package_id = event(packaged.stdout, "package.summary")["package_id"]
    size = next(n for n in range(4, 8) if not build.startswith(package_id[:n]))
    created = invoke_isolated("release", "create", package_id[:size], root=tmp_path)
    assert created.exit_code == 0, created.output  # the prefix the other commands take
    out = tmp_path / "package.html"
    done = _report(tmp_path, package_id[:size], "-o", str(out))
    assert done.exit_code == 0, done.output
    summary = event(done.stdout, "report.summary")
    assert summary["build_id"] == build and summary["subject"].startswith("package ")
    assert f"<tr><td>package</td><td>{package_id}</td></tr>" in out.read_text()  # not "release"
    unknown = next(c for c in "0123456789abcdef" if c not in (package_id[0], build[0]))
    missing = _report(tmp_path, unknown * size, "-o", str(out))
    assert missing.exit_code == 8, missing.output
    assert missing.stderr.count("\n") == 1 and "no build or package" in missing.stderr


def test_mistakes_are_one_line_errors_with_their_exit_codes(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A --format not among its choices (2, a usage error, as diff's --format xml: it was 3,
    a setting's code), an html report named .pdf (3), an unknown build (8), an unknown release
    (8): one line each."""
    root, _ = builds
    cases = [
        (("--format", "pdf"), 2, "'pdf' is not one of 'html', 'markdown'"),
        (("deadbeef",), 8, "no build or package 'deadbeef'"),
        (("titanic@v99",), 8, "titanic"),
    ]
    # A file that holds a build id (an --id-file) given as the build: it was exit 7, "not a
    # package archive ... pass that file to --package, or use --release" (report has neither).
    (tmp_path / "build.id").write_text("0123abcd\n")
    cases.append(((str(tmp_path / "build.id"),), 3, f'pass "$(cat {tmp_path / "build.id"})"'))
    for args, code, text in cases:
        done = _report(root, *args, "-o", str(tmp_path / "x.html"))
        assert done.exit_code == code, (args, done.output)
        assert text in done.stderr and len(done.stderr.strip().splitlines()) == 1
    xml = invoke_isolated("diff", "--format", "xml", root=root)
    assert xml.exit_code == 2 and "'xml' is not one of" in xml.stderr, xml.output
    pdf = _report(root, "-o", str(tmp_path / "x.pdf"))
    assert pdf.exit_code == 3, pdf.output
    assert "a .pdf name would hold HTML: name it .html" in pdf.stderr
    assert len(pdf.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "x.pdf").exists()
    # A markdown report is a folder: onto a file it was a traceback (exit 1).
    (tmp_path / "taken.csv").write_text("kept\n")
    md = _report(root, "--format", "markdown", "-o", str(tmp_path / "taken.csv"))
    assert md.exit_code == 3, md.output
    assert "a markdown report is a folder" in md.stderr
    assert (tmp_path / "taken.csv").read_text() == "kept\n"
    # Named as a file (`-o rep.html --format markdown`): it made a folder named rep.html.
    named = _report(root, "--format", "markdown", "-o", str(tmp_path / "rep.html"))
    assert named.exit_code == 3, named.output
    assert "a .html name says a file: name a folder" in named.stderr
    assert not (tmp_path / "rep.html").exists()
    # Under a file: it was a traceback (FileExistsError) too; refused before any work.
    under = _report(root, "-o", str(tmp_path / "taken.csv" / "r.html"))
    assert under.exit_code == 3, under.output
    assert "taken.csv is a file, not a folder" in under.stderr
    # '-o .' and '-o ""' (a folder, no file name) were a traceback (ValueError): exit 3 for
    # '.', and '-o ""' is the empty-option usage error (exit 2), as for every option.
    nameless = _report(root, "-o", ".")
    assert nameless.exit_code == 3 and "names no file" in nameless.stderr, nameless.output
    empty = _report(root, "-o", "")
    assert empty.exit_code == 2 and "option --output is empty" in empty.stderr, empty.output


def test_a_damaged_stored_cross_validation_is_exit_7_as_in_diff(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A cv-K.json that is not JSON was a traceback (JSONDecodeError); one of the wrong shape
    was left out without a word. Both are exit 7 naming the folder, as `diff` says."""
    root, ids = builds
    store = root / "store"
    build = next(p.name for p in (store / "builds").iterdir() if p.name.startswith(ids["binary"]))
    folder = store / "evaluations" / build
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for text in ("not json", '{"folds": "x"}'):
            (folder / "cv-999.json").write_text(text)
            done = _report(root, build[:12], "-o", str(tmp_path / "r.html"))
            assert done.exit_code == 7, done.output
            assert "cross-validation result" in done.stderr and len(done.stderr.splitlines()) == 1
    finally:
        (folder / "cv-999.json").unlink()


def test_without_matplotlib_report_says_what_to_install(
    builds: tuple[Path, dict[str, str]],
) -> None:
    """Without the report extra: exit 3 and one line naming `pipeline[report]`."""
    root, _ = builds
    probe = (
        "import sys; sys.modules['matplotlib'] = None\n"  # `import matplotlib` raises ImportError
        "from pipeline.cli import main; sys.argv = ['pipeline', 'report']; main()"
    )
    env = {**os.environ, "PIPELINE_STORE": str(root / "store")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 3, done.stderr
    assert "pip install 'pipeline[report]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_report_loads_no_torch_and_predict_no_matplotlib(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The report reads build files only (torch never imported); predict never draws."""
    root, ids = builds
    probe = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        "r = CliRunner().invoke(app, sys.argv[1:])\n"
        "print(json.dumps({'code': r.exit_code, 'torch': 'torch' in sys.modules,"
        " 'matplotlib': 'matplotlib' in sys.modules}))\n"
    )
    env = {**os.environ, "PIPELINE_STORE": str(root / "store"), "PIPELINE_LOG_FORMAT": "json"}
    env.update(env_of("binary"))

    def probe_of(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    report = probe_of("report", ids["binary"], "-o", str(tmp_path / "r.html"))
    assert report == {"code": 0, "torch": False, "matplotlib": True}
    package = invoke_isolated("package", ids["binary"], root=root, env=env_of("binary"))
    tarball = event(package.stdout, "package.summary")["path"]
    rows = tmp_path / "rows.csv"
    rows.write_text("".join(TITANIC_CSV.read_text().splitlines(keepends=True)[:20]))
    predicted = probe_of("predict", str(rows), "--package", tarball, "-o", str(tmp_path / "p.csv"))
    assert predicted == {"code": 0, "torch": True, "matplotlib": False}


def test_a_build_made_before_curves_were_stored_says_so(
    builds: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A build without curve files (as builds were before this version) still gets its report:
    the learning curve and the tables, and a note naming the plots it has no data for."""
    from pipeline import artifacts
    from pipeline.store import Store

    _, ids = builds
    root = tmp_path  # a copy: the module's store keeps its latest build
    shutil.copytree(builds[0] / "store", root / "store")
    store = Store.from_uri(str(root / "store"))
    build = artifacts.load_build(store, ids["binary"])
    files = {
        n: d
        for n, d in build.files.items()
        if not n.startswith("curve_") and n not in ("manifest.json", "provenance.json")
    }
    provenance = build.json("provenance.json")
    files["environment"] = json.dumps(provenance["environment"]).encode()
    old = artifacts.write_build(store, files, provenance["inputs"])
    assert old != ids["binary"]
    out = tmp_path / "old.html"
    done = _report(root, old, "-o", str(out))
    assert done.exit_code == 0, done.output
    page = out.read_text()
    assert _plots(page) == ["learning_curve", "confusion_matrix"]
    assert "No plot data in this build for roc, pr, calibration, threshold_metrics" in page
