"""Locker banks (`kind: locker-bank`): the gateway side of click-and-collect (docs/lockers.md).

One pure `gateway.kinds.locker_bank.core.LockerBank` per bank device, wrapped with storage, the device's
events, the API and device commands:

* **creation**: on the first birth of a `locker-bank` device the service asks it for `status`
  and builds the bank from the compartment layout the firmware reports (the firmware's config
  is the one source of truth for numbers and sizes). The code salt is the firmware's default,
  the device id; the device checks it on every `set_order` (`salt_id`), and the code key's id
  (`key_id`): codes are HMAC-SHA256 under the bank's key (`keys`, gateway/kinds/locker_bank/keys.py).
* **legacy rows** (SHA-256 hashes, before keyed codes) are upgraded once the bank's key is
  known: `upgrade_legacy` recovers each code by exhaustive search, the row is rewritten with
  MACs and the bank gets them with `load_codes replace` (it verifies its legacy entries the
  old way until then).
* **storage**: `lockers` table, one row per bank: `{"bank": LockerBank.to_dict() without its
  orders, "meta"}` and `cursor`, the id of the last device event applied; the bank's orders
  are rows of `locker_orders` (the kind's migrations), written only when they changed. An
  order finished more than `ARCHIVE_AFTER_S` ago leaves the bank for `locker_history` (its
  public record: no verifier), so what a change writes and what the 1-second tick looks at
  is the same on day 1 and day 365, and a tick with nothing due writes and serialises nothing.
  Never a plain code. A bank row from before (orders inside) is split on load.
* **device facts**: the bank's persisted events are applied in `events.id` order from
  `cursor` (woken by each commit, and polled every `tick_s` as a safety net), so a crash or
  restart never loses or double-applies one: the bank state, the cursor, the stream items and
  the device commands an event causes are written in ONE transaction.
* **device commands** (`set_order` when an order becomes ready, `revoke` when it expires) are
  inserted as queued commands in that same transaction, with an idempotency key derived from
  the order id and the action (`lk:<order>:set_order:<mac16>`, `lk:<order>:revoke`,
  `lk:<order>:load:<attempt>`): the command service delivers them, a restart never sends one
  twice. Staff `open` for loading is sent through `CommandService.submit` and awaited.
* **outward stream**: every order state change is a stream item of kind `locker`
  (`{"type": "order.<state>", "bank", "order", "compartment", "old", "state", "reason"}`).
  `order.ready` (and `order.code` for a reissued code) carry the plain `code` to live
  subscribers that may see it (`lockers`/`admin`, gateway/http/redact.py) only: the stored stream
  row holds a `ready_id` token, the code itself lives in
  this process's memory for `CODE_TTL_S` and is added when the item is rendered. After that,
  or after a restart, the item shows `code: null` and the order system asks for a reissue.
* **time**: `tick(now)` every `tick_s` expires reservations and pickup windows.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from gateway.devices.commands import CommandService, IdempotencyConflict, now_ms
from gateway.devices.desired import DesiredState
from gateway.http.screen_texts import DEFAULTS, LOCKER_KEYS
from gateway.kinds.base import Batch, StatefulService
from gateway.kinds.locker_bank import MIGRATIONS
from gateway.kinds.locker_bank.core import (
    IssuedCode,
    LockerBank,
    Order,
    OrderState,
    Reason,
    Refused,
    Size,
    device_event,
    key_id,
    salt_id,
    upgrade_legacy,
)
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.lockers")

KIND = "locker-bank"
CODE_TTL_S = 600.0  # how long a fresh plain code stays in memory for live subscribers
DEVICE_CMD_TIMEOUT_S = 24 * 3600  # set_order / revoke: keep delivering for a day
STATUS_TIMEOUT_S = 10.0
EVENT_PAGE = 200
OPS_KEEP = 500  # idempotency keys of staff/order-system operations remembered per bank
# a finished order (collected, returned, cancelled) stays in its bank this long: its spent
# code's verifier keeps new codes unique (a `code.reused` report means what it says) and
# `code-used` answers; then it goes to `locker_history` (GET /lockers/{bank}/orders/{order}
# still finds it there; a new order may never reuse its id)
ARCHIVE_AFTER_S = 24 * 3600.0


class UnknownBank(LookupError):
    pass


def public_order(o: Order) -> dict[str, Any]:
    return {"order": o.id, "size": str(o.size), "compartment": o.compartment_id,
            "state": str(o.state), "assigned_at": o.assigned_at, "reserve_until": o.reserve_until,
            "ready_at": o.ready_at, "pickup_until": o.pickup_until,
            "code_used_at": o.code_used_at, "needs_code": o.needs_code, "closed_at": o.closed_at}


class _Batch(Batch):
    """What one change of a bank produces: stream items, device commands, fresh codes."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[str, str] = {}  # ready_id -> plain code (memory only)
        self.issued: dict[str, IssuedCode] = {}


#: an order row to write: (order id, JSON) to upsert, or (order id, None) to delete
OrderRow = tuple[str, str | None]
#: a `locker_history` row: (order id, state, closed unix ms, public_order JSON)
HistoryRow = tuple[str, str, int, str]
#: an operation's idempotency key to write: (key, JSON) to add, or (key, None) to delete
OpRow = tuple[str, str | None]


def _put_bank(bank_id: str, state: dict[str, Any], cursor: int, now: int,
              orders: Sequence[OrderRow] = (), history: Sequence[HistoryRow] = (),
              ops: Sequence[OpRow] = ()) -> Callable[[Store], None]:
    """The bank row, the orders that changed, the orders that went to history, the
    operations' idempotency keys added and dropped."""
    def put(store: Store) -> None:
        store.put_locker(bank_id, state, cursor, now)
        for key, data in ops:
            if data is None:
                store.conn.execute("DELETE FROM locker_ops WHERE bank = ? AND key = ?",
                                   (bank_id, key))
            else:
                store.conn.execute("INSERT OR REPLACE INTO locker_ops (bank, key, data) "
                                   "VALUES (?, ?, ?)", (bank_id, key, data))
        for oid, data in orders:
            if data is None:
                store.conn.execute("DELETE FROM locker_orders WHERE bank = ? AND id = ?",
                                   (bank_id, oid))
            else:
                store.conn.execute(
                    "INSERT INTO locker_orders (bank, id, data) VALUES (?, ?, ?) "
                    "ON CONFLICT (bank, id) DO UPDATE SET data = excluded.data",
                    (bank_id, oid, data))
        store.conn.executemany(
            "INSERT OR REPLACE INTO locker_history (bank, id, state, closed, data) "
            "VALUES (?, ?, ?, ?, ?)", [(bank_id, *h) for h in history])
    return put


def _tables_tx(store: Store) -> None:
    """The kind's tables (the app applies them when it opens the database; a service built
    on a bare Database, as in tests and tools, gets them here)."""
    from gateway.storage.store import migrate_kind
    migrate_kind(store.conn, "lockers", MIGRATIONS)


def _load_tx(store: Store, now_s: float
             ) -> list[tuple[str, dict[str, Any], int, list[str], bool, dict[str, Any]]]:
    """Every bank: (id, state with its orders, cursor, the orders' stored JSON, split now).
    A row from before `locker_orders` (its orders inside it) is split here, in one
    transaction: the orders finished `ARCHIVE_AFTER_S` before `now_s` go straight to
    `locker_history` (their verifiers and bookkeeping leave the bank row), the others become
    rows; so a year of orders never goes through the event loop's tick. A legacy row (SHA-256
    hashes, no `verifier`) is left exactly as it is until its upgrade commits it in the new
    form."""
    out: list[tuple[str, dict[str, Any], int, list[str], bool, dict[str, Any]]] = []
    with store.transaction():
        for bank_id, state, cursor in store.list_lockers():
            split = "orders" in state["bank"] and state["bank"].get("verifier") is not None
            if "orders" in state["bank"] and not split:  # legacy: read, not rewritten
                out.append((bank_id, state, cursor, [], False, {}))
                continue
            if split:
                state = dict(state, bank=dict(state["bank"]), meta=dict(state.get("meta") or {}))
                orders = state["bank"].pop("orders")
                old = [o for o in orders if o["state"] in _FINISHED and o["closed_at"] is not None
                       and now_s - o["closed_at"] >= ARCHIVE_AFTER_S]
                gone = {o["id"] for o in old}
                store.conn.executemany(
                    "INSERT OR REPLACE INTO locker_orders (bank, id, data) VALUES (?, ?, ?)",
                    [(bank_id, o["id"], _dumps(o)) for o in orders if o["id"] not in gone])
                store.conn.executemany(
                    "INSERT OR REPLACE INTO locker_history (bank, id, state, closed, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(bank_id, o["id"], o["state"], int(o["closed_at"] * 1000),
                      _dumps(public_order(_order(o)))) for o in old])
                state["bank"]["macs"] = {h: oid for h, oid in state["bank"]["macs"].items()
                                         if oid not in gone}
                for book in ("code_cmd", "load_n"):
                    if isinstance(state["meta"].get(book), dict):
                        state["meta"][book] = {k: v for k, v in state["meta"][book].items()
                                               if k not in gone}
                store.conn.executemany(
                    "INSERT OR REPLACE INTO locker_ops (bank, key, data) VALUES (?, ?, ?)",
                    [(bank_id, k, _dumps(v)) for k, v in (state["meta"].pop("ops", None) or {}).items()])
                store.conn.execute("UPDATE lockers SET state = ? WHERE bank = ?",
                                   (_dumps(state), bank_id))
            rows = [r[0] for r in store.conn.execute(
                "SELECT data FROM locker_orders WHERE bank = ? ORDER BY rowid", (bank_id,))]
            ops = {k: json.loads(d) for k, d in store.conn.execute(
                "SELECT key, data FROM locker_ops WHERE bank = ? ORDER BY rowid", (bank_id,))}
            out.append((bank_id, state, cursor, rows, split, ops))
    return out


_FINISHED = (str(OrderState.COLLECTED), str(OrderState.RETURNED), str(OrderState.CANCELLED))


def _order(d: dict[str, Any]) -> Order:
    return Order(**{**d, "size": Size(d["size"]), "state": OrderState(d["state"])})


def _history_tx(store: Store, bank_id: str, order: str) -> dict[str, Any] | None:
    row = store.conn.execute("SELECT data FROM locker_history WHERE bank = ? AND id = ?",
                             (bank_id, order)).fetchone()
    return None if row is None else json.loads(row[0])


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _order_rows(bank: LockerBank) -> dict[str, str]:
    """The bank's orders as stored (`locker_orders.data`), by id."""
    from dataclasses import asdict
    return {o.id: _dumps(asdict(o)) for o in bank.orders.values()}


def _bank_state(bank: LockerBank, meta: dict[str, Any]) -> dict[str, Any]:
    """The bank row: `to_dict()` without its orders and `meta` without the operations'
    keys (they are rows)."""
    d = bank.to_dict()
    d.pop("orders")
    return {"bank": d, "meta": {k: v for k, v in meta.items() if k != "ops"}}


#: the firmware's built-in texts (edge/apps/locker.py TX, tested equal): rev 0 on the wire
BUILT_IN_TEXTS = "\n".join(DEFAULTS["en"][k] for k in LOCKER_KEYS)


class LockersService(StatefulService):
    stream_kind = "locker"
    log = log
    step_label = "locker tick"

    def __init__(self, db: Database, commands: CommandService, *, tick_s: float = 1.0,
                 clock: Callable[[], int] = now_ms, reserve_s: float = 4 * 3600,
                 pickup_window_s: float = 3 * 24 * 3600,
                 keys: Callable[[str], bytes | None] | None = None,
                 texts: Callable[[str], str] | None = None) -> None:
        super().__init__(db, tick_s=tick_s, clock=clock)
        # the store's words for each bank's display ([screens] locker_*, docs/lockers.md
        # "Texts"): desired state, sent as a `texts` command at start and at every birth; the
        # bank keeps them on flash. None: the bank keeps its built-in English texts.
        self.texts = texts
        self.desired = DesiredState(commands, "texts", min_interval_s=1.0)
        self.keys = keys or (lambda bank: None)  # bank id -> its code key (LockerKeys.get)
        self.commands = commands
        self.reserve_s = reserve_s
        self.pickup_window_s = pickup_window_s
        self.banks: dict[str, LockerBank] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.cursor: dict[str, int] = {}
        self._saved: dict[str, dict[str, str]] = {}  # bank -> order id -> JSON as stored
        self._saved_ops: dict[str, set[str]] = {}    # bank -> operation keys stored
        self._codes: dict[str, tuple[str, float]] = {}  # ready_id -> (code, monotonic expiry)
        self._creating: set[str] = set()
        self._status_tries: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifetime ---------------------------------------------------------------------------

    async def load(self) -> None:
        await self.db.write(_tables_tx)
        for bank_id, state, cursor, rows, split, ops in await self.db.write(_load_tx, self._now()):
            orders = [json.loads(r) for r in rows] if "orders" not in state["bank"] else []
            self.banks[bank_id] = LockerBank.from_dict({"orders": orders, **state["bank"]},
                                                       key=self.keys(bank_id))
            self.meta[bank_id] = state.get("meta") or {}
            if ops or "ops" not in self.meta[bank_id]:  # (a legacy row keeps its own till then)
                self.meta[bank_id]["ops"] = ops
            self.cursor[bank_id] = cursor
            self._saved[bank_id] = dict(zip((o["id"] for o in orders), rows, strict=True))
            self._saved_ops[bank_id] = set(ops)
            if split:
                log.warning("locker bank orders moved to rows bank=%s live_or_recent=%d (those "
                            "finished a day ago went to locker_history)", bank_id, len(orders))
        if self.banks:
            log.info("locker banks loaded banks=%s", ",".join(sorted(self.banks)))

    def _want_texts(self, bank_id: str) -> None:
        if self.texts is None:
            return
        lines = self.texts(bank_id)
        if lines == BUILT_IN_TEXTS:  # the firmware's own: rev 0 and no copy in the bank's heap
            self.desired.set(bank_id, 0, {"t": ""})
            return
        # the rev is the texts' checksum: the same words after a restart are not sent again to
        # a bank that has them; different words always differ from what the bank keeps
        self.desired.set(bank_id, zlib.crc32(lines.encode()) & 0x7FFFFFFF or 1, {"t": lines})

    async def run(self) -> None:
        """Apply device events and expire orders, forever (cancel to stop)."""
        for bank_id in self.banks:
            self._want_texts(bank_id)
        try:
            await super().run()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self.desired.close()

    async def step(self) -> None:
        """Apply every bank's new device events, then expire what is due."""
        async with self._lock:
            for bank_id in list(self.banks):
                bank = self.banks[bank_id]
                key = self.keys(bank_id)
                if key != bank.key:
                    log.warning("locker bank code key %s bank=%s", "set" if key else "removed", bank_id)
                    bank.key = key
                if bank.legacy and key is not None:
                    await self._upgrade(bank_id)
                await self._catch_up(bank_id)
                await self._tick(bank_id)
        self._purge_codes()

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "event" and data.get("device") in self.banks:
            self._wake.set()

    def on_birth(self, device: str) -> None:
        """A device (re)connected: a locker bank we do not know yet gets created (in the
        background: its `status` reply arrives through ingest, which must not wait for it)."""
        if device in self.banks:
            self._wake.set()
            self.desired.birth(device)
            return
        if device in self._creating:
            return
        task = asyncio.get_running_loop().create_task(self._create(device))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, device: str) -> None:
        self._creating.add(device)
        try:
            dev = await self.db.read(Store.get_device, device)
            if dev is None or dev["kind"] != KIND:
                return
            tries = self._status_tries[device] = self._status_tries.get(device, 0) + 1
            cmd, _ = await self.commands.submit(
                device, "status", {}, f"lk:status:{dev['session']}:{dev['boot']}:{tries}",
                STATUS_TIMEOUT_S)
            if not cmd["final"]:
                cmd = await self.commands.wait(cmd["id"], STATUS_TIMEOUT_S + 3) or cmd
            if cmd["status"] != "done" or not isinstance(cmd.get("result"), dict):
                log.warning("locker bank status failed device=%s status=%s reason=%s; "
                            "retried at its next birth", device, cmd["status"], cmd.get("reason"))
                return
            result = cmd["result"]
            layout = [(int(c[0]), str(c[1])) for c in result["compartments"]]
            if result.get("salt_id") != salt_id(device):
                log.warning("locker bank salt differs device=%s: the device will refuse "
                            "set_order (salt-mismatch); leave app.salt unset", device)
            key = self.keys(device)
            if key is None or result.get("key_id") != key_id(key):
                log.error("locker bank code key %s device=%s: no codes until the bank's config "
                          "and the gateway's keys file agree (tools/provision.py)",
                          "missing in the keys file" if key is None else
                          "missing on the device" if result.get("key_id") is None else "differs",
                          device)
            await self.create_bank(device, layout)
            self._want_texts(device)
            self._wake.set()
        except Exception:
            log.exception("locker bank creation failed device=%s", device)
        finally:
            self._creating.discard(device)

    async def create_bank(self, device: str, layout: list[tuple[int, str]]) -> LockerBank:
        """A new bank for `device` with compartments `[(number, size)…]` (no-op if known)."""
        async with self._lock:
            if device in self.banks:
                return self.banks[device]
            bank = LockerBank(device, layout, salt=device, reserve_s=self.reserve_s,
                              pickup_window_s=self.pickup_window_s, key=self.keys(device))
            await self._save(_put_bank(device, _bank_state(bank, {}), 0, self.clock()), Batch())
            self.banks[device], self.meta[device], self.cursor[device] = bank, {}, 0
            self._saved[device], self._saved_ops[device] = {}, set()
            log.info("locker bank created device=%s compartments=%s", device,
                     " ".join(f"{n}{s}" for n, s in layout))
            return bank

    # -- changes ----------------------------------------------------------------------------

    def _drain(self, bank: LockerBank, batch: _Batch) -> None:
        """Turn the bank's order transitions (and issued codes) into stream items and device
        commands."""
        deadline = self.clock() + DEVICE_CMD_TIMEOUT_S * 1000
        for tr in bank.take_changes():
            data: dict[str, Any] = {
                "type": f"order.{tr.new}", "device": bank.id, "bank": bank.id,
                "order": tr.order_id, "compartment": tr.compartment_id,
                "old": None if tr.old is None else str(tr.old), "state": str(tr.new),
                "reason": tr.reason, "at": tr.at}
            if tr.new is OrderState.READY and tr.order_id in batch.issued:
                data.update(self._code_fields(bank, batch.issued.pop(tr.order_id), batch))
            if tr.new is OrderState.EXPIRED:  # the code is dead: tell the device too
                batch.cmds.append((bank.id, "revoke", {"compartment": tr.compartment_id,
                                                       "order": tr.order_id},
                                   f"lk:{tr.order_id}:revoke", deadline))
            batch.items.append(data)
        for ic in batch.issued.values():  # a reissued code: no state change
            self._code_item(bank, ic, batch)
        batch.issued.clear()

    def _code_item(self, bank: LockerBank, ic: IssuedCode, batch: _Batch) -> dict[str, Any]:
        item = {"type": "order.code", "device": bank.id, "bank": bank.id, "order": ic.order_id,
                "compartment": ic.compartment_id, "state": "ready", "at": self._now(),
                **self._code_fields(bank, ic, batch)}
        batch.items.append(item)
        return item

    def _compartment_item(self, bank: LockerBank, cid: int, type_: str, batch: _Batch,
                          **extra: Any) -> None:
        """A compartment state change on the stream (`compartment.blocked`, `.out_of_order`,
        `.in_service`, `.cleared`)."""
        batch.items.append({"type": f"compartment.{type_}", "device": bank.id, "bank": bank.id,
                            "compartment": cid, "state": str(bank.state_of(cid)),
                            "at": self._now(), **extra})

    def _code_fields(self, bank: LockerBank, ic: IssuedCode, batch: _Batch) -> dict[str, Any]:
        key = f"lk:{ic.order_id}:set_order:{ic.code_mac[:16]}"
        args = {"compartment": ic.compartment_id, "order": ic.order_id, "mac": ic.code_mac,
                "exp": int(ic.expires_at * 1000), "salt_id": salt_id(bank.salt),
                "key_id": key_id(bank.key or b"")}
        batch.cmds.append((bank.id, "set_order", args, key,
                           self.clock() + DEVICE_CMD_TIMEOUT_S * 1000))
        self.meta[bank.id].setdefault("code_cmd", {})[ic.order_id] = key
        ready_id = secrets.token_hex(8)
        batch.codes[ready_id] = ic.code
        return {"ready_id": ready_id, "expires_at": ic.expires_at}

    async def _commit(self, bank_id: str, before: dict[str, Any], meta_before: dict[str, Any],
                      batch: _Batch, cursor: int, history: Sequence[HistoryRow] = ()) -> None:
        """Persist the bank (+ the orders that changed, those gone to `history`, cursor, stream
        items, commands) in one transaction; on failure put the bank back as it was."""
        bank = self.banks[bank_id]
        expiry = time.monotonic() + CODE_TTL_S
        for rid, code in batch.codes.items():  # before the commit: rendering may start at once
            self._codes[rid] = (code, expiry)
        saved, now_rows = self._saved[bank_id], _order_rows(bank)
        changed: list[OrderRow] = [(oid, data) for oid, data in now_rows.items()
                                   if saved.get(oid) != data]
        changed += [(oid, None) for oid in saved if oid not in now_rows]
        ops = self.meta[bank_id].get("ops") or {}
        op_rows: list[OpRow] = [(k, _dumps(v)) for k, v in ops.items()
                                if k not in self._saved_ops[bank_id]]
        op_rows += [(k, None) for k in self._saved_ops[bank_id] if k not in ops]
        try:
            await self._save(_put_bank(bank_id, _bank_state(bank, self.meta[bank_id]), cursor,
                                       self.clock(), changed, history, op_rows), batch)
        except BaseException:
            for rid in batch.codes:
                self._codes.pop(rid, None)
            self.banks[bank_id] = LockerBank.from_dict(before, rng=bank.rng, key=bank.key)
            self.meta[bank_id] = meta_before
            raise
        self._saved[bank_id] = now_rows
        self._saved_ops[bank_id] = set(ops)
        self.cursor[bank_id] = cursor  # queued commands go out with the command service's tick

    async def _catch_up(self, bank_id: str) -> None:
        while True:
            rows = await self.db.read(Store.list_events, device=bank_id,
                                      after=self.cursor[bank_id], limit=EVENT_PAGE)
            if not rows:
                return
            bank = self.banks[bank_id]
            before, meta_before = bank.to_dict(), _copy(self.meta[bank_id])
            batch = _Batch()
            for e in rows:
                self._apply(bank, e, batch)
                self._drain(bank, batch)
            await self._commit(bank_id, before, meta_before, batch, rows[-1]["id"])

    def _apply(self, bank: LockerBank, e: dict[str, Any], batch: _Batch) -> None:
        etype, body = e["type"], e.get("body") or {}
        now = self._now()
        try:
            # unchecked: bank.compartment() refuses what is not one of its ids (device_event first)
            cid = cast(int, body.get("compartment"))
            if etype == "load.empty" and cid in bank.compartments:
                o = bank.order_in(cid)
                if o is not None:  # staff must load again: the next open is a new command
                    n = self.meta[bank.id].setdefault("load_n", {})
                    n[o.id] = n.get(o.id, 0) + 1
            t = e.get("t_device") or e.get("t_gateway")  # the bank's time (a journaled event is late)
            issued = device_event(bank, etype, body, now, None if t is None else t / 1000)
            if etype in ("door.forced", "lock.jammed"):
                self._compartment_item(bank, cid, "blocked", batch, cause=bank.compartment(cid).blocked)
            if issued is not None:
                batch.issued[issued.order_id] = issued
            if etype == "pickup.incomplete":  # the code is spent, the parcel still inside
                o = bank.order_in(cid)
                if o is not None and o.state is OrderState.READY:
                    ic = bank.reissue_code(o.id, now)
                    batch.issued[ic.order_id] = ic
        except Refused as exc:
            log.warning("locker event not applied bank=%s event=%d type=%s reason=%s",
                        bank.id, e["id"], etype, exc)
        except Exception:
            log.exception("locker event failed bank=%s event=%d type=%s", bank.id, e["id"], etype)

    async def _upgrade(self, bank_id: str) -> None:
        """A legacy row (SHA-256 hashes) and now a key: MACs in the row, and the bank's live
        codes replaced by their MACs (`load_codes replace`: only where the same order still
        holds a live code), in one transaction. The search runs off the event loop."""
        bank = self.banks[bank_id]
        before, meta_before = bank.to_dict(), _copy(self.meta[bank_id])
        key = bank.key
        assert key is not None, "a bank is upgraded only once it has a key"
        push, lost = await asyncio.to_thread(upgrade_legacy, bank, key)
        batch = _Batch()
        if push:
            kid = key_id(bank.key or b"")
            batch.cmds.append((bank_id, "load_codes", {
                "replace": True, "salt_id": salt_id(bank.salt), "key_id": kid,
                "orders": [{"compartment": o.compartment_id, "order": o.id, "mac": o.code_mac,
                            "exp": None if o.pickup_until is None else int(o.pickup_until * 1000)}
                           for o in push]},
                f"lk:upgrade:{kid}", self.clock() + DEVICE_CMD_TIMEOUT_S * 1000))
        await self._commit(bank_id, before, meta_before, batch, self.cursor[bank_id])
        log.warning("locker bank codes upgraded to keyed MACs bank=%s live=%d unrecovered=%d",
                    bank_id, len(push), len(lost))

    async def _tick(self, bank_id: str) -> None:
        """Expire what is due and move orders finished `ARCHIVE_AFTER_S` ago to history. Runs
        every second for every bank: when nothing is due it reads the bank's few orders and
        writes (and serialises) nothing."""
        bank, now = self.banks[bank_id], self._now()
        old = [o for o in bank.orders.values()
               if not o.live and o.closed_at is not None and now - o.closed_at >= ARCHIVE_AFTER_S]
        if not old and not bank.due(now):
            return
        before, meta_before = bank.to_dict(), _copy(self.meta[bank_id])
        bank.tick(now)
        batch = _Batch()
        self._drain(bank, batch)
        old.sort(key=lambda o: (o.closed_at or 0.0, o.id))
        history: list[HistoryRow] = [(o.id, str(o.state), int((o.closed_at or now) * 1000),
                                      _dumps(public_order(o))) for o in old]
        gone = {o.id for o in old}
        bank.forget(*gone)
        meta = self.meta[bank_id]
        for book in ("code_cmd", "load_n"):
            if isinstance(meta.get(book), dict):
                meta[book] = {k: v for k, v in meta[book].items() if k not in gone}
        await self._commit(bank_id, before, meta_before, batch, self.cursor[bank_id], history)

    def _purge_codes(self) -> None:
        mono = time.monotonic()
        for rid in [r for r, (_, exp) in self._codes.items() if exp <= mono]:
            del self._codes[rid]

    # -- API --------------------------------------------------------------------------------

    def bank(self, bank_id: str) -> LockerBank:
        bank = self.banks.get(bank_id)
        if bank is None:
            raise UnknownBank(bank_id)
        return bank

    async def _decide(self, bank_id: str, fn: Callable[[LockerBank, float, _Batch], Any],
                      key: str | None = None, op: str = "") -> Any:
        """Run a decision that may change the bank, then persist it (under the lock). With an
        idempotency `key`, the first outcome is stored with the bank and returned again for
        the same key (never a second change); a Refused decision is not stored."""
        async with self._lock:
            bank = self.bank(bank_id)
            done = self.meta[bank_id].get("ops", {}).get(key) if key else None
            if done is not None:
                if done["op"] != op:
                    raise IdempotencyConflict(f"idempotency key {key!r} was used for {done['op']}")
                return done["result"]
            before, meta_before = bank.to_dict(), _copy(self.meta[bank_id])
            batch = _Batch()
            try:
                out = fn(bank, self._now(), batch)
            except Refused:
                self.banks[bank_id] = LockerBank.from_dict(before, rng=bank.rng, key=bank.key)
                raise
            self._drain(bank, batch)
            if key:
                ops = self.meta[bank_id].setdefault("ops", {})
                ops[key] = {"op": op, "result": out}
                while len(ops) > OPS_KEEP:  # dicts keep insertion order: drop the oldest
                    del ops[next(iter(ops))]
            await self._commit(bank_id, before, meta_before, batch, self.cursor[bank_id])
            return out

    async def _dry_run(self, bank_id: str, fn: Callable[[LockerBank, float], Any]) -> Any:
        """Check a decision against a copy of the bank (raises Refused), changing nothing."""
        async with self._lock:
            bank = self.bank(bank_id)
            return fn(LockerBank.from_dict(bank.to_dict(), key=bank.key), self._now())

    async def assign(self, bank_id: str, order: str, size: str) -> dict[str, Any]:
        if order not in self.bank(bank_id).orders and \
                await self.db.read(_history_tx, bank_id, order) is not None:
            raise Refused(Reason.DUPLICATE_ORDER, order)  # finished, in history: never reused
        o = await self._decide(bank_id, lambda b, now, _: b.assign(order, size, now))
        return public_order(o)

    # -- staff and order-system operations (each: state checked, Refused with a reason,
    # a stream item per state change, idempotent by the caller's key) -----------------------

    async def cancel(self, bank_id: str, order: str, key: str | None = None) -> dict[str, Any]:
        """Drop a reservation that was never loaded (a loaded order is retrieved instead)."""
        return await self._decide(bank_id, lambda b, now, _: public_order(b.cancel(order, now)),
                                  key, f"cancel {order}")

    async def reissue(self, bank_id: str, order: str, key: str | None = None) -> dict[str, Any]:
        """A new code for a ready order: `order.code` on the stream, `set_order` to the bank
        (the old code stops working there: `code.rejected reason=revoked`). The result holds
        `ready_id`; `render` adds the plain code while it is in memory."""
        def fn(b: LockerBank, now: float, batch: _Batch) -> dict[str, Any]:
            item = self._code_item(b, b.reissue_code(order, now), batch)
            return {"order": order, "compartment": item["compartment"], "state": "ready",
                    "expires_at": item["expires_at"], "ready_id": item["ready_id"]}
        return await self._decide(bank_id, fn, key, f"reissue {order}")

    async def device_op(self, bank_id: str, name: str, args: dict[str, Any], key: str,
                        timeout_s: float, check: Callable[[LockerBank, float], Any] | None = None
                        ) -> dict[str, Any]:
        """Check the gateway's rules (`check`, a dry run: raises Refused), send a staff command
        to the bank and wait for its answer. A retry with the same key skips the check and
        gets the same command back (the command service dedupes): never a second actuation."""
        self.bank(bank_id)
        if check is not None and await self.db.read(Store.find_command, bank_id, f"api:{key}") is None:
            await self._dry_run(bank_id, check)
        cmd, _ = await self.commands.submit(bank_id, name, args, f"api:{key}", timeout_s)
        if not cmd["final"]:
            cmd = await self.commands.wait(cmd["id"], timeout_s + 2.5) or cmd
        return cmd

    async def open_one(self, bank_id: str, cid: int, key: str,
                       timeout_s: float = 15.0) -> dict[str, Any]:
        """Staff: open one compartment for service (allowed in any state but mid-unlock)."""
        return await self.device_op(bank_id, "open", {"compartment": cid, "reason": "service"},
                                    key, timeout_s, lambda b, now: b.check_open(cid, "service"))

    async def open_all(self, bank_id: str, key: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Staff: open every door for service, one after the other (one lock at a time)."""
        n = len(self.bank(bank_id).compartments)
        return await self.device_op(bank_id, "open_all", {"reason": "service"}, key,
                                    timeout_s or 10.0 + 3.0 * n)

    async def retrieve(self, bank_id: str, order: str, key: str,
                       timeout_s: float = 15.0) -> tuple[int, dict[str, Any]]:
        """Staff: open a ready or expired order's compartment to take the parcel back; the
        order becomes `returned` when the door closes with the compartment empty."""
        cid = self.bank(bank_id).order(order).compartment_id
        return cid, await self.device_op(bank_id, "open", {"compartment": cid, "reason": "retrieve"},
                                         key, timeout_s, lambda b, now: b.open_for_retrieve(order))

    async def set_out_of_order(self, bank_id: str, cid: int, on: bool, force: bool, key: str,
                               timeout_s: float = 10.0) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Staff: take a compartment out of service (or back). The bank applies it first;
        once it says done the gateway stops (or resumes) assigning it. Returns (command,
        compartment view or None while the bank has not answered)."""
        cmd = await self.device_op(bank_id, "set_out_of_order",
                                   {"compartment": cid, "on": on, "force": force}, key, timeout_s,
                                   lambda b, now: b.set_out_of_order(cid, on, now, force))
        if cmd["status"] != "done":
            return cmd, None

        def fn(b: LockerBank, now: float, batch: _Batch) -> dict[str, Any]:
            b.set_out_of_order(cid, on, now, force=True)  # the bank said yes: it is the truth
            self._compartment_item(b, cid, "out_of_order" if on else "in_service", batch)
            return self._compartment_view(b, cid)
        return cmd, await self._decide(bank_id, fn, key, f"out_of_order {cid} {on}")

    async def clear(self, bank_id: str, cid: int, key: str,
                    timeout_s: float = 10.0) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Staff checked a blocked compartment (forced door, jammed lock) and release it."""
        cmd = await self.device_op(bank_id, "clear", {"compartment": cid}, key, timeout_s,
                                   lambda b, now: b.clear(cid))
        if cmd["status"] != "done":
            return cmd, None

        def fn(b: LockerBank, now: float, batch: _Batch) -> dict[str, Any]:
            if b.compartment(cid).blocked:
                b.clear(cid)
            self._compartment_item(b, cid, "cleared", batch)
            return self._compartment_view(b, cid)
        return cmd, await self._decide(bank_id, fn, key, f"clear {cid}")

    @staticmethod
    def _compartment_view(b: LockerBank, cid: int) -> dict[str, Any]:
        return next(c for c in b.snapshot() if c["id"] == cid)

    async def open_for_load(self, bank_id: str, order: str,
                            timeout_s: float = 15.0) -> tuple[int, dict[str, Any]]:
        """Staff: open the order's reserved compartment (`open reason=load`) and wait for the
        device's answer. Raises Refused when the order or compartment does not allow it."""
        async with self._lock:
            bank = self.bank(bank_id)
            cid = bank.open_for_load(order)
            attempt = self.meta[bank_id].get("load_n", {}).get(order, 0)
        cmd, _ = await self.commands.submit(bank_id, "open", {"compartment": cid, "reason": "load"},
                                            f"lk:{order}:load:{attempt}", timeout_s)
        if not cmd["final"]:
            cmd = await self.commands.wait(cmd["id"], timeout_s + 2.5) or cmd
        return cid, cmd

    def view(self, bank_id: str) -> dict[str, Any]:
        bank = self.bank(bank_id)
        now, lock = self._now(), bank.lockout
        return {"bank": bank_id, "compartments": bank.snapshot(),
                "orders": [public_order(o) for o in bank.orders.values()],
                "keypad_locked_until": lock.until if lock.locked(now) else None,
                "keypad_failures": lock.recent_failures(now)}

    async def order_view(self, bank_id: str, order: str) -> dict[str, Any]:
        bank = self.bank(bank_id)
        if order not in bank.orders:  # finished long ago: its record in history
            old = await self.db.read(_history_tx, bank_id, order)
            if old is not None:
                return {**old, "code_sync": None}
        o = bank.order(order)
        out = public_order(o)
        key = self.meta[bank_id].get("code_cmd", {}).get(order)
        cmd = await self.db.read(Store.find_command, bank_id, key) if key else None
        out["code_sync"] = None if cmd is None else {"command": cmd["id"], "status": cmd["status"],
                                                     "reason": cmd["reason"]}
        return out

    def render(self, data: dict[str, Any], reveal: bool = True) -> dict[str, Any]:
        """A stored `locker` stream item as subscribers see it: fresh codes added from memory,
        for a subscriber that may see them (`reveal`, `gateway.http.redact.may_see_codes`); the
        others get the item without `code`."""
        rid = data.get("ready_id")
        if rid is None or not reveal:
            return data
        got = self._codes.get(rid)
        return {**data, "code": None if got is None else got[0]}


def _copy(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in meta.items()}
