"""The gateway's tube service (gateway/kinds/tube/service.py) on a real SQLite store: device events
written as ingest writes them, a clock the test moves, the real command service with a recording
publisher (no broker). Checks the event -> arbiter -> command mapping hop by hop, the one
transaction per step, restart without a second actuation, loss by the clock and staff recovery."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.kinds.tube.core import InvalidCommand, InvalidJob
from gateway.kinds.tube.service import JobConflict, TubeConfigError, load_network
from gateway.storage.store import Store
from tests.support.services import commands
from tests.support.tube import NETWORK, World


def _tube_items(store: Store) -> list[dict[str, Any]]:
    return [i.data for i in store.stream_after(0, 10_000) if i.kind == "tube"]


def test_network_file_errors_name_the_field(tmp_path):
    with pytest.raises(TubeConfigError, match="not found"):
        load_network(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(TubeConfigError, match="not valid JSON"):
        load_network(bad)
    cfg = json.loads(NETWORK.read_text())
    del cfg["devices"]["DV2"]
    bad.write_text(json.dumps(cfg))
    with pytest.raises(TubeConfigError, match=r"devices\.DV2: which device drives DV2"):
        load_network(bad)
    cfg = json.loads(NETWORK.read_text())
    cfg["segments"][2]["to"] = "floor-kids"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(TubeConfigError, match=r"segments\[2\]\.to: unknown node 'floor-kids'"):
        load_network(bad)


def test_dispatch_hop_by_hop_restart_and_no_second_actuation(tmp_path):
    async def main() -> None:
        w = World(tmp_path / "gw.db")
        svc = await w.open()
        rec, created = await svc.dispatch(origin="stockroom", destination="fitting-rooms",
                                          priority="customer", item="SKU-1", key="k-1")
        assert created and rec["state"] == "queued"
        assert (await svc.dispatch(origin="stockroom", destination="fitting-rooms", priority="customer",
                                   item="SKU-1", key="k-1"))[1] is False
        with pytest.raises(JobConflict):
            await svc.dispatch(origin="stockroom", destination="floor-mens", priority="customer",
                               item="SKU-1", key="k-1")
        with pytest.raises(InvalidJob):
            await svc.dispatch(origin="stockroom", destination="attic", priority="customer", item="x", key="k-2")
        # LoadCarrier -> `load` on the origin station; pre-positioning turns both diverters
        cmds = await w.new_commands()
        assert ("tube-stockroom", "load", {"job": "k-1", "item": "SKU-1", "to": "fitting-rooms"}) in cmds
        await w.event("tube-stockroom", "carrier.loaded", station="stockroom")
        await w.event("tube-stockroom", "send.pressed", station="stockroom", job="k-1")
        await svc.step()
        new = await w.new_commands()
        sets = {(a["diverter"], a["position"]) for d, name, a in new if name == "set_diverter"}
        assert sets == {("DV1", "through"), ("DV2", "fitting")} and all(d == "tube-line" for d, *_ in new)
        assert svc.job("k-1")["state"] == "routing"
        for dv, pos in sets:
            await w.event("tube-line", "diverter.position", diverter=dv, position=pos)
        await svc.step()
        air = [(d, a) for d, name, a in await w.new_commands() if name == "air"]
        assert {(d, a["role"], a["on"]) for d, a in air} == {("tube-stockroom", "origin", True),
                                                             ("tube-fitting", "destination", True)}
        assert len({a["seq"] for _, a in air}) == 2
        assert svc.job("k-1")["state"] == "in_transit"
        n_before_restart = len(await w.db.read(commands))
        w.clock.advance(0.5)
        await w.event("tube-stockroom", "eye", eye="PE-T1")
        await svc.step()

        # restart mid-transit: same state, same cursor; resume re-emits StartBlower with the same
        # command id, which finds its command: nothing new to send
        cursor = svc.cursor
        await w.db.close()
        svc = await w.open()
        assert svc.cursor == cursor and svc.job("k-1")["state"] == "in_transit"
        assert len(await w.db.read(commands)) == n_before_restart
        w.clock.advance(0.6)
        await w.event("tube-line", "eye", eye="PE-T2")
        w.clock.advance(0.4)
        await w.event("tube-fitting", "eye", eye="PE-T4")
        await w.event("tube-fitting", "carrier.arrived", station="fitting-rooms")
        await svc.step()
        assert svc.job("k-1")["state"] == "arrived"
        offs = [(d, a) for d, name, a in await w.new_commands() if name == "air"]
        assert {(d, a["on"]) for d, a in offs} == {("tube-stockroom", False), ("tube-fitting", False)}
        await w.event("tube-fitting", "carrier.removed", station="fitting-rooms")
        await svc.step()
        done = svc.job("k-1")
        assert done["state"] == "delivered" and done["final"]
        states = [h[1] for h in done["history"]]
        assert states == ["queued", "queued", "routing", "in_transit", "arrived", "delivered"], states
        items = await w.db.read(_tube_items)
        assert [i["state"] for i in items if i["type"].startswith("dispatch.")].count("delivered") == 1
        await w.db.close()

    asyncio.run(main())


def test_lost_by_the_clock_blocks_then_staff_clear_and_resend(tmp_path):
    async def main() -> None:
        w = World(tmp_path / "gw.db")
        svc = await w.open()
        await svc.dispatch(origin="stockroom", destination="floor-mens", priority="customer",
                           item="SKU-9", key="j-1")
        await w.event("tube-stockroom", "send.pressed", station="stockroom", job="j-1")
        await svc.step()
        await w.event("tube-line", "diverter.position", diverter="DV1", position="through")
        await w.event("tube-line", "diverter.position", diverter="DV2", position="mens")
        await svc.step()
        await w.event("tube-stockroom", "eye", eye="PE-T1")
        await svc.step()
        with pytest.raises(InvalidCommand):
            await svc.cancel("j-1")  # the carrier is in the line
        w.clock.advance(30)  # PE-T2 never sees it
        await svc.step()
        assert svc.job("j-1")["state"] == "lost"
        view = svc.view()
        assert view["blocked"].get("seg:T2") == "j-1"
        alerts = [i for i in await w.db.read(_tube_items) if i["type"] == "alert.carrier_lost"]
        assert len(alerts) == 1 and alerts[0]["severity"] == "error"
        with pytest.raises(InvalidCommand):
            await svc.clear_jam("T4")
        await w.new_commands()
        changes = await svc.clear_jam("j-1")
        assert any(c["type"] == "Alert" and c["kind"] == "jam_cleared" for c in changes)
        assert svc.job("j-1")["state"] == "queued" and svc.job("j-1")["attempt"] == 2
        reload = [c for c in await w.new_commands() if c[1] == "load"]
        assert reload == [("tube-stockroom", "load", {"job": "j-1", "item": "SKU-9", "to": "floor-mens"})]
        await w.db.close()

    asyncio.run(main())


def test_finished_dispatches_beyond_the_memory_bound_are_read_from_the_store(tmp_path, monkeypatch):
    import gateway.kinds.tube.service as tube_mod

    monkeypatch.setattr(tube_mod, "RECENT_KEEP", 2)

    async def main() -> None:
        w = World(tmp_path / "gw.db")
        svc = await w.open()
        for i in range(4):
            await svc.dispatch(origin="floor-mens", destination="stockroom", priority="replenishment",
                               item=f"R{i}", key=f"c-{i}")
            await svc.cancel(f"c-{i}")
        await svc.dispatch(origin="stockroom", destination="floor-mens", priority="customer",
                           item="LIVE", key="live")
        assert [j["job"] for j in svc.jobs()] == ["c-2", "c-3", "live"]
        old = await svc.get_job("c-0")
        assert old["state"] == "cancelled"
        again, created = await svc.dispatch(origin="floor-mens", destination="stockroom",
                                            priority="replenishment", item="R0", key="c-0")
        assert not created and again["state"] == "cancelled", "an old key is still idempotent"
        with pytest.raises(JobConflict):
            await svc.dispatch(origin="stockroom", destination="floor-mens", priority="customer",
                               item="R0", key="c-0")
        await w.db.close()
        svc = await w.open()  # a restart loads the live ones and the recent ones only
        assert [j["job"] for j in svc.jobs()] == ["c-2", "c-3", "live"]
        await w.db.close()

    asyncio.run(main())
