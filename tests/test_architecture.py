"""The package's shape: no import cycles (lazy imports included), a small top level, a store
that knows nothing of conversion or privacy, and library messages that name no CLI flag."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fedimage

PACKAGE = Path(fedimage.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the fedimage modules it imports anywhere in its body (functions included)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    edges.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_at_most_eight_top_level_modules():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top


def test_store_imports_nothing_from_conversion_or_privacy():
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith("fedimage.store"):
            bad = {edge for edge in edges if edge.startswith(("fedimage.conversion", "fedimage.privacy"))}
            assert not bad, f"{module} imports {bad}"


def test_core_imports_no_training_or_loaders():
    graph = import_graph()
    core = ("fedimage.sources", "fedimage.conversion", "fedimage.store", "fedimage.partitioning")
    for module, edges in graph.items():
        if module.startswith(core):
            bad = {
                e for e in edges if e.startswith(("fedimage.training", "fedimage.loaders", "fedimage.cli"))
            }
            assert not bad, f"{module} imports {bad}"


FLAG = re.compile(r"(?<![\w`-])--[a-z][a-z0-9-]+(?!\w)")


def _cli_flags() -> set[str]:
    from fedimage.cli import build_parser

    _, parsers = build_parser()
    return {
        flag
        for parser in parsers.values()
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--")
    }


def test_library_messages_name_parameters_not_flags():
    """Outside ``cli/``, no string (docstrings aside) names one of fedimage's ``--flags``: the CLI
    shows flags. (Other programs' flags, such as ``ray start --head``, may be named, and a string
    that is a flag and nothing else is an argument of another program: ``flower-supernode``'s
    ``"--insecure"``.)"""
    ours = _cli_flags()
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
                if FLAG.fullmatch(text):  # an argv element of another program
                    continue
                if set(FLAG.findall(text)) & ours:
                    offenders.append(f"{path.name}: {text[:80]!r}")
    assert not offenders, offenders
