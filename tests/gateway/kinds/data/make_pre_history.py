"""Writes `pre_history.sql` and `pre_history.json` beside this file: a gateway database at the
schema from before the history tables (main at 8c8a308: the fitting rooms' state in one JSON
row, every locker order inside its bank's row), filled through THAT code's services, and what
that code answered about it. `tests/gateway/kinds/test_history_upgrade.py` opens it with the
current code. Not a test; run once against the old checkout:

    git worktree add /tmp/old 8c8a308
    PYTHONPATH=/tmp/old /tmp/old/.venv/bin/python tests/gateway/kinds/data/make_pre_history.py
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.kinds.fitting_room.service import FittingService
from gateway.kinds.fitting_room.stock import FileStock
from gateway.kinds.locker_bank.service import LockersService
from gateway.storage.db import Database
from gateway.storage.store import Store

HERE = Path(__file__).resolve().parent
STOCK = Path(__file__).resolve().parents[4] / "gateway" / "demo" / "stock.json"
T0 = 1_800_000_000_000
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
BANK, KEY = "lk-u1", bytes(range(100, 132))
ROOMS = ("room-1", "room-2")
SHIRT_M, SHIRT_L, SHIRT_WHITE, CHINO = "09506000134352", "09506000134369", "09506000134376", "09506000134383"


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def _devices(store: Store, now: int) -> None:
    with store.transaction():
        for dev, kind in ((ROOMS[0], "fitting-room"), (ROOMS[1], "fitting-room"),
                          (BANK, "locker-bank")):
            store.upsert_device(id=dev, kind=kind, fw="t", caps=[], cfg="x", session=1,
                                epoch="e1", boot=1, reset=None, online=True, now=now)


class World:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock, self.seq = db, clock, {}

    async def event(self, dev: str, etype: str, **body: Any) -> None:
        self.seq[dev] = self.seq.get(dev, 0) + 1
        seq, now = self.seq[dev], self.clock()

        def tx(store: Store) -> None:
            with store.transaction():
                store.insert_event(dev, "e1", seq, etype, now, now, body)
        await self.db.write(tx)


async def fitting_days(w: World, fit: FittingService) -> None:
    clock = w.clock
    gtins = (SHIRT_M, SHIRT_L, SHIRT_WHITE, CHINO)
    receipt = 0
    for day in range(3):
        for k in range(6):
            room = ROOMS[k % 2]
            clock.ms = T0 + day * DAY + 9 * HOUR + k * 40 * MIN
            await w.event(room, "room.occupied")
            tried = [gtins[(day + k + i) % 4] for i in range(1 + k % 3)]
            for i, g in enumerate(tried):
                clock.ms += MIN
                await w.event(room, "garment.in", uid=f"04{day}{k}{i}", tech="ntag213", gtin=g,
                              serial=f"SN{day}{k}{i}")
            await fit.step()
            if k % 3 == 0:  # a swap, then another size from the mirror, brought by staff
                clock.ms += MIN
                await w.event(room, "garment.out", uid=f"04{day}{k}0")
                await w.event(room, "garment.in", uid=f"04{day}{k}0", tech="ntag213",
                              gtin=tried[0], serial=f"SN{day}{k}0")
                await fit.step()
                q = await fit.ask_size(room, SHIRT_L if tried[0] != SHIRT_L else SHIRT_M, tried[0])
                if k % 2 == 0:
                    await fit.update_request(q["id"], "acknowledged", "ana")
            if k % 4 == 1:
                await w.event(room, "call.pressed")
                await fit.step()
                q = next(q for q in fit.requests("open") if q["kind"] == "call" and q["room"] == room)
                await fit.update_request(q["id"], "acknowledged", "ben")
                await fit.update_request(q["id"], "done", "ben")
            clock.ms += 10 * MIN
            for i in range(len(tried)):
                await w.event(room, "garment.out", uid=f"04{day}{k}{i}")
            await w.event(room, "room.free")
            await fit.step()
            if k % 2 == 0:  # a receipt half an hour later: attributed
                clock.ms += 30 * MIN
                receipt += 1
                await fit.purchase(f"R{receipt}", clock(), [(tried[0], 1), (CHINO, 1)])
                if k == 2:
                    await fit.purchase(f"R{receipt}", clock(), [(tried[0], 1)])  # a POS retry
        clock.ms = T0 + day * DAY + 20 * HOUR
        await fit.door_count(clock(), 120 + day)
        # yesterday's receipts imported as a CSV the next morning
        await fit.purchases([(f"CSV{day}-{i}", T0 + day * DAY + 9 * HOUR + (40 * i + 20) * MIN,
                              [(gtins[(day + i) % 4], 1)]) for i in range(4)])
    # still on: room-1 occupied with a garment and an open call
    clock.ms = T0 + 3 * DAY + 10 * HOUR
    await w.event(ROOMS[0], "room.occupied")
    await w.event(ROOMS[0], "garment.in", uid="04live", tech="ntag213", gtin=SHIRT_WHITE, serial="SNlive")
    await w.event(ROOMS[0], "call.pressed")
    await fit.step()


async def locker_days(w: World, lk: LockersService) -> None:
    clock = w.clock
    n = 0
    for day in range(4):
        clock.ms = T0 + day * DAY + 8 * HOUR
        await lk.step()
        for k in range(3):
            n += 1
            oid = f"o-{n}"
            o = await lk.assign(BANK, oid, "SML"[k % 3])
            cid = o["compartment"]
            if n % 5 == 0:
                await lk.cancel(BANK, oid, key=f"cancel-{oid}")
                continue
            if n % 7 == 0:
                continue  # left assigned (its reservation runs out)
            await w.event(BANK, "door.opened", compartment=cid, why="load", order=None)
            await w.event(BANK, "door.closed", compartment=cid, why="load", open_ms=900, occupied=1)
            await w.event(BANK, "order.loaded", compartment=cid, occupied=1)
            clock.ms += MIN
            await lk.step()
            if n % 4 == 0:
                await lk.reissue(BANK, oid, key=f"reissue-{oid}")
            if n % 3 != 0:  # collected within the hour
                clock.ms += 30 * MIN
                await w.event(BANK, "door.opened", compartment=cid, why="pickup", order=oid)
                await w.event(BANK, "pickup.collected", compartment=cid, order=oid)
                await lk.step()
    clock.ms = T0 + 3 * DAY + 10 * HOUR
    await lk.step()


def _bank_orders(lk: LockersService) -> list[str]:
    return list(lk.bank(BANK).orders)


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.db"
        clock = Clock()
        async with Database(path) as db:
            await db.write(_devices, clock())
            w = World(db, clock)
            fit = FittingService(db, FileStock(STOCK), clock=clock)
            await fit.load()
            await fitting_days(w, fit)
            lk = LockersService(db, None, clock=clock, keys={BANK: KEY}.get)  # type: ignore[arg-type]
            await lk.load()
            await lk.create_bank(BANK, [(i, "SML"[(i - 1) // 4]) for i in range(1, 13)])
            await locker_days(w, lk)
            answers = {
                "clock": clock(),
                "fitting": {
                    "rooms": fit.rooms(),
                    "views": {r: await fit.view(r) for r in ROOMS},
                    "requests": fit.requests(),
                    "analytics": fit.analytics(None, None),
                    "analytics_day1": fit.analytics(T0 + DAY, T0 + 2 * DAY),
                },
                "lockers": {
                    "view": lk.view(BANK),
                    "orders": {o: await lk.order_view(BANK, o) for o in _bank_orders(lk)},
                },
            }
        con = sqlite3.connect(path)
        version = con.execute("PRAGMA user_version").fetchone()[0]  # iterdump leaves it out
        sql = "\n".join(con.iterdump()) + f"\nPRAGMA user_version = {version};"
        con.close()
    (out / "pre_history.sql").write_text(sql + "\n")
    (out / "pre_history.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
