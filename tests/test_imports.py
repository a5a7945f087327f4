"""The package's import graph, read with ``ast`` (function-level imports included):
no cycles; the layers of the README's "Layout" import one way (a module imports
only its own layer and the layers before it); no private name (``_x``) is
imported across modules; no module re-exports a name it imports."""

import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "skinfeat"

# The data flow, first to last: a module may import its own layer and those before it.
LAYERS = ("skinfeat", "core", "imaging", "data", "backbones", "features", "viz", "heads", "model", "runs",
          "finetune", "apps", "commands", "cli", "__main__")


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files():
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path, name, files):
    """(target module, imported names, line) of each skinfeat import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full, (), node.lineno) if full in files else (base, (alias.name,), node.lineno)


def import_graph():
    """{module: {skinfeat modules it imports anywhere in its code}}."""
    files = _files()
    graph = {}
    for name, path in files.items():
        edges = set()
        for target, _, _ in _imports(path, name, files):
            while target and target not in files:  # `import skinfeat.x.y` names skinfeat.x.y
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def layer(module):
    """The index in LAYERS of a skinfeat module's layer."""
    parts = module.split(".")
    return LAYERS.index(parts[1] if len(parts) > 1 else parts[0])


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


def upward_imports(graph):
    return sorted(f"{a} -> {b}" for a, edges in graph.items() for b in edges if layer(b) > layer(a))


def private_imports():
    """``module: line imports _name from other``, for every private name imported across modules."""
    files = _files()
    found = []
    for name, path in files.items():
        for target, names, line in _imports(path, name, files):
            found += [f"{name}:{line} imports {n} from {target}" for n in names
                      if target.startswith("skinfeat") and n.startswith("_") and not n.startswith("__")]
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "skinfeat.model.store" in graph and "skinfeat.heads.inference" in graph["skinfeat.model.predictor"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_sees_function_level_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_sits_in_a_layer():
    unknown = [m for m in _files() if len(m.split(".")) > 1 and m.split(".")[1] not in LAYERS]
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


def test_layers_import_one_way():
    graph = import_graph()
    assert upward_imports(graph) == []
    # the check sees an upward import when there is one
    assert upward_imports({"skinfeat.core.paths": {"skinfeat.runs.fit"}}) == ["skinfeat.core.paths -> skinfeat.runs.fit"]
    inference = graph["skinfeat.heads.inference"] | graph["skinfeat.heads.lgbm_text"]
    assert inference <= {"skinfeat.core.classes", "skinfeat.core.errors", "skinfeat.heads.lgbm_text"}, sorted(inference)


def test_no_private_name_crosses_a_module():
    assert private_imports() == []


def test_names_are_imported_from_the_module_that_defines_them():
    """No re-exports: ``from skinfeat.x import y`` where x only imports y itself."""
    files = _files()
    defined = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined[name] = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
            t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in ast.walk(n.targets[0] if isinstance(n, ast.Assign) else n.target) if isinstance(t, ast.Name)}
    wrong = []
    for name, path in files.items():
        for target, names, line in _imports(path, name, files):
            if target in defined:
                wrong += [f"{name}:{line} imports {n} from {target}" for n in names if n not in defined[target]]
    assert wrong == []


HEAVY = {"tensorflow", "tensorflow_hub", "tf_keras", "keras", "sklearn", "lightgbm", "ray", "matplotlib", "umap",
         "cv2", "h5py", "scipy", "PIL", "ai_edge_litert", "torch"}


def heavy_modules():
    """The skinfeat modules whose import loads a heavy library: one they import, or
    TensorFlow started at module level (``tensorflow()``), or a heavy skinfeat module
    they import at module level."""
    files = _files()
    direct, light_edges = set(), {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for node in tree.body:
            for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
                if isinstance(sub, ast.Call) and getattr(sub.func, "id", None) in ("tensorflow", "tensorflow_hub"):
                    direct.add(name)
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in HEAVY:
                    direct.add(name)
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target:
                    edges.add(target)
        light_edges[name] = edges
    heavy = set(direct)
    while True:
        more = {m for m, edges in light_edges.items() if m not in heavy and edges & heavy}
        if not more:
            return heavy
        heavy |= more


def test_function_level_imports_are_for_heavy_libraries():
    """Below the commands (which import lazily so that --help stays instant), a module
    imports skinfeat modules inside a function only when they load a heavy library."""
    files, heavy = _files(), heavy_modules()
    assert {"skinfeat.backbones.layers", "skinfeat.heads.base"} <= heavy and "skinfeat.core.paths" not in heavy
    lazy = []
    for name, path in files.items():
        if name.startswith("skinfeat.commands") or name in ("skinfeat.cli", "skinfeat.__main__"):
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skinfeat"):
                    targets = {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                               for a in node.names}
                    lazy += [f"{name}:{node.lineno} imports {t} in a function" for t in targets if t not in heavy]
    assert lazy == []


def test_every_benchmark_imports():
    """A benchmark is not run by the suite, so a name it imports that moved or went
    (as `runs.cv.decide` did) would only show when someone runs it: import each."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    names = sorted(p.stem for p in bench.glob("*.py"))
    code = "import importlib, sys\nsys.argv = ['x']\nfor n in sys.stdin.read().split():\n    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=bench, input=" ".join(names), capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(bench)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(names) >= 10
