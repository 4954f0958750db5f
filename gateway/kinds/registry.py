"""The device kinds the gateway knows: ONE list. A new kind is a folder under gateway/kinds/
(its `__init__.py` declares `KIND`, gateway/kinds/base.py says what that holds) plus one line
here. tests/gateway/kinds/test_registry.py checks the other places that name kinds against it:
tools/provision.py and hil (read it), the firmware's `APPS` (MicroPython: its own copy) and the
docs.

The order is the order of the routes in the API and of the kinds' sections; services are built
in it too, except that a kind is built after the kinds it `needs`.
"""
from __future__ import annotations

from collections.abc import Iterable

from gateway.kinds import door_counter, fitting_room, locker_bank, rack_display, sample_pad, tube
from gateway.kinds.base import AlertRule, AuthRow, CliFlag, ConfigKey, DeviceKind, RetentionRule

KINDS: tuple[DeviceKind, ...] = (sample_pad.KIND, fitting_room.KIND, locker_bank.KIND, tube.KIND,
                                 door_counter.KIND, rack_display.KIND)


def device_kinds(kinds: Iterable[DeviceKind] = KINDS) -> tuple[str, ...]:
    """Every device kind string ("sample-pad", ..., "tube-line"), in registry order."""
    return tuple(dk for k in kinds for dk in k.device_kinds)


def kind_of(device_kind: str) -> DeviceKind | None:
    """The kind that a device of `device_kind` (its birth's `kind`) belongs to."""
    return next((k for k in KINDS if device_kind in k.apps), None)


def build_order(kinds: Iterable[DeviceKind] = KINDS) -> list[DeviceKind]:
    """Registry order, each kind after the kinds it `needs` (a ValueError names a need that is
    not a kind, or a cycle)."""
    by_name = {k.name: k for k in kinds}
    out: list[DeviceKind] = []
    visiting: set[str] = set()

    def visit(k: DeviceKind) -> None:
        if k in out:
            return
        if k.name in visiting:
            raise ValueError(f"kinds need each other: {k.name} ({', '.join(sorted(visiting))})")
        visiting.add(k.name)
        for need in k.needs:
            if need not in by_name:
                raise ValueError(f"kind {k.name} needs {need!r}, which is not a kind "
                                 f"({', '.join(by_name)})")
            visit(by_name[need])
        visiting.discard(k.name)
        out.append(k)

    for k in by_name.values():
        visit(k)
    return out


def migrations(kinds: Iterable[DeviceKind] = KINDS) -> dict[str, tuple[str, ...]]:
    """Each kind's own migrations (the kinds added after the core schema), by kind name: what
    `gateway.storage.db.Database(kind_migrations=...)` applies after the core schema."""
    return {k.name: k.migrations for k in kinds if k.migrations}


def auth_rows() -> tuple[AuthRow, ...]:
    return tuple(row for k in KINDS for row in k.auth)


def scopes() -> tuple[str, ...]:
    """API scopes the kinds add (a feed's own scope: it may do that and nothing else)."""
    return tuple(s for k in KINDS for s in k.scopes)


def roles() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for k in KINDS:
        for role, sc in k.roles.items():
            if role in out:
                raise ValueError(f"role {role!r} declared twice ({k.name})")
            out[role] = sc
    return out


def alert_rules() -> tuple[AlertRule, ...]:
    return tuple(rule for k in KINDS for rule in k.alerts)


def config_sections() -> dict[str, dict[str, ConfigKey]]:
    """The kinds' config sections. Several kinds may add keys to one section (`[retention]`:
    each its own ages, `DeviceKind.retention`); a key declared twice is a ValueError."""
    out: dict[str, dict[str, ConfigKey]] = {}
    for k in KINDS:
        for section, keys in k.config.items():
            known = out.setdefault(section, {})
            for name, key in keys.items():
                if name in known:
                    raise ValueError(f"config key [{section}] {name} declared twice ({k.name})")
                known[name] = key
    return out


def retention_rules(kinds: Iterable[DeviceKind] = KINDS) -> tuple[RetentionRule, ...]:
    """Every kind's retention rules (`DeviceKind.retention`), in registry order."""
    return tuple(rule for k in kinds for rule in k.retention)


def cli_flags() -> tuple[CliFlag, ...]:
    return tuple(f for k in KINDS for f in k.flags)


def config_errors() -> tuple[type[Exception], ...]:
    return tuple(e for k in KINDS for e in k.errors())
