"""The package's import graph, read with ``ast`` (function-level imports included):
no cycles, and the layers import one way (commands -> evaluate / predict /
explain / report -> model -> the heads' inference and format -> errors, classes)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "skinfeat"


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: {skinfeat modules it imports anywhere in its code}}."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import skinfeat.x.y` names skinfeat.x.y
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "skinfeat.model.store" in graph and "skinfeat.heads.inference" in graph["skinfeat.model.predictor"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_sees_function_level_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_one_way():
    graph = import_graph()
    above_model = {"skinfeat.evaluate", "skinfeat.predict", "skinfeat.explain", "skinfeat.report", "skinfeat.cli"}
    for name, edges in graph.items():
        if name.startswith("skinfeat.model"):
            wrong = {e for e in edges if e in above_model or e.startswith("skinfeat.commands")}
            assert not wrong, f"{name} imports {sorted(wrong)}, which sit above skinfeat.model"
    inference = graph["skinfeat.heads.inference"] | graph["skinfeat.heads.lgbm_text"]
    assert inference <= {"skinfeat.classes", "skinfeat.errors", "skinfeat.heads.lgbm_text"}, sorted(inference)
