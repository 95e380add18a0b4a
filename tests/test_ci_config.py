"""CI config: .circleci/config.yml and .ci/run call Makefile targets that exist, wired well."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml
from tests.conftest import REPO

CONFIG = REPO / ".circleci" / "config.yml"


def makefile_targets(text: str) -> set[str]:
    """The targets a Makefile defines (rule lines `name ...:`, not `VAR := value`)."""
    targets: set[str] = set()
    for match in re.finditer(
        r"^([A-Za-z0-9_./-][^:=#\s]*(?:\s+[^:=#\s]+)*)\s*::?(?!=)", text, re.M
    ):
        targets.update(match[1].split())
    return targets


def make_calls(script: str) -> set[str]:
    """Every target a `make ...` command in a shell script names (not variables or flags)."""
    found: set[str] = set()
    for line in script.replace("\\\n", " ").splitlines():
        # shlex keeps quoted text whole and splits off &&, ||, ;, | and parentheses.
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set("&|;()<>"):
                if words and words[0] == "make":
                    found.update(w for w in words[1:] if not w.startswith("-") and "=" not in w)
                words = []
            else:
                words.append(token)
    return found


def run_commands(job: dict[str, Any], commands: dict[str, Any]) -> list[str]:
    """The shell text of a job's `run` steps, including those of reusable commands it calls."""
    out: list[str] = []
    for step in job.get("steps", []):
        name, body = next(iter(step.items())) if isinstance(step, dict) else (step, None)
        if name == "run":
            out.append(body if isinstance(body, str) else body["command"])
        elif name in commands:
            out += run_commands(commands[name], commands)
    return out


def step_names(job: dict[str, Any]) -> list[str]:
    """The kinds of a job's steps (checkout, run, store_artifacts, ...)."""
    return [next(iter(s)) if isinstance(s, dict) else s for s in job.get("steps", [])]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The parsed CircleCI configuration."""
    loaded = yaml.safe_load(CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def targets() -> set[str]:
    """The Makefile's targets."""
    return makefile_targets((REPO / "Makefile").read_text())


def workflow_jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each job of the `ci` workflow with its settings (requires, filters)."""
    entries = config["workflows"]["ci"]["jobs"]
    return {
        next(iter(e)) if isinstance(e, dict) else e: (next(iter(e.values())) or {})
        if isinstance(e, dict)
        else {}
        for e in entries
    }


def test_target_parser_reads_this_makefile(targets: set[str]) -> None:
    """The parser finds this Makefile's targets and no variables (so the checks mean something)."""
    assert {"test", "lint", "install", "docker-build", "docker-test"} <= targets
    assert not {"SHELL", "BIN", "PYTHON", "VENV"} & targets


def test_every_make_target_named_in_ci_exists(config: dict[str, Any], targets: set[str]) -> None:
    """Every `make X` in .circleci/config.yml and .ci/run names a target the Makefile defines."""
    commands = config.get("commands", {})
    named: dict[str, set[str]] = {
        f"job {name}": {t for cmd in run_commands(job, commands) for t in make_calls(cmd)}
        for name, job in config["jobs"].items()
    }
    named[".ci/run"] = make_calls((REPO / ".ci" / "run").read_text())
    assert named[".ci/run"] >= {"test", "docker-test"}
    missing = {where: calls - targets for where, calls in named.items() if calls - targets}
    assert not missing, f"make targets that the Makefile lacks: {missing}"
    assert set().union(*named.values()) >= {
        "lint",
        "test",
        "install",
        "docker-build",
        "docker-test",
    }


def test_jobs_check_out_and_use_a_known_executor(config: dict[str, Any]) -> None:
    """Every job checks out the code first and runs on a declared executor or its own machine."""
    for name, job in config["jobs"].items():
        assert step_names(job)[0] == "checkout", name
        executor = job.get("executor")
        assert executor in config.get("executors", {}) or "docker" in job or "machine" in job, name


def test_workflow_wiring(config: dict[str, Any]) -> None:
    """Jobs exist, tag-run jobs require only tag-run jobs, and release runs on tags only."""
    jobs = workflow_jobs(config)
    assert set(jobs) == set(config["jobs"]), "every job runs in the workflow, and only real ones"
    for name, settings in jobs.items():
        for required in settings.get("requires", []):
            assert required in jobs, f"{name} requires unknown job {required}"
            # CircleCI skips a tag-triggered job whose requirements do not also run for tags.
            if settings.get("filters", {}).get("tags"):
                assert jobs[required].get("filters", {}).get("tags"), f"{required} lacks tags"
    release = jobs["release"]
    assert release["filters"]["branches"]["ignore"] == "/.*/"
    assert release["filters"]["tags"]["only"].startswith("/^v")
    assert {"build", "image"} <= set(release["requires"])
    assert "branches" not in jobs["build"].get("filters", {}), "build runs on every branch"


def test_build_job_gates_packages_and_keeps_the_package(config: dict[str, Any]) -> None:
    """The build job trains, evaluates with a gate, packages, and stores the package."""
    build = config["jobs"]["build"]
    script = "\n".join(run_commands(build, config.get("commands", {})))
    order = [script.index(word) for word in ("train", "PIPELINE_GATES__", "evaluate", "package")]
    assert order == sorted(order)
    artifacts = [s["store_artifacts"]["path"] for s in build["steps"] if "store_artifacts" in s]
    assert "store/packages" in artifacts


def test_image_job_has_a_docker_engine(config: dict[str, Any]) -> None:
    """The image job builds and tests the image where a Docker engine exists."""
    job = config["jobs"]["image"]
    executor = config["executors"].get(job.get("executor", ""), job)
    has_engine = "machine" in executor or "setup_remote_docker" in step_names(job)
    assert has_engine, "docker-build needs a machine executor or setup_remote_docker"
    calls = {t for cmd in run_commands(job, config.get("commands", {})) for t in make_calls(cmd)}
    assert {"docker-build", "docker-test"} <= calls


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("make test", {"test"}),
        ("v=\"$(pyenv versions | grep -E '^3\\.11' | tail -n 1)\"; make dev", {"dev"}),
        ("make \\\n  docker-test", {"docker-test"}),
        (
            'make docker-build DOCKER_BUILD_ARGS="--ref-file x" && make -j2 lint',
            {"docker-build", "lint"},
        ),
        ("echo make test  # a comment: make nothing", set()),
        (".venv/bin/pipeline train\nmake install", {"install"}),
    ],
)
def test_make_call_parser(script: str, expected: set[str]) -> None:
    """`make` calls are found after && with variables and flags, not in echo text or comments."""
    assert make_calls(script) == expected


def test_makefile_parser_ignores_assignments() -> None:
    """Assignments (`:=`, `?=`) are not targets; multi-target and double-colon rules are."""
    text = "A := 1\nB ?= 2\nfoo bar: baz\n\tcmd\nqux:: \n\t@x\n.PHONY: foo\n"
    assert makefile_targets(text) == {"foo", "bar", "qux", ".PHONY"}
