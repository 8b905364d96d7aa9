"""The layering rule of docs/architecture.md, enforced: import-linter's contracts
(pyproject ``[tool.importlinter]``) hold, no module imports itself through a cycle, and the
processing guarantee is decided in one module only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    """tools > service > kafka > config > core > errors; no TensorFlow in the service; no
    aiokafka above the Kafka edge; training shares the pure core only."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                imported = graph.find_modules_directly_imported_by(child) & modules
                work.append((child, iter(sorted(imported))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("streamcast", "training")
    modules = {m for m in graph.modules if m.split(".")[0] in ("streamcast", "training")}
    assert _cycles(graph, modules) == []


def test_the_processing_guarantee_is_decided_in_one_module() -> None:
    """No isinstance on sinks and no branching on ``processing_guarantee`` outside
    ``streamcast.kafka.guarantee`` (and the settings that define it)."""
    allowed = {"streamcast/kafka/guarantee.py", "streamcast/config.py"}
    offenders = []
    for path in sorted((REPO / "streamcast").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "processing_guarantee":
                offenders += [] if rel in allowed else [f"{rel}:{node.lineno}"]
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and any(isinstance(a, ast.Name) and a.id.endswith("Sink") for a in node.args[1:])
            ):
                offenders.append(f"{rel}:{node.lineno} isinstance on a sink")
    assert offenders == []
