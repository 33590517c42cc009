"""The package layering of the README's "Layout" section, read from the source: each package imports only the
packages below it, and no two modules import each other (directly or through others)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "semvlp"
KERNELS = PACKAGE.parent / "kernels"

# Package -> the semvlp packages its modules may import (besides itself). "" is the package root.
ALLOWED = {
    "kernels": set(),
    "_ext": set(),
    "ops": {"kernels", "_ext"},
    "nn": {"ops"},
    "model": {"nn", "ops"},
    "data": {"model.config", "model.inputs"},
    "eval": {"data", "model", "nn", "ops"},
    "train": {"eval", "data", "model", "nn", "ops"},
    "finetune": {"train", "eval", "data", "model", "nn", "ops"},
    "experiments": {"finetune", "train", "eval", "data", "model", "nn", "ops"},
    "integrations": {"model", "nn", "ops"},
    "cli": {"experiments", "finetune", "train", "eval", "data", "model", "nn", "ops", "integrations", "_ext",
            "presets"},
    "presets": set(),  # finds the shipped configs/ files; imports nothing of semvlp
    "_moved": set(),  # forwards old module paths by name, importing nothing at import time
    "": {"model", "ops", "integrations", "_moved"},
}
# Names kept at their old import path for compatibility: resolved on attribute access, never at import.
COMPATIBILITY_HOOKS = {"semvlp.nn": {"semvlp.integrations.hf"}}


def _modules() -> dict[str, Path]:
    found = {}
    for root, prefix in ((PACKAGE, "semvlp"), (KERNELS, "semvlp.kernels")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix] + parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> set[str]:
    """The semvlp modules `module` imports anywhere in its source (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            # `from . import _C` names a compiled module, not the package's __init__.
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES or node.module is None
                     else target for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found - {module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(importer: str, imported: str) -> bool:
    own, target = _package(importer), _package(imported)
    if own == target:
        return True
    rules = ALLOWED[own]
    sub = ".".join(imported.split(".")[1:3])
    return target in rules or sub in rules


def test_every_package_has_a_rule():
    assert {_package(m) for m in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layering(module):
    hooks = COMPATIBILITY_HOOKS.get(module, set())
    wrong = sorted(t for t in GRAPH[module] if not _allowed(module, t) and t not in hooks)
    assert not wrong, f"{module} imports {wrong}, above its layer"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            # A package's __init__ importing its own submodules is how a package re-exports; not a cycle.
            if target.startswith(module + "."):
                continue
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "p": {"p.x"}, "p.x": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_the_rules_catch_a_model_that_imports_data():
    assert not _allowed("semvlp.model.encoder", "semvlp.data.collate")
    assert _allowed("semvlp.data.collate", "semvlp.model.inputs")
    assert not _allowed("semvlp.eval.task_eval", "semvlp.train.loop")
