"""Fitting rooms (`kind: fitting-room`): the gateway side (docs/fitting-rooms.md).

One pure `gateway.kinds.fitting_room.core.FittingRooms` for the store, wrapped with storage, the rooms'
device events, the stock source, staff requests and the API:

* **device facts**: persisted events of fitting-room devices are applied in `events.id` order
  from `cursor` (woken by each commit, polled every `tick_s`), and the core's state, the
  cursor, the stream items and the device commands (`call_ack`) are written in ONE
  transaction, as the locker service does: a restart never loses or double-applies one.
* **garment identity**: the GS1 Digital Link the room read (GTIN check digit checked here),
  else the stock source's UID mapping, else the bare UID (`gtin: null`).
* **storage**: table `fitting` (one row: the core's JSON state and the cursor), created by
  this module on first use (no shared migration).
* **outward stream**: kind `fitting`, `{"type": "fitting.<what>", "room", "device", "at", ...}`.
* **another size**: `SizeDispatcher` decides how a wanted size gets to the room, once the
  request exists (its id keys the dispatch): `StaffDispatcher` sends every request to staff;
  `gateway.kinds.fitting_room.tube_sizes.TubeSizeDispatcher` sends stockroom items by tube. A dispatcher
  that also has `progress()` (a `TrackedDispatcher`) is asked, at each step, where each live
  size request's dispatch is, and the request follows it (`FittingRooms.dispatch_progress`).
  That state is read from the dispatcher's own persisted record, so after a restart the
  next step catches up: nothing to replay, nothing applied twice.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast
from urllib.parse import unquote

from gateway.devices.commands import now_ms
from gateway.kinds.base import Batch, StatefulService
from gateway.kinds.fitting_room import gs1
from gateway.kinds.fitting_room.core import FINAL as FINAL_STATES
from gateway.kinds.fitting_room.core import REQUEST_STATES, FittingError, FittingRooms, Rules
from gateway.kinds.fitting_room.stock import StockError, StockSource, where_to_fetch
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.fitting")

KIND = "fitting-room"
EVENT_PAGE = 200
CMD_TIMEOUT_MS = 10 * 60_000

class SizeDispatcher(Protocol):
    """How a wanted size reaches a room. Returns who brings it (`"staff"`, `"tube"`)."""

    async def dispatch(self, request: dict[str, Any], variant: dict[str, Any]) -> str: ...


class TrackedDispatcher(SizeDispatcher, Protocol):
    """A dispatcher whose dispatches move on by themselves (a tube carrier)."""

    def progress(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """None: not dispatched by it. Else `{"via", "dispatch": {...shown on the request},
        "state": request state it implies or None, "fallback": bool, "cancellable": bool}`."""
        ...

    async def cancel(self, request: dict[str, Any]) -> None: ...


class StaffDispatcher:
    async def dispatch(self, request: dict[str, Any], variant: dict[str, Any]) -> str:
        return "staff"


def _load_tx(store: Store) -> tuple[dict[str, Any] | None, int]:
    row = store.conn.execute("SELECT state, cursor FROM fitting WHERE id = 1").fetchone()
    return (json.loads(row[0]), row[1]) if row else (None, 0)


def _room_events(store: Store, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Fitting-room events past `after` (at most `limit`), and the event id up to which every
    event has been looked at. Other devices' events are left out in SQL: at a store's event
    rates, reading and decoding every event here cost ~8 us of gateway CPU per event
    (docs/benchmarks.md)."""
    hi = store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    rows = store.conn.execute(
        "SELECT e.* FROM events e JOIN devices d ON d.id = e.device WHERE e.id > ? AND "
        "e.id <= ? AND d.kind = ? ORDER BY e.id LIMIT ?", (after, hi, KIND, limit)).fetchall()
    events = [Store._event(r) for r in rows]
    return events, (events[-1]["id"] if len(events) == limit else hi)


def _put_state(state: dict[str, Any], cursor: int, now: int) -> Callable[[Store], None]:
    def put(store: Store) -> None:
        store.conn.execute(
            """INSERT INTO fitting (id, state, cursor, updated) VALUES (1, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET state=excluded.state, cursor=excluded.cursor,
                 updated=excluded.updated""",
            (json.dumps(state, separators=(",", ":")), cursor, now))
    return put


class FittingService(StatefulService):
    stream_kind = "fitting"
    log = log
    step_label = "fitting step"

    def __init__(self, db: Database, stock: StockSource | None, *, rules: Rules | None = None,
                 dispatcher: SizeDispatcher | None = None, tick_s: float = 1.0,
                 clock: Callable[[], int] = now_ms) -> None:
        super().__init__(db, tick_s=tick_s, clock=clock)
        self.stock = stock
        self.texts: Any = None  # the mirror page's words (gateway.http.screen_texts), by _build
        self.rules = rules or Rules()
        self.dispatcher = dispatcher or StaffDispatcher()
        self.core = FittingRooms(self.rules)
        self.cursor = 0

    # -- lifetime ---------------------------------------------------------------------------

    async def load(self) -> None:
        state, self.cursor = await self.db.read(_load_tx)
        if state is not None:
            self.core = FittingRooms.from_dict(state, self.rules)

    async def run(self) -> None:
        report_all = getattr(self.stock, "report_all", None)
        if report_all is not None:   # the chain hears this store's stock (nearby.py)
            await report_all()
        await super().run()

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        # a cheap look: `_room_events` filters in SQL; `tube`: a carrier may have moved
        if kind == "event" or (kind == "tube" and self._tracked is not None):
            self._wake.set()

    @property
    def _tracked(self) -> TrackedDispatcher | None:
        return cast(TrackedDispatcher, self.dispatcher) if hasattr(self.dispatcher, "progress") else None

    async def step(self) -> None:
        async with self._lock:
            while True:
                rows, upto = await self.db.read(_room_events, self.cursor, EVENT_PAGE)
                if not rows:
                    # nothing for the rooms: move on without a write (after a crash the
                    # saved cursor re-reads only events that match nothing here)
                    self.cursor = max(self.cursor, upto)
                    break
                before = self.core.to_dict()
                try:
                    for e in rows:
                        await self._apply(e)
                    await self._commit(upto)
                except BaseException:
                    self.core = FittingRooms.from_dict(before, self.rules)
                    raise
            await self._follow_dispatches()

    async def _follow_dispatches(self) -> None:
        """Move size requests along with their dispatches (under the lock); cancel the
        dispatch of a request cancelled before its carrier left (the customer has gone)."""
        tracked = self._tracked
        if tracked is None:
            return
        todo, cancel = [], []
        for q in self.core.requests.values():
            d = q.get("dispatch")
            if q["kind"] != "size" or (q["state"] in FINAL_STATES and (d is None or d["final"])):
                continue
            p = tracked.progress(q)
            if p is None:
                continue
            if q["state"] == "cancelled" and p["cancellable"]:
                cancel.append(q)
            ahead = p["state"] is not None and q["state"] not in FINAL_STATES and \
                REQUEST_STATES.index(p["state"]) > REQUEST_STATES.index(q["state"])
            if p["dispatch"] != d or ahead or (p["fallback"] and q.get("fallback") is None):
                todo.append((q["id"], p))
        for q in cancel:
            await tracked.cancel(q)  # its `dispatch.cancelled` wakes the next step
        if not todo:
            return
        before = self.core.to_dict()
        try:
            for rid, p in todo:
                self.core.dispatch_progress(rid, self.clock(), p["via"], p["dispatch"], p["state"],
                                            p["fallback"])
            await self._commit(self.cursor)
        except BaseException:
            self.core = FittingRooms.from_dict(before, self.rules)
            raise

    async def _commit(self, cursor: int) -> None:
        batch, now = Batch(), self.clock()
        batch.items = [{**c, "device": c["room"]} for c in self.core.take_changes()]
        batch.cmds = [(device, name, args, key, now + CMD_TIMEOUT_MS)
                      for device, name, args, key in self.core.take_commands()]
        await self._save(_put_state(self.core.to_dict(), cursor, now), batch)
        self.cursor = cursor

    async def _identity(self, body: dict[str, Any]) -> tuple[str, str | None, str | None]:
        uid = str(body.get("uid", ""))
        gtin, serial = body.get("gtin"), body.get("serial")
        if gtin is not None:
            try:
                # the room sends the serial as written in the URI (percent-encoded)
                return uid, gs1.normalise_gtin(str(gtin)), gs1.validate_serial(unquote(str(serial)))
            except gs1.Gs1Error as exc:
                log.warning("garment tag uid=%s: %s; using the UID mapping", uid, exc)
        if self.stock is not None:
            try:
                found = await self.stock.by_uid(uid)
            except StockError as exc:
                log.warning("stock uid lookup failed uid=%s: %s", uid, exc)
                found = None
            if found:
                return uid, found[0], found[1]
        return uid, None, None

    async def _apply(self, e: dict[str, Any]) -> None:
        room, etype, body = e["device"], e["type"], e.get("body") or {}
        at = e.get("t_device") or e["t_gateway"]
        c = self.core
        if etype == "room.occupied":
            c.occupied(room, at)
        elif etype == "room.free":
            c.free(room, at)
        elif etype == "garment.in":
            c.garment_in(room, at, *await self._identity(body))
        elif etype == "garment.out":
            c.garment_out(room, at, str(body.get("uid", "")))
        elif etype == "call.pressed":
            c.call(room, at, "button")

    async def _change(self, fn: Callable[[FittingRooms], Any]) -> Any:
        """Run one API decision on the core and persist it with its stream items."""
        async with self._lock:
            before = self.core.to_dict()
            try:
                out = fn(self.core)
                await self._commit(self.cursor)
            except BaseException:
                self.core = FittingRooms.from_dict(before, self.rules)
                raise
            return out

    # -- API --------------------------------------------------------------------------------

    def rooms(self) -> list[dict[str, Any]]:
        return [{"room": r, "occupied": s["occupied"], "session": s["session"],
                 "garments": len(s["garments"])} for r, s in sorted(self.core.rooms.items())]

    def requests(self, state: str | None = None, room: str | None = None) -> list[dict[str, Any]]:
        return [q for q in self.core.requests.values()
                if (state is None or q["state"] == state) and (room is None or q["room"] == room)]

    async def view(self, room: str) -> dict[str, Any]:
        """What the mirror shows: garments with product details and availability."""
        if room not in self.core.rooms:
            raise FittingError("unknown-room", f"unknown fitting room {room!r}: a room appears "
                                               "with its device's first event (GET /fitting/rooms)")
        r = self.core.rooms[room]
        garments = []
        for key, g in r["garments"].items():
            product, variants, error = None, [], None
            if g["gtin"] and self.stock is not None:
                try:
                    product = await self.stock.product(g["gtin"])
                    variants = await self.stock.variants(g["gtin"])
                except StockError as exc:
                    error = str(exc)
            garments.append({"key": key, **g, "product": product, "variants": variants,
                             "stock_error": error})
        return {"room": room, "occupied": r["occupied"], "session": r["session"],
                "garments": garments,
                "requests": [q for q in self.core.requests.values()
                             if q["room"] == room and q.get("session") == r["session"]
                             and r["session"] is not None]}

    async def ask_size(self, room: str, gtin: str, instead_of: str | None) -> dict[str, Any]:
        gtin = _gtin(gtin)
        if self.stock is None:
            raise FittingError("no-stock", "no stock source configured (--stock / --stock-url)")
        try:
            variant = next((v for v in await self.stock.variants(gtin) if v["gtin"] == gtin), None)
        except StockError as exc:
            raise FittingError("stock-unavailable", str(exc)) from None
        if variant is None:
            raise FittingError("unknown-product", f"no product with GTIN {gtin} in stock")
        where = where_to_fetch(variant)
        if where is None:
            raise FittingError("out-of-stock", f"{variant['name']} {variant['size']} is out of "
                                               "stock here and nearby")
        q = await self._change(lambda c: c.ask_size(room, self.clock(), gtin, instead_of, where))
        if q["state"] != "open" or q.get("dispatched") or q.get("fallback"):
            return q  # a double tap: already on its way
        # the request is persisted (staff see it) before a dispatcher acts on it: a crash in
        # between leaves a staff request, never a dispatch nobody waits for
        via = await self.dispatcher.dispatch(dict(q), variant)
        if via != "staff":  # the dispatcher took it: show where it is now
            async with self._lock:
                await self._follow_dispatches()
        return self.core.requests[q["id"]]

    async def call(self, room: str) -> dict[str, Any]:
        if room not in self.core.rooms:
            raise FittingError("unknown-room", f"unknown fitting room {room!r}")
        return await self._change(lambda c: c.call(room, self.clock(), "mirror"))

    async def update_request(self, rid: str, state: str, by: str | None) -> dict[str, Any]:
        return await self._change(lambda c: c.update_request(rid, state, self.clock(), by))

    async def purchase(self, receipt: str, at: int | None,
                       items: list[tuple[str, int]]) -> dict[str, Any]:
        items = [(_gtin(g), q) for g, q in items]
        return await self._change(lambda c: c.purchase(receipt, at or self.clock(), items))

    async def purchases(self, receipts: list[tuple[str, int, list[tuple[str, int]]]]
                        ) -> list[dict[str, Any]]:
        """Several receipts `(id, at, [(gtin, qty)])` in one change (a CSV import of a day's
        receipts: one state write, not one per receipt); each as `purchase`."""
        norm = [(r, at, [(_gtin(g), q) for g, q in items]) for r, at, items in receipts]
        return await self._change(lambda c: [c.purchase(r, at, items) for r, at, items in norm])

    async def door_count(self, at: int | None, entries: int) -> None:
        await self._change(lambda c: c.door_count(at or self.clock(), entries))

    def analytics(self, start: int | None, end: int | None) -> dict[str, Any]:
        return self.core.analytics(start, end)


def _gtin(gtin: str) -> str:
    try:
        return gs1.normalise_gtin(gtin)
    except gs1.Gs1Error as exc:
        raise FittingError("bad-gtin", str(exc)) from None
