"""Rack displays: the online likes feed, the rack -> products mapping, and what each display
should show (docs/rack-display.md).

* **storage** (migration 13): `rack_likes` (one row per feed event id: the idempotency record,
  kept `LIKE_IDS_KEEP_MS`), `rack_products` (likes per product), `racks` (per display: label,
  products, the state it should show and its `rev`).
* **the feed**: `post_likes` writes the new events, the counts and every changed rack's new
  state and rev in ONE transaction, then hands the racks' states to `DesiredState`
  (gateway/devices/desired.py), which delivers them as `show` commands, coalesced.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from gateway.devices.commands import CommandService
from gateway.devices.desired import DesiredState
from gateway.kinds.base import KindService
from gateway.kinds.rack_display.core import LikeError, rack_state, validate_like, validate_rack
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.racks")

LIKE_IDS_KEEP_MS = 30 * 24 * 3600 * 1000  # a feed event id counts once within 30 days


def _racks(store: Store) -> list[dict[str, Any]]:
    rows = store.conn.execute("SELECT device, label, products, rev, state, updated FROM racks "
                              "ORDER BY device").fetchall()
    return [{"device": r[0], "label": r[1], "products": json.loads(r[2]), "rev": r[3],
             "state": json.loads(r[4]), "updated": r[5]} for r in rows]


def _counts(store: Store, products: set[str] | None = None) -> dict[str, int]:
    rows = store.conn.execute("SELECT product, likes FROM rack_products").fetchall()
    return {p: n for p, n in rows if products is None or p in products}


Stale = Callable[[str], str | None]   # device -> the store's words for "last known"


def _restate(store: Store, racks: list[dict[str, Any]], now: int, stale: Stale) -> list[dict[str, Any]]:
    """Racks whose state changed get it with rev + 1 (in the caller's transaction)."""
    counts = _counts(store)
    changed = []
    for r in racks:
        state = rack_state(r["label"], r["products"], counts, stale(r["device"]))
        if state != r["state"]:
            r = {**r, "state": state, "rev": r["rev"] + 1, "updated": now}
            store.conn.execute("UPDATE racks SET state = ?, rev = ?, updated = ? WHERE device = ?",
                               (json.dumps(state), r["rev"], now, r["device"]))
            changed.append(r)
    return changed


def _restate_all_tx(store: Store, now: int, stale: Stale) -> list[dict[str, Any]]:
    """At start: a rack whose state the store's texts change (another language, new words) gets
    the new state with rev + 1; the others stay as they were."""
    with store.transaction():
        return _restate(store, [r for r in _racks(store) if r["state"]], now, stale)


def _likes_tx(store: Store, events: list[tuple[str, str, int]], now: int, stale: Stale
              ) -> tuple[int, int, list[dict[str, Any]]]:
    accepted = 0
    touched: set[str] = set()
    with store.transaction():
        store.conn.execute("DELETE FROM rack_likes WHERE received < ?", (now - LIKE_IDS_KEEP_MS,))
        for eid, product, delta in events:
            cur = store.conn.execute("INSERT OR IGNORE INTO rack_likes (event_id, product, delta, received) "
                                     "VALUES (?,?,?,?)", (eid, product, delta, now))
            if cur.rowcount != 1:
                continue  # the feed sent it before: counted once
            accepted += 1
            touched.add(product)
            store.conn.execute(  # never below 0 (an unlike of a like older than the feed's history)
                "INSERT INTO rack_products (product, likes) VALUES (?, MAX(0, ?)) "
                "ON CONFLICT(product) DO UPDATE SET likes = MAX(0, likes + ?)", (product, delta, delta))
        racks = [r for r in _racks(store) if touched & set(r["products"])]
        changed = _restate(store, racks, now, stale)
    return accepted, len(events) - accepted, changed


def _put_rack_tx(store: Store, device: str, label: str, products: list[str], now: int, stale: Stale
                 ) -> dict[str, Any]:
    with store.transaction():
        old = next((r for r in _racks(store) if r["device"] == device), None)
        rev = old["rev"] if old else 0
        state = old["state"] if old else {}
        store.conn.execute(
            "INSERT INTO racks (device, label, products, rev, state, updated) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(device) DO UPDATE SET label = excluded.label, products = excluded.products",
            (device, label, json.dumps(products), rev, json.dumps(state), now))
        rack = {"device": device, "label": label, "products": products, "rev": rev, "state": state,
                "updated": now}
        changed = _restate(store, [rack], now, stale)
        return changed[0] if changed else rack


def _bump_tx(store: Store, device: str, above: int, now: int) -> dict[str, Any] | None:
    with store.transaction():
        store.conn.execute("UPDATE racks SET rev = ?, updated = ? WHERE device = ? AND rev <= ?",
                           (above + 1, now, device, above))
        return next((r for r in _racks(store) if r["device"] == device), None)


class RackDisplayService(KindService):
    def __init__(self, db: Database, commands: CommandService, clock: Any, *,
                 min_interval_s: float = 0.25, stale: Stale | None = None) -> None:
        self.db = db
        self.clock = clock
        # the store's words for "last known" on each display ([screens], rack_stale); None: the
        # firmware's own ("LAST KNOWN")
        self.stale: Stale = stale or (lambda device: None)
        self.desired = DesiredState(commands, "show", min_interval_s=min_interval_s)
        self.desired.on_behind = self._behind
        self._racks: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.duplicates = 0

    async def load(self) -> None:
        await self.db.write(_restate_all_tx, self.clock(), self.stale)
        for r in await self.db.read(_racks):
            self._racks[r["device"]] = r

    async def run(self) -> None:
        for r in self._racks.values():  # displays online before a restart are asked again
            if r["state"]:
                self.desired.set(r["device"], r["rev"], r["state"])
        try:
            await _forever()
        finally:
            await self.desired.close()

    def on_birth(self, device: str) -> None:
        if device in self._racks:
            self.desired.birth(device)

    def _apply(self, racks: list[dict[str, Any]]) -> None:
        for r in racks:
            self._racks[r["device"]] = r
            if r["state"]:
                self.desired.set(r["device"], r["rev"], r["state"])

    async def post_likes(self, raw: list[dict[str, Any]]) -> dict[str, int]:
        events = [validate_like(e) for e in raw]  # all or nothing: a bad one refuses the request
        accepted, dups, changed = await self.db.write(_likes_tx, events, self.clock(), self.stale)
        self.duplicates += dups
        self._apply(changed)
        if dups:
            log.info("likes duplicates=%d accepted=%d", dups, accepted)
        return {"accepted": accepted, "duplicates": dups}

    async def put_rack(self, device: str, label: str, products: list[str]) -> dict[str, Any]:
        label, products = validate_rack(device, label, products)
        rack = await self.db.write(_put_rack_tx, device, label, products, self.clock(), self.stale)
        self._apply([rack])
        return self.view(device) or {}

    def _behind(self, device: str, theirs: int) -> None:
        async def bump() -> None:
            rack = await self.db.write(_bump_tx, device, theirs, self.clock())
            if rack is not None:
                self._apply([rack])
        self._tasks.add(task := asyncio.get_running_loop().create_task(bump()))
        task.add_done_callback(self._tasks.discard)

    def view(self, device: str) -> dict[str, Any] | None:
        r = self._racks.get(device)
        if r is None:
            return None
        return {"device": device, "label": r["label"], "products": r["products"],
                "likes": r["state"].get("likes", 0), "rev": r["rev"],
                "shown_rev": self.desired.shown(device), "updated": r["updated"]}

    def list(self) -> list[dict[str, Any]]:
        return [v for d in sorted(self._racks) if (v := self.view(d)) is not None]


async def _forever() -> None:
    await asyncio.Event().wait()


__all__ = ["LikeError", "RackDisplayService"]
