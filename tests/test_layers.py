"""The architecture, enforced: modules import only from their own layer or the layers below it.

bottom (errors, settings, log, store, runtime, collector) -> data -> the library (features,
model, split, fit, adamw, metrics, outputs, checkpoints, prepare) -> artifacts (artifacts,
package, wheel, releases) -> stages (train, evaluate, predict) -> serve -> cli. No stage
imports another stage, and the module-level imports have no cycle. Lazy imports inside
functions count too: a layer violation is one wherever it is written.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pipeline

PACKAGE = Path(pipeline.__file__).parent

LAYERS: dict[str, int] = {
    "pipeline": 0,
    "errors": 0,
    "settings": 0,
    "log": 0,
    "store": 0,
    "runtime": 0,
    "collector": 0,
    "cluster": 0,
    "ray_probe": 0,
    "signals": 0,
    "scratch": 0,
    "data": 1,
    "features": 2,
    "model": 2,
    "linear": 2,
    "split": 2,
    "fit": 2,
    "bagging": 2,
    "adamw": 2,
    "products": 2,
    "tensors": 2,
    "distributed_fit": 2,
    "metrics": 2,
    "outputs": 2,
    "checkpoints": 2,
    "prepare": 2,
    "search": 2,
    "fold_checks": 2,
    "trials": 2,
    "halving": 2,
    "plots": 2,
    "artifacts": 3,
    "package": 3,
    "wheel": 3,
    "releases": 3,
    "diff": 3,
    "curves": 3,
    "train": 4,
    "evaluate": 4,
    "predict": 4,
    "tune": 4,
    "report": 4,
    "serve": 5,
    "cli": 6,
    "__main__": 6,
}
STAGES = {"train", "evaluate", "predict", "tune", "report"}


def _component(module: str) -> str:
    """The top-level part of ``pipeline.x.y`` that names its layer (``pipeline`` itself: 0)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pipeline"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = ["pipeline", *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported pipeline module, line, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name == "pipeline" or name.startswith("pipeline."):
                found.append((name, node.lineno, id(node) in top))
    return found


def violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that breaks the layering, as readable lines."""
    out: list[str] = []
    modules = {_module_name(p, root) for p in root.rglob("*.py")}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        mine = _component(module)
        if mine not in LAYERS:
            out.append(f"{module}: not assigned to a layer (add it to LAYERS)")
            continue
        for name, line, _ in _imports(path, module):
            if name not in modules and name.rpartition(".")[0] in modules:
                name = name.rpartition(".")[0]  # `from pipeline.x import SomeName`
            theirs = _component(name)
            if theirs not in LAYERS or theirs == mine:
                continue
            where = f"{path.relative_to(root)}:{line}: {module} imports {name}"
            if LAYERS[theirs] > LAYERS[mine]:
                out.append(f"{where} (a higher layer)")
            elif mine in STAGES and theirs in STAGES:
                out.append(f"{where} (a stage importing another stage)")
    return sorted(set(out))


def cycles(root: Path) -> list[list[str]]:
    """Cycles among module-level imports (lazy imports inside functions are exempt)."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name, _, at_top in _imports(path, module):
            if not at_top:
                continue
            if name not in modules:
                name = name.rpartition(".")[0]
            if name in modules and name != module and not module.startswith(name + "."):
                graph[module].add(name)
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_package_keeps_its_layers() -> None:
    """No module imports from a higher layer, and no stage imports another stage."""
    assert violations(PACKAGE) == []


def test_module_level_imports_have_no_cycle() -> None:
    """The package's module-level import graph is acyclic."""
    assert cycles(PACKAGE) == []


def test_the_check_fails_when_a_stage_imports_another_stage(tmp_path: Path) -> None:
    """A copy of the package where predict imports train, and data imports a stage, is refused."""
    copy = tmp_path / "pipeline"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "builtin"))
    stage = copy / "predict" / "stage.py"
    stage.write_text(stage.read_text() + "\nfrom pipeline import train  # noqa\n")
    read = copy / "data" / "read.py"
    read.write_text(read.read_text() + "\n\ndef f():\n    from pipeline.evaluate import run\n")
    found = violations(copy)
    assert any("pipeline.predict.stage imports pipeline.train (a stage" in v for v in found)
    assert any("pipeline.data.read imports pipeline.evaluate (a higher layer)" in v for v in found)
    assert len(found) == 2


def test_the_readme_maps_every_module_to_its_layer() -> None:
    """The README's Architecture table names every top-level module, in the layer it is in."""
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    order = ["bottom", "data", "library", "artifacts", "stages", "serve", "cli"]
    named: dict[str, int] = {}
    for row in rows:
        layer, modules = row.split("|")[1].strip(), row.split("|")[2]
        for name in modules.replace("`", " ").replace(",", " ").split():
            named[name.split("/")[0].removesuffix(".py")] = order.index(layer)
    expected = {k: v for k, v in LAYERS.items() if k not in ("pipeline", "__main__")}
    assert {k: named.get(k) for k in expected} == expected
