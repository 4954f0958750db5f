"""Alerts: what staff must look at, derived from the gateway's stream, acknowledged by staff.

An alert is made by a **rule** (the `RULES` table below) from one stream item: a device going
offline, a locker door forced or left open, a lock jammed, a keypad locked after wrong codes...
Services do not call this module: they only write their stream items, and the alerts service
follows the stream table with a persisted cursor, so an alert is made exactly once per item even
across a crash (the alert rows, the `alert` stream items and the cursor are written in one
transaction) and a new rule never needs a change in the service that emits the item.

* **one open alert per key**: a rule's key (e.g. `offline:pad-3`, `door.ajar:lk-1:7`) folds
  repeats into the open alert (`count`, `last`) instead of flooding the dashboard;
* **resolve rules**: some items close an open alert by themselves (the device is online again,
  the door was closed) — `state: resolved`, kept for the record;
* **acknowledge**: staff says "seen, on it" (`POST /alerts/{id}/ack` with who); idempotent (a
  second ack returns the alert as it is). Acknowledging does not clear a blocked compartment or a
  jammed line: that is the device's own staff operation.

Stream items of kind `alert` carry `{"change": "raised"|"repeated"|"acked"|"resolved", **alert}`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.kinds.base import AlertRule
from gateway.kinds.registry import alert_rules
from gateway.storage.db import Database
from gateway.storage.store import Store, StreamItem, stream_tag, stream_tag_field

log = logging.getLogger("gateway.alerts")

SEVERITIES = ("info", "warning", "critical")
STATES = ("open", "acked", "resolved")
PAGE = 500


Rule = AlertRule  # (kind, type, severity, key, text, resolves): see gateway/kinds/base.py


def _fields(item: StreamItem) -> dict[str, Any]:
    d = item.data
    raw = d.get("body")
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    late: dict[str, Any] = d["late_outcome"] if isinstance(d.get("late_outcome"), dict) else {}
    return {**body, **{f"late_{k}": v for k, v in late.items()},
            **{k: v for k, v in d.items() if k != "body"}}


# The rules. `{device}`, `{compartment}`, ... come from the item (an event's body is merged in).
RULES: tuple[Rule, ...] = (
    Rule("device", "offline", "warning", "offline:{id}", "{kind} {id} went offline"),
    Rule("device", "online", "info", "", "", resolves="offline:{id}"),
    # a device acted (or started to) on a command its caller had been told `expired`
    # (gateway/devices/commands.py): e.g. a door that opened after the customer was sent away
    Rule("command", "late.done", "warning", "command.late:{id}",
         "{device} did command {name} ({id}) after it was reported expired: check what it did"),
    Rule("command", "late.failed", "warning", "command.late:{id}",
         "{device} started command {name} ({id}) after it was reported expired, and it failed "
         "({late_reason}): check the device"),
    Rule("event", "journal.overflow", "warning", "journal.overflow:{device}",
         "{device} lost events while offline (journal full)"),
    # gateway/devices/ingest.py: the device's journal went back (restored from an older flash copy):
    # nothing was dropped, its events go on in a new epoch (docs/protocol.md)
    Rule("event", "journal.rollback", "warning", "journal.rollback:{device}",
         "{device}: journal rolled back (restored from an older flash copy?): events from seq "
         "{from} go on in new epoch {new_epoch}, nothing dropped; check how the device was "
         "restored"),
    # the gateway's own capacity (gateway/integrations/capacity.py): the disk under the
    # database, a webhook queue at its cap, the chain outbox growing (docs/operations.md)
    Rule("gateway", "disk.low", "critical", "disk.low",
         "gateway disk nearly full: {free_mb} MiB free of {total_mb} MiB (alert below "
         "{threshold_mb} MiB). When it is full, writes are refused and devices are no longer "
         "acknowledged: free space, or shorten [retention] (docs/operations.md)"),
    Rule("gateway", "disk.ok", "info", "", "", resolves="disk.low"),
    Rule("gateway", "webhook.dropping", "warning", "webhook.dropping:{sub}",
         "webhook {sub}: its receiver is not taking deliveries and the queue is full "
         "({max_pending}); the oldest are dropped ({dropped} so far): check the receiver "
         "(GET /webhooks/{sub})"),
    Rule("gateway", "webhook.ok", "info", "", "", resolves="webhook.dropping:{sub}"),
    Rule("gateway", "chain.backlog", "warning", "chain.backlog",
         "chain outbox holds {rows} messages (alert above {alert_rows}): the store broker or "
         "its bridge to head office is not taking them. Nothing is dropped; they use disk "
         "until it is back (docs/chain.md)"),
    Rule("gateway", "chain.ok", "info", "", "", resolves="chain.backlog"),
    # the device kinds' own rules (gateway/kinds/<kind>/__init__.py: a locker door forced...)
    *alert_rules(),
)


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _fmt(template: str, fields: dict[str, Any]) -> str:
    return template.format_map(_Missing(fields))


def match(item: StreamItem, rules: tuple[Rule, ...] = RULES) -> list[tuple[Rule, dict[str, Any]]]:
    """The rules an item triggers, with the item's fields (pure: no I/O)."""
    if item.kind == "alert":
        return []
    tag = stream_tag(item.kind, item.data)
    hits = [r for r in rules if r.kind == item.kind and r.type == tag]
    return [(r, _fields(item)) for r in hits]


def public_alert(row: Any) -> dict[str, Any]:
    return {"id": row[0], "key": row[1], "severity": row[2], "device": row[3], "type": row[4],
            "text": row[5], "data": json.loads(row[6]), "state": row[7], "count": row[8],
            "created": row[9], "last": row[10], "acked_by": row[11], "acked_at": row[12],
            "resolved_at": row[13], "source": row[14]}


_COLS = ("id, key, severity, device, type, text, data, state, count, created, last, acked_by, "
         "acked_at, resolved_at, source")


def _open_alert(store: Store, key: str) -> dict[str, Any] | None:
    row = store.conn.execute(f"SELECT {_COLS} FROM alerts WHERE key = ? AND state != 'resolved' "
                             "ORDER BY id DESC LIMIT 1", (key,)).fetchone()
    return public_alert(row) if row else None


def _written_alert(store: Store, alert_id: int | None) -> dict[str, Any]:
    """An alert this transaction has just written (so it exists)."""
    alert = None if alert_id is None else get_alert(store, alert_id)
    assert alert is not None, f"alert {alert_id} was written in this very transaction"
    return alert


def get_alert(store: Store, alert_id: int) -> dict[str, Any] | None:
    row = store.conn.execute(f"SELECT {_COLS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    return public_alert(row) if row else None


def list_alerts(store: Store, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    if state is None:
        # the open and acked ones through alerts_by_state, whatever the resolved ones number
        # (kept [retention] alerts_days): `state != 'resolved'` walked them all
        rows = store.conn.execute(f"SELECT {_COLS} FROM alerts WHERE state IN ('open', 'acked') "
                                  "ORDER BY id DESC LIMIT ?", (limit,))
    elif state == "all":
        rows = store.conn.execute(f"SELECT {_COLS} FROM alerts ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = store.conn.execute(f"SELECT {_COLS} FROM alerts WHERE state = ? ORDER BY id DESC "
                                  "LIMIT ?", (state, limit))
    return [public_alert(r) for r in rows]


def cursor(store: Store) -> int:
    row = store.conn.execute("SELECT value FROM alerts_meta WHERE name = 'cursor'").fetchone()
    return int(row[0]) if row else 0


def save_cursor(store: Store, upto: int) -> int:
    store.conn.execute("INSERT INTO alerts_meta (name, value) VALUES ('cursor', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (upto,))
    return upto


# Only items of these kinds and types can match a rule (as `match` decides): `pending` leaves
# the others out in SQL, so a store's ordinary traffic (events, commands) costs neither a JSON
# decode nor a transaction here (the ingest benchmark measured ~14 us of gateway CPU per event
# for reading and "applying" them all, and each command step added a commit).
_TAGS = {kind: tuple(sorted({r.type for r in RULES if r.kind == kind}))
         for kind in sorted({r.kind for r in RULES})}
_WHERE = " OR ".join(
    f"(kind = ? AND COALESCE(tag, json_extract(data, '$.{stream_tag_field(kind)}')) "
    f"IN ({','.join('?' * len(tags))}))" for kind, tags in _TAGS.items())
_WHERE_ARGS = tuple(x for kind, tags in _TAGS.items() for x in (kind, *tags))
SCAN = 20_000  # stream rows looked at per read


def pending(store: Store, after: int, limit: int = PAGE) -> tuple[list[StreamItem], int]:
    """The stream items past `after` that a rule may match (at most `limit`), and the id up to
    which every item has been looked at (where the cursor may move)."""
    hi = min(store.last_stream_id(), after + SCAN)
    rows = store.conn.execute(
        f"SELECT id, kind, data FROM stream WHERE id > ? AND id <= ? AND ({_WHERE}) "
        "ORDER BY id LIMIT ?", (after, hi, *_WHERE_ARGS, limit)).fetchall()
    items = [StreamItem(r[0], r[1], json.loads(r[2])) for r in rows]
    return items, (items[-1].id if len(items) == limit else hi)


def _apply(store: Store, item: StreamItem, now: int) -> None:
    for rule, f in match(item):
        if rule.resolves:
            found = _open_alert(store, _fmt(rule.resolves, f))
            if found is not None:
                store.conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = ? "
                                   "WHERE id = ?", (now, found["id"]))
                store.append_stream("alert", {"change": "resolved", **_written_alert(store, found["id"])})
            continue
        key = _fmt(rule.key, f)
        found = _open_alert(store, key)
        if found is not None:
            store.conn.execute("UPDATE alerts SET count = count + 1, last = ? WHERE id = ?",
                               (now, found["id"]))
            store.append_stream("alert", {"change": "repeated", **_written_alert(store, found["id"])})
            continue
        device = f.get("device") if item.kind in ("event", "command") else f.get("id")
        data = {k: v for k, v in f.items() if isinstance(v, (str, int, float, bool)) or v is None}
        cur = store.conn.execute(
            """INSERT INTO alerts (key, severity, device, type, text, data, state, count, created,
                                   last, source) VALUES (?,?,?,?,?,?, 'open', 1, ?, ?, ?)""",
            (key, rule.severity, device, rule.type, _fmt(rule.text, f), json.dumps(data), now, now,
             item.id))
        store.append_stream("alert", {"change": "raised", **_written_alert(store, cur.lastrowid)})


def apply_items(store: Store, items: list[StreamItem], now: int, upto: int | None = None
                ) -> int:
    """Turn stream items into alerts and move the cursor past them (or to `upto`, when the
    items in between match no rule), in one transaction."""
    with store.transaction():
        for item in items:
            _apply(store, item, now)
        return save_cursor(store, items[-1].id if upto is None else upto)


def ack_alert(store: Store, alert_id: int, by: str, now: int) -> dict[str, Any] | None:
    with store.transaction():
        found = get_alert(store, alert_id)
        if found is None or found["state"] != "open":
            return found  # unknown, or already acked/resolved: unchanged (idempotent)
        store.conn.execute("UPDATE alerts SET state = 'acked', acked_by = ?, acked_at = ? "
                           "WHERE id = ?", (by, now, alert_id))
        alert = _written_alert(store, alert_id)
        store.append_stream("alert", {"change": "acked", **alert})
        return alert


class AlertsService:
    def __init__(self, db: Database, clock: Callable[[], int], poll_s: float = 1.0,
                 cursor_save_s: float = 10.0, gather_s: float = 0.05) -> None:
        self.db = db
        self.clock = clock
        self.poll_s = poll_s
        self.gather_s = gather_s  # after a wake-up, gather more commits into one step
        self.cursor_save_s = cursor_save_s
        self._wake = asyncio.Event()
        self._after = 0       # looked at up to here; saved with the next alert, or lazily:
        self._saved_at = 0.0  # after a crash, re-reading items that match no rule is harmless

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        if kind != "alert":
            self._wake.set()

    async def step(self) -> int:
        """Apply every stream item past the cursor; returns how many may match a rule."""
        after = max(self._after, await self.db.read(cursor))
        n = 0
        while True:
            items, upto = await self.db.read(pending, after)
            if upto <= after:
                self._after = after
                return n
            if items:
                after = await self.db.write(apply_items, items, self.clock(), upto)
                self._saved_at = time.monotonic()
            elif time.monotonic() - self._saved_at >= self.cursor_save_s:
                after = await self.db.write(save_cursor, upto)
                self._saved_at = time.monotonic()
            else:
                after = upto
            n += len(items)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
                # at 1,000 events/s the ingest commits every few ms: one step per commit
                # cost two reader-thread round trips each (benchmarks: docs/benchmarks.md)
                await asyncio.sleep(self.gather_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alerts step failed")

    async def ack(self, alert_id: int, by: str) -> dict[str, Any] | None:
        return await self.db.write(ack_alert, alert_id, by, self.clock())

    async def list(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return await self.db.read(list_alerts, state, limit)
