"""tools/check_imports.py: finds cycles through every kind of import and fails on any, and on an
import against the layers (gateway <- hil <- tools)."""
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


def test_the_tree_has_no_cycle():
    mods = ci.load()
    assert ci.report(mods) == [], "import cycles: python -m tools.check_imports --list"
    assert ci.counts(mods)["type-checking"] > 0  # TYPE_CHECKING imports are counted, not skipped


def test_main_fails_on_a_cycle(monkeypatch, capsys):
    def mod(name: str, *targets: str) -> ci.Module:
        m = ci.Module(name, ci.ROOT / (name.replace(".", "/") + ".py"), False)
        m.edges = [ci.Edge(t, 1, "type-checking") for t in targets]
        return m
    tree = {m.name: m for m in (mod("gateway.a", "gateway.b"), mod("gateway.b", "gateway.a"))}
    monkeypatch.setattr(ci, "load", lambda: tree)
    assert ci.main([]) == 1
    assert "CYCLE: modules: gateway.a, gateway.b" in capsys.readouterr().out
    tree["gateway.b"].edges = []
    assert ci.main([]) == 0
