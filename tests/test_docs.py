"""The README and CI files stay true to the code they describe."""

from __future__ import annotations

import re

import yaml
from tests.conftest import REPO

from pipeline.errors import EXIT_CODES
from pipeline.settings import LOADER_VARS, leaves

README = (REPO / "README.md").read_text()


def test_readme_documents_every_environment_variable() -> None:
    """Every setting's variable (and every loader variable) has a row in the README."""
    names = [leaf.env for leaf in leaves()] + list(LOADER_VARS)
    missing = [n for n in names if f"| `{n}` |" not in README]
    assert missing == []


def test_readme_documents_every_exit_code() -> None:
    """Each error class's exit code appears in the README's exit-code table."""
    for name, code in EXIT_CODES.items():
        assert re.search(rf"^\| {code} \| ", README, re.MULTILINE), name


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls `make test`, the README's test command."""
    assert "make test" in README
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_circleci_config_parses_and_names_existing_make_targets() -> None:
    """Every `make X` in .circleci/config.yml is a target the Makefile defines."""
    config = yaml.safe_load((REPO / ".circleci" / "config.yml").read_text())
    assert set(config["jobs"]) >= {"lint", "test", "build"}
    text = (REPO / ".circleci" / "config.yml").read_text()
    used = set(re.findall(r"make ([a-z0-9-]+)", text))
    makefile = (REPO / "Makefile").read_text()
    defined = set(re.findall(r"^([a-z0-9-]+):", makefile, re.MULTILINE))
    assert used and used <= defined, used - defined


def test_every_event_the_code_emits_is_named_in_the_readme() -> None:
    """A user parsing the event stream (as MLflow or structlog pipelines do) met tune.cluster,
    tune.start, serve.workers, data.summary... that the README never named: every event name a
    module logs is listed there now, and a new one must be too."""
    import ast
    import re

    emitted = set()
    for path in (REPO / "src" / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("debug", "info", "warning", "error") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and re.fullmatch(r"[a-z]+\.[a-z_]+", str(node.args[0].value))):  # fmt: skip
                emitted.add(str(node.args[0].value))
    readme = (REPO / "README.md").read_text()
    assert len(emitted) > 50
    assert sorted(e for e in emitted if f"`{e}`" not in readme) == []
