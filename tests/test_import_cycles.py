"""Import cycles among the project's modules (issue #15): every ``import`` statement counts, at the
top of a module or inside a function (an import inside a function only hides a cycle); one under
``if TYPE_CHECKING:`` (for annotations only, never executed) does not. There is no cycle."""

from __future__ import annotations

import ast
import os

from conftest import REPO

PACKAGES = ("taggerflow", "tasks", "workflows")


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but the body of ``if TYPE_CHECKING:`` (imports for annotations only,
    never executed: no import cycle at run time); its ``else`` branch is executed and walked."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}, from every import statement."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        package = mod.split(".") if path.endswith("__init__.py") else mod.split(".")[:-1]
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph[mod] |= {r for r in map(resolve, names) if r and r != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_for_annotations_only_are_no_edge_but_function_level_ones_are():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
                     "def f():\n    import c\n")
    names = {n.names[0].name for n in _runtime_nodes(tree) if isinstance(n, ast.Import)}
    assert names == {"b", "c"}


def test_the_cycle_finder_finds_a_cycle_held_apart_by_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_in_an_import_cycle():
    graph = import_graph()
    assert "taggerflow.shards" in graph["taggerflow.formats.shards"]   # the graph sees imports
    assert "taggerflow.formats.shards" in graph["taggerflow.trainsample"]
    # none at all: the configuration and the modules that check a section of their own (control
    # sample, adversary, scaling types), the event weights and their sums, the lwtnn evaluators, the
    # workflow modules used to be held in cycles apart by function-level imports
    assert cycles(graph) == []
    assert {"taggerflow.control_config", "taggerflow.sum_of_weights", "taggerflow.lwtnn_eval_primitives",
            "workflows.job_arguments"} <= set(graph)
    tasks = {m for m in graph if m.startswith("tasks.")}
    assert len(tasks) > 10 and {"taggerflow.io", "taggerflow.readers", "workflows.remote"} <= set(graph)
