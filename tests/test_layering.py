"""The import graph of ``r1probe/``, built from the source, follows the layer order and has no cycle.

Layers, lowest first (a module imports only its own package or a lower layer)::

    base (errors, provenance, settings, r1probe/__init__) -> models -> data -> extract -> steering -> eval
    -> probes -> distill -> analysis -> tuning -> pipeline -> cli

CLI modules (``r1probe/cli.py``, ``r1probe/cli_options.py``, ``r1probe/__main__.py`` and every
``*/commands.py``) form the top layer; no other module imports one. Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "r1probe"

LAYERS = ["base", "models", "data", "extract", "steering", "eval", "probes", "distill", "analysis", "tuning",
          "pipeline", "cli"]
BASE = {"r1probe", "r1probe.errors", "r1probe.provenance", "r1probe.settings"}
TOP_CLI = {"r1probe.cli", "r1probe.cli_options", "r1probe.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _imports(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every r1probe module ``mod`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from pkg import sub" imports the submodule when there is one, else the package
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
        else:
            continue
        for n in names:
            if n == "r1probe" or n.startswith("r1probe."):
                target = _resolve(n, modules)
                if target and target != mod:
                    out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def is_cli(mod: str) -> bool:
    return mod in TOP_CLI or mod.endswith(".commands")


def layer_of(mod: str) -> str:
    if is_cli(mod):
        return "cli"
    if mod in BASE:
        return "base"
    return mod.split(".")[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def _cycle_edges(graph, comps) -> list[str]:
    lines = []
    for comp in comps:
        members = set(comp)
        lines.append("cycle: " + ", ".join(f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in members))
    return lines


def test_every_module_has_a_known_layer():
    unknown = sorted(m for m in _modules() if layer_of(m) not in LAYERS)
    assert not unknown, f"modules outside the layer order {LAYERS}: {unknown}"


def test_no_module_import_cycle():
    graph = import_graph()
    comps = _cycles(graph)
    assert not comps, "import cycles between modules:\n" + "\n".join(_cycle_edges(graph, comps))


def test_no_package_import_cycle():
    graph = import_graph()
    pkg: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            la, lb = layer_of(a), layer_of(b)
            if la != lb:
                pkg.setdefault(la, set()).add(lb)
                pkg.setdefault(lb, set())
    comps = _cycles(pkg)
    rank = {name: i for i, name in enumerate(LAYERS)}
    # every cycle between layers climbs the order at least once: name those upward edges
    up = [f"{a} -> {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
          if any(layer_of(a) in c and layer_of(b) in c for c in comps) and rank[layer_of(b)] > rank[layer_of(a)]]
    assert not comps, f"import cycles between packages {comps}; upward edges:\n" + "\n".join(up)


def test_imports_follow_the_layer_order():
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = [f"{a} ({layer_of(a)}) -> {b} ({layer_of(b)})" for a, targets in sorted(import_graph().items())
           for b in sorted(targets) if rank.get(layer_of(b), 99) > rank.get(layer_of(a), -1)]
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)


def test_no_library_module_imports_a_cli_module():
    bad = [f"{a} -> {b}" for a, targets in sorted(import_graph().items()) for b in sorted(targets)
           if is_cli(b) and not is_cli(a)]
    assert not bad, "library modules importing CLI modules:\n" + "\n".join(bad)


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # probes/api.py imports the store inside run_probe only
    assert "r1probe.extract.store" in graph["r1probe.probes.api"]
