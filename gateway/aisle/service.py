"""The endless aisle's service (docs/endless-aisle.md): a customer's request, the tube or the
order + locker it becomes, and the outbox that sends the pickup code.

* **a request** (`ask`) is keyed by the asking token and its idempotency key: its id is derived
  from both, so a retry — even after a crash half-way — finds the same tube dispatch
  (`aisle:<id>`, through the fitting rooms' `TubeSizeDispatcher`) or the same locker order
  (`ea-<id>`: the locker service returns a live order's reservation again). The row, its
  stream items (kind `aisle`: webhooks `aisle.<type>`) and audit rows are written in ONE
  transaction, after the action.
* **the order system** hears of an order through the webhook `aisle.ordered` and/or polls
  `GET /aisle/orders`; the parcel then follows the locker flow (staff load it).
* **the outbox**: when the locker service commits `order.ready` for one of these orders, a
  message is queued (one per request: `UNIQUE (request)`). The row holds the recipient until
  delivery, never the code: the code is read from the locker service's memory at the moment
  of sending (`ready_id`); after a restart or `CODE_TTL_S` it is gone, and the outbox asks the
  locker service for a reissue (the old code stops working at the bank; the customer only
  ever gets one). Each attempt is a row of `aisle_deliveries` (time, outcome, error with the
  code scrubbed); failures retry with backoff up to `max_attempts`. After delivery the
  recipient is cleared (only the masked form stays).
* **delivery is at least once** at the sender: a crash between the sender's "sent" and the
  commit of `delivered` sends it again after the restart (with a fresh code).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.aisle.core import (
    AisleError,
    backoff_s,
    check_contact,
    mask,
    message_text,
    request_digest,
    route_for,
    scrub,
)
from gateway.devices.ticker import tick_loop
from gateway.kinds.fitting_room.stock import StockError, where_to_fetch
from gateway.kinds.fitting_room.tube_sizes import TubeSizeDispatcher, dispatch_key
from gateway.kinds.locker_bank.core import Refused
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.aisle")

PARCEL_SIZE = "M"          # the locker size an aisle order reserves (a folded garment, a sample box)
STREAM_KIND = "aisle"
PREFIX = "aisle"
FINAL_LOCKER = ("collected", "expired", "cancelled", "returned")
SEND_TIMEOUT_S = 30.0      # one attempt at the sender (a hung SMS gateway must not stall the outbox)


class SendError(Exception):
    """The sender could not deliver (the outbox retries)."""


class Sender(Protocol):
    async def send(self, channel: str, to: str, text: str) -> None:
        """Deliver or raise SendError."""


class SimulatedSender:
    """SMS and e-mail as a demo has them: what was sent is kept in memory (the customer's phone,
    bounded), nothing leaves the store. `fail_next(n)`: the next n sends fail (tests, demo)."""

    def __init__(self, keep: int = 200) -> None:
        self.inbox: deque[dict[str, Any]] = deque(maxlen=keep)
        self._fail = 0
        self.attempts = 0

    def fail_next(self, n: int) -> None:
        self._fail = n

    async def send(self, channel: str, to: str, text: str) -> None:
        self.attempts += 1
        if self._fail > 0:
            self._fail -= 1
            raise SendError(f"simulated {channel} gateway unreachable")
        self.inbox.append({"channel": channel, "to": to, "text": text, "at": time.time()})


# -- storage (writer thread) ------------------------------------------------------------------

def _request_id(who: str, key: str) -> str:
    return hashlib.sha256(f"{who}\x00{key}".encode()).hexdigest()[:16]


def _get_tx(store: Store, rid: str) -> dict[str, Any] | None:
    row = store.conn.execute("SELECT * FROM aisle_requests WHERE id = ?", (rid,)).fetchone()
    return None if row is None else dict(row)


def _audit(store: Store, now: int, rid: str, outcome: str, status: int = 200) -> None:
    store.conn.execute("INSERT INTO audit (t, who, token, ip, method, path, status, outcome) "
                       "VALUES (?, 'aisle', NULL, NULL, 'AISLE', ?, ?, ?)",
                       (now, f"/aisle/requests/{rid}", status, outcome[:500]))


def _put_request_tx(store: Store, row: dict[str, Any], items: list[dict[str, Any]],
                    audit: list[str], now: int) -> None:
    with store.transaction():
        cols = ", ".join(row)
        store.conn.execute(f"INSERT INTO aisle_requests ({cols}) VALUES ({', '.join('?' * len(row))})",
                           tuple(row.values()))
        for data in items:
            store.append_stream(STREAM_KIND, data)
        for outcome in audit:
            _audit(store, now, row["id"], outcome)


def _live_orders_tx(store: Store) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in store.conn.execute(
        "SELECT order_id, id FROM aisle_requests WHERE route = 'order' AND state = 'open'")]


def _queue_tx(store: Store, rid: str, ready_id: str, now: int) -> bool:
    """Queue the request's message (once: a second `order.ready` changes nothing); a reissued
    code (`order.code`) updates the handle of a message not yet sent."""
    with store.transaction():
        req = _get_tx(store, rid)
        if req is None or req["contact_channel"] is None:
            return False
        cur = store.conn.execute(
            "INSERT OR IGNORE INTO aisle_outbox (request, channel, recipient, masked, ready_id, state, "
            "attempts, next_at, created) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (rid, req["contact_channel"], req["contact_to"], req["contact_masked"], ready_id, now, now))
        if cur.rowcount:
            _audit(store, now, rid, f"message queued to {req['contact_masked']}")
            return True
        store.conn.execute("UPDATE aisle_outbox SET ready_id = ? WHERE request = ? AND state = 'pending'",
                           (ready_id, rid))
        return False


def _close_tx(store: Store, rid: str, state: str, now: int) -> None:
    with store.transaction():
        store.conn.execute("UPDATE aisle_requests SET state = 'closed', updated = ? WHERE id = ?",
                           (now, rid))
        _audit(store, now, rid, f"locker order {state}: the request is closed")


def _due_tx(store: Store, now: int, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn.execute(
        "SELECT o.*, r.order_id, r.bank, r.name, r.lang FROM aisle_outbox o "
        "JOIN aisle_requests r ON r.id = o.request WHERE o.state = 'pending' AND o.next_at <= ? "
        "ORDER BY o.next_at LIMIT ?", (now, limit))]


def _next_due_tx(store: Store) -> int | None:
    return store.conn.execute("SELECT MIN(next_at) FROM aisle_outbox WHERE state = 'pending'"
                              ).fetchone()[0]


def _attempt_tx(store: Store, msg: dict[str, Any], now: int, ok: bool, error: str | None,
                next_at: int | None, ready_id: str | None) -> None:
    """One delivery attempt: its log row, and the message's new state, in one transaction."""
    with store.transaction():
        attempt = msg["attempts"] + 1
        store.conn.execute("INSERT INTO aisle_deliveries (message, attempt, t, ok, error) "
                           "VALUES (?, ?, ?, ?, ?)", (msg["id"], attempt, now, int(ok), error))
        if ok:
            # delivered: the recipient goes (only the masked form stays), and the code handle
            store.conn.execute("UPDATE aisle_outbox SET state = 'delivered', attempts = ?, "
                               "recipient = NULL, ready_id = NULL, delivered_at = ?, last_error = NULL "
                               "WHERE id = ?", (attempt, now, msg["id"]))
            store.conn.execute("UPDATE aisle_requests SET contact_to = NULL, updated = ? WHERE id = ?",
                               (now, msg["request"]))
            store.append_stream(STREAM_KIND, {"type": "message.delivered", "request": msg["request"],
                                              "order": msg["order_id"], "to": msg["masked"],
                                              "attempt": attempt})
            _audit(store, now, msg["request"], f"message delivered to {msg['masked']} (attempt {attempt})")
        elif next_at is None:
            store.conn.execute("UPDATE aisle_outbox SET state = 'failed', attempts = ?, recipient = NULL, "
                               "ready_id = NULL, last_error = ? WHERE id = ?", (attempt, error, msg["id"]))
            store.append_stream(STREAM_KIND, {"type": "message.failed", "request": msg["request"],
                                              "order": msg["order_id"], "to": msg["masked"],
                                              "attempt": attempt, "error": error})
            _audit(store, now, msg["request"], f"message to {msg['masked']} failed for good: {error}", 502)
        else:
            store.conn.execute("UPDATE aisle_outbox SET attempts = ?, next_at = ?, last_error = ?, "
                               "ready_id = COALESCE(?, ready_id) WHERE id = ?",
                               (attempt, next_at, error, ready_id, msg["id"]))
            _audit(store, now, msg["request"], f"message to {msg['masked']} attempt {attempt} failed: "
                                               f"{error}", 502)


def _message_tx(store: Store, rid: str) -> dict[str, Any] | None:
    row = store.conn.execute("SELECT id, state, attempts, masked, delivered_at, last_error "
                             "FROM aisle_outbox WHERE request = ?", (rid,)).fetchone()
    return None if row is None else dict(row)


def _orders_tx(store: Store, after: int, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn.execute(
        "SELECT rowid AS seq, id, order_id, bank, gtin, name, size, colour, source, created "
        "FROM aisle_requests WHERE route = 'order' AND rowid > ? ORDER BY rowid LIMIT ?", (after, limit))]


def _outbox_tx(store: Store, after: int, limit: int) -> list[dict[str, Any]]:
    msgs = [dict(r) for r in store.conn.execute(
        "SELECT id, request, channel, masked, state, attempts, next_at, created, delivered_at, "
        "last_error FROM aisle_outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]
    for m in msgs:
        m["deliveries"] = [dict(r) for r in store.conn.execute(
            "SELECT attempt, t, ok, error FROM aisle_deliveries WHERE message = ? ORDER BY attempt",
            (m["id"],))]
        m["deliveries"] = [d | {"ok": bool(d["ok"])} for d in m["deliveries"]]
    return msgs


# -- the service ---------------------------------------------------------------------------------

class AisleService:
    def __init__(self, db: Database, clock: Callable[[], int], *, stock: Callable[[], Any],
                 tube: Any, lockers: Any, fitting_station: str | None,
                 stations: Mapping[str, str] | None = None, sender: Sender | None = None,
                 backoff: tuple[float, float] = (1.0, 300.0), max_attempts: int = 8,
                 language: str = "en") -> None:
        self.db = db
        self.clock = clock
        self._stock = stock            # () -> the store's stock source (the fitting rooms'), or None
        self.tube = tube
        self.lockers = lockers
        self.fitting_station = fitting_station
        self.stations = dict(stations or {})  # device id -> its nearest tube station
        floors = {st for st, v in tube.net.stations.items() if v.kind == "floor"} if tube is not None else set()
        for dev, st in self.stations.items():
            if st not in floors:
                raise AisleError("bad-config", f"[aisle] stations: {dev}={st}: {st!r} is not a floor "
                                 f"station of the tube network (floor stations: {', '.join(sorted(floors))})")
        self.sender: Sender = sender or SimulatedSender()
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.language = language
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._wait_s = 5.0
        self._orders: dict[str, str] = {}      # live locker order -> request id
        self._ready: deque[dict[str, Any]] = deque()

    # -- lifetime ---------------------------------------------------------------------------

    async def load(self) -> None:
        self._orders = dict(await self.db.read(_live_orders_tx))

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "locker" and data.get("order") in self._orders:
            self._ready.append(data)
            self._wake.set()

    async def run(self) -> None:
        await tick_loop(self._wake, lambda: self._wait_s, self._step_and_plan, log, "aisle step",
                        first=True)

    async def _step_and_plan(self) -> None:
        """A step, then how long to sleep: until the next message is due, 5 s at the most."""
        self._wait_s = 5.0  # a step that fails is retried after 5 s
        await self.step()
        nxt = await self.db.read(_next_due_tx)
        self._wait_s = 5.0 if nxt is None else min(5.0, max(0.0, (nxt - self.clock()) / 1000))

    async def step(self) -> None:
        """Queue messages for orders that became ready, then send what is due."""
        while self._ready:
            data = self._ready.popleft()
            rid = self._orders.get(data["order"])
            if rid is None:
                continue
            if data.get("type") in ("order.ready", "order.code") and data.get("ready_id"):
                await self.db.write(_queue_tx, rid, data["ready_id"], self.clock())
            elif data.get("state") in FINAL_LOCKER:  # collected, expired...: no longer followed
                self._orders.pop(data["order"], None)
                await self.db.write(_close_tx, rid, str(data["state"]), self.clock())
        for msg in await self.db.read(_due_tx, self.clock(), 20):
            await self._deliver(msg)

    # -- a request --------------------------------------------------------------------------

    def station_for(self, origin: str, origin_kind: str | None) -> str | None:
        """The tube station nearest the screen that asked: configured per device, else the
        fitting rooms' station for a mirror."""
        if origin in self.stations:
            return self.stations[origin]
        return self.fitting_station if origin_kind == "fitting-room" else None

    async def ask(self, who: str, key: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The customer's request; (its view, created). Raises AisleError."""
        rid = _request_id(who, key)
        digest = request_digest(body)
        async with self._lock:
            old = await self.db.read(_get_tx, rid)
            if old is not None:
                if old["digest"] != digest:
                    raise AisleError("idempotency-conflict", f"idempotency key {key!r} was used for "
                                     "another request: use a new key for a new request")
                return await self.view(rid), False
            row = await self._decide(rid, who, digest, body)
            if row["route"] == "order":
                self._orders[row["order_id"]] = rid
            return await self.view(rid), True

    async def _decide(self, rid: str, who: str, digest: str, body: dict[str, Any]) -> dict[str, Any]:
        stock = self._stock()
        if stock is None:
            raise AisleError("no-stock", "this store has no stock source (--stock or --stock-url): "
                                         "an associate will help")
        gtin = body["gtin"]
        try:
            variants = await stock.variants(gtin)
        except StockError as exc:
            raise AisleError("stock-down", f"stock cannot be checked right now ({exc}); try again "
                                           "in a moment or ask an associate") from None
        v = next((x for x in variants if x["gtin"] == gtin), None)
        if v is None:
            raise AisleError("unknown-product", f"GTIN {gtin} is not in this store's catalogue")
        now = self.clock()
        route = route_for(where_to_fetch(v))
        channel = to = masked = None
        if route == "order":
            contact = body.get("contact")
            if not contact:
                raise AisleError("contact-needed", "this product comes from another store: give an "
                                 "SMS number or an e-mail address for the pickup code")
            channel = contact["channel"]
            to = check_contact(channel, contact["to"])
            masked = mask(channel, to)
        row: dict[str, Any] = {
            "id": rid, "who": who, "digest": digest, "origin": body["origin"], "gtin": gtin,
            "name": v["name"], "size": v.get("size"), "colour": v.get("colour"), "route": route,
            "state": "open", "station": None, "job": None, "order_id": None, "bank": None,
            "source": None, "lang": body.get("lang") or self.language, "contact_channel": channel,
            "contact_to": to, "contact_masked": masked, "created": now, "updated": now}
        items: list[dict[str, Any]] = []
        audit: list[str] = []
        if route == "tube":
            station = self.station_for(body["origin"], body.get("origin_kind"))
            via = "staff"
            if station is not None:
                dispatcher = TubeSizeDispatcher(self.tube, station, prefix=PREFIX)
                via = await dispatcher.dispatch({"id": rid, "gtin": gtin, "where": "stockroom"}, v)
            if via == "tube":
                row |= {"station": station, "job": dispatch_key(rid, PREFIX)}
                audit.append(f"tube dispatch {row['job']} stockroom -> {station} ({v['name']} {v.get('size')})")
            else:  # no tube here, or no station near this screen: an associate brings it
                row["route"] = "staff"
                audit.append(f"stockroom item for an associate to bring to {body['origin']}")
        elif route == "order":
            order = f"ea-{rid}"
            bank = await self._reserve(order)
            row |= {"order_id": order, "bank": bank, "source": where_to_fetch(v)}
            audit.append(f"order {order} placed with the order system ({row['source'] or 'any store'}); "
                         f"locker {bank} reserved; pickup code to {masked}")
        else:
            audit.append("on the sales floor: an associate shows where")
        items.append({"type": "requested", "request": rid, "route": row["route"], "origin": row["origin"],
                      "gtin": gtin, "station": row["station"], "job": row["job"], "order": row["order_id"],
                      "bank": row["bank"], "to": masked})
        if route == "order":  # what the order system needs (webhook aisle.ordered; GET /aisle/orders)
            items.append({"type": "ordered", "request": rid, "order": row["order_id"], "bank": row["bank"],
                          "gtin": gtin, "name": v["name"], "size": v.get("size"), "colour": v.get("colour"),
                          "source": row["source"]})
        await self.db.write(_put_request_tx, row, items, audit, now)
        log.info("aisle request id=%s route=%s origin=%s gtin=%s", rid, row["route"], row["origin"], gtin)
        return row

    async def _reserve(self, order: str) -> str:
        """A compartment in the first bank that has one (the locker flow's `assign`: asking again
        for a live order returns its reservation)."""
        reasons = []
        for bank in sorted(self.lockers.banks):
            try:
                await self.lockers.assign(bank, order, PARCEL_SIZE)
                return bank
            except Refused as exc:
                reasons.append(f"{bank}: {exc.reason}")
        raise AisleError("no-locker", "no locker of this store can take the parcel now "
                         f"({'; '.join(reasons) or 'no locker bank'}): an associate will help")

    async def view(self, rid: str) -> dict[str, Any]:
        """A request as the customer's screen sees it: never a code, the contact masked."""
        r = await self.db.read(_get_tx, rid)
        if r is None:
            raise AisleError("unknown-request", f"no request {rid}")
        out: dict[str, Any] = {k: r[k] for k in ("id", "route", "origin", "gtin", "name", "size", "colour",
                                                  "station", "bank", "created")}
        out |= {"order": r["order_id"], "contact": r["contact_masked"], "tube": None, "locker": None,
                "message": None}
        if r["job"]:
            with contextlib.suppress(LookupError):
                out["tube"] = {"state": (await self.tube.get_job(r["job"]))["state"]}
        if r["order_id"]:
            with contextlib.suppress(LookupError):
                o = self.lockers.bank(r["bank"]).order(r["order_id"])
                out["locker"] = {"state": str(o.state), "compartment": o.compartment_id,
                                 "pickup_until": o.pickup_until}
            msg = await self.db.read(_message_tx, rid)
            if msg is not None:
                out["message"] = {"state": msg["state"], "attempts": msg["attempts"]}
        return out

    # -- the outbox -------------------------------------------------------------------------

    def _code(self, ready_id: str | None) -> str | None:
        if not ready_id:
            return None
        code: str | None = self.lockers.render({"ready_id": ready_id}, True).get("code")
        return code

    async def _deliver(self, msg: dict[str, Any]) -> None:
        now = self.clock()
        ready_id = msg["ready_id"]
        code = self._code(ready_id)
        try:
            bank = self.lockers.bank(msg["bank"])
            o = bank.order(msg["order_id"])
            if str(o.state) != "ready":  # collected, expired, taken back: no code to send
                raise Refused(str(o.state), f"order {o.id} is {o.state}, no longer ready")
            if code is None:  # forgotten (restart, CODE_TTL_S): a new one, the old stops working
                res = await self.lockers.reissue(msg["bank"], msg["order_id"],
                                                 key=f"aisle:{msg['order_id']}:reissue:{msg['attempts']}")
                ready_id = res["ready_id"]
                code = self._code(ready_id)
            if code is None:
                raise SendError("the pickup code could not be issued")
            until = time.strftime("%Y-%m-%d %H:%M", time.localtime(o.pickup_until or 0))
            text = message_text(msg["lang"], name=msg["name"], bank=msg["bank"],
                                compartment=o.compartment_id, until=until, code=code)
            try:
                await asyncio.wait_for(self.sender.send(msg["channel"], msg["recipient"], text),
                                       SEND_TIMEOUT_S)
            except TimeoutError:
                raise SendError(f"the sender did not answer within {SEND_TIMEOUT_S:.0f} s") from None
        except (SendError, Refused, LookupError) as exc:
            error = scrub(f"{type(exc).__name__}: {exc}", code)[:300]
            attempt = msg["attempts"] + 1
            later = None if attempt >= self.max_attempts or isinstance(exc, (Refused, LookupError)) else \
                now + int(backoff_s(attempt, *self.backoff) * 1000)
            log.warning("aisle message id=%s to=%s attempt=%d failed: %s", msg["id"], msg["masked"],
                        attempt, error)
            await self.db.write(_attempt_tx, msg, now, False, error, later, ready_id)
            return
        await self.db.write(_attempt_tx, msg, now, True, None, None, None)
        log.info("aisle message id=%s delivered to=%s attempt=%d", msg["id"], msg["masked"],
                 msg["attempts"] + 1)

    # -- reads for the order system and staff ---------------------------------------------------

    async def orders(self, after: int, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(_orders_tx, after, limit)

    async def outbox(self, after: int, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(_outbox_tx, after, limit)
