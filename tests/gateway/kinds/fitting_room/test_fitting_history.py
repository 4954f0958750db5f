"""The fitting rooms' history in tables (issue 17): a purchase writes the same rows on day 1 and
after days of history (the state row keeps the rooms, never the past), the core keeps a working
set only, and the answers are the ones of the pure core that holds everything: a receipt
imported the next day still converts the session it belongs to (brought back from the table),
a POS retry of an old receipt changes nothing, a request done long ago can still be read and
moved on. The service on a real SQLite store, events as ingest writes them, the SQL traced."""
from __future__ import annotations

import asyncio
import json

import pytest

from gateway.kinds.fitting_room import gs1
from gateway.kinds.fitting_room.core import FittingError, FittingRooms, Rules
from gateway.kinds.fitting_room.service import FittingService
from gateway.storage.db import Database
from gateway.storage.store import Store

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
DAY0 = 1_795_420_800_000
ROOMS = ("room-1", "room-2")


def gtin(body13: str) -> str:
    return body13 + str(gs1.check_digit(body13))


A, B, C = gtin("0950600013435"), gtin("0950600013436"), gtin("0950600013437")


class World:
    def __init__(self, db: Database) -> None:
        self.db, self.now, self.seq = db, DAY0, 0
        self.ref = FittingRooms(Rules())   # the old model: everything in memory
        self.sql: list[str] = []

    def clock(self) -> int:
        return self.now

    async def devices(self) -> None:
        def tx(store: Store) -> None:
            with store.transaction():
                for r in ROOMS:
                    store.upsert_device(id=r, kind="fitting-room", fw="t", caps=[], cfg="x",
                                        session=1, epoch="e1", boot=1, reset=None, online=True,
                                        now=DAY0)
        await self.db.write(tx)

    async def event(self, room: str, etype: str, **body) -> None:
        self.seq += 1
        seq, at = self.seq, self.now

        def tx(store: Store) -> None:
            with store.transaction():
                store.insert_event(room, "e1", seq, etype, at, at, body)
        await self.db.write(tx)

    async def session(self, svc: FittingService, room: str, tried: list[str], n: int) -> None:
        await self.event(room, "room.occupied")
        self.ref.occupied(room, self.now)
        for i, g in enumerate(tried):
            self.now += MIN
            await self.event(room, "garment.in", uid=f"04{n:04d}{i}", tech="ntag213", gtin=g,
                             serial=f"SN{n}-{i}")
            self.ref.garment_in(room, self.now, f"04{n:04d}{i}", g, f"SN{n}-{i}")
        self.now += 5 * MIN
        for i in range(len(tried)):  # the garments leave with the customer
            await self.event(room, "garment.out", uid=f"04{n:04d}{i}")
            self.ref.garment_out(room, self.now, f"04{n:04d}{i}")
        await self.event(room, "room.free")
        self.ref.free(room, self.now)
        await svc.step()

    async def trace(self, on: bool) -> None:
        def set_trace(store: Store) -> None:
            store.conn.set_trace_callback(self.sql.append if on else None)
        await self.db.write(set_trace)


def _shape(sql: list[str]) -> list[str]:
    """The write statements, without their values."""
    return [s.split("(")[0].split(" VALUES")[0].split(" WHERE")[0].strip() for s in sql
            if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def _state_len(store: Store) -> int:
    return store.conn.execute("SELECT length(state) FROM fitting").fetchone()[0]


async def _started(tmp_path) -> tuple[Database, World, FittingService]:
    """An open database with the rooms' devices born, and the fitting service loaded on it."""
    db = Database(tmp_path / "gw.db")
    await db.__aenter__()
    w = World(db)
    await w.devices()
    svc = FittingService(db, None, clock=w.clock)
    await svc.load()
    return db, w, svc


def test_a_purchase_writes_the_same_after_days_of_history_and_answers_as_before(tmp_path):
    async def main() -> None:
        db, w, svc = await _started(tmp_path)

        async def traced_purchase(receipt: str, items) -> tuple[list[str], int]:
            w.sql.clear()
            await w.trace(True)
            await svc.purchase(receipt, w.now, items)
            await w.trace(False)
            w.ref.purchase(receipt, w.now, items)
            return _shape(w.sql), await db.read(_state_len)

        n = 0
        for day in range(4):
            w.now = DAY0 + day * DAY
            for k in range(6):
                n += 1
                await w.session(svc, ROOMS[k % 2], [A, B] if k % 2 else [C], n)
                w.now += 20 * MIN
                if k == 5:  # a receipt 20 min after the last session: converts it
                    shape, state = await traced_purchase(f"R{day}", [(A, 1)])
                    if day == 0:
                        shape0, state0 = shape, state
            await svc.door_count(w.now, 50 + day)
            w.ref.door_count(w.now, 50 + day)
        # the same statements, and the same state row (but the id counter's digits) on day 4
        # as on day 1
        assert shape == shape0, (shape0, shape)
        assert state <= state0 + 8, (state0, state)
        assert '"sessions"' not in json.dumps(await db.read(lambda s: s.conn.execute(
            "SELECT state FROM fitting").fetchone()[0]))
        assert len(svc.core.sessions) <= 6, "the working set holds the last 2 h only"

        # the next morning, yesterday's receipts from the POS's CSV: the sessions they convert
        # left the working set long ago and come back from the table
        ys = DAY0 + 3 * DAY
        receipts = [(f"CSV-{i}", ys + (30 + 26 * i) * MIN, [(A, 1), (C, 1)]) for i in range(3)]
        w.now = DAY0 + 4 * DAY + 9 * HOUR
        await svc.purchases(receipts)
        for r, at, items in receipts:
            w.ref.purchase(r, at, items)
        # a POS retry of a receipt from day 1: its first answer, nothing changes
        again = await svc.purchase("R0", w.now, [(B, 5)])
        assert again == next(p for p in w.ref.purchases if p["receipt"] == "R0")
        assert again["lines"][0]["sessions"], "R0 converted a session on day 1"
        got = await svc.analytics(None, None)
        assert got == w.ref.analytics(None, None)
        assert got["units_attributed"] > 4, got
        assert await svc.analytics(ys, ys + DAY) == w.ref.analytics(ys, ys + DAY)
        await db.close()

        db = Database(tmp_path / "gw.db")  # a restart: the same answers from the tables
        await db.__aenter__()
        svc = FittingService(db, None, clock=w.clock)
        await svc.load()
        assert await svc.analytics(None, None) == got
        await db.close()

    asyncio.run(main())


def test_a_request_done_long_ago_is_listed_and_can_still_be_answered(tmp_path):
    async def main() -> None:
        db, w, svc = await _started(tmp_path)
        await w.event("room-1", "room.occupied")
        await w.event("room-1", "call.pressed")
        await svc.step()
        (q,) = svc.requests("open")
        done = await svc.update_request(q["id"], "done", "ana")
        w.now += DAY  # a day later, another change: the done request leaves the working set
        await w.event("room-2", "room.occupied")
        await svc.step()
        assert q["id"] not in svc.core.requests
        assert [r["id"] for r in await svc.requests_page("done")] == [q["id"]]
        assert [{k: v for k, v in r.items() if k != "seq"} for r in await svc.requests_page()] \
            == [done]
        # staff move it again (same state: the same answer; another: refused as final)
        assert await svc.update_request(q["id"], "done", "ana") == done
        with pytest.raises(FittingError) as exc:
            await svc.update_request(q["id"], "acknowledged", "ana")
        assert exc.value.reason == "bad-transition"
        await db.close()

    asyncio.run(main())
