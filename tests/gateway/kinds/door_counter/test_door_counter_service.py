"""The door counter's gateway side (gateway/kinds/door_counter/) on a real SQLite store:
device events written as ingest writes them, a clock the test moves. Per-minute sums (periods
shorter than a minute add up; a replay lands in the minute it was counted in), the live view,
bad bodies skipped, restart without double counting, the read routes and their scope, the
stuck-beam alert rule."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.devices import alerts
from gateway.http.auth import required_scopes
from gateway.kinds.door_counter import KIND
from gateway.kinds.door_counter.api import router
from gateway.kinds.door_counter.core import BadEvent, Live, apply
from gateway.kinds.door_counter.service import DoorCounterService
from gateway.storage.db import Database
from gateway.storage.store import Store

T0 = 1_795_426_620_000  # a minute boundary
MIN = 60_000


class Clock:
    def __init__(self, t: int = T0 + 10 * MIN) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def _devices_tx(store: Store, now: int) -> None:
    with store.transaction():
        for dev, kind in (("door-1", "door-counter"), ("door-2", "door-counter"), ("pad-1", "sample-pad")):
            store.upsert_device(id=dev, kind=kind, fw="t", caps=[], cfg="x", session=1, epoch="e1",
                                boot=1, reset=None, online=True, now=now)


def _event_tx(store: Store, dev: str, seq: int, etype: str, body: dict[str, Any], t_dev: int | None,
              now: int) -> None:
    with store.transaction():
        store.insert_event(dev, "e1", seq, etype, t_dev, now, body)


def ff(start, n_in, n_out, occ, oos=0, period=60):
    return {"start": start, "period_s": period, "in": n_in, "out": n_out, "occupancy": occ, "oos_ms": oos}


class World:
    def __init__(self, path) -> None:
        self.path = path
        self.clock = Clock()
        self.seq: dict[str, int] = {}

    async def open(self) -> DoorCounterService:
        self.db = Database(self.path, kind_migrations={KIND.name: KIND.migrations})
        await self.db.__aenter__()
        await self.db.write(_devices_tx, self.clock())
        svc = DoorCounterService(self.db, clock=self.clock)
        await svc.load()
        return svc

    async def close(self) -> None:
        await self.db.__aexit__(None, None, None)

    async def event(self, dev: str, etype: str, body: dict[str, Any], t_dev: int | None = None) -> None:
        self.seq[dev] = self.seq.get(dev, 0) + 1
        await self.db.write(_event_tx, dev, self.seq[dev], etype, body, t_dev, self.clock())


def test_minutes_sum_periods_replays_land_where_counted_and_restart_counts_nothing_twice(tmp_path):
    async def main() -> None:
        w = World(tmp_path / "gw.db")
        svc = await w.open()
        # three 20 s periods of one minute, then a minute replayed an hour late (its `start`
        # says when it was counted), then one without a clock (filed by its device time, else
        # when it arrived)
        await w.event("door-1", "footfall", ff(T0, 3, 1, 2, period=20))
        await w.event("door-1", "footfall", ff(T0 + 20_000, 2, 0, 4, period=20))
        await w.event("door-1", "footfall", ff(T0 + 40_000, 0, 3, 1, oos=5000, period=20))
        await w.event("pad-1", "footfall", ff(T0, 50, 0, 50))          # not a door counter
        await w.event("door-2", "footfall", ff(T0 + MIN, 7, 2, 5))
        w.clock.t = T0 + 70 * MIN
        await w.event("door-1", "footfall", ff(T0 + 2 * MIN, 1, 0, 2))  # replayed late
        await w.event("door-1", "footfall", ff(None, 4, 0, 6), t_dev=T0 + 3 * MIN + 5_000)
        await w.event("door-1", "footfall", ff(None, 1, 1, 6))         # no clock at all
        await svc.step()
        c = await svc.counts("door-1", T0, T0 + 80 * MIN)
        assert [(m["minute"], m["entries"], m["exits"], m["oos_ms"], m["occupancy"]) for m in c["minutes"]] == [
            (T0, 5, 4, 5000, 1), (T0 + 2 * MIN, 1, 0, 0, 2), (T0 + 3 * MIN, 4, 0, 0, 6),
            (T0 + 70 * MIN, 1, 1, 0, 6)]
        assert (c["entries"], c["exits"], c["oos_ms"]) == (11, 5, 5000)
        assert (await svc.counts("door-2", T0, T0 + 80 * MIN))["entries"] == 7
        assert await svc.counts("pad-1", T0, T0 + MIN) is None  # not a door counter
        # a restart re-reads nothing: the cursor was saved with the counts
        await w.close()
        w2 = World(tmp_path / "gw.db")
        w2.clock.t, w2.seq = w.clock.t, w.seq
        svc2 = await w2.open()
        await svc2.step()
        await w2.event("door-1", "footfall", ff(T0, 1, 0, 7))
        await svc2.step()
        c = await svc2.counts("door-1", T0, T0 + MIN)
        assert [(m["entries"], m["exits"], m["occupancy"]) for m in c["minutes"]] == [(6, 4, 7)]
        await w2.close()
    asyncio.run(main())


def test_live_view_stuck_beams_resets_and_bad_bodies(tmp_path):
    async def main() -> None:
        w = World(tmp_path / "gw.db")
        svc = await w.open()
        await w.event("door-1", "footfall", ff(T0, 5, 0, 5))
        await w.event("door-1", "beam.stuck", {"beam": "A", "blocked_ms": 60000})
        await w.event("door-1", "footfall", ff(T0 + MIN, -3, 0, 5))          # refused: negative
        await w.event("door-1", "footfall", ff(T0 + MIN, 10**6, 0, 5))       # refused: too many
        await w.event("door-1", "beam.stuck", {"beam": "C", "blocked_ms": 1})  # refused: no such beam
        await svc.step()
        view = {c["device"]: c for c in await svc.counters()}
        assert view["door-1"]["out_of_service"] is True and view["door-1"]["stuck_beams"] == ["A"]
        assert view["door-1"]["occupancy"] == 5 and view["door-1"]["last_minute"] == T0
        assert view["door-2"]["occupancy"] == 0 and view["door-2"]["updated"] is None  # never counted
        assert set(view) == {"door-1", "door-2"}
        assert svc.skipped == 3
        await w.event("door-1", "beam.cleared", {"beam": "A", "blocked_ms": 75000})
        await w.event("door-1", "occupancy.reset", {"occupancy": 0, "was": 5})
        await svc.step()
        v = next(c for c in await svc.counters() if c["device"] == "door-1")
        assert (v["out_of_service"], v["stuck_beams"], v["occupancy"]) == (False, [], 0)
        await w.close()
    asyncio.run(main())


def test_core_refuses_what_a_device_must_not_send():
    ev = {"type": "footfall", "t_device": T0, "t_gateway": T0, "body": ff(T0, 1, 0, 1)}
    assert apply(Live(), ev).minute.entries == 1
    # a period's oos_ms a little over its length (uptime vs clock) is capped, not refused: its
    # counts would be lost
    assert apply(Live(), {**ev, "body": {**ev["body"], "oos_ms": 60_005, "in": 4}}).minute.oos_ms == 60_000
    assert apply(Live(), {**ev, "body": {**ev["body"], "oos_ms": 60_005, "in": 4}}).minute.entries == 4
    for bad in ({"start": "yesterday"}, {"period_s": 0}, {"oos_ms": 3600_001}, {"occupancy": True},
                {"in": None}, {"oos_ms": -1}):
        with pytest.raises(BadEvent):
            apply(Live(), {**ev, "body": {**ev["body"], **bad}})


def test_routes_their_scope_limits_and_typed_answers(tmp_path):
    async def main() -> None:
        w = World(tmp_path / "gw.db")
        svc = await w.open()
        await w.event("door-1", "footfall", ff(T0, 3, 1, 2))
        await svc.step()
        app = FastAPI()
        app.include_router(router(svc))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            r = await c.get("/door-counters")
            assert r.status_code == 200
            assert [d["device"] for d in r.json()] == ["door-1", "door-2"]
            r = await c.get("/door-counters/door-1/counts", params={"from": T0, "to": T0 + MIN})
            assert r.status_code == 200
            body = r.json()
            assert body["from"] == T0 and body["to"] == T0 + MIN and body["entries"] == 3
            assert body["minutes"] == [{"minute": T0, "entries": 3, "exits": 1, "oos_ms": 0, "occupancy": 2}]
            # default range: the last 24 h before now
            assert (await c.get("/door-counters/door-1/counts")).json()["to"] == w.clock()
            r = await c.get("/door-counters/door-1/counts", params={"from": T0, "to": T0 + 32 * 24 * 3600_000})
            assert r.status_code == 422 and "at most 31 days" in r.json()["detail"]
            r = await c.get("/door-counters/door-1/counts", params={"from": T0 + MIN, "to": T0})
            assert r.status_code == 422 and "must be before" in r.json()["detail"]
            r = await c.get("/door-counters/pad-1/counts")
            assert r.status_code == 404 and "GET /door-counters" in r.json()["detail"]
        await w.close()
    asyncio.run(main())
    assert required_scopes("GET", "/door-counters") == ("read",)
    assert required_scopes("GET", "/door-counters/door-1/counts") == ("read",)


def test_a_stuck_beam_raises_an_alert_that_its_clearing_resolves():
    assert set(KIND.alerts) <= set(alerts.RULES)
    stuck = next(r for r in KIND.alerts if r.type == "beam.stuck")
    cleared = next(r for r in KIND.alerts if r.type == "beam.cleared")
    fields = {"device": "door-1", "beam": "A", "blocked_ms": 60000}
    assert stuck.key.format(**fields) == cleared.resolves.format(**fields) == "beam.stuck:door-1:A"
    assert "out of service" in stuck.text.format(**fields)
