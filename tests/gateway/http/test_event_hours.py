"""`GET /events/hours` (gateway/http/hours.py, issue 17): the hourly counts, served. Counted and
raw events together, each once, past the raw window; pages that follow each other; every bad
input a 400 that says what to send; a fold far behind a 503 with Retry-After, not a scan; scope
`read`. The route on a real SQLite store, in-process (httpx's ASGI transport)."""
from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from gateway.http import auth
from gateway.http.hours import MAX_LAG, decode_cursor, encode_cursor, router
from gateway.storage.db import Database
from gateway.storage.retention import DAY_MS, HOUR_MS, Retention, RetentionPolicy, fold_batch
from gateway.storage.store import Store

NOW = 1_000 * DAY_MS + 10 * HOUR_MS + 123        # the scripted clock
H = NOW // HOUR_MS * HOUR_MS                     # this hour's start


def _fill(store: Store) -> None:
    """pad-1: 3 events an hour for 40 days back (tag.placed, tag.removed, tag.placed);
    lk-1: one door.opened 45 days ago. All settled."""
    for dev in ("pad-1", "lk-1"):
        store.upsert_device(id=dev, kind="sample-pad", fw="1", caps=[], cfg="c", session=1,
                            epoch="e1", boot=1, reset=None, online=True, now=0)
    seq = 0
    with store.transaction():
        t = H - 40 * DAY_MS
        while t <= H:
            for k, type_ in enumerate(("tag.placed", "tag.removed", "tag.placed")):
                seq += 1
                store.insert_event("pad-1", "e1", seq, type_, t + k, t + k, {})
            t += HOUR_MS
        store.insert_event("lk-1", "e1", 1, "door.opened", H - 45 * DAY_MS, H - 45 * DAY_MS, {})
        store.insert_event("lk-1", "e1", 2, "door.opened", H, H, {})
        store.set_watermark("pad-1", "e1", seq)
        store.set_watermark("lk-1", "e1", 2)


async def _with(tmp_path, check, prune: bool = True) -> None:
    async with Database(tmp_path / "gw.db") as db:
        await db.write(_fill)
        if prune:  # raw events older than 30 days go, counted first
            report = await Retention(db, RetentionPolicy(events_days=30), lambda: NOW).run_once()
            assert report.deleted["events"] > 700   # 10 days of pad-1, the old door
        app = FastAPI()
        app.include_router(router(db, lambda: NOW))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw") as client:
            await check(client, db)


def run(tmp_path, check, **kw) -> None:
    asyncio.run(_with(tmp_path, check, **kw))


def test_counts_past_the_raw_window_and_the_default_range(tmp_path):
    async def check(c, db):
        r = await c.get("/events/hours", params={"from": H - 45 * DAY_MS, "to": H - 44 * DAY_MS,
                                                 "device": "lk-1"})
        assert r.status_code == 200, r.text
        assert r.json() == {"hours": [{"hour": H - 45 * DAY_MS, "device": "lk-1",
                                       "type": "door.opened", "n": 1}], "next": None}
        r = await c.get("/events/hours", params={"from": H - 40 * DAY_MS, "to": H - 40 * DAY_MS
                                                 + 2 * HOUR_MS, "device": "pad-1"})
        assert [(x["hour"] - H + 40 * DAY_MS, x["type"], x["n"]) for x in r.json()["hours"]] == [
            (0, "tag.placed", 2), (0, "tag.removed", 1),
            (HOUR_MS, "tag.placed", 2), (HOUR_MS, "tag.removed", 1)]
        # default: the 24 hours up to the next whole hour; this hour's events are not counted
        # yet (no fold since they came): the raw side adds them
        hours = (await c.get("/events/hours")).json()["hours"]
        assert {x["hour"] for x in hours} == {H - k * HOUR_MS for k in range(24)}
        assert sum(x["n"] for x in hours) == 24 * 3 + 1
        assert await db.read(Store.hours_lag) == 0     # the pass folded all before pruning
    run(tmp_path, check)


def test_pages_follow_each_other_with_raw_and_counted_rows(tmp_path):
    async def check(c, db):
        # three new events after the last fold: raw rows in the page's hours
        def more(store):
            with store.transaction():
                for i in range(3):
                    store.insert_event("pad-1", "e1", 100_000 + i, "tag.moved", H + i, H + i, {})
        await db.write(more)
        params = {"from": H - 3 * DAY_MS, "to": H + HOUR_MS, "limit": 5}
        whole = (await c.get("/events/hours", params={**params, "limit": 10_000})).json()
        assert whole["next"] is None
        got, after = [], None
        while True:
            page = (await c.get("/events/hours", params={**params, **(
                {"after": after} if after else {})})).json()
            assert len(page["hours"]) <= 5
            got += page["hours"]
            after = page["next"]
            if after is None:
                break
        assert got == whole["hours"] and len(got) == 3 * 24 * 2 + 2 + 1 + 1
        assert got[-1] == {"hour": H, "device": "pad-1", "type": "tag.removed", "n": 1}
        assert {"hour": H, "device": "pad-1", "type": "tag.moved", "n": 3} in got
        by_type = (await c.get("/events/hours", params={**params, "type": "tag.moved"})).json()
        assert by_type["hours"] == [{"hour": H, "device": "pad-1", "type": "tag.moved", "n": 3}]
    run(tmp_path, check)


def test_bad_input_is_a_400_that_says_what_to_send(tmp_path):
    async def check(c, db):
        cases = [({"from": H + 1, "to": H + HOUR_MS}, "from must be a whole UTC hour"),
                 ({"from": H, "to": H}, "must be before to"),
                 ({"from": H - 367 * DAY_MS, "to": H}, "at most 366"),
                 ({"device": "pad 1"}, "not a device id"),
                 ({"after": "not-a-cursor"}, "`next` of a previous page"),
                 ({"after": encode_cursor((1, "a", "b"))[:-3] + "!!"}, "`next` of a previous page")]
        for params, says in cases:
            r = await c.get("/events/hours", params=params)
            assert r.status_code == 400 and says in r.json()["detail"], (params, r.text)
        for params in ({"limit": 10_001}, {"limit": 0}, {"type": "x" * 65}, {"from": -1}):
            assert (await c.get("/events/hours", params=params)).status_code == 422, params
    run(tmp_path, check)


def test_a_fold_far_behind_is_a_503_not_a_scan(tmp_path, monkeypatch):
    async def check(c, db):
        monkeypatch.setattr(Store, "hours_lag", lambda self: MAX_LAG + 1)
        r = await c.get("/events/hours")
        assert r.status_code == 503 and r.headers["Retry-After"] == "60"
        assert "catching up" in r.json()["detail"]
    run(tmp_path, check, prune=False)


def test_the_fold_catches_up_in_batches(tmp_path, monkeypatch):
    from gateway.storage import retention
    monkeypatch.setattr(retention, "FOLD_ROWS", 500)

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_fill)
            assert await db.read(Store.hours_lag) == 40 * 24 * 3 + 3 + 2
            passed, done, _ = await db.write(fold_batch, 1000)
            assert (passed, done) == (1000, False) and await db.read(Store.hours_upto) == 1000
            batches = await Retention(db, RetentionPolicy(), lambda: NOW).fold()
            assert batches == 4 and await db.read(Store.hours_lag) == 0   # 1,885 left: 4 x 500
            counted = await db.read(lambda s: s.conn.execute(
                "SELECT SUM(n) FROM event_hours").fetchone()[0])
            assert counted == 40 * 24 * 3 + 3 + 2
    asyncio.run(main())


def test_the_cursor_round_trips_and_the_route_needs_read():
    key = (H, "pad-1", "tag.placed")
    assert decode_cursor(encode_cursor(key)) == key
    assert auth.required_scopes("GET", "/events/hours") == ("read",)


def test_the_real_gateway_serves_them_with_the_read_scope(broker, tmp_path):
    """The gateway process (its fold task running), a device's events over MQTT: counted at
    once (the raw side), for a token with `read` (the kiosk role); 401 without a token, 403
    for the customer role (the endless aisle only)."""
    from collections import Counter

    from hil.fakes import FakeDevice
    from hil.harness import GatewayProcess
    from tests.support.auth import bearer, token
    gw = GatewayProcess(tmp_path / "gw", broker.port).start()
    dev = FakeDevice("pad-hours", broker.port).connect()
    try:
        for _ in range(3):
            dev.emit("tag.placed", {"uid": "04a1b2c3d4e5f6", "tech": "ntag213", "sample": "S-1"})
        dev.emit("button.pressed", {"n": 1})
        dev.wait_acked(4)
        url = f"{gw.url}/events/hours"
        r = httpx.get(url, params={"device": "pad-hours"}, timeout=10,
                      headers=bearer(token(gw, "kiosk-h", "kiosk")))
        assert r.status_code == 200, r.text
        by_type: Counter = Counter()
        for row in r.json()["hours"]:   # two rows a type if the events straddle an hour
            by_type[row["type"]] += row["n"]
        assert by_type == {"tag.placed": 3, "button.pressed": 1}
        assert httpx.get(url, timeout=10, headers={"Authorization": ""}).status_code == 401
        assert httpx.get(url, timeout=10, headers=bearer(token(gw, "cust-h", "customer"))
                         ).status_code == 403
    finally:
        dev.close()
        gw.stop()
