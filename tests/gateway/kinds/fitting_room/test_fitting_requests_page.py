"""`GET /fitting/requests` pages (issue 17): it returned every request in the table, a year of
them (~22,000) on every dashboard refresh. Now `after` (a request's `seq`) and `limit` (at
most 1000, refused above), in creation order; `state` and `room` filter, each an index search
(tests/gateway/storage/test_query_plans.py). The route on the real service and a real SQLite
store, requests written as the service writes them."""
from __future__ import annotations

import asyncio
import json

import httpx
from fastapi import FastAPI

from gateway.kinds.fitting_room import MIGRATIONS
from gateway.kinds.fitting_room.api import router
from gateway.kinds.fitting_room.service import FittingService
from gateway.storage.db import Database

T0 = 1_795_420_800_000
# (id, room, state), in the order they were made; r-2 is updated after r-5 was made
ROWS = [("r-1", "room-1", "done"), ("r-2", "room-2", "open"), ("r-3", "room-1", "open"),
        ("r-4", "room-1", "cancelled"), ("r-5", "room-2", "acknowledged"),
        ("r-6", "room-1", "open")]


def _fill(store) -> None:
    with store.transaction():
        for i, (rid, room, state) in enumerate(ROWS):
            q = {"id": rid, "room": room, "kind": "size", "state": state, "created": T0 + i,
                 "updated": T0 + i, "reason": None, "via": "staff", "history": [[state, T0 + i]]}
            store.conn.execute(
                "INSERT INTO fitting_requests (id, room, state, created, updated, pinned, data) "
                "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT (id) DO UPDATE SET state = "
                "excluded.state, updated = excluded.updated, data = excluded.data",
                (rid, room, state, T0 + i, T0 + i, json.dumps(q)))
        # an update of r-2 (an upsert, as the service writes it): its place does not move
        store.conn.execute("UPDATE fitting_requests SET updated = ?, state = 'acknowledged', "
                           "data = json_set(data, '$.state', 'acknowledged') WHERE id = 'r-2'",
                           (T0 + 100,))


async def _served(path, check) -> None:
    """The route on the real service and store, called in-process (httpx's ASGI transport on
    the same loop as the database)."""
    db = Database(path, kind_migrations={"fitting": MIGRATIONS})
    await db.__aenter__()
    try:
        await db.write(_fill)
        app = FastAPI()
        app.include_router(router(FittingService(db, None, clock=lambda: T0)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw") as client:
            await check(client)
    finally:
        await db.close()


def run(path, check) -> None:
    asyncio.run(_served(path, check))


def _ids(page):
    return [q["id"] for q in page]


def test_pages_in_creation_order_with_limit_and_after(tmp_path):
    async def check(c):
        first = (await c.get("/fitting/requests", params={"limit": 4})).json()
        assert _ids(first) == ["r-1", "r-2", "r-3", "r-4"]
        nxt = (await c.get("/fitting/requests", params={"limit": 4, "after": first[-1]["seq"]})).json()
        assert _ids(nxt) == ["r-5", "r-6"]
        last = (await c.get("/fitting/requests", params={"limit": 4, "after": nxt[-1]["seq"]})).json()
        assert last == []
        assert first[1]["state"] == "acknowledged"   # r-2 as it is now, at its first place
        # without parameters: the first 100
        assert _ids((await c.get("/fitting/requests")).json()) == [r[0] for r in ROWS]
    run(tmp_path / "gw.db", check)


def test_filters_page_too(tmp_path):
    async def check(c):
        async def ids(**params):
            return _ids((await c.get("/fitting/requests", params=params)).json())
        assert await ids(state="open") == ["r-3", "r-6"]
        page = (await c.get("/fitting/requests", params={"room": "room-1", "limit": 2})).json()
        assert _ids(page) == ["r-1", "r-3"]
        assert await ids(room="room-1", after=page[-1]["seq"]) == ["r-4", "r-6"]
        assert await ids(room="room-1", state="open", after=page[-1]["seq"]) == ["r-6"]
    run(tmp_path / "gw.db", check)


def test_a_page_too_large_or_an_unknown_state_is_refused(tmp_path):
    async def check(c):
        for params, says in (({"limit": 1001}, "1000"), ({"limit": 0}, "limit"),
                             ({"state": "finished"}, "open"), ({"after": -1}, "after"),
                             ({"room": "r" * 65}, "64")):
            r = await c.get("/fitting/requests", params=params)
            assert r.status_code == 422, (params, r.status_code, r.text)
            assert says in r.text, (params, r.text)
    run(tmp_path / "gw.db", check)
