"""The packages' layers: `generators` builds only on inspect_train's foundation (errors, data, checkpoints,
processes, presets, the protocol's split, output paths, boxes, progress bars), which imports nothing above it;
the tasks, commands and API import the generators. No module imports itself back through others at import time."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION = ("inspect_train.errors", "inspect_train.atomic", "inspect_train.checkpoint", "inspect_train.data",
              "inspect_train.distributed", "inspect_train.config_files", "inspect_train.protocol",
              "inspect_train.boxes", "inspect_train.output_paths", "inspect_train.progress",
              "inspect_train.validators", "inspect_train.tb_writer")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in ("inspect_train", "generators") for p in (ROOT / package).rglob("*.py")}


def ours(name: str) -> bool:
    return name.split(".")[0] in ("inspect_train", "generators")


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The project modules a file imports (each `from a.b import c` as a.b.c when that is a module, else a.b)."""
    known = modules()
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and ours(node.module):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if ours(alias.name)}
    return found


def in_foundation(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FOUNDATION)


def test_generators_build_on_the_foundation_only():
    above = {f"{name}: {target}" for name, path in modules().items() if name.startswith("generators")
             for target in imports(path, top_level_only=False)
             if target.startswith("inspect_train") and not in_foundation(target)}
    assert not above, sorted(above)


def test_the_foundation_imports_nothing_above_it():
    above = {f"{name}: {target}" for name, path in modules().items() if in_foundation(name)
             for target in imports(path, top_level_only=False) if not in_foundation(target)}
    assert not above, sorted(above)


def test_no_import_cycle_at_import_time():
    graph = {name: {t for t in imports(path, top_level_only=True) if t != name} for name, path in modules().items()}
    cycles = []
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, cycles
