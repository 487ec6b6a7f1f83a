"""raedit's structure: its imports run only downward through its layers, and never in a circle.

The layers, lowest first. A module may import modules of its own layer (without a cycle) and of the layers below,
never above. Every import counts: at the top of a module, inside a function, or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import raedit

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("primitives", ("raedit.core",)),
    ("models and representations", ("raedit.encoders", "raedit.decoder", "raedit.latent_stats", "raedit.autoencoder",
                                    "raedit.interop", "raedit.models", "raedit.diffusion", "raedit.losses")),
    ("data, evaluation and measurement", ("raedit.data", "raedit.eval", "raedit.perf")),
    ("training", ("raedit.train",)),
    ("jobs", ("raedit.jobs", "raedit.experiments")),
    ("web app", ("raedit.app",)),
    ("command line", ("raedit.cli",)),
]
# Sampling and evaluation never depend on training, not even through other modules.
NEVER_REACH_TRAINING = ("raedit.jobs.sample", "raedit.jobs.eval_recon", "raedit.eval")

PACKAGE_ROOT = Path(raedit.__file__).parent


def module_files() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file."""
    modules = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports (for `from X import Y`: X.Y when it is a module, else X)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from ..x import y` inside package a.b.c is a.b.x
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import raedit.a.b` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith("raedit") and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int | None:
    if name == "raedit":
        return 0
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_has_a_layer():
    assert [name for name in import_graph() if layer_of(name) is None] == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import from a lower layer to a higher one, as "a (its layer) imports b (its layer)"."""
    return [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
            for name, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target) > layer_of(name)]


def test_imports_run_only_downward():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_sampling_and_evaluation_never_reach_training():
    graph = import_graph()
    for start in [name for name in graph if any(name == p or name.startswith(p + ".") for p in NEVER_REACH_TRAINING)]:
        reached, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()] - reached:
                reached.add(target)
                todo.append(target)
        assert sorted(name for name in reached if name.startswith("raedit.train")) == [], start


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"raedit.core.a": {"raedit.train.b"}, "raedit.train.b": {"raedit.core.a"}}
    assert upward_imports(graph) == ["raedit.core.a (primitives) imports raedit.train.b (training)"]
    assert find_cycle(graph) == ["raedit.core.a", "raedit.train.b", "raedit.core.a"]
    downward = {"raedit.core.a": set(), "raedit.train.b": {"raedit.core.a"}}
    assert upward_imports(downward) == [] and find_cycle(downward) is None
