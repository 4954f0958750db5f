"""What a device kind is to the gateway: `DeviceKind` (one per kind, in its package's
`__init__.py`, listed once in `gateway.kinds.registry.KINDS`) and the shape its service has.

A kind declares data (its device kind strings, firmware apps, docs page, auth rows, alert
rules, config section, CLI flags) and hooks (build its service, its router, how it shows a
stream item). The shared tiers read the registry and hold no code of any one kind:
`gateway/app.py` builds, loads, runs and stops the services and fans out commits and births;
`gateway/http/api.py` includes the routers; `gateway/http/auth.py`, `gateway/devices/alerts.py`,
`gateway/config_file.py` and `gateway/__main__.py` collect the rows, rules, sections and flags.

This module imports nothing of a kind, of http or of the app: a kind's `__init__.py` imports
only this (its hooks import the kind's service and api when called), so reading the registry
(tools/provision.py, hil, the auth table) never loads FastAPI or a service.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from typing import TYPE_CHECKING, Any, ClassVar

from gateway.devices.ticker import tick_loop
from gateway.storage.retention import Rule as RetentionRule
from gateway.storage.store import outbox_commands

if TYPE_CHECKING:
    from fastapi import APIRouter

    from gateway.devices.commands import CommandService
    from gateway.storage.db import Database
    from gateway.storage.store import Store

# -- what a kind declares -----------------------------------------------------------------------

#: (method, path pattern, scopes that may): a row of `gateway.http.auth.POLICY`.
AuthRow = tuple[str, str, tuple[str, ...]]

#: `DeviceKind.entries`: (store, cursor, limit) -> ([(source, minute, n)], new cursor)
EntriesSource = Callable[["Store", int, int], tuple[list[tuple[str, int, int]], int]]


@dataclass(frozen=True)
class AlertRule:
    """A row of `gateway.devices.alerts.RULES` (see there)."""
    kind: str                 # stream item kind
    type: str                 # data["type"] (events) or data["change"] (devices, commands)
    severity: str
    key: str                  # format string over the item's fields: one open alert per key
    text: str                 # what the dashboard says, format string over the same fields
    resolves: str | None = None  # a key format: this item resolves the open alert with that key


@dataclass(frozen=True)
class ConfigKey:
    """A key of the TOML config file (`gateway.config_file.SPEC`)."""
    field: str                   # GatewayConfig field, or `log_level`/`log_format`/`coap_enabled`
    kind: str                    # str | int | float | bool | path | port | list
    check: Callable[[Any], str | None] | None = None   # returns a problem or None


def positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def nonempty(v: Any) -> str | None:
    return None if v.strip() else "must not be empty"


@dataclass(frozen=True)
class CliFlag:
    """A flag of `python -m gateway` that sets one GatewayConfig field.

    `after`: the flag it follows in `--help` (None: the kind's previous flag), so the help text
    stays in the order operators know; `--help` is a stored surface (tools/surface.py)."""
    option: str                               # "--locker-keys"
    field: str                                # GatewayConfig field it sets
    options: Mapping[str, Any] = _field(default_factory=dict)  # argparse keywords (type, help...)
    after: str | None = None

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class KindContext:
    """What a kind's `build` gets: shared services, its own settings and the services of the
    kinds it `needs` (built before it)."""
    db: Database
    commands: CommandService
    clock: Callable[[], int]
    settings: Mapping[str, Any]     # its `settings` fields of GatewayConfig, by name
    services: Mapping[str, Any]     # services of the kinds built so far, by `DeviceKind.name`


@dataclass(frozen=True)
class DeviceKind:
    """One device kind: everything the shared code needs to know about it.

    A frozen dataclass rather than a Protocol: a kind is a declaration (strings, rows, rules,
    flags) plus a few hooks, not a class with behaviour; one value per kind, checked by mypy at
    its construction, with defaults for what most kinds do not have (routes, rendering, flags),
    and a test can walk every field of every kind (tests/gateway/kinds/test_registry.py)."""
    name: str                    # service name: Gateway attribute, task and registry key
    apps: Mapping[str, tuple[str, str]]  # device kind string -> firmware app (module, class)
    docs: str                    # its page, e.g. "docs/lockers.md"
    build: Callable[[KindContext], KindService]
    settings: tuple[str, ...] = ()          # GatewayConfig fields it reads (KindContext.settings)
    needs: tuple[str, ...] = ()             # kinds whose services `build` uses (built first)
    migrations: tuple[str, ...] = ()        # its own tables, in order (storage.store.migrate_kind)
    router: Callable[[Any], APIRouter] | None = None     # its service -> its routes
    stream_kind: str | None = None          # the stream item kind its service writes
    render: Callable[[Any, str, dict[str, Any], bool], dict[str, Any]] | None = None
    """(service, item kind, data, reveal): a stream item (or listed event) as an HTTP client
    sees it; `reveal`: the client may see secrets (gateway/http/redact.py)."""
    reveal: Callable[[Any, str, dict[str, Any]], dict[str, Any]] | None = None
    """(service, item kind, data): a webhook payload for a subscription with include_secrets."""
    auth: tuple[AuthRow, ...] = ()
    scopes: tuple[str, ...] = ()            # API scopes of its own (gateway/http/auth.py SCOPES)
    roles: Mapping[str, tuple[str, ...]] = _field(default_factory=dict)  # token roles -> scopes
    alerts: tuple[AlertRule, ...] = ()
    config: Mapping[str, Mapping[str, ConfigKey]] = _field(default_factory=dict)  # TOML sections
    flags: tuple[CliFlag, ...] = ()
    screens: Mapping[str, str] = _field(default_factory=dict)
    """Customer-facing pages: device kind string -> page path (`{dev}`: the device id), e.g.
    `{"sample-pad": "/kiosk/{dev}"}`; `GET /customer-points` lists these devices."""
    problems: Callable[[Any], list[dict[str, Any]]] | None = None
    """(service) -> dependencies of its screens that are down now: `{"what", "since" (unix
    ms), "why"}` each (the stock API); `GET /customer-points` marks its points degraded."""
    entries: EntriesSource | None = None
    """(store, cursor, limit) -> the people who came in, for the store's funnel
    (gateway/analytics): `(source, minute, n)` rows whose count changed after `cursor` (the
    kind's own change marker, an integer that only grows), and the cursor up to which they go.
    Called on the writer thread inside the analytics fold's transaction, which keeps the cursor
    (`an_meta`) with the rows: `n` replaces what `source` said for that minute, so a minute
    read again never counts twice. The door counter's minutes; `gateway/app.py` hands every
    kind's hook to the analytics tier, which imports no kind."""
    event_cursor: Callable[[Any], int | Mapping[str, int]] | None = None
    """(store) -> its service's persisted events.id cursor: one for all its devices, or one per
    device id. Retention never prunes an event of its devices above it, so an event is never
    gone before the kind applied it (gateway/storage/retention.py)."""
    retention: tuple[RetentionRule, ...] = ()
    """Its history tables' retention rules (gateway/storage/retention.py `Rule`): table, the
    GatewayConfig field of the age (a `[retention]` key the kind declares in `config` and lists
    in `settings`), the column the walk stops at, and what may go. Retention applies them in
    this order after the core rules (a child table before its parent); the shared tier names
    no kind's table."""
    retention_exempt: Mapping[str, str] = _field(default_factory=dict)
    """The tables of its `migrations` that have no age rule, each with why it stays bounded
    (live state, a fixed number of rows, a rollup...): tests/gateway/kinds/test_registry.py
    fails on a table that is in neither."""
    errors: Callable[[], tuple[type[Exception], ...]] = lambda: ()
    """Exceptions that mean the kind's configuration is wrong: the gateway reports them and
    exits 2 (`python -m gateway`)."""

    @property
    def device_kinds(self) -> tuple[str, ...]:
        return tuple(self.apps)


# -- what a kind's service is -------------------------------------------------------------------

class KindService:
    """What the gateway does with a kind's service (gateway/app.py): `load()` at start,
    `run()` as a task until stop, `on_commit_item` for every committed stream item (except
    commands), `on_birth` for every device birth. The defaults do nothing."""

    async def load(self) -> None:
        """Restore its state from the database (before any device message is taken)."""

    async def run(self) -> None:
        """Forever (cancel to stop); a kind with nothing to do in the background returns."""

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        """A stream item was committed (cheap: at most wake the service's task)."""

    def on_birth(self, device: str) -> None:
        """A device sent a birth (cheap: must not wait; ingest calls it)."""


#: (device, command name, args, idempotency key, deadline unix ms): a device command to insert
DeviceCommand = tuple[str, str, dict[str, Any], str, int]


class Batch:
    """What one change of a kind's state produces, written with the state in one transaction:
    stream items (of the service's `stream_kind`) and device commands."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.cmds: list[DeviceCommand] = []


def save_tx(store: Store, put_state: Callable[[Store], None], stream_kind: str,
            items: list[dict[str, Any]], cmds: list[DeviceCommand], now: int
            ) -> list[tuple[int, dict[str, Any]]]:
    """Writer thread: the state (`put_state`), the stream items and the device commands in ONE
    transaction (the commands into `command_outbox`, whence `Database.move_command_outbox`
    moves them to the command file). Returns the outbox rows."""
    with store.transaction():
        put_state(store)
        for data in items:
            store.append_stream(stream_kind, data)
        return outbox_commands(store, cmds, now)


class StatefulService(KindService):
    """A kind service around a pure core (lockers, fitting rooms, tube): one task applies the
    kind's persisted device events in `events.id` order from a persisted cursor (woken by
    commits, `step()` at least every `tick_s`), under `_lock` with the API calls; each change
    is saved with its stream items, device commands and the cursor in ONE transaction
    (`_save`), so a crash or restart never loses or double-applies an event."""

    stream_kind: ClassVar[str]
    log: ClassVar[logging.Logger]
    step_label: ClassVar[str]       # "<step_label> failed" in the log when a step raises

    def __init__(self, db: Database, *, tick_s: float, clock: Callable[[], int]) -> None:
        self.db = db
        self.tick_s = tick_s
        self.clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Apply device events and tick, forever (cancel to stop)."""
        await tick_loop(self._wake, self._sleep_s, self.step, self.log, self.step_label)

    def _sleep_s(self) -> float:
        """The longest wait before the next `step()`."""
        return self.tick_s

    def step(self) -> Awaitable[None]:
        raise NotImplementedError

    def kick(self) -> None:
        self._wake.set()

    def _now(self) -> float:
        return self.clock() / 1000

    async def _save(self, put_state: Callable[[Store], None], batch: Batch
                    ) -> list[dict[str, Any]]:
        """Persist the state, the batch's stream items and commands (one transaction), then
        move the commands to the command file; returns the commands inserted there (sent by
        the caller). A command whose idempotency key the device already has is not inserted
        again (a re-emitted action after a restart).

        The commands live in a file of their own (`Database.commands`), so they are committed
        here first, in `command_outbox`, atomically with the state, and moved after: a crash
        between the two leaves them in the outbox, which the next start moves (and the tick
        sends). A change that sends devices commands goes in the database's command lane
        (`Database.write_first`: ahead of the queued event batches), the others in order."""
        write = self.db.write_first if batch.cmds else self.db.write
        rows = await write(save_tx, put_state, self.stream_kind, batch.items, batch.cmds,
                           self.clock())
        return await self.db.move_command_outbox(rows) if rows else []
