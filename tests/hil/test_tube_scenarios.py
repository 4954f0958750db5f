"""Pneumatic tube scenarios (issue 4) on the virtual rig: the real tube firmware (stations and
line controller) in `micropython`, the virtual tube line between them (hil/sim/tube.py: carriers,
blower, diverters, photo-eyes), a real Mosquitto and the real gateway process with its tube
service. The world acts through the rig abstraction (`load_carrier`, `press_send`, `open_door`,
`take_carrier`, `estop`); faults (a carrier that sticks, a diverter that sticks) are injected in
the line model. The network is store-demo's layout with short tubes (boards/tube/virtual-fast.json)
so a dispatch takes ~2-3 s.
"""
from __future__ import annotations

import httpx
import pytest

from hil.fakes import SseReader
from hil.harness import wait_for
from tests.support.tube import DEV, T, tube_store


@pytest.fixture
def tube(tmp_path, broker, request):
    # parametrize indirectly with "coap" to run a scenario with every tube device on CoAP
    with tube_store(tmp_path, broker, coap=getattr(request, "param", "mqtt") == "coap") as line:
        yield line


@pytest.mark.parametrize("tube", ["mqtt", "coap"], indirect=True)
def test_dispatch_end_to_end_with_diverters(tube):
    with SseReader(tube.gw.url) as stream:
        rec = tube.dispatch("d-1", "stockroom", "fitting-rooms", item="SKU-42")
        assert rec["state"] == "queued" and rec["from"] == "stockroom"
        # send pressed with an empty chamber: refused on the station, nothing moves
        wait_for(lambda: "Load SKU-42 " in tube.display("stockroom"), T, what="load prompt")
        tube.rig.press_send(DEV["stockroom"])
        refused = wait_for(lambda: tube.gw.events(DEV["stockroom"], "send.refused"), T, what="send.refused")
        assert refused[0]["body"]["reason"] == "no-carrier" and refused[0]["body"]["job"] == "d-1"
        assert "No carrier" in tube.display("stockroom")
        assert tube.job("d-1")["state"] == "queued" and tube.air("stockroom") == 0
        tube.load_and_send("stockroom")
        tube.wait_state("d-1", "arrived")
        assert tube.model.arrivals and tube.model.arrivals[-1][1:] == ("stockroom", "fitting-rooms")
        wait_for(lambda: tube.air("stockroom") == 0 and tube.air("fitting-rooms") == 0, T,
                 what="air off after the arrival")
        # the route went through both diverters, set and confirmed by their limit switches
        line = tube.line()
        assert tube.model._closed_position("DV1") == "through"
        assert tube.model._closed_position("DV2") == "fitting"
        assert line["stations"]["fitting-rooms"]["carrier_present"] is True
        assert "Carrier arrived" in tube.display("fitting-rooms")
        tube.take("fitting-rooms")
        tube.wait_state("d-1", "delivered")
        states = tube.states("d-1")
        assert states[0] == "queued" and states[-3:] == ["in_transit", "arrived", "delivered"]
        assert "routing" in states
        wait_for(lambda: [m for m in stream.messages if m.get("_event") == "tube"
                          and m.get("type") == "dispatch.delivered" and m.get("job") == "d-1"],
                 10, what="dispatch.delivered on the stream")
    # the same key again: the same dispatch, nothing new
    again = tube.dispatch("d-1", "stockroom", "fitting-rooms", item="SKU-42", expect=200)
    assert again["state"] == "delivered"
    conflict = httpx.post(tube.gw.url + "/tube/dispatches", json={
        "from": "stockroom", "to": "floor-mens", "item": "SKU-42", "idempotency_key": "d-1"}, timeout=10)
    assert conflict.status_code == 409
    bad = httpx.post(tube.gw.url + "/tube/dispatches", json={
        "from": "stockroom", "to": "nowhere", "item": "x", "idempotency_key": "d-2"}, timeout=10)
    assert bad.status_code == 422 and "nowhere" in bad.json()["detail"]
    assert len(tube.model.arrivals) == 1


def _at(job: dict, state: str) -> float:
    """When the dispatch first entered `state` (gateway time)."""
    return next(t for t, s, _ in job["history"] if s == state)


def test_two_dispatches_contending_for_a_shared_segment_are_serialized(tube):
    # stockroom -> fitting-rooms and floor-mens -> stockroom both need T1 and T2 (and DV1, DV2)
    tube.dispatch("c-1", "stockroom", "fitting-rooms", item="SKU-A")
    tube.dispatch("c-2", "floor-mens", "stockroom", priority="replenishment", item="SKU-B")
    tube.send("stockroom", "SKU-A")
    tube.send("floor-mens", "SKU-B")
    tube.wait_state("c-1", "arrived")
    tube.take("fitting-rooms")
    tube.wait_state("c-2", "arrived")
    tube.take("stockroom")
    a, b = tube.wait_state("c-1", "delivered"), tube.wait_state("c-2", "delivered")
    first, second = sorted((a, b), key=lambda j: _at(j, "in_transit"))
    # the second reserved the route only once the first carrier was out of the tube
    assert _at(second, "routing") >= _at(first, "arrived"), (first["history"], second["history"])
    assert sorted(x[1:] for x in tube.model.arrivals) == [("floor-mens", "stockroom"),
                                                          ("stockroom", "fitting-rooms")]
    assert not tube.line()["reservations"]


def test_customer_dispatch_goes_before_an_older_replenishment(tube):
    # the stockroom has one send chamber: R1 takes it; R2 and then C1 wait for it
    tube.dispatch("r-1", "stockroom", "floor-womens", "replenishment", item="R1")
    tube.dispatch("r-2", "stockroom", "floor-mens", "replenishment", item="R2")
    tube.dispatch("c-1", "stockroom", "fitting-rooms", "customer", item="C1")
    tube.send("stockroom", "R1")
    tube.send("stockroom", "C1")  # shown next although R2 is older: a customer is waiting
    assert tube.job("r-2")["state"] == "queued"
    tube.send("stockroom", "R2")
    for key, station in (("r-1", "floor-womens"), ("c-1", "fitting-rooms"), ("r-2", "floor-mens")):
        tube.wait_state(key, "arrived")
        tube.take(station)
        tube.wait_state(key, "delivered")
    order = sorted(("r-1", "r-2", "c-1"), key=lambda k: _at(tube.job(k), "in_transit"))
    assert order == ["r-1", "c-1", "r-2"]


def _stream_of(stream, **match) -> list[dict]:
    return [m for m in stream.messages if m.get("_event") == "tube"
            and all(m.get(k) == v for k, v in match.items())]


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_jam_detected_line_blocked_other_route_works_staff_recover(tube):
    tube.model.jam_segment("T2")
    with SseReader(tube.gw.url) as stream:
        tube.dispatch("j-1", "stockroom", "floor-mens", item="JAM")
        tube.send("stockroom", "JAM")
        lost = tube.wait_state("j-1", "lost")
        assert "PE-T2" in lost["reason"] or "T2" in lost["reason"], lost
        alerts = wait_for(lambda: _stream_of(stream, type="alert.carrier_lost"), 10,
                          what="carrier_lost alert on the stream")
        assert alerts[0]["severity"] == "error" and alerts[0]["job_id"] == "j-1"
        staff = wait_for(lambda: [a for a in tube.gw.get("/alerts") if a["key"] == "tube.lost:j-1"], 10,
                         what="staff alert for the lost carrier")
        assert staff[0]["severity"] == "critical" and staff[0]["state"] == "open"
        blocked = tube.line()["blocked"]
        assert {"seg:T1", "seg:T2"} <= set(blocked) and blocked["seg:T2"] == "j-1"
        wait_for(lambda: tube.air("stockroom") == 0 and tube.air("floor-mens") == 0, T,
                 what="air stopped after the loss")
        # the blocked line takes nothing from the stockroom...
        tube.dispatch("j-2", "stockroom", "floor-womens", item="WAIT")
        # ...but a route that does not share the blocked span keeps working
        tube.dispatch("j-3", "floor-mens", "fitting-rooms", item="OTHER")
        tube.send("floor-mens", "OTHER")
        tube.wait_state("j-3", "arrived")
        tube.take("fitting-rooms")
        tube.wait_state("j-3", "delivered")
        assert tube.job("j-2")["state"] == "queued" and "routing" not in tube.states("j-2")
        # staff find the carrier, bring it back and clear the jam: the dispatch is resent once
        assert tube.model.retrieve_stuck() == 1
        r = httpx.post(f"{tube.gw.url}/tube/jams/j-1/clear", timeout=30)
        assert r.status_code == 200, r.text
        assert any(c.get("kind") == "jam_cleared" for c in r.json()["changes"])
        assert httpx.post(f"{tube.gw.url}/tube/jams/T4/clear", timeout=30).status_code == 409
        assert not tube.line()["blocked"]
        wait_for(lambda: [a for a in tube.gw.get("/alerts", state="resolved") if a["key"] == "tube.lost:j-1"],
                 10, what="the staff alert resolved by the clear")
        tube.send("stockroom", "JAM")
        tube.wait_state("j-1", "arrived")
        tube.take("floor-mens")
        done = tube.wait_state("j-1", "delivered")
        assert done["attempt"] == 2
        tube.send("stockroom", "WAIT")
        tube.wait_state("j-2", "arrived")
        tube.take("floor-womens")
        tube.wait_state("j-2", "delivered")
    assert [x[1:] for x in tube.model.arrivals].count(("stockroom", "floor-mens")) == 1


def test_door_opened_mid_transit_holds_the_carrier_until_it_closes(tube):
    tube.dispatch("h-1", "stockroom", "fitting-rooms", item="HOLD")
    tube.send("stockroom", "HOLD")
    wait_for(lambda: tube.model.in_tube(), T, what="carrier in the tube")
    tube.rig.open_door(DEV["fitting-rooms"])
    # the destination station cuts its air at once (its own rule), the gateway holds the dispatch
    cut = wait_for(lambda: tube.gw.events(DEV["fitting-rooms"], "air.cut"), T, what="air.cut reported")
    assert cut[0]["body"]["reason"] == "door-open" and cut[0]["body"]["job"] == "h-1"
    tube.wait_state("h-1", "held")
    wait_for(lambda: tube.air("stockroom") == 0 and tube.air("fitting-rooms") == 0, T,
             what="no air while the destination door is open")
    stopped = tube.model.in_tube()
    assert stopped, "the carrier stays in the tube"
    d0 = stopped[0].dist
    # the station refuses air while its door is open, whoever asks
    r = httpx.post(f"{tube.gw.url}/devices/{DEV['fitting-rooms']}/commands", json={
        "name": "air", "args": {"on": True, "dir": "blow", "role": "destination", "job": "x"},
        "idempotency_key": "door-test-1", "timeout_s": 10}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["reason"] == "door-open", r.text
    assert tube.model.in_tube()[0].dist == d0 and tube.air("fitting-rooms") == 0
    tube.rig.close_door(DEV["fitting-rooms"])
    tube.wait_state("h-1", "arrived")
    tube.take("fitting-rooms")
    job = tube.wait_state("h-1", "delivered")
    states = [s for _, s, _ in job["history"]]
    assert states.index("held") < states.index("arrived")
    assert len(tube.model.arrivals) == 1


def test_estop_stops_the_air_and_the_dispatch_resumes_on_release(tube):
    tube.dispatch("e-1", "stockroom", "floor-womens", item="ESTOP")
    tube.send("stockroom", "ESTOP")
    wait_for(lambda: tube.model.in_tube(), T, what="carrier in the tube")
    tube.rig.estop(DEV["stockroom"], True)
    tube.wait_state("e-1", "held")
    wait_for(lambda: tube.air("stockroom") == 0 and tube.air("floor-womens") == 0, T,
             what="air off on e-stop")
    assert tube.line()["estop"] is True
    tube.rig.estop(DEV["stockroom"], False)
    tube.wait_state("e-1", "arrived")
    tube.take("floor-womens")
    tube.wait_state("e-1", "delivered")
    assert tube.line()["estop"] is False


def test_stuck_diverter_times_out_and_staff_return_it_to_service(tube):
    tube.model.stick_diverter("DV1")  # rests at `womens`: a floor-mens route needs `through`
    tube.dispatch("v-1", "stockroom", "floor-mens", item="DIV")
    tube.send("stockroom", "DIV")
    wait_for(lambda: "div:DV1" in tube.line()["blocked"], T, what="DV1 out of service")
    assert tube.job("v-1")["state"] == "queued" and "routing" in tube.states("v-1")
    assert tube.gw.events("tube-line", "diverter.fault")
    tube.model.stick_diverter("DV1", False)
    r = httpx.post(f"{tube.gw.url}/tube/jams/DV1/clear", timeout=30)
    assert r.status_code == 200, r.text
    tube.wait_state("v-1", "arrived")
    tube.take("floor-mens")
    tube.wait_state("v-1", "delivered")


def test_gateway_restart_mid_transit_neither_loses_nor_duplicates(tube):
    tube.dispatch("g-1", "stockroom", "fitting-rooms", item="RESTART")
    tube.send("stockroom", "RESTART")
    wait_for(lambda: tube.model.in_tube(), T, what="carrier in the tube")
    tube.gw.kill()  # mid-transit; the devices keep their air, journal their events
    wait_for(lambda: tube.model.arrivals, T, what="the carrier arrives while the gateway is down")
    # the station saw it (its display says so) before someone takes it out
    wait_for(lambda: "Carrier arrived" in tube.display("fitting-rooms"), T, what="arrival seen by the station")
    tube.take("fitting-rooms")
    tube.gw.start()
    job = tube.wait_state("g-1", "delivered", timeout=60)
    assert len(tube.model.arrivals) == 1
    assert [j["job"] for j in tube.gw.get("/tube/dispatches")] == ["g-1"]
    assert [s for _, s, _ in job["history"]].count("delivered") == 1
    # air was switched on once at each end: the restart re-sent nothing that actuated again
    assert tube.rig.rises(DEV["stockroom"], "air") == 1
    assert tube.rig.rises(DEV["fitting-rooms"], "air") == 1
    wait_for(lambda: tube.air("stockroom") == 0 and tube.air("fitting-rooms") == 0, T,
             what="air off after the replayed arrival")
