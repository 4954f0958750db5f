"""Door counters: per-minute counts and each counter's live view, from its journaled events
(docs/door-counter.md).

The service follows the door counters' events in `events.id` order from a persisted cursor
(woken by commits, at least every `tick_s`), and writes the minutes they add to
(`door_counts`), the counters' live views (`door_counters`) and the cursor in ONE
transaction: a crash or restart never loses or double-counts a period. Counts are summed per
(device, minute), so a period shorter than a minute (`app.period_s`) adds up, and an event
replayed after an outage lands in the minute it was counted in, not the one it arrived in.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from gateway.devices.ticker import tick_loop
from gateway.kinds.base import KindService
from gateway.kinds.door_counter.core import EVENT_TYPES, KIND, Applied, BadEvent, Live, MinuteDelta, apply
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.door_counter")

EVENT_PAGE = 500
MAX_RANGE_MS = 31 * 24 * 3600 * 1000   # GET .../counts: at most 31 days of minutes (44,640 rows)


class RangeError(ValueError):
    pass


def _live(text: str | None) -> Live:
    if text is None:
        return Live()
    d = json.loads(text)
    return Live(occupancy=d["occupancy"], stuck=tuple(d["stuck"]), last_minute=d["last_minute"],
                updated=d["updated"])


def _load_tx(store: Store) -> tuple[dict[str, Live], int]:
    rows = store.conn.execute("SELECT device, live FROM door_counters").fetchall()
    cur = store.conn.execute("SELECT cursor FROM door_counter_cursor WHERE id = 1").fetchone()
    return {r[0]: _live(r[1]) for r in rows}, (cur[0] if cur else 0)


def _events_tx(store: Store, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Door-counter events past `after` (at most `limit`), and the event id up to which every
    event has been looked at (others' events are left out in SQL)."""
    hi = store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    marks = ",".join("?" * len(EVENT_TYPES))
    rows = store.conn.execute(
        f"SELECT e.* FROM events e JOIN devices d ON d.id = e.device WHERE e.id > ? AND e.id <= ? "
        f"AND d.kind = ? AND e.type IN ({marks}) ORDER BY e.id LIMIT ?",
        (after, hi, KIND, *EVENT_TYPES, limit)).fetchall()
    events = [Store._event(r) for r in rows]
    return events, (events[-1]["id"] if len(events) == limit else hi)


def _save_tx(store: Store, lives: dict[str, Live], minutes: list[tuple[str, MinuteDelta]],
             cursor: int, now: int) -> None:
    with store.transaction():
        for device, d in minutes:
            store.conn.execute(
                """INSERT INTO door_counts (device, minute, entries, exits, oos_ms, occupancy, ev)
                   VALUES (?,?,?,?,?,?,?) ON CONFLICT (device, minute) DO UPDATE SET
                     entries = entries + excluded.entries, exits = exits + excluded.exits,
                     oos_ms = MIN(oos_ms + excluded.oos_ms, 60000), occupancy = excluded.occupancy,
                     ev = excluded.ev""",
                (device, d.minute, d.entries, d.exits, min(d.oos_ms, 60000), d.occupancy, cursor))
        for device, live in lives.items():
            store.conn.execute(
                """INSERT INTO door_counters (device, live, updated) VALUES (?,?,?)
                   ON CONFLICT (device) DO UPDATE SET live = excluded.live, updated = excluded.updated""",
                (device, json.dumps(dataclasses.asdict(live), separators=(",", ":")), now))
        store.conn.execute(
            """INSERT INTO door_counter_cursor (id, cursor) VALUES (1, ?)
               ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor""", (cursor,))


def entries_tx(store: Store, after: int, limit: int) -> tuple[list[tuple[str, int, int]], int]:
    """The kind's `entries` hook (DeviceKind.entries): (device, minute, entries) of the minutes
    changed by the pages after `after` (`ev`: the event cursor of the page that last changed
    the row), about `limit` of them, and the `ev` they go up to. A page's rows all carry the
    same `ev`, so the rows of the last `ev` read are read whole (a page may go past `limit`):
    the next call, after that `ev`, misses none."""
    c = store.conn
    bound = c.execute("SELECT ev FROM door_counts WHERE ev > ? ORDER BY ev LIMIT 1 OFFSET ?",
                      (after, max(0, limit - 1))).fetchone()
    upto = bound[0] if bound else c.execute("SELECT COALESCE(MAX(ev), ?) FROM door_counts",
                                            (after,)).fetchone()[0]
    rows = c.execute("SELECT device, minute, entries FROM door_counts WHERE ev > ? AND ev <= ? "
                     "ORDER BY ev, device, minute", (after, upto)).fetchall()
    return [(r[0], r[1], r[2]) for r in rows], max(after, upto)


def _counters_tx(store: Store) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT d.id, d.online, d.last_seen, c.live FROM devices d LEFT JOIN door_counters c "
        "ON c.device = d.id WHERE d.kind = ? ORDER BY d.id", (KIND,)).fetchall()
    return [{"device": r[0], "online": bool(r[1]), "last_seen": r[2], "live": _live(r[3])} for r in rows]


def _is_counter_tx(store: Store, device: str) -> bool:
    return store.conn.execute("SELECT 1 FROM devices WHERE id = ? AND kind = ?",
                              (device, KIND)).fetchone() is not None


def _counts_tx(store: Store, device: str, frm: int, to: int) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT minute, entries, exits, oos_ms, occupancy FROM door_counts WHERE device = ? "
        "AND minute >= ? AND minute < ? ORDER BY minute", (device, frm, to)).fetchall()
    return [dict(r) for r in rows]


class DoorCounterService(KindService):
    def __init__(self, db: Database, *, clock: Callable[[], int], tick_s: float = 5.0) -> None:
        self.db = db
        self.clock = clock
        self.tick_s = tick_s
        self.lives: dict[str, Live] = {}
        self.cursor = 0
        self.skipped = 0       # events whose body could not be counted (logged)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def load(self) -> None:
        self.lives, self.cursor = await self.db.read(_load_tx)

    async def run(self) -> None:
        await tick_loop(self._wake, self.tick_s, self.step, log, "door counter step")

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "event" and data.get("type") in EVENT_TYPES:
            self._wake.set()

    async def step(self) -> None:
        """Apply the door counters' new events (page by page), each page in one transaction."""
        async with self._lock:
            while True:
                rows, upto = await self.db.read(_events_tx, self.cursor, EVENT_PAGE)
                if not rows:
                    self.cursor = max(self.cursor, upto)
                    return
                lives = dict(self.lives)
                changed: dict[str, Live] = {}
                minutes: list[tuple[str, MinuteDelta]] = []
                for e in rows:
                    dev = e["device"]
                    try:
                        a: Applied = apply(lives.get(dev, Live()), e)
                    except BadEvent as exc:
                        self.skipped += 1
                        log.warning("door counter event not counted device=%s seq=%s type=%s: %s",
                                    dev, e["seq"], e["type"], exc)
                        continue
                    lives[dev] = changed[dev] = a.live
                    if a.minute is not None:
                        minutes.append((dev, a.minute))
                await self.db.write(_save_tx, changed, minutes, upto, self.clock())
                self.lives, self.cursor = lives, upto

    # -- what the API reads ----------------------------------------------------------------------

    async def counters(self) -> list[dict[str, Any]]:
        out = []
        for r in await self.db.read(_counters_tx):
            live: Live = r["live"]
            out.append({"device": r["device"], "online": r["online"], "last_seen": r["last_seen"],
                        "occupancy": live.occupancy, "out_of_service": live.out_of_service,
                        "stuck_beams": list(live.stuck), "last_minute": live.last_minute,
                        "updated": live.updated or None})
        return out

    async def counts(self, device: str, frm: int | None, to: int | None) -> dict[str, Any] | None:
        """Minutes of `device` in [frm, to) (unix ms; default: the last 24 h). None: no such
        door counter. RangeError: a range the caller must fix."""
        if not await self.db.read(_is_counter_tx, device):
            return None
        to = self.clock() if to is None else to
        frm = to - 24 * 3600 * 1000 if frm is None else frm
        if frm >= to:
            raise RangeError(f"from ({frm}) must be before to ({to}) (unix ms)")
        if to - frm > MAX_RANGE_MS:
            raise RangeError(f"at most 31 days per request ({MAX_RANGE_MS} ms), got {to - frm} ms: "
                             "ask for the range in parts")
        rows = await self.db.read(_counts_tx, device, frm, to)
        return {"device": device, "from": frm, "to": to, "minutes": rows,
                "entries": sum(r["entries"] for r in rows), "exits": sum(r["exits"] for r in rows),
                "oos_ms": sum(r["oos_ms"] for r in rows)}
