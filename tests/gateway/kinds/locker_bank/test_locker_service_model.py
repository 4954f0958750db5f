"""Model-based test of the gateway's locker service (allocation + order state machine) across
the service layer: real SQLite, device facts as persisted events, the service's own
operations with idempotency keys, time moving, and gateway restarts in between.

The core's own machine (tests/gateway/kinds/locker_bank/test_locker_core.py) checks the rules on one in-memory bank;
this one checks what the service adds: nothing lost or applied twice through persistence and
restarts, no double assignment, expiry honoured by the tick, one stream item per order state
change, a retried key never changes anything twice."""
from __future__ import annotations

import asyncio
import itertools
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.kinds.locker_bank.core import LIVE, OrderState, Refused
from gateway.kinds.locker_bank.service import LockersService
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.lockers import BANK, device_tx, event_tx, locker_items
from tests.support.services import Clock

H = 3600
LAYOUT = [(1, "S"), (2, "S"), (3, "M"), (4, "L")]
FINAL = {OrderState.COLLECTED, OrderState.RETURNED, OrderState.CANCELLED}


class ServiceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile
        from pathlib import Path

        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "gw.db"
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.seq = 0
        self.n = 0
        self.orders: dict[str, str] = {}  # every order id the service accepted -> size
        self.ops: dict[str, Any] = {}  # idempotency key -> first outcome
        self.svc = self.run(self._open())
        self.run(self.db.write(device_tx, self.clock()))
        self.run(self.svc.create_bank(BANK, LAYOUT))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _open(self) -> LockersService:
        self.db = Database(self.path)
        await self.db.__aenter__()
        svc = LockersService(self.db, None, clock=self.clock, reserve_s=2 * H,  # type: ignore[arg-type]
                             pickup_window_s=24 * H, keys={BANK: b"k" * 32}.get)
        await svc.load()
        return svc

    def teardown(self) -> None:
        self.run(self.db.close())
        self.loop.close()
        self.tmp.cleanup()

    # --- helpers ------------------------------------------------------------------------------
    @property
    def bank(self):
        return self.svc.bank(BANK)

    def event(self, etype: str, **body: Any) -> None:
        self.seq += 1
        self.run(self.db.write(event_tx, self.seq, etype, body, self.clock()))

    def pick(self, data, states) -> Any:
        found = sorted((o for o in self.bank.orders.values() if o.state in states), key=lambda o: o.id)
        return data.draw(st.sampled_from(found)) if found else None

    # --- the order system and staff -----------------------------------------------------------
    @rule(size=st.sampled_from("SML"))
    def assign(self, size: str) -> None:
        self.n += 1
        oid = f"o{self.n}"
        try:
            o = self.run(self.svc.assign(BANK, oid, size))
        except Refused as e:
            assert e.reason in ("bank-full", "no-size")
            return
        self.orders[oid] = size
        again = self.run(self.svc.assign(BANK, oid, size))  # the order system retries
        assert again["compartment"] == o["compartment"]

    @rule(data=st.data(), retry=st.booleans())
    def cancel(self, data, retry: bool) -> None:
        o = self.pick(data, set(OrderState))
        if o is None:
            return
        key = f"cancel-{o.id}"
        try:
            out = self.run(self.svc.cancel(BANK, o.id, key))
        except Refused as e:
            assert e.reason == "order-state" and key not in self.ops
            return
        if key in self.ops:
            assert out == self.ops[key], "a retried key gives the first outcome"
        self.ops[key] = out
        if retry:
            assert self.run(self.svc.cancel(BANK, o.id, key)) == out

    @rule(data=st.data())
    def reissue(self, data) -> None:
        o = self.pick(data, {OrderState.READY})
        if o is None:
            return
        key = f"re-{o.id}-{self.n}"
        first = self.run(self.svc.reissue(BANK, o.id, key))
        assert self.run(self.svc.reissue(BANK, o.id, key)) == first
        assert self.bank.orders[o.id].code_mac is not None

    # --- facts from the bank ---------------------------------------------------------------------
    @rule(data=st.data(), occupied=st.sampled_from([1, 0, None]))
    def staff_load(self, data, occupied) -> None:
        o = self.pick(data, {OrderState.ASSIGNED})
        if o is None:
            return
        self.event("door.opened", compartment=o.compartment_id, why="load", order=None)
        self.event("door.closed", compartment=o.compartment_id, why="load", open_ms=900, occupied=occupied)
        if occupied == 0:
            self.event("load.empty", compartment=o.compartment_id)
        else:
            self.event("order.loaded", compartment=o.compartment_id, occupied=occupied)

    @rule(data=st.data(), empty=st.booleans())
    def pickup(self, data, empty: bool) -> None:
        o = self.pick(data, {OrderState.READY})
        if o is None:
            return
        n = o.compartment_id
        self.event("door.opened", compartment=n, why="pickup", order=o.id)
        if empty:
            self.event("pickup.collected", compartment=n, order=o.id, occupied=0)
        else:
            self.event("pickup.incomplete", compartment=n, order=o.id)

    @rule(data=st.data())
    def retrieve(self, data) -> None:
        o = self.pick(data, {OrderState.READY, OrderState.EXPIRED})
        if o is None:
            return
        self.event("door.opened", compartment=o.compartment_id, why="retrieve", order=o.id)
        self.event("order.retrieved", compartment=o.compartment_id, order=o.id, occupied=0)

    # --- time and restarts ---------------------------------------------------------------------
    @rule(hours=st.sampled_from([0.5, 1, 3, 12, 30]))
    def time_passes(self, hours: float) -> None:
        self.clock.advance(hours * H)
        self.run(self.svc.step())
        now = self.clock() / 1000
        for o in self.bank.orders.values():  # expiry honoured right after the tick
            if o.state is OrderState.ASSIGNED:
                assert now < o.reserve_until
            if o.state is OrderState.READY and o.code_used_at is None:
                assert now < o.pickup_until

    @rule()
    def apply_events(self) -> None:
        self.run(self.svc.step())

    @precondition(lambda self: self.seq > 0)
    @rule()
    def restart(self) -> None:
        before = self.bank.to_dict()
        self.run(self.db.close())
        self.svc = self.run(self._open())
        assert self.bank.to_dict() == before, "a restart restores the bank exactly"

    # --- invariants ------------------------------------------------------------------------------
    @invariant()
    def no_double_assignment_and_no_lost_order(self) -> None:
        bank = self.bank
        holders: dict[int, str] = {}
        for o in bank.orders.values():
            if o.state in LIVE:
                assert o.compartment_id not in holders, f"compartment {o.compartment_id} holds two orders"
                holders[o.compartment_id] = o.id
                assert bank.compartments[o.compartment_id].order_id == o.id
        for c in bank.compartments.values():
            assert c.order_id is None or holders.get(c.id) == c.order_id
        # an order finished a day ago leaves the bank for its history (service.ARCHIVE_AFTER_S)
        history = dict(self.run(self.db.read(_history)))
        assert not set(history) & set(bank.orders), "an order both live and in history"
        assert all(state in {str(s) for s in FINAL} for state in history.values())
        assert set(self.orders) <= set(bank.orders) | set(history), "an accepted order was lost"

    @invariant()
    def one_stream_item_per_state_change(self) -> None:
        items = self.run(self.db.read(locker_items))
        for oid, o in self.bank.orders.items():
            mine = [i for i in items if i.get("order") == oid and i["type"].startswith("order.")
                    and i["type"] != "order.code"]
            states = [i["state"] for i in mine]
            assert states[0] == "assigned" and states[-1] == str(o.state), (oid, states)
            assert len(states) == len(set(states)), f"{oid}: a state reported twice {states}"
            for a, b in itertools.pairwise(states):
                assert a not in {str(s) for s in FINAL}, f"{oid}: moved after a final state {states}"

    @invariant()
    def cursor_is_persisted(self) -> None:
        rows = self.run(self.db.read(Store.list_lockers))
        assert {r[0]: r[2] for r in rows}[BANK] == self.svc.cursor[BANK]


def _history(store: Store) -> list[tuple[str, str]]:
    return store.conn.execute("SELECT id, state FROM locker_history WHERE bank = ?", (BANK,)).fetchall()


TestServiceMachine = ServiceMachine.TestCase
TestServiceMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
