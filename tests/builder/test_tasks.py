"""The builder's shape: the task registry, light task names, and no import circle in the package, neither
between its modules nor between its step groups (sources, data, compression, export, gate, triton, store,
tasks and the shared modules at the top)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from model_repo_builder import recipe, tasknames, textkind
from model_repo_builder.tasks import registry

pytestmark = pytest.mark.unit

PACKAGE = Path(recipe.__file__).resolve().parent


def test_the_registry_holds_exactly_the_four_tasks() -> None:
    assert set(registry.ENTRIES) == {"tensor", "feature-extraction", "text-classification", "text-generation"}
    assert tuple(registry.ENTRIES) == tasknames.ALL
    assert all(entry.name == name for name, entry in registry.ENTRIES.items())
    assert [n for n, e in registry.ENTRIES.items() if isinstance(e, textkind.TextTask)] == list(
        tasknames.TEXT_TASKS
    )


def test_the_recipe_chooses_the_entry() -> None:
    assert registry.for_recipe(recipe.Recipe()).name == tasknames.TENSOR
    for task in tasknames.TEXT_TASKS:
        text = recipe.Recipe.model_validate({"text": {"task": task}})
        assert registry.for_recipe(text) is registry.ENTRIES[task]


def test_task_names_and_recipe_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None;"
        "import model_repo_builder.tasknames, model_repo_builder.recipe"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_task_strings_are_spelled_in_the_tasknames_module_only() -> None:
    """String constants equal to a task name appear in tasknames.py only (the python-backend steps
    run inside Triton without this package, so they keep their own)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "tasknames.py" or "python_backend" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in tasknames.ALL:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, lazy ones too, except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules `node` imports (a name imported from a package may be its submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == PACKAGE.name}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    if source.split(".")[0] != PACKAGE.name:
        return set()
    subs = {f"{source}.{a.name}" for a in node.names if _is_module(f"{source}.{a.name}")}
    return subs | ({source} if len(subs) < len(node.names) else set())


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        graph[name] = {t for n in _runtime_imports(tree) for t in _targets(name, is_package, n)} - {name}
    return graph


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        walk(module, [])


def _group(module: str) -> str:
    """A module's step group: its subpackage (`sources`, `gate`, ...) or, at the top, the module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_package_has_no_import_circle() -> None:
    graph = _import_graph()
    assert {"model_repo_builder.pipeline", "model_repo_builder.tasks.text"} <= set(graph)
    assert "model_repo_builder.request" in graph["model_repo_builder.tasks.text"]
    _assert_acyclic(graph)


def test_the_step_groups_import_in_one_direction() -> None:
    """Groups are layers: the shared types (`model`, `recipe`, `tasknames`, `textkind`) under the steps,
    the steps under `tasks`, which alone sees them all; no group reaches back into one that uses it."""
    groups: dict[str, set[str]] = {}
    for module, targets in _import_graph().items():
        groups.setdefault(_group(module), set()).update(_group(t) for t in targets)
    groups = {g: {t for t in targets if t != g} for g, targets in groups.items()}
    assert {"sources", "compression", "gate", "tasks", "model"} <= set(groups)
    assert "compression" in groups["tasks"] and "tasks" not in groups["compression"]
    _assert_acyclic(groups)
