"""The package's shape: no import circles, data flows one way, adapters stay pure.

Imports are read from the source (module level and inside functions alike); importing
a submodule counts as importing its parent packages, as it does at run time.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parent.parent
#: Source folders and the package each one is.
PACKAGES = {"rmclient": "rmclient", "adapters": "rmclient.adapters", "launchers": "rmclient.launchers"}
#: What sits below the client: none of it may import ``rmclient.client``.
BELOW_CLIENT = (
    "rmclient.adapters", "rmclient.model", "rmclient.local", "rmclient.dispatch", "rmclient.send", "rmclient.pool",
    "rmclient.transport", "rmclient.recipes", "rmclient.data", "rmclient.engines", "rmclient.errors",
    "rmclient.scorer", "rmclient.compose", "rmclient._loop", "rmclient.modelinfo", "rmclient.batch_tokenizer",
    "rmclient.batcher", "rmclient.serve", "rmclient.extras", "rmclient.logs", "rmclient.metrics", "rmclient.jsonsafe",
    "rmclient.judge_recipes", "rmclient.verdicts", "rmclient.progress", "rmclient.preference",
)
#: The one kind of upward edge allowed: the facades' ``as_reward_func`` / ``as_compute_score``, imported on use.
FACADE_EDGES = {
    ("rmclient.client", "rmclient.integrations.trl"),
    ("rmclient.compose", "rmclient.integrations.trl"),
    ("rmclient.compose", "rmclient.integrations.verl"),
}


def _modules() -> Dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([package, *parts]) if parts else package] = path
    return mods


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    graph: Dict[str, Set[str]] = defaultdict(set)
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                while target and target != "rmclient":  # a submodule brings its parent packages
                    if target != name and not name.startswith(target + "."):
                        graph[name].add(target)
                    target = target.rpartition(".")[0]
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_imports():
    graph = _graph()
    assert "rmclient.dispatch" in graph["rmclient.client"]
    assert "rmclient.adapters.base" in graph["rmclient.adapters.sglang"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_nothing_below_the_client_imports_it():
    graph = _graph()
    bad = sorted(m for m, deps in graph.items() if m.startswith(BELOW_CLIENT) and "rmclient.client" in deps)
    assert bad == []


def test_only_the_facades_reach_up_into_the_integrations():
    graph = _graph()
    edges = {(m, d) for m, deps in graph.items() for d in deps
             if d.startswith("rmclient.integrations") and not m.startswith(("rmclient.integrations", "rmclient.cli",
                                                                           "rmclient.commands"))}
    edges = {(m, d) for m, d in edges if d != "rmclient.integrations"}  # the parent of an allowed edge
    assert edges <= FACADE_EDGES


def test_adapters_are_pure_data():
    graph = _graph()
    allowed = ("rmclient.adapters", "rmclient.errors", "rmclient.jsonsafe", "rmclient.engines")
    bad = {m: sorted(d for d in deps if not d.startswith(allowed))
           for m, deps in graph.items() if m.startswith("rmclient.adapters")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_every_package_is_in_the_wheel():
    """A package missing from pyproject's list works in the editable checkout and is absent from
    ``pip install .`` (``rmclient serve`` was, once)."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {m for m, path in _modules().items() if path.name == "__init__.py"}
    assert found == listed
    assert {name: (ROOT / where).is_dir() for name, where in setuptools["package-dir"].items()} == {
        name: True for name in setuptools["package-dir"]}
