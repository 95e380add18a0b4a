"""`pipeline package --format wheel`: a reproducible, pip-installable, self-verifying wheel."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import REPO, event, invoke_isolated, run_cli

from pipeline.errors import ConfigError, IntegrityError
from pipeline.package import open_directory, open_package
from pipeline.wheel import distribution_name, import_name, wheel_filename, wheel_version

TITANIC_CSV = REPO / "src" / "pipeline" / "datasets" / "titanic.csv"
WHEEL_NAME = "titanic_model-0.1.0-py3-none-any.whl"

# Prints predict()'s output as JSON, or the class of the error it raised.
PREDICT_SCRIPT = """
import json, sys
import pandas as pd
import titanic_model
frame = pd.read_csv(sys.argv[1], na_values=["?"])
try:
    out = titanic_model.predict(frame)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__module__}.{type(exc).__qualname__}",
                      "message": str(exc)}))
else:
    print(json.dumps({"ids": [titanic_model.PACKAGE_ID, titanic_model.BUILD_ID,
                              titanic_model.__version__],
                      "rows": json.loads(out.to_json(orient="records"))}))
"""


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A titanic model trained and packaged with --format wheel, as a CI job runs it."""
    root = tmp_path_factory.mktemp("wheel")
    env = {
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_CONFIG_DIR": str(REPO / "config"),
        "PIPELINE_PRESET": "titanic",
        "PIPELINE_TRAIN__MAX_EPOCHS": "5",
    }
    # In-process (set-up): the tests' own `pipeline package` and `predict` are real processes.
    trained = invoke_isolated("train", root=root, env=env)
    assert trained.exit_code == 0, trained.output[-2000:]
    done = invoke_isolated(
        "package", "--format", "wheel", "--id-file", str(root / "package.id"), root=root, env=env
    )
    assert done.exit_code == 0, done.output[-2000:]
    folder = root / "store" / "packages" / "titanic"
    rows = root / "rows.csv"
    rows.write_text("".join(TITANIC_CSV.read_text().splitlines(keepends=True)[:21]))
    return {
        "root": root,
        "env": env,
        "summary": event(done.stdout, "package.summary"),
        "package_id": (root / "package.id").read_text().strip(),
        "archive": folder / "0.1.0.tar.gz",
        "wheel": folder / WHEEL_NAME,
        "rows": rows,
    }


def _install(wheel: Path, target: Path) -> Path:
    """pip-install ``wheel`` into ``target`` (no index, no dependencies) and return it."""
    _ok(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-index",
                "--target",
                str(target),
                "--disable-pip-version-check",
                "--no-compile",
                str(wheel),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    )
    return target


def _predict_installed(site: Path, rows: Path) -> dict[str, Any]:
    """Run PREDICT_SCRIPT in a fresh interpreter that sees ``site`` (and pipeline's venv)."""
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = _ok(
        subprocess.run(
            [sys.executable, "-c", PREDICT_SCRIPT, str(rows)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_wheel_is_written_beside_the_archive_and_named_in_the_summary(
    built: dict[str, Any],
) -> None:
    """The summary names the wheel and its sha256, and --id-file still gets the archive's id."""
    summary = built["summary"]
    assert built["wheel"].is_file()
    assert summary["wheel"] == str(built["wheel"])
    assert summary["wheel_sha256"] == hashlib.sha256(built["wheel"].read_bytes()).hexdigest()
    assert built["package_id"] == summary["package_id"]
    assert built["package_id"] == hashlib.sha256(built["archive"].read_bytes()).hexdigest()


def test_packaging_twice_gives_a_byte_identical_wheel(built: dict[str, Any]) -> None:
    """Sealing the same build again rewrites the wheel with exactly the same bytes."""
    first = built["wheel"].read_bytes()
    built["wheel"].unlink()
    done = _ok(run_cli("package", "--format", "wheel", env=built["env"], cwd=built["root"]))
    assert built["wheel"].read_bytes() == first
    assert event(done.stdout, "package.summary")["wheel_sha256"] == (
        hashlib.sha256(first).hexdigest()
    )


def test_default_format_writes_no_wheel(cli: Any, store: Path) -> None:
    """Without --format wheel, `pipeline package` writes the archive and nothing else."""
    env = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "1"}
    assert cli("train", env=env).exit_code == 0
    result = cli("package", env=env)
    assert result.exit_code == 0, result.output
    assert "wheel" not in event(result.output, "package.summary")
    assert sorted(p.name for p in (store / "packages" / "titanic").iterdir()) == [
        "0.1.0.json",
        "0.1.0.tar.gz",
    ]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("PIPELINE_MODEL__VERSION", "3.0.0-foo"), ("PIPELINE_MODEL__NAME", "2024-prices")],
)
def test_a_name_or_version_no_wheel_can_carry_stores_nothing(
    cli: Any, store: Path, setting: str, value: str
) -> None:
    """`package --format wheel` of version 3.0.0-foo was exit 3, and the archive of 3.0.0-foo
    was in the store already, releasable, its version used up: the wheel's name and version
    are checked before anything is written."""
    env = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "1"}
    assert cli("train", env=env).exit_code == 0
    result = cli("package", "--format", "wheel", env={**env, setting: value})
    assert result.exit_code == 3, result.output
    assert "wheel" in result.stderr and result.stderr.count("\n") == 1
    assert not (store / "packages").exists() or not any((store / "packages").rglob("*.*"))


def test_two_models_that_give_one_wheel_are_refused(cli: Any, store: Path) -> None:
    """titanic-x and titanic_x are two models of the store, both the wheel titanic-x-model:
    installing one replaced the other without a word. The second is refused, naming the
    first; without --format wheel it packages."""
    env = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "1"}
    assert cli("train", env=env).exit_code == 0
    first = cli("package", "--format", "wheel", env={**env, "PIPELINE_MODEL__NAME": "titanic-x"})
    assert first.exit_code == 0, first.output
    second = {**env, "PIPELINE_MODEL__NAME": "titanic_x"}
    result = cli("package", "--format", "wheel", env=second)
    assert result.exit_code == 3, result.output
    assert "gives the wheel titanic-x-model, as model 'titanic-x'" in result.stderr
    assert not (store / "packages" / "titanic_x").exists()
    assert cli("package", env=second).exit_code == 0


def test_wheel_holds_exactly_the_verified_files_and_a_consistent_record(
    built: dict[str, Any],
) -> None:
    """Every entry is listed in RECORD with its right hash and size, and model/ is the package."""
    opened = open_package(built["archive"])
    with zipfile.ZipFile(built["wheel"]) as zf:
        names = zf.namelist()
        contents = {n: zf.read(n) for n in names}
        infos = zf.infolist()
    dist_info = "titanic_model-0.1.0.dist-info"
    record = list(csv.reader(io.StringIO(contents[f"{dist_info}/RECORD"].decode())))
    assert sorted(row[0] for row in record) == sorted(names)
    assert len(names) == len(set(names))
    for path, digest, size in record:
        if path == f"{dist_info}/RECORD":
            assert (digest, size) == ("", "")
            continue
        data = contents[path]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expected}", path
        assert int(size) == len(data), path
    model = {n.split("/model/", 1)[1]: d for n, d in contents.items() if "/model/" in n}
    assert model == opened.files
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr for info in infos} == {0o644 << 16}
    metadata = contents[f"{dist_info}/METADATA"].decode()
    assert "Name: titanic-model\n" in metadata
    assert "Requires-Dist: pipeline==0.1.0\n" in metadata
    assert "Requires-Python: >=3.11,<3.12\n" in metadata  # the project's own, as pyproject says
    assert "Tag: py3-none-any\n" in contents[f"{dist_info}/WHEEL"].decode()


def test_installed_wheel_predicts_exactly_like_pipeline_predict(
    built: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    """predict(frame) from the pip-installed wheel, in a fresh interpreter, equals `pipeline
    predict --package` (run in-process: it is the reference)."""
    site = _install(built["wheel"], tmp_path / "site")
    got = _predict_installed(site, built["rows"])
    assert got["ids"] == [built["package_id"], built["summary"]["build_id"], "0.1.0"]
    out = tmp_path / "predictions.csv"
    args = ("predict", str(built["rows"]), "--package", str(built["archive"]), "--output", str(out))
    result = cli(*args, env=built["env"])
    assert result.exit_code == 0, result.output[-2000:]
    expected = pd.read_csv(out, dtype={"prediction": str})  # class labels are text
    wheel = pd.DataFrame(got["rows"])
    assert len(wheel) == len(expected) == 20
    assert list(wheel.columns) == list(expected.columns)
    assert wheel["prediction"].tolist() == expected["prediction"].tolist()
    probabilities = [c for c in expected.columns if c.startswith("probability_")]
    assert probabilities
    pd.testing.assert_frame_equal(wheel[probabilities], expected[probabilities], rtol=1e-6)


def test_installed_wheel_refuses_modified_weights(built: dict[str, Any], tmp_path: Path) -> None:
    """One byte changed in the installed model/weights.pt makes predict raise IntegrityError."""
    site = _install(built["wheel"], tmp_path / "site")
    weights = site / "titanic_model" / "model" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    got = _predict_installed(site, built["rows"])
    assert got["error"] == "pipeline.errors.IntegrityError"
    assert "weights.pt" in got["message"]


def test_open_directory_verifies_like_open_package(built: dict[str, Any], tmp_path: Path) -> None:
    """open_directory accepts the extracted files with the archive's ids and refuses changes."""
    opened = open_package(built["archive"])
    folder = opened.extract(tmp_path)
    again = open_directory(folder)
    assert (again.package_id, again.build_id, again.files) == (
        opened.package_id,
        opened.build_id,
        opened.files,
    )
    (folder / "extra.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"extra\.json"):
        open_directory(folder)
    (folder / "extra.json").unlink()
    (folder / "schema.json").write_bytes((folder / "schema.json").read_bytes() + b" ")
    with pytest.raises(IntegrityError, match=r"schema\.json"):
        open_directory(folder)
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(IntegrityError, match="lacks"):
        open_directory(folder)


@pytest.mark.parametrize(
    ("model", "version", "dist", "package", "filename"),
    [
        ("house-prices", "0.1.0", "house-prices-model", "house_prices_model",
         "house_prices_model-0.1.0-py3-none-any.whl"),
        ("Titanic.v2", "1.2.0-rc.1", "titanic-v2-model", "titanic_v2_model",
         "titanic_v2_model-1.2.0rc1-py3-none-any.whl"),
        ("a__b", "2.0.0-beta", "a-b-model", "a_b_model", "a_b_model-2.0.0b0-py3-none-any.whl"),
    ],
)  # fmt: skip
def test_wheel_names_follow_the_packaging_specs(
    model: str, version: str, dist: str, package: str, filename: str
) -> None:
    """Model names normalise to a PEP 503 distribution and versions to PEP 440."""
    assert distribution_name(model) == dist
    assert import_name(model) == package
    assert wheel_filename(model, version) == filename


def test_wheel_refuses_names_and_versions_it_cannot_express() -> None:
    """A name that is not importable or a pre-release PEP 440 cannot spell is a ConfigError."""
    with pytest.raises(ConfigError, match="import name"):
        import_name("3d-model")
    with pytest.raises(ConfigError, match="pre-release"):
        wheel_version("1.0.0-x.7.z")
