"""Fitting rooms (`kind: fitting-room`): the gateway side (docs/fitting-rooms.md).

One pure `gateway.kinds.fitting_room.core.FittingRooms` for the store, wrapped with storage, the rooms'
device events, the stock source, staff requests and the API:

* **device facts**: persisted events of fitting-room devices are applied in `events.id` order
  from `cursor` (woken by each commit, polled every `tick_s`), and the core's state, the
  cursor, the stream items and the device commands (`call_ack`) are written in ONE
  transaction, as the locker service does: a restart never loses or double-applies one.
* **garment identity**: the GS1 Digital Link the room read (GTIN check digit checked here),
  else the stock source's UID mapping, else the bare UID (`gtin: null`).
* **storage**: table `fitting` (one row: the live state, i.e. the rooms and the id counter,
  and the cursor) and the history in rows (the kind's migrations): `fitting_sessions` with
  their `fitting_tryons`, `fitting_requests`, `fitting_purchases`, `fitting_footfall`. The core
  holds a working set: live sessions and those that ended within `Rules.attribution_ms` (a
  purchase may still convert them), requests not final or updated within `REQUEST_KEEP_MS`.
  A change writes the rows that changed (compared with what was last written) and the small
  state row, so it costs the same on day 1 and day 365. A purchase dated earlier (a day's CSV)
  first brings the sessions it may convert back from the table; analytics and the request list
  read the tables. A state row from before (everything in one JSON) is split on load.
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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast
from urllib.parse import unquote

from gateway.devices.commands import now_ms
from gateway.kinds.base import Batch, StatefulService
from gateway.kinds.fitting_room import gs1
from gateway.kinds.fitting_room.core import FINAL as FINAL_STATES
from gateway.kinds.fitting_room.core import REQUEST_STATES, FittingError, FittingRooms, Rules
from gateway.kinds.fitting_room.core import analytics as fitting_analytics
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


# a final request (its dispatch final too) stays in the core this long after its last change
# (the mirror shows the session's requests; staff see what they just closed), then lives in
# `fitting_requests` only
REQUEST_KEEP_MS = 6 * 3600_000


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _pinned(q: dict[str, Any]) -> bool:
    """A request the core keeps whatever its age: not final, or its dispatch still moving."""
    d = q.get("dispatch")
    return q["state"] not in FINAL_STATES or (d is not None and not d.get("final", True))


def _tables_tx(store: Store) -> None:
    """The kind's tables (the app applies them when it opens the database; a service built
    on a bare Database, as in tests and tools, gets them here)."""
    from gateway.kinds.fitting_room import MIGRATIONS
    from gateway.storage.store import migrate_kind
    migrate_kind(store.conn, "fitting", MIGRATIONS)


def _put_rows(store: Store, sessions: list[dict[str, Any]], requests: list[dict[str, Any]],
              purchases: list[dict[str, Any]], footfall: list[list[int]]) -> None:
    """Upsert sessions (their try-ons with them) and requests; add purchases (a receipt known
    already is left alone: a POS retry) and door counts."""
    c = store.conn
    c.executemany('INSERT INTO fitting_sessions (id, room, start, "end", data) VALUES (?,?,?,?,?) '
                  'ON CONFLICT (id) DO UPDATE SET "end" = excluded."end", data = excluded.data',
                  [(se["id"], se["room"], se["start"], se["end"], _dumps(se)) for se in sessions])
    c.executemany("DELETE FROM fitting_tryons WHERE session = ?", [(se["id"],) for se in sessions])
    c.executemany("INSERT INTO fitting_tryons (session, gtin, start, converted) VALUES (?,?,?,?)",
                  [(se["id"], g, se["start"], int(g in se["converted"]))
                   for se in sessions for g in dict.fromkeys(se["tried"])])
    c.executemany("INSERT INTO fitting_requests (id, room, state, created, updated, pinned, data) "
                  "VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                  "updated = excluded.updated, pinned = excluded.pinned, data = excluded.data",
                  [(q["id"], q["room"], q["state"], q["created"], q["updated"], int(_pinned(q)),
                    _dumps(q)) for q in requests])
    c.executemany("INSERT OR IGNORE INTO fitting_purchases (receipt, at, data) VALUES (?,?,?)",
                  [(p["receipt"], p["at"], _dumps(p)) for p in purchases])
    c.executemany("INSERT INTO fitting_footfall (at, entries) VALUES (?, ?)",
                  [(at, n) for at, n in footfall])


def _live_state(d: dict[str, Any]) -> dict[str, Any]:
    """What the `fitting` row keeps: the live state (rooms, id counter, rules)."""
    return {"rules": d["rules"], "rooms": d["rooms"], "n": d["n"]}


def _load_tx(store: Store) -> tuple[dict[str, Any] | None, int]:
    """The `fitting` row as stored: (its JSON, the cursor)."""
    row = store.conn.execute("SELECT state, cursor FROM fitting WHERE id = 1").fetchone()
    return (json.loads(row[0]), row[1]) if row else (None, 0)


def _open_tx(store: Store, now: int, attribution_ms: int) -> tuple[dict[str, Any] | None, int, int]:
    """The core's state (live state and working set) and the cursor. A row from before the
    history tables (sessions, requests, purchases and door counts inside it) is split into
    rows here, in one transaction. Returns (state, cursor, rows split)."""
    with store.transaction():
        state, cursor = _load_tx(store)
        if state is None:
            return None, 0, 0
        split = 0
        if "sessions" in state:
            _put_rows(store, list(state["sessions"].values()), list(state["requests"].values()),
                      state["purchases"], state["footfall"])
            split = len(state["sessions"]) + len(state["requests"]) + len(state["purchases"]) \
                + len(state["footfall"])
            store.conn.execute("UPDATE fitting SET state = ? WHERE id = 1",
                               (_dumps(_live_state(state)),))
        sessions = [json.loads(r[0]) for r in store.conn.execute(
            'SELECT data FROM fitting_sessions WHERE "end" IS NULL OR "end" >= ? ORDER BY rowid',
            (now - attribution_ms,))]
        requests = [json.loads(r[0]) for r in store.conn.execute(
            "SELECT data FROM fitting_requests WHERE pinned = 1 OR updated >= ? ORDER BY rowid",
            (now - REQUEST_KEEP_MS,))]
    return ({**_live_state(state), "sessions": {se["id"]: se for se in sessions},
             "requests": {q["id"]: q for q in requests}, "purchases": [], "footfall": []},
            cursor, split)


def _attribution_tx(store: Store, receipts: list[str], spans: list[tuple[int, int]],
                    gtins: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For a change with purchases: the receipts already stored (a POS retry gets the first
    answer), and the sessions that ended in one of `spans` with a try-on of `gtins` not
    converted yet (those a purchase may convert)."""
    known = []
    for i in range(0, len(receipts), 500):
        part = receipts[i:i + 500]
        known += [json.loads(r[0]) for r in store.conn.execute(
            f"SELECT data FROM fitting_purchases WHERE receipt IN ({','.join('?' * len(part))})",
            part)]
    sessions: dict[str, dict[str, Any]] = {}
    marks = ",".join("?" * len(gtins))
    for lo, hi in spans:
        for (data,) in store.conn.execute(
                f'SELECT s.data FROM fitting_sessions s WHERE s."end" BETWEEN ? AND ? AND EXISTS '
                f'(SELECT 1 FROM fitting_tryons t WHERE t.session = s.id AND t.converted = 0 '
                f'AND t.gtin IN ({marks}))', (lo, hi, *gtins)):
            se = json.loads(data)
            sessions[se["id"]] = se
    return known, list(sessions.values())


def _request_tx(store: Store, rid: str) -> dict[str, Any] | None:
    row = store.conn.execute("SELECT data FROM fitting_requests WHERE id = ?", (rid,)).fetchone()
    return None if row is None else json.loads(row[0])


def requests_page(store: Store, state: str | None, room: str | None, after: int, limit: int
                  ) -> list[dict[str, Any]]:
    """`GET /fitting/requests`: up to `limit` requests after `seq` `after`, in creation order
    (`seq`: the row's rowid, stable across updates, which are upserts), each filter an index
    search (kind migration 2)."""
    sql = "SELECT rowid, data FROM fitting_requests WHERE rowid > ?"
    args: list[Any] = [after]
    for col, value in (("state", state), ("room", room)):
        if value is not None:
            sql += f" AND {col} = ?"
            args.append(value)
    return [{**json.loads(r[1]), "seq": r[0]} for r in store.conn.execute(
        sql + " ORDER BY rowid LIMIT ?", (*args, limit))]


def _analytics_tx(store: Store, start: int | None, end: int | None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[int, int]]]:
    lo = start if start is not None else -(2 ** 62)
    hi = end if end is not None else 2 ** 62
    c = store.conn
    sessions = [json.loads(r[0]) for r in c.execute(
        "SELECT data FROM fitting_sessions WHERE start >= ? AND start < ?", (lo, hi))]
    buys = [json.loads(r[0]) for r in c.execute(
        "SELECT data FROM fitting_purchases WHERE at >= ? AND at < ?", (lo, hi))]
    footfall = [(r[0], r[1]) for r in c.execute(
        "SELECT at, entries FROM fitting_footfall WHERE at >= ? AND at < ?", (lo, hi))]
    return sessions, buys, footfall


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


def _put_state(state: dict[str, Any], cursor: int, now: int, sessions: list[dict[str, Any]],
               requests: list[dict[str, Any]]) -> Callable[[Store], None]:
    """The live state row, and the rows of what changed (`_put_rows`)."""
    def put(store: Store) -> None:
        store.conn.execute(
            """INSERT INTO fitting (id, state, cursor, updated) VALUES (1, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET state=excluded.state, cursor=excluded.cursor,
                 updated=excluded.updated""",
            (_dumps(_live_state(state)), cursor, now))
        _put_rows(store, sessions, requests, state["purchases"], state["footfall"])
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
        # what was last written of each session and request of the working set (JSON)
        self._saved: dict[str, str] = {}

    # -- lifetime ---------------------------------------------------------------------------

    async def load(self) -> None:
        await self.db.write(_tables_tx)
        state, self.cursor, split = await self.db.write(_open_tx, self.clock(),
                                                        self.rules.attribution_ms)
        if split:
            log.warning("fitting history moved to tables rows=%d", split)
        if state is not None:
            self.core = FittingRooms.from_dict(state, self.rules)
            self._saved = {k: _dumps(v) for part in ("sessions", "requests")
                           for k, v in state[part].items()}

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
        state = self.core.to_dict()
        rows = {k: _dumps(v) for part in ("sessions", "requests") for k, v in state[part].items()}
        changed = {k for k, v in rows.items() if self._saved.get(k) != v}
        await self._save(_put_state(state, cursor, now,
                                    [v for k, v in state["sessions"].items() if k in changed],
                                    [v for k, v in state["requests"].items() if k in changed]),
                         batch)
        self.cursor = cursor
        self._saved = rows
        self._evict(now)

    def _evict(self, now: int) -> None:
        """Written rows leave the working set: purchases and door counts at once, sessions
        `attribution_ms` after their end, requests `REQUEST_KEEP_MS` after they are done."""
        c = self.core
        c.purchases, c.footfall = [], []
        for sid in [sid for sid, se in c.sessions.items()
                    if se["end"] is not None and se["end"] < now - self.rules.attribution_ms]:
            del c.sessions[sid]
            self._saved.pop(sid, None)
        for rid in [rid for rid, q in c.requests.items()
                    if not _pinned(q) and q["updated"] < now - REQUEST_KEEP_MS]:
            del c.requests[rid]
            self._saved.pop(rid, None)

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

    async def _change(self, fn: Callable[[FittingRooms], Any],
                      bring: Callable[[], Awaitable[None]] | None = None) -> Any:
        """Run one API decision on the core and persist it with its stream items; `bring`
        first puts the rows the decision needs back into the working set."""
        async with self._lock:
            if bring is not None:
                await bring()
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
        """The working set's requests (every open one; finished ones for `REQUEST_KEEP_MS`)."""
        return [q for q in self.core.requests.values()
                if (state is None or q["state"] == state) and (room is None or q["room"] == room)]

    async def requests_page(self, state: str | None = None, room: str | None = None,
                            after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """A page of the requests in the table (each change is written before it is answered),
        each with its `seq`: see `requests_page` (the function)."""
        return await self.db.read(requests_page, state, room, after, limit)

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
        async def bring() -> None:  # a request done long ago: from its table
            if rid not in self.core.requests:
                q = await self.db.read(_request_tx, rid)
                if q is not None:
                    self.core.requests[rid] = q
                    self._saved[rid] = _dumps(q)
        return await self._change(lambda c: c.update_request(rid, state, self.clock(), by), bring)

    async def purchase(self, receipt: str, at: int | None,
                       items: list[tuple[str, int]]) -> dict[str, Any]:
        items = [(_gtin(g), q) for g, q in items]
        at = at or self.clock()
        return await self._change(lambda c: c.purchase(receipt, at, items),
                                  self._bringer([(receipt, at, items)]))

    async def purchases(self, receipts: list[tuple[str, int, list[tuple[str, int]]]]
                        ) -> list[dict[str, Any]]:
        """Several receipts `(id, at, [(gtin, qty)])` in one change (a CSV import of a day's
        receipts: one state write, not one per receipt); each as `purchase`."""
        norm = [(r, at, [(_gtin(g), q) for g, q in items]) for r, at, items in receipts]
        return await self._change(lambda c: [c.purchase(r, at, items) for r, at, items in norm],
                                  self._bringer(norm))

    def _bringer(self, receipts: list[tuple[str, int, list[tuple[str, int]]]]
                 ) -> Callable[[], Awaitable[None]]:
        """Before purchases: the receipts stored already, and the sessions they may convert
        (ended within `attribution_ms` before each, with a try-on of its products)."""
        async def bring() -> None:
            gtins = sorted({g for _, _, items in receipts for g, _ in items})
            spans = sorted({(at - self.rules.attribution_ms, at) for _, at, _ in receipts})
            if not gtins:
                spans = []
            known, sessions = await self.db.read(
                _attribution_tx, [r for r, _, _ in receipts], _merge(spans), gtins)
            self.core.purchases = known + self.core.purchases
            for se in sessions:
                if se["id"] not in self.core.sessions:
                    self.core.sessions[se["id"]] = se
                    self._saved[se["id"]] = _dumps(se)
        return bring

    async def door_count(self, at: int | None, entries: int) -> None:
        await self._change(lambda c: c.door_count(at or self.clock(), entries))

    async def analytics(self, start: int | None, end: int | None) -> dict[str, Any]:
        """Figures over the period, from the tables (every change is written before it is
        answered)."""
        sessions, buys, footfall = await self.db.read(_analytics_tx, start, end)
        return fitting_analytics(sessions, buys, footfall, start, end)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans, overlapping ones merged (a day's receipts: a few queries, not one each)."""
    out: list[tuple[int, int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _gtin(gtin: str) -> str:
    try:
        return gs1.normalise_gtin(gtin)
    except gs1.Gs1Error as exc:
        raise FittingError("bad-gtin", str(exc)) from None
