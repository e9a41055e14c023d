"""The import structure of the `covr` package: no import circle (lazy imports inside functions
included: they hide a circle, they do not remove it), and the light layers stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "covr"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below `package` (a package is its __init__.py)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(modules: dict[str, Path], root: str = "covr") -> dict[str, set[str]]:
    """module -> the modules of `root` it imports, anywhere in its source (top level, functions,
    `if TYPE_CHECKING` blocks). `from a.b import c` points at a.b.c when that is a module, else at a.b."""

    def owner(name: str) -> str | None:  # the longest prefix of `name` that is a module of ours
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {owner(alias.name) for alias in node.names if alias.name.split(".")[0] == root}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y / from .. import y
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == root:
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else owner(base) for a in node.names}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module, as a path a -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package has ~150 modules, recursion depth is no issue
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:  # v roots a component: everything above it on the stack
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(component, graph) for component in components]


def _circle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    return sorted(component)  # unreachable for a strongly connected component


def test_covr_has_no_import_cycle():
    modules = module_files()
    assert "covr.models.loading" in modules and len(modules) > 50  # the walk found the package
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import circles in covr:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_lazy_and_relative_imports(tmp_path):
    """The check itself: a circle closed only by an import inside a function, or by a relative
    import, is found; the same modules without it are not."""
    pkg = tmp_path / "covr"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from covr.sub import b\n")
    (pkg / "sub" / "b.py").write_text("import covr.c\n")
    (pkg / "c.py").write_text("def late():\n    from covr.sub.a import thing\n")
    (pkg / "d.py").write_text("from .sub import a\n")
    modules = module_files(pkg)
    assert find_cycles(import_graph(modules)) == [["covr.c", "covr.sub.a", "covr.sub.b", "covr.c"]]
    (pkg / "c.py").write_text("x = 1\n")
    assert find_cycles(import_graph(module_files(pkg))) == []
    (pkg / "sub" / "b.py").write_text("from .. import d\n")
    (pkg / "d.py").write_text("from .sub.a import x\n")
    assert find_cycles(import_graph(module_files(pkg))) == [["covr.d", "covr.sub.a", "covr.sub.b", "covr.d"]]


# covr.models in layers (covr/models/loading.py): a module imports only from its own layer or below,
# and the generic layers reach a backbone family only through the registry (covr.models.families).
MODEL_LAYERS = [
    ("backbone", "checkpoint_io", "clips", "heads", "lavis_vit", "retriever", "tokenizer", "trainable", "uncertainty", "xaligner"),
    ("blip", "blip2"),  # one package per family
    ("families",),
    ("covr_checkpoint", "folder", "formats"),
    ("build",),
    ("loading",),
]


def test_models_layers_point_down():
    layer_of = {f"covr.models.{name}": rank for rank, names in enumerate(MODEL_LAYERS) for name in names}

    def layer(module: str) -> int | None:
        if not module.startswith("covr.models."):
            return None
        return layer_of.get(".".join(module.split(".")[:3]))

    graph = import_graph(module_files())
    upward, unlisted, around_registry = [], [], []
    for module, targets in graph.items():
        if module.startswith("covr.models.") and layer(module) is None:
            unlisted.append(module)
        for target in targets:
            if layer(module) is not None and layer(target) is not None and layer(target) > layer(module):
                upward.append(f"{module} -> {target}")
            family = layer(target) == 1 and layer(module) != 1
            if family and module != "covr.models.families" and module.startswith("covr.models"):
                around_registry.append(f"{module} -> {target}")
    assert not unlisted, f"place these in MODEL_LAYERS: {unlisted}"
    assert not upward, "imports that point up a layer: " + ", ".join(sorted(upward))
    assert not around_registry, "family imported outside covr.models.families: " + ", ".join(sorted(around_registry))


@pytest.mark.parametrize("module", ["covr.data", "covr.eval.metrics", "covr.similarity", "covr.losses"])
def test_light_modules_do_not_import_transformers(module):
    """Data loading, metrics, similarity and losses are plain torch: importing them must not pull in
    transformers (seconds of import time and a heavy dependency for data-only tools)."""
    code = f"import sys, {module}; print(sorted(m for m in ('transformers', 'covr.models') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"importing {module} imports {run.stdout.strip()}"
