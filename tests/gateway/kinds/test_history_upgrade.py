"""An upgrade to the history tables (issue 17) loses nothing: a database written by the code
from before (main at 8c8a308: the fitting rooms' state in one JSON row, every locker order in its
bank's row; `data/pre_history.sql`, made by `data/make_pre_history.py` through that code's
services) is opened by this code as the gateway opens it. Every session, try-on, request,
purchase, door count and order is in its table, and the services answer what the old code
answered (`data/pre_history.json`), before and after finished orders go to history and across a
restart."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from gateway.kinds.fitting_room.service import FittingService
from gateway.kinds.fitting_room.stock import FileStock
from gateway.kinds.locker_bank.service import ARCHIVE_AFTER_S, LockersService
from gateway.kinds.registry import KINDS, migrations
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.services import Clock

DATA = Path(__file__).resolve().parent / "data"
STOCK = Path(__file__).resolve().parents[3] / "gateway" / "demo" / "stock.json"
BANK, KEY = "lk-u1", bytes(range(100, 132))


def _old_db(path: Path) -> tuple[dict, dict]:
    """The old database at `path`; (the fitting row's JSON, the bank row's JSON) as written."""
    con = sqlite3.connect(path)
    con.executescript((DATA / "pre_history.sql").read_text())
    fitting = json.loads(con.execute("SELECT state FROM fitting").fetchone()[0])
    bank = json.loads(con.execute("SELECT state FROM lockers WHERE bank = ?", (BANK,)).fetchone()[0])
    con.close()
    return fitting, bank


def _rows(store: Store, sql: str, *args) -> list:
    return [tuple(r) for r in store.conn.execute(sql, args).fetchall()]


def test_an_old_database_is_split_into_tables_and_answers_the_same(tmp_path):
    path = tmp_path / "gw.db"
    old_fitting, old_bank = _old_db(path)
    want = json.loads((DATA / "pre_history.json").read_text())
    # the fixture holds what the test is about: history, live state and finished orders
    assert len(old_fitting["sessions"]) == 19 and len(old_fitting["purchases"]) == 21
    assert len(old_fitting["footfall"]) == 3 and len(old_fitting["requests"]) == 13
    assert len(old_bank["bank"]["orders"]) == 12 and "verifier" in old_bank["bank"]

    async def main() -> None:
        clock = Clock(want["clock"] / 1000)

        async def open_all() -> tuple[Database, FittingService, LockersService]:
            db = Database(path, kind_migrations=migrations(KINDS))  # as the gateway opens it
            await db.__aenter__()
            fit = FittingService(db, FileStock(STOCK), clock=clock)
            await fit.load()
            lk = LockersService(db, None, clock=clock, keys={BANK: KEY}.get)  # type: ignore[arg-type]
            await lk.load()
            return db, fit, lk

        db, fit, lk = await open_all()

        async def history() -> set[str]:
            hist = await db.read(_rows, "SELECT id, data FROM locker_history WHERE bank = ?", BANK)
            assert all("mac" not in data and "hash" not in data for _, data in hist), \
                "a verifier in history"
            return {h[0] for h in hist}

        def finished(before_s: float) -> set[str]:
            return {o["id"] for o in old_bank["bank"]["orders"]
                    if o["state"] in ("collected", "returned", "cancelled")
                    and o["closed_at"] <= before_s}

        # every row, as the old JSON held it
        sessions = {json.loads(d)["id"]: json.loads(d) for (d,) in
                    await db.read(_rows, "SELECT data FROM fitting_sessions")}
        assert sessions == old_fitting["sessions"]
        tryons = await db.read(_rows, "SELECT session, gtin, converted FROM fitting_tryons")
        assert sorted(tryons) == sorted((s["id"], g, int(g in s["converted"]))
                                        for s in old_fitting["sessions"].values()
                                        for g in set(s["tried"]))
        requests = {json.loads(d)["id"]: json.loads(d) for (d,) in
                    await db.read(_rows, "SELECT data FROM fitting_requests")}
        assert requests == old_fitting["requests"]
        purchases = [json.loads(d) for (d,) in
                     await db.read(_rows, "SELECT data FROM fitting_purchases ORDER BY rowid")]
        assert purchases == old_fitting["purchases"]
        footfall = await db.read(_rows, "SELECT at, entries FROM fitting_footfall ORDER BY id")
        assert [list(r) for r in footfall] == old_fitting["footfall"]
        # the orders: those finished a day before now went straight to history, the others
        # are rows as the old JSON held them
        orders = {json.loads(d)["id"]: json.loads(d) for (d,) in
                  await db.read(_rows, "SELECT data FROM locker_orders WHERE bank = ?", BANK)}
        at_load = await history()
        assert at_load == finished(clock() / 1000 - ARCHIVE_AFTER_S) and 0 < len(at_load) < 8
        assert orders == {o["id"]: o for o in old_bank["bank"]["orders"] if o["id"] not in at_load}
        # the state rows keep the live state only
        (state,), = await db.read(_rows, "SELECT state FROM fitting")
        assert set(json.loads(state)) == {"rules", "rooms", "n"}
        (bank_row,), = await db.read(_rows, "SELECT state FROM lockers WHERE bank = ?", BANK)
        assert "orders" not in json.loads(bank_row)["bank"]

        async def same_answers(fit: FittingService, lk: LockersService, archived: set[str],
                               later: bool = False) -> None:
            """What the old code answered; `later`: time has moved on (live orders may have
            expired since), only the finished orders' answers are compared."""
            f = want["fitting"]
            assert fit.rooms() == f["rooms"]
            assert {r: await fit.view(r) for r in f["views"]} == f["views"]
            listed, after = [], 0
            while page := await fit.requests_page(after=after, limit=1000):
                listed += page
                after = page[-1]["seq"]
            assert [{k: v for k, v in r.items() if k != "seq"} for r in listed] == f["requests"]
            assert await fit.analytics(None, None) == f["analytics"]
            day1 = want["clock"] - 3 * 86_400_000 - 10 * 3_600_000 + 86_400_000
            assert await fit.analytics(day1, day1 + 86_400_000) == f["analytics_day1"]
            for oid, view in want["lockers"]["orders"].items():
                if later and oid not in archived:
                    continue
                got = await lk.order_view(BANK, oid)
                if oid in archived:
                    view = {**view, "code_sync": None}  # from history: no command kept
                assert got == view, oid
            v = lk.view(BANK)
            wv = want["lockers"]["view"]
            assert [o["order"] for o in v["orders"]] == [o["order"] for o in wv["orders"]
                                                         if o["order"] not in archived]
            if not later:
                assert v["compartments"] == wv["compartments"]
                assert v["orders"] == [o for o in wv["orders"] if o["order"] not in archived]

        await same_answers(fit, lk, at_load)
        await lk.step()  # nothing more to move at the same instant
        gone = await history()
        assert gone == at_load
        assert set(lk.bank(BANK).orders) == {o["id"] for o in old_bank["bank"]["orders"]} - gone
        await same_answers(fit, lk, gone)
        # a day on: every finished one (the live ones stay, whatever their age)
        clock.advance(ARCHIVE_AFTER_S)
        await lk.step()
        gone = await history()
        assert gone == finished(clock() / 1000) and len(gone) == 8
        await same_answers(fit, lk, gone, later=True)
        await db.close()

        db, fit, lk = await open_all()  # a restart: nothing split twice, the same answers
        await same_answers(fit, lk, gone, later=True)
        assert len(await db.read(_rows, "SELECT id FROM fitting_sessions")) == 19
        await db.close()

    asyncio.run(main())
