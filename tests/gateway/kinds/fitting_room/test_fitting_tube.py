"""Another size by tube (gateway/kinds/fitting_room/tube_sizes.py): the fitting-room service and the tube
service on one real SQLite store, device events written as ingest writes them, a clock the test
moves, no broker, no firmware. A stockroom size becomes a tube dispatch; the request follows the
carrier; a cancelled dispatch hands it back to staff; a restart neither loses nor repeats."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from gateway.kinds.fitting_room.demo import DEMO_STOCK
from gateway.kinds.fitting_room.service import FittingService
from gateway.kinds.fitting_room.stock import FileStock
from gateway.kinds.fitting_room.tube_sizes import TubeSizeDispatcher, dispatch_key, tube_station
from gateway.kinds.tube.service import TubeConfigError
from gateway.storage.store import Store
from tests.support.tube import World

ROOM = "room-1"
STOCKROOM_ONLY = "09506000134369"  # oxford L: none on the floor, 3 in the stockroom
ON_FLOOR = "09506000134352"        # oxford M: 2 on the floor
NEARBY_ONLY = "09506000134376"     # oxford M white: other stores only


def _room_tx(store: Store, now: int) -> None:
    with store.transaction():
        store.upsert_device(id=ROOM, kind="fitting-room", fw="t", caps=[], cfg="x", session=1,
                            epoch="e1", boot=1, reset=None, online=True, now=now)


def _forget_tx(store: Store, dev: str) -> None:
    with store.transaction():
        store.conn.execute("DELETE FROM devices WHERE id = ?", (dev,))


def _fitting_requests(store: Store) -> list[dict[str, Any]]:
    return [i.data["request"] for i in store.stream_after(0, 10_000)
            if i.kind == "fitting" and i.data["type"] == "fitting.request"]


def _tube_jobs(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT id FROM tube_jobs ORDER BY id")]


class TubeFittingWorld(World):
    """The tube world plus an occupied fitting room and the fitting service wired to the tube."""

    async def open_all(self, station: str | None = None) -> tuple[Any, FittingService]:
        tube = await self.open()
        await self.db.write(_room_tx, self.clock())
        fit = FittingService(self.db, FileStock(DEMO_STOCK), clock=self.clock,
                             dispatcher=TubeSizeDispatcher(tube, tube_station(tube, station)))
        await fit.load()
        await self.event(ROOM, "room.occupied")  # (again after a restart: the same session)
        await fit.step()
        return tube, fit

    async def staff_only(self, fit: FittingService) -> None:
        """A stockroom size asked in the room goes to staff, no dispatch; closes."""
        q = await fit.ask_size(ROOM, STOCKROOM_ONLY, None)
        assert q["via"] == "staff" and "dispatch" not in q and await self.db.read(_tube_jobs) == []
        await self.db.close()

    async def steps(self, tube, fit) -> None:
        await tube.step()
        await fit.step()


def test_stockroom_size_travels_by_tube_falls_back_to_staff_and_survives_restart(tmp_path):
    async def main() -> None:
        w = TubeFittingWorld(tmp_path / "gw.db")
        tube, fit = await w.open_all()

        # a stockroom-only size: a customer dispatch stockroom -> fitting-rooms keyed by the request
        q = await fit.ask_size(ROOM, STOCKROOM_ONLY, ON_FLOOR)
        assert q["via"] == "tube" and q["where"] == "stockroom" and q["state"] == "open"
        job = dispatch_key(q["id"])
        rec = tube.job(job)
        assert (rec["from"], rec["to"], rec["priority"], rec["state"]) == \
            ("stockroom", "fitting-rooms", "customer", "queued")
        assert rec["item"].startswith(STOCKROOM_ONLY) and "Oxford shirt L" in rec["item"]
        assert q["dispatch"]["job"] == job and q["dispatch"]["state"] == "queued"
        loads = [c for c in await w.new_commands() if c[1] == "load"]
        assert loads == [("tube-stockroom", "load", {"job": job, "item": rec["item"], "to": "fitting-rooms"})]
        # a double tap: the same request, the same dispatch
        assert (await fit.ask_size(ROOM, STOCKROOM_ONLY, ON_FLOOR))["id"] == q["id"]
        # on the floor, or only in another store: staff, no dispatch
        floor = await fit.ask_size(ROOM, ON_FLOOR, None)
        nearby = await fit.ask_size(ROOM, NEARBY_ONLY, None)
        assert floor["via"] == nearby["via"] == "staff" and "dispatch" not in floor
        assert await w.db.read(_tube_jobs) == [job]
        # staff still have it in their list (someone loads the carrier, someone brings it)
        assert q["id"] in {r["id"] for r in fit.requests(state="open")}

        # staff load it and press send; the line is set; air on -> the request is on its way
        await w.event("tube-stockroom", "send.pressed", station="stockroom", job=job)
        await w.steps(tube, fit)
        for dv, pos in (("DV1", "through"), ("DV2", "fitting")):
            await w.event("tube-line", "diverter.position", diverter=dv, position=pos)
        await w.steps(tube, fit)
        q = fit.core.requests[q["id"]]
        assert q["state"] == "on_the_way" and q["dispatch"]["state"] == "in_transit"
        w.clock.advance(0.5)
        await w.event("tube-stockroom", "eye", eye="PE-T1")
        await w.steps(tube, fit)

        # restart mid-transit: both services come back from the store; nothing is dispatched
        # twice, the request still follows the same dispatch
        await w.new_commands()
        await w.db.close()
        tube, fit = await w.open_all()
        assert fit.core.requests[q["id"]]["state"] == "on_the_way"
        again = await fit.ask_size(ROOM, STOCKROOM_ONLY, ON_FLOOR)
        assert again["id"] == q["id"] and await w.db.read(_tube_jobs) == [job]
        assert [c for c in await w.new_commands() if c[1] == "load"] == []
        w.clock.advance(0.6)
        await w.event("tube-line", "eye", eye="PE-T2")
        w.clock.advance(0.4)
        await w.event("tube-fitting", "eye", eye="PE-T4")
        await w.event("tube-fitting", "carrier.arrived", station="fitting-rooms")
        await w.steps(tube, fit)
        q = fit.core.requests[q["id"]]
        assert q["dispatch"]["state"] == "arrived" and q["state"] == "on_the_way"
        await w.event("tube-fitting", "carrier.removed", station="fitting-rooms")
        await w.steps(tube, fit)
        assert fit.core.requests[q["id"]]["dispatch"]["state"] == "delivered"
        # an associate brings it into the room: its tag closes the request
        await w.event(ROOM, "garment.in", uid="04aa", gtin=STOCKROOM_ONLY, serial="L-1")
        await w.steps(tube, fit)
        q = fit.core.requests[q["id"]]
        assert (q["state"], q["reason"], q["via"]) == ("done", "delivered", "tube")
        # the mirror heard every step (stream items `fitting.request`), the last one `done`
        shown = [(r["state"], r["dispatch"]["state"]) for r in await w.db.read(_fitting_requests)
                 if r["id"] == q["id"] and r.get("dispatch")]
        assert shown == [("open", "queued"), ("on_the_way", "routing"), ("on_the_way", "in_transit"),
                         ("on_the_way", "arrived"), ("on_the_way", "delivered"),
                         ("done", "delivered")], shown

        # the same size again (another customer's wish in the same session): a new dispatch,
        # cancelled in the stockroom (say the shelf was empty): back to staff, said so
        q2 = await fit.ask_size(ROOM, STOCKROOM_ONLY, None)
        assert q2["id"] != q["id"] and q2["via"] == "tube"
        await tube.cancel(dispatch_key(q2["id"]))
        await w.steps(tube, fit)
        q2 = fit.core.requests[q2["id"]]
        assert (q2["state"], q2["via"], q2["fallback"], q2["reason"]) == ("open", "staff", "tube", "tube-cancelled")
        assert q2["dispatch"]["state"] == "cancelled"
        await fit.update_request(q2["id"], "acknowledged", "ana")  # staff take it from there
        await w.steps(tube, fit)
        assert fit.core.requests[q2["id"]]["state"] == "acknowledged"

        # the customer leaves while a third dispatch waits to be loaded: it is cancelled too
        await fit.update_request(q2["id"], "done", "ana")
        q3 = await fit.ask_size(ROOM, STOCKROOM_ONLY, None)
        await w.event(ROOM, "room.free", occupied_ms=1000)
        await w.steps(tube, fit)
        assert fit.core.requests[q3["id"]]["state"] == "cancelled"
        assert tube.job(dispatch_key(q3["id"]))["state"] == "cancelled"
        await w.steps(tube, fit)
        assert fit.core.requests[q3["id"]]["dispatch"]["state"] == "cancelled"
        await w.db.close()

    asyncio.run(main())


def test_tube_station_setting(tmp_path):
    async def main() -> None:
        w = TubeFittingWorld(tmp_path / "gw.db")
        tube, fit = await w.open_all(station="off")
        assert tube_station(tube, None) == "fitting-rooms"
        assert tube_station(tube, "floor-mens") == "floor-mens"
        for bad in ("attic", "stockroom"):
            with pytest.raises(TubeConfigError, match="not a floor station.*floor-womens"):
                tube_station(tube, bad)
        await w.staff_only(fit)  # "off": every size goes to staff

        # the default station, but the fitting-rooms station's board was never seen: no tube here
        w = TubeFittingWorld(tmp_path / "gw2.db")
        tube, fit = await w.open_all()
        await w.db.write(_forget_tx, "tube-fitting")
        await w.staff_only(fit)

    asyncio.run(main())


def test_no_fitting_rooms_station_in_the_network_means_staff(tmp_path, monkeypatch):
    import tests.support.tube as ts
    other = tmp_path / "net.json"
    other.write_text(ts.NETWORK.read_text().replace('"fitting-rooms"', '"desk"'))
    monkeypatch.setattr(ts, "NETWORK", other)

    async def main() -> None:
        w = TubeFittingWorld(tmp_path / "gw.db")
        tube, fit = await w.open_all()
        assert tube_station(tube, None) is None and "desk" in tube.net.stations
        await w.staff_only(fit)

    asyncio.run(main())


def test_gateway_refuses_a_tube_station_the_network_lacks(tmp_path):
    from gateway.app import Gateway
    from gateway.config_file import parse

    fc = parse({"fitting": {"tube_station": "attic"}}, base=tmp_path)
    assert fc.gateway.fitting_tube_station == "attic"
    with pytest.raises(TubeConfigError, match="fitting tube_station 'attic': not a floor station"):
        Gateway(replace(fc.gateway, db_path=tmp_path / "gw.db"))
    gw = Gateway(replace(fc.gateway, db_path=tmp_path / "gw.db", fitting_tube_station=None))
    assert gw.fitting.dispatcher.station == "fitting-rooms"


def test_a_carrier_lost_twice_fails_and_the_request_goes_back_to_staff(tmp_path):
    async def main() -> None:
        w = TubeFittingWorld(tmp_path / "gw.db")
        tube, fit = await w.open_all()
        q = await fit.ask_size(ROOM, STOCKROOM_ONLY, None)
        job = dispatch_key(q["id"])
        for attempt in (1, 2):
            await w.event("tube-stockroom", "send.pressed", station="stockroom", job=job)
            await w.steps(tube, fit)
            for dv, pos in (("DV1", "through"), ("DV2", "fitting")):
                await w.event("tube-line", "diverter.position", diverter=dv, position=pos)
            await w.event("tube-stockroom", "eye", eye="PE-T1")
            await w.steps(tube, fit)
            assert fit.core.requests[q["id"]]["state"] == "on_the_way"
            w.clock.advance(30)  # PE-T2 never sees it
            await w.steps(tube, fit)
            if attempt == 1:
                assert fit.core.requests[q["id"]]["dispatch"]["state"] == "lost"
                await tube.clear_jam(job)  # staff find it and send it once more
                await w.steps(tube, fit)
                q = fit.core.requests[q["id"]]  # never backwards: still on its way
                assert (q["state"], q["dispatch"]["state"], q["dispatch"]["attempt"]) == ("on_the_way", "queued", 2)
        q = fit.core.requests[q["id"]]
        assert (q["state"], q["via"], q["fallback"], q["reason"]) == ("open", "staff", "tube", "tube-failed")
        assert q["dispatch"]["state"] == "failed" and q["id"] in {r["id"] for r in fit.requests("open")}
        await w.db.close()

    asyncio.run(main())
