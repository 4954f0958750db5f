"""Locker banks: click-and-collect pickup lockers (docs/lockers.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.kinds.base import (
    AlertRule,
    CliFlag,
    ConfigKey,
    DeviceKind,
    KindContext,
    RetentionRule,
    non_negative,
    positive,
)


def _build(ctx: KindContext) -> Any:
    from gateway.http.screen_texts import ScreenTexts, locker_lines
    from gateway.kinds.locker_bank.keys import LockerKeys
    from gateway.kinds.locker_bank.service import LockersService
    s = ctx.settings
    # the store's words on each bank's display ([screens] locker_*, docs/lockers.md "Texts")
    texts = ScreenTexts.load(s["screens_texts_file"], s["screens_language"])
    return LockersService(ctx.db, ctx.commands, tick_s=s["locker_tick_s"], clock=ctx.clock,
                          reserve_s=s["locker_reserve_s"],
                          pickup_window_s=s["locker_pickup_window_s"],
                          keys=LockerKeys(s["locker_keys_file"]).get,
                          texts=lambda bank: locker_lines(texts.for_page(bank)))


def _router(lockers: Any) -> Any:
    from gateway.kinds.locker_bank.api import router
    return router(lockers)


def _render(lockers: Any, kind: str, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
    # the plain pickup code of order.ready/.code only with `reveal` (gateway/http/redact.py)
    return lockers.render(data, reveal) if kind == "locker" else data


def _reveal(lockers: Any, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return lockers.render(data) if kind == "locker" else data


def _errors() -> tuple[type[Exception], ...]:
    from gateway.http.screen_texts import TextsError
    return (TextsError,)


# the kind's own tables (gateway/storage/store.py migrate_kind: versioned per kind, appended
# here). The bank row (`lockers`, core migration 3) keeps the bank: compartments, keypad, the
# verifiers of the orders below and the service's bookkeeping, never an order list.
MIGRATIONS: tuple[str, ...] = (
    # 1: orders as rows (issue 17): the live ones and those finished less than a day ago
    #    (service.ARCHIVE_AFTER_S); then their public record goes to `locker_history`, without
    #    the code's verifier. A bank row from before (orders inside) is split by the service on
    #    its first load, in one transaction (LockersService.load).
    """
    CREATE TABLE locker_orders (
        bank    TEXT NOT NULL,
        id      TEXT NOT NULL,
        data    TEXT NOT NULL,         -- JSON: core.Order (the code's MAC, never a plain code)
        PRIMARY KEY (bank, id));
    CREATE TABLE locker_history (
        bank    TEXT NOT NULL,
        id      TEXT NOT NULL,
        state   TEXT NOT NULL,         -- collected | returned | cancelled
        closed  INTEGER NOT NULL,      -- unix ms the order finished
        data    TEXT NOT NULL,         -- JSON: service.public_order (no verifier, no code)
        PRIMARY KEY (bank, id));
    CREATE INDEX locker_history_closed ON locker_history (closed);
    CREATE TABLE locker_ops (              -- idempotency keys of staff/order-system operations
        bank    TEXT NOT NULL,             -- (the newest service.OPS_KEEP of a bank)
        key     TEXT NOT NULL,
        data    TEXT NOT NULL,             -- JSON: {"op", "result"} (public: no code, no MAC)
        PRIMARY KEY (bank, key));
    """,
)


# retention ([retention] lockers_days, docs/lockers.md "Storage"): a finished order's public
# record `lockers_days` after it finished. The other tables stay bounded without an age:
RETENTION: tuple[RetentionRule, ...] = (
    RetentionRule("locker_history", "retention_lockers_days", "closed", "closed < ?"),
)
RETENTION_EXEMPT = {
    "locker_orders": "live orders and those finished less than a day ago (service.ARCHIVE_AFTER_S), "
                     "then moved to locker_history",
    "locker_ops": "the newest service.OPS_KEEP idempotency keys of each bank",
}


def _event_cursor(store: Any) -> dict[str, int]:
    """Each bank's events.id applied up to (retention keeps what is above it)."""
    return {r[0]: r[1] for r in store.conn.execute("SELECT bank, cursor FROM lockers")}


KIND = DeviceKind(
    name="lockers",
    apps={"locker-bank": ("edge.apps.locker", "LockerBank")},
    docs="docs/lockers.md",
    build=_build,
    settings=("locker_tick_s", "locker_reserve_s", "locker_pickup_window_s", "locker_keys_file",
              "screens_texts_file", "screens_language", "retention_lockers_days"),
    migrations=MIGRATIONS,
    retention=RETENTION,
    retention_exempt=RETENTION_EXEMPT,
    router=_router,
    stream_kind="locker",
    event_cursor=_event_cursor,
    render=_render,
    reveal=_reveal,
    auth=(
        ("POST", "/lockers/*/orders/*/load", ("operations", "lockers")),
        ("POST", "/lockers/*/orders/*/retrieve", ("operations",)),   # staff takes an expired parcel
        ("POST", "/lockers/*/orders", ("lockers",)),                 # assign, cancel, reissue
        ("POST", "/lockers/*/compartments", ("operations",)),        # open, out-of-order, clear
        ("POST", "/lockers/*/open-all", ("operations",)),
    ),
    alerts=(
        AlertRule("event", "door.forced", "critical", "door.forced:{device}:{compartment}",
                  "Locker {device}, door {compartment} was forced open: compartment blocked, "
                  "check it"),
        AlertRule("event", "door.ajar", "warning", "door.ajar:{device}:{compartment}",
                  "Locker {device}, door {compartment} has been left open"),
        AlertRule("event", "door.closed", "info", "", "",
                  resolves="door.ajar:{device}:{compartment}"),
        AlertRule("event", "lock.jammed", "critical", "lock.jammed:{device}:{compartment}",
                  "Locker {device}, door {compartment} did not open (lock jammed): service it"),
        # staff cleared the compartment (POST /lockers/{bank}/compartments/{n}/clear, done by the bank)
        AlertRule("locker", "compartment.cleared", "info", "", "",
                  resolves="door.forced:{device}:{compartment}"),
        AlertRule("locker", "compartment.cleared", "info", "", "",
                  resolves="lock.jammed:{device}:{compartment}"),
        AlertRule("event", "keypad.locked", "warning", "keypad.locked:{device}",
                  "Locker {device}: keypad locked for {for_s} s after {failures} wrong codes"),
        AlertRule("event", "pickup.interrupted", "warning",
                  "pickup.interrupted:{device}:{compartment}",
                  "Locker {device}, door {compartment}: a pickup was interrupted by a power cut"),
    ),
    config={"lockers": {"tick_s": ConfigKey("locker_tick_s", "float", positive),
                        "keys_file": ConfigKey("locker_keys_file", "path")},
            "retention": {"lockers_days": ConfigKey("retention_lockers_days", "float", non_negative)}},
    flags=(
        CliFlag("--locker-reserve", "locker_reserve_s", after="--ack-linger-ms", options={
            "type": float, "default": 4 * 3600, "metavar": "SECONDS",
            "help": "locker banks: how long an unloaded reservation lasts (default 4 h)"}),
        CliFlag("--locker-pickup-window", "locker_pickup_window_s", options={
            "type": float, "default": 3 * 24 * 3600, "metavar": "SECONDS",
            "help": "locker banks: how long a pickup code works (default 3 days)"}),
        CliFlag("--locker-keys", "locker_keys_file", options={
            "type": Path, "default": None, "metavar": "FILE",
            "help": "locker banks' pickup-code keys (locker-keys.json from tools/provision.py); "
                    "a bank without a key gets no orders (no-key; docs/lockers.md)"}),
    ),
    errors=_errors,
)
