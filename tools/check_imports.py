"""Import cycles in the product packages, counting every import: at module top level, inside
functions, and under `if TYPE_CHECKING:` (a cycle hidden from the interpreter is still one for
the reader and for the layout).

    python -m tools.check_imports          # CI: fail on any cycle, and on an import against the layers
    python -m tools.check_imports --list   # every cycle, with the imports that make it

Two graphs:
* modules of `gateway` (a cycle is a strongly connected component of more than one module);
* the packages `gateway`, `hil` and `tools` against each other. They are layers, in that order:
  a package imports only those before it (hil and tools use the gateway, tools use hil; the
  product imports neither, hil no tool). An import the other way fails at once, with no baseline
  (`LAYER:` lines), even before it closes a cycle.

There is no baseline: the re-layout (issue 15) removed the last cycles (13 modules of the app
and its routes, and the three packages against each other), so any cycle fails. The usual ways
out: import the other way round, move the shared piece to a module both can import, or pass it
in (the HTTP tier takes a structural `Served` type, not the app that builds it).
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "hil", "tools")   # layers: each imports only the ones before it


@dataclass
class Edge:
    target: str
    line: int
    kind: str            # "top" | "function" | "type-checking"


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    edges: list[Edge] = field(default_factory=list)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it sits."""
    def walk(node: ast.AST, kind: str) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, "function" if kind == "top" else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                yield from walk(child, kind)
    yield from walk(tree, "top")


def load(packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = _module_name(path)
            mods[name] = Module(name, path, path.name == "__init__.py")
    for mod in mods.values():
        tree = ast.parse(mod.path.read_text(), str(mod.path))
        for node, kind in _imports(tree):
            for target in _resolve(mod, node, mods):
                if target != mod.name and not target.startswith(mod.name + "."):
                    # a package importing its own submodules is how packages work, not a cycle
                    mod.edges.append(Edge(target, node.lineno, kind))
    return mods


def _resolve(mod: Module, node: ast.Import | ast.ImportFrom, mods: dict[str, Module]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = mod.name.split(".")
            if not mod.is_package:
                parts = parts[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        # `from pkg import sub` imports pkg (its __init__ runs) and, if sub is a module, sub
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    out = set()
    for n in names:
        while n and n not in mods:
            n = n.rpartition(".")[0]
        if n:
            out.add(n)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def module_graph(mods: dict[str, Module], package: str = "gateway") -> dict[str, set[str]]:
    inside = {n for n in mods if n == package or n.startswith(package + ".")}
    return {n: {e.target for e in mods[n].edges if e.target in inside} for n in sorted(inside)}


def package_graph(mods: dict[str, Module]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for m in mods.values():
        src = m.name.split(".")[0]
        for e in m.edges:
            dst = e.target.split(".")[0]
            if dst != src:
                g[src].add(dst)
    return g


def layer_violations(mods: dict[str, Module]) -> list[str]:
    """Imports of a package that comes later in PACKAGES (gateway -> hil, gateway -> tools,
    hil -> tools), with where they are."""
    rank = {p: i for i, p in enumerate(PACKAGES)}
    out = []
    for m in sorted(mods.values(), key=lambda m: m.name):
        src = m.name.split(".")[0]
        for e in m.edges:
            dst = e.target.split(".")[0]
            if dst in rank and src in rank and rank[dst] > rank[src]:
                out.append(f"{m.name} -> {e.target}  ({m.path.relative_to(ROOT)}:{e.line}, {e.kind})")
    return out


def _inside(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    members = set(comp)
    return [f"{a} -> {b}" for a in comp for b in sorted(graph[a] & members)]


def report(mods: dict[str, Module]) -> list[str]:
    """One line per cycle (`modules: a, b, c`, `packages: gateway, hil`), then one per import
    inside a cycle (`module-edge: a -> b`, `package-edge: gateway -> hil`): a new import
    between modules that already share a cycle makes no new cycle line but a new edge line."""
    mg, pg = module_graph(mods), package_graph(mods)
    out = []
    for c in cycles(mg):
        out.append(f"modules: {', '.join(c)}")
        out += [f"module-edge: {e}" for e in _inside(mg, c)]
    for c in cycles(pg):
        out.append(f"packages: {', '.join(c)}")
        out += [f"package-edge: {e}" for e in _inside(pg, c)]
    return out


def counts(mods: dict[str, Module]) -> dict[str, int]:
    out = {"top": 0, "function": 0, "type-checking": 0}
    for m in mods.values():
        for e in m.edges:
            out[e.kind] += 1
    return out


def describe(mods: dict[str, Module], cycle: list[str]) -> list[str]:
    members = set(cycle)
    lines = []
    for n in cycle:
        for e in mods[n].edges:
            if e.target in members:
                lines.append(f"    {n} -> {e.target}  ({mods[n].path.relative_to(ROOT)}:{e.line}, {e.kind})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.check_imports", description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print every cycle with the imports that make it")
    args = ap.parse_args(argv)
    mods = load()
    now = report(mods)
    c = counts(mods)
    n_cycles = sum(1 for line in now if not line.partition(":")[0].endswith("-edge"))
    print(f"{len(mods)} modules; internal imports: {c['top']} at top level, {c['function']} inside "
          f"functions, {c['type-checking']} under TYPE_CHECKING; {n_cycles} cycles")
    if args.list:
        for line in now:
            if line.partition(":")[0].endswith("-edge"):
                continue
            print(line)
            kind, _, members = line.partition(": ")
            if kind == "modules":
                print("\n".join(describe(mods, members.split(", "))))
    layers = layer_violations(mods)
    for line in layers:
        print(f"LAYER: {line}")
    if layers:
        print(f"the packages are layers ({' <- '.join(PACKAGES)}): each imports only the ones before it; "
              "move what is needed down a layer, or the code that needs it up")
        return 1
    cycles_now = [line for line in now if not line.partition(":")[0].endswith("-edge")]
    for line in cycles_now:
        print(f"CYCLE: {line}")
        kind, _, members = line.partition(": ")
        if kind == "modules":
            print("\n".join(describe(mods, members.split(", "))))
    if cycles_now:
        print("an import made a cycle: import the other way round, move the shared piece to a "
              "module both can import, or pass it in (docs/architecture.md)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
