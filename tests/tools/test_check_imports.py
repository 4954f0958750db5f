"""tools/check_imports.py: finds cycles through every kind of import, and the baseline of
known cycles may only shrink."""
from __future__ import annotations

import ast

from tools import check_imports as ci


def test_imports_are_classified_top_function_and_type_checking():
    tree = ast.parse(
        "import a\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from b import B\n"
        "def f():\n    import c\n"
        "class K:\n    def m(self):\n        from d import x\n")
    got = {(n.names[0].name if isinstance(n, ast.Import) else n.module, kind) for n, kind in ci._imports(tree)}
    assert got == {("a", "top"), ("typing", "top"), ("b", "type-checking"), ("c", "function"), ("d", "function")}


def test_cycles_are_strongly_connected_components():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}, "f": set()}
    assert ci.cycles(g) == [["a", "b", "c"], ["e", "e2"]]


def test_a_new_cycle_or_a_new_import_inside_a_known_one_fails_a_smaller_one_passes():
    base = ["modules: m.a, m.b, m.c", "module-edge: m.a -> m.b", "module-edge: m.b -> m.c",
            "module-edge: m.c -> m.a"]
    assert ci.compare(base, base) == ([], [])
    new, _ = ci.compare(base + ["modules: m.x, m.y"], base)
    assert new == ["modules: m.x, m.y"]
    new, _ = ci.compare(base + ["module-edge: m.c -> m.b"], base)  # same cycle, one more import
    assert new == ["module-edge: m.c -> m.b"]
    grown = ["modules: m.a, m.b, m.c, m.d"] + base[1:]
    assert ci.compare(grown, base)[0] == ["modules: m.a, m.b, m.c, m.d"]
    smaller = ["modules: m.a, m.b", "module-edge: m.a -> m.b", "module-edge: m.b -> m.a"]
    new, gone = ci.compare(smaller, base)
    assert new == ["module-edge: m.b -> m.a"]  # a new import, even in a smaller cycle
    new, gone = ci.compare([], base)
    assert new == [] and gone == base           # gone: the baseline must be cut (main() fails)


def test_a_package_imports_only_the_layers_before_it():
    def mod(name: str, *targets: str) -> ci.Module:
        m = ci.Module(name, ci.ROOT / (name.replace(".", "/") + ".py"), False)
        m.edges = [ci.Edge(t, 1, "function") for t in targets]
        return m
    mods = {m.name: m for m in (mod("gateway.a", "gateway.b"), mod("gateway.b"),
                                mod("hil.h", "gateway.a"), mod("tools.t", "hil.h", "gateway.b"))}
    assert ci.layer_violations(mods) == []
    mods["hil.h"].edges.append(ci.Edge("tools.t", 7, "function"))
    mods["gateway.b"].edges.append(ci.Edge("hil.h", 3, "type-checking"))
    assert ci.layer_violations(mods) == ["gateway.b -> hil.h  (gateway/b.py:3, type-checking)",
                                         "hil.h -> tools.t  (hil/h.py:7, function)"]


def test_the_tree_keeps_the_layers():
    assert ci.layer_violations(ci.load()) == []


def test_the_tree_has_no_cycle_beyond_the_committed_baseline():
    mods = ci.load()
    new, gone = ci.compare(ci.report(mods), ci.read_baseline())
    assert not new, f"new import cycles (python -m tools.check_imports --list): {new}"
    assert not gone, f"cycles gone: cut tools/import_cycles.baseline (--write-baseline): {gone}"
    assert ci.counts(mods)["type-checking"] > 0  # TYPE_CHECKING imports are counted, not skipped
