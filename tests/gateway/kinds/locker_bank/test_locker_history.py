"""Locker orders as rows and history (issue 17): what a change writes does not grow with the
bank's past, an idle tick serialises and writes nothing, finished orders go to history a day
later with their public record only (no verifier), and a finished order id is never reused.
The service on a real SQLite store, a clock the test moves, the SQL it runs traced."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.kinds.locker_bank.core import LockerBank, Refused
from gateway.kinds.locker_bank.service import ARCHIVE_AFTER_S, LockersService
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.lockers import BANK, KEY, device_tx, event_tx
from tests.support.services import Clock


class Rig:
    def __init__(self, path) -> None:
        self.path, self.clock, self.seq = path, Clock(), 0
        self.sql: list[str] = []

    async def open(self) -> LockersService:
        self.db = Database(self.path)
        await self.db.__aenter__()
        svc = LockersService(self.db, None, clock=self.clock, keys={BANK: KEY}.get)  # type: ignore[arg-type]
        await svc.load()
        return svc

    async def event(self, etype: str, **body: Any) -> None:
        self.seq += 1
        await self.db.write(event_tx, self.seq, etype, body, self.clock())

    async def trace(self, on: bool) -> None:
        """Record every statement the writer runs (`self.sql`)."""
        def set_trace(store: Store) -> None:
            store.conn.set_trace_callback(self.sql.append if on else None)
        await self.db.write(set_trace)

    async def order_through(self, svc: LockersService, oid: str) -> None:
        """Assigned, loaded, collected: a whole order's life."""
        cid = (await svc.assign(BANK, oid, "S"))["compartment"]
        await self.event("order.loaded", compartment=cid, occupied=1)
        await svc.step()
        await self.event("door.opened", compartment=cid, why="pickup", order=oid)
        await self.event("pickup.collected", compartment=cid, order=oid)
        await svc.step()


def _writes(sql: list[str]) -> list[str]:
    return [s for s in sql if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def test_an_order_writes_the_same_on_day_1_and_after_a_long_past(tmp_path):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "S"), (3, "M")])

        async def one_assign(oid: str) -> tuple[list[str], int]:
            rig.sql.clear()
            await rig.trace(True)
            await svc.assign(BANK, oid, "S")
            await rig.trace(False)
            row = await rig.db.read(lambda s: s.conn.execute(
                "SELECT length(state) FROM lockers WHERE bank = ?", (BANK,)).fetchone()[0])
            await svc.cancel(BANK, oid)
            return _writes(rig.sql), row

        day1, row1 = await one_assign("first")
        for i in range(20):  # 20 orders, each a day, and 20 cancelled by key: the bank's past
            await rig.order_through(svc, f"o-{i}")
            await svc.assign(BANK, f"c-{i}", "S")
            await svc.cancel(BANK, f"c-{i}", key=f"cancel-c-{i}")  # an idempotency key kept
            rig.clock.advance(ARCHIVE_AFTER_S + 60)
            await svc.step()
        later, row_later = await one_assign("later")
        # the bank row does not grow with the past (its orders are rows; those finished a day
        # ago are in history with their verifiers gone from the row)
        assert row_later <= row1 + 200, (row1, row_later)
        # the same statements: the bank row, one order row, the stream item
        assert [s.split("(")[0] for s in later] == [s.split("(")[0] for s in day1]
        assert sum("locker_orders" in s for s in later) == 1
        # the operations' keys are rows too, and still answer a retry after a restart
        await rig.db.close()
        svc = await rig.open()
        again = await svc.cancel(BANK, "c-0", key="cancel-c-0")
        assert again["order"] == "c-0" and again["state"] == "cancelled"
        hist = await rig.db.read(lambda s: s.conn.execute(
            "SELECT COUNT(*) FROM locker_history WHERE bank = ?", (BANK,)).fetchone()[0])
        assert hist >= 20
        await rig.db.close()

    asyncio.run(main())


def test_an_idle_tick_serialises_and_writes_nothing(tmp_path, monkeypatch):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "S"), (3, "M")])
        for i in range(5):
            await rig.order_through(svc, f"o-{i}")
        await svc.assign(BANK, "live", "M")  # a live order: due in 4 h, not now
        await svc.step()
        calls = []
        real = LockerBank.to_dict
        monkeypatch.setattr(LockerBank, "to_dict", lambda self: calls.append(1) or real(self))
        rig.sql.clear()
        await rig.trace(True)
        for _ in range(3):
            rig.clock.advance(1)
            await svc.step()  # the 1-second tick
        await rig.trace(False)
        assert calls == [], "the bank was serialised with nothing to change"
        assert _writes(rig.sql) == []
        # once something is due, the tick does write: the reservation runs out
        rig.clock.advance(4 * 3600)
        await svc.step()
        assert (await svc.order_view(BANK, "live"))["state"] == "cancelled"
        assert calls, "a due change is persisted"
        await rig.db.close()

    asyncio.run(main())


def test_a_finished_order_goes_to_history_a_day_later_without_its_verifier(tmp_path):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "S")])
        await rig.order_through(svc, "o-1")
        view = await svc.order_view(BANK, "o-1")
        mac = svc.bank(BANK).orders["o-1"].code_mac
        assert view["state"] == "collected" and mac
        rig.clock.advance(ARCHIVE_AFTER_S - 10)
        await svc.step()
        assert "o-1" in svc.bank(BANK).orders, "gone to history before a day"
        rig.clock.advance(20)
        await svc.step()
        assert "o-1" not in svc.bank(BANK).orders
        assert await svc.order_view(BANK, "o-1") == {**view, "code_sync": None}
        with pytest.raises(Refused) as exc:
            await svc.assign(BANK, "o-1", "S")  # a finished order id is never reused
        assert exc.value.reason == "duplicate-order"
        await rig.db.close()
        svc = await rig.open()  # and after a restart; the verifier is in no row any more
        rows = await rig.db.read(lambda s: [r[0] for r in s.conn.execute(
            "SELECT data FROM locker_orders UNION ALL SELECT data FROM locker_history "
            "UNION ALL SELECT state FROM lockers")])
        assert rows and not any(mac in r for r in rows)
        assert "o-1" not in svc.bank(BANK).orders
        assert await svc.order_view(BANK, "o-1") == {**view, "code_sync": None}
        await rig.db.close()

    asyncio.run(main())
