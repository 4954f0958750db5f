"""The registry of device kinds (gateway/kinds/registry.py) against every other place that names
kinds, so they cannot drift apart again (issue 15: tools/provision.py refused `--kind tube-line`
although the docs said such a device gets credentials)."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import GatewayConfig
from gateway.kinds.base import DeviceKind
from gateway.kinds.registry import KINDS, build_order, device_kinds, kind_of

ROOT = Path(__file__).resolve().parents[3]
ALL = set(device_kinds())


def test_the_registry_has_every_kind_once():
    assert ALL == {"sample-pad", "fitting-room", "locker-bank", "tube-station", "tube-line",
                   "door-counter", "rack-display"}
    assert len(device_kinds()) == len(ALL), "a device kind string belongs to two kinds"
    assert len({k.name for k in KINDS}) == len(KINDS)
    assert kind_of("tube-line") is kind_of("tube-station") is not None
    assert kind_of("door-counter") is not None
    assert kind_of("turnstile") is None


def test_provision_accepts_every_kind_and_only_those():
    from tools import provision
    from tools.surface import _parser_of
    choices = next(a.choices for p in _subparsers(_parser_of(provision.main, []))
                   for a in p._actions if "--kind" in a.option_strings)
    assert set(choices) == ALL
    assert set(provision.KINDS) == ALL


def _subparsers(parser):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def test_the_firmware_has_the_app_each_kind_declares():
    """firmware/edge/boot.py APPS (MicroPython: its own copy) is the union of the kinds' apps,
    and each app's module and class exist."""
    tree = ast.parse((ROOT / "firmware" / "edge" / "boot.py").read_text())
    apps = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "APPS" for t in n.targets))
    declared = {dk: app for k in KINDS for dk, app in k.apps.items()}
    assert {k: tuple(v) for k, v in apps.items()} == declared
    for module, cls in declared.values():
        path = ROOT / "firmware" / (module.replace(".", "/") + ".py")
        assert path.is_file(), path
        assert re.search(rf"^class {cls}\b", path.read_text(), re.MULTILINE), (path, cls)


def test_hil_rigs_use_registry_kinds():
    from hil.pi import wiring
    assert set(wiring.KINDS) == ALL
    seen = set()
    for f in sorted((ROOT / "boards" / "rigs").glob("*.json")):
        data = json.loads(f.read_text())
        devices = data.get("devices") or {}
        for name, d in devices.items():
            assert d.get("kind") in ALL, (f.name, name, d.get("kind"))
            seen.add(d["kind"])
    assert seen == ALL, f"no rig file has a device of kind {sorted(ALL - seen)}"


def test_each_kind_has_its_docs_page_and_the_protocol_lists_every_kind():
    for k in KINDS:
        page = ROOT / k.docs
        assert page.is_file(), (k.name, k.docs)
        text = page.read_text()
        for dk in k.device_kinds:
            assert f"kind: {dk}" in text or f"`{dk}`" in text, (k.docs, dk)
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    line = next(ln for ln in protocol.splitlines() if "`kind`: device kind (" in ln)
    listed = set(re.findall(r"`([a-z-]+)`", line.split("(", 1)[1]))
    assert listed == ALL, f"docs/protocol.md birth `kind` lists {sorted(listed)}"


def test_each_kinds_settings_flags_and_keys_are_gateway_config_fields():
    fields = {f.name for f in dataclasses.fields(GatewayConfig)}
    for k in KINDS:
        assert set(k.settings) <= fields, k.name
        for flag in k.flags:
            assert flag.field in k.settings, (k.name, flag.option)
        for section in k.config.values():
            for key in section.values():
                assert key.field in k.settings, (k.name, key.field)


def test_the_gateway_has_every_kinds_flags_sections_rows_and_rules():
    from gateway import __main__ as cli
    from gateway import config_file
    from gateway.devices import alerts
    from gateway.http import auth
    options = {o for a in cli.build_parser()._actions for o in a.option_strings}
    for k in KINDS:
        assert {f.option for f in k.flags} <= options
        assert set(k.config) <= set(config_file.SPEC)
        assert set(k.auth) <= set(auth.POLICY)
        assert set(k.alerts) <= set(alerts.RULES)


def test_stream_kinds_can_go_to_the_chain():
    from gateway.integrations.chain import DEFAULT_KINDS
    for k in KINDS:
        assert k.stream_kind is None or k.stream_kind in DEFAULT_KINDS, k.name


def test_a_kind_is_built_after_the_kinds_it_needs():
    order = [k.name for k in build_order()]
    for k in KINDS:
        for need in k.needs:
            assert order.index(need) < order.index(k.name)

    def kind(name, needs=()):
        return DeviceKind(name=name, apps={}, docs="", build=lambda ctx: None, needs=needs)
    assert [k.name for k in build_order([kind("a", ("b",)), kind("b")])] == ["b", "a"]
    with pytest.raises(ValueError, match="not a kind"):
        build_order([kind("a", ("nope",))])
    with pytest.raises(ValueError, match="need each other"):
        build_order([kind("a", ("b",)), kind("b", ("a",))])


def test_the_gateway_has_each_kinds_service_under_its_name(tmp_path):
    from gateway.app import Gateway
    gw = Gateway(GatewayConfig(db_path=tmp_path / "gw.db"))
    assert list(gw.services) == [k.name for k in build_order()]
    for k in KINDS:
        assert getattr(gw, k.name) is gw.services[k.name]
    assert gw.fitting.dispatcher.tube is gw.tube  # built from the tube service it needs


def test_reading_the_registry_loads_no_service_and_no_fastapi():
    """tools/provision.py and hil read it: that must not start the web stack."""
    code = ("import sys, gateway.kinds.registry as r; r.device_kinds(); "
            "print(sorted(m for m in sys.modules if m == 'fastapi' or m.endswith('.service')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _kind_tables(kind: DeviceKind) -> tuple[set[str], sqlite3.Connection]:
    """The tables a kind's migrations create, on top of the core schema."""
    from gateway.storage.store import migrate, migrate_kind
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    migrate_kind(conn, "-", ())  # its bookkeeping table (kind_schema) is not the kind's
    before = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    migrate_kind(conn, kind.name, kind.migrations)
    after = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return after - before, conn


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_table_of_a_kind_has_a_retention_rule_or_says_why_not(kind):
    """A kind's history table that no rule prunes grows for ever (issue 17: the fitting rooms'
    and the lockers' rules were named in gateway/storage/retention.py, a shared tier). Each
    table its migrations create is pruned by one of its own rules (`DeviceKind.retention`) or
    listed in `retention_exempt` with why it stays bounded; a rule's age is a [retention] key
    the kind declares, a GatewayConfig field in its settings; its SQL is valid."""
    tables, conn = _kind_tables(kind)
    ruled = {r.table for r in kind.retention}
    assert ruled <= tables, f"{kind.name} prunes a table its migrations do not create"
    assert not ruled & set(kind.retention_exempt), kind.name
    assert tables == ruled | set(kind.retention_exempt), \
        f"{kind.name}: no retention rule for {sorted(tables - ruled - set(kind.retention_exempt))}"
    ages = {key.field for key in kind.config.get("retention", {}).values()}
    for rule in kind.retention:
        assert rule.days in ages and rule.days in kind.settings, (kind.name, rule.table)
        assert isinstance(getattr(GatewayConfig(), rule.days), float), rule.days
        assert rule.delete.count("?") == 1, rule.table
        key = rule.key or "rowid"   # a WITHOUT ROWID table names its key
        conn.execute(f"EXPLAIN DELETE FROM {rule.table} WHERE ({key}) IN (SELECT {key} FROM "
                     f"{rule.table} WHERE {rule.delete} ORDER BY {rule.order})", (0,))
    assert all(why.strip() for why in kind.retention_exempt.values())
    conn.close()


def test_a_kind_with_history_tables_has_rules_and_the_shared_tier_names_none():
    """The check above is not empty (two kinds prune their history), and the shared retention
    module names no kind's table: it iterates what it is given."""
    assert {r.table for k in KINDS for r in k.retention} >= {
        "fitting_sessions", "fitting_tryons", "fitting_requests", "fitting_purchases",
        "fitting_footfall", "locker_history"}
    src = (ROOT / "gateway/storage/retention.py").read_text()
    for k in KINDS:
        for table in _kind_tables(k)[0]:
            assert table not in src, f"gateway/storage/retention.py names {table} ({k.name})"
