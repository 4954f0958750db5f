"""Tube arbiter (gateway/kinds/tube/core.py): pure core, driven by hand and by a simulated world.

Reference network: boards/tube/store-demo.json

    stockroom ──T1── DV1 ──T2── DV2 ──T4── fitting-rooms
                      │          │
                      T3         T5
                      │          │
                floor-womens  floor-mens

Photo-eyes PE-Tn sit at each segment's `to` end: T1 at the stockroom, T2 at DV2, T3/T4/T5 at
their stations.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.kinds.tube.core import (
    ARRIVED,
    CANCELLED,
    DELIVERED,
    FAILED,
    FINAL_STATES,
    HELD,
    IN_TRANSIT,
    LOST,
    QUEUED,
    ROUTING,
    Alert,
    ArbiterPolicy,
    DispatchRequest,
    InvalidCommand,
    InvalidJob,
    JobUpdate,
    LoadCarrier,
    NetworkConfigError,
    SetDiverter,
    StartBlower,
    StopBlower,
    TubeArbiter,
    TubeNetwork,
)
from hil.sim.tube_world import TubeWorld

CONFIG = json.loads((Path(__file__).resolve().parents[4] / "boards" / "tube" / "store-demo.json").read_text())
NET = TubeNetwork.from_dict(CONFIG)
STATIONS = sorted(NET.stations)


def req(job_id, origin="stockroom", dest="fitting-rooms", priority="customer", created=0.0):
    return DispatchRequest(job_id, origin, dest, priority, f"SKU-{job_id}", created)


def of(actions, cls, **match):
    return [a for a in actions if isinstance(a, cls) and all(getattr(a, k) == v for k, v in match.items())]


def states(actions, job_id):
    return [a.state for a in actions if isinstance(a, JobUpdate) and a.job_id == job_id]


def send(arb, job_id, origin, now):
    """Staff load the carrier and press send."""
    return arb.on_station(origin, send_ready=True, now=now)


def set_route(arb, actions, now):
    """Confirm every SetDiverter in `actions` at `now`; returns the actions that produced."""
    out = []
    for a in of(actions, SetDiverter):
        out += arb.on_diverter_confirmed(a.diverter_id, a.position, now)
    return out


# ------------------------------------------------------------------------------------------
# network model
# ------------------------------------------------------------------------------------------
def test_reference_network_routes():
    r = NET.route("stockroom", "fitting-rooms")
    assert r.segments == ("T1", "T2", "T4")
    assert [(d, p) for d, p, _ in r.diverter_settings] == [("DV1", "through"), ("DV2", "fitting")]
    assert [c.ref for c in r.checkpoints] == ["PE-T1", "PE-T2", "PE-T4", "fitting-rooms"]
    assert r.direction == "blow" and NET.route("fitting-rooms", "stockroom").direction == "suck"
    assert r.length_m == 41.0
    assert r.transit_s == pytest.approx(1.0 + 41.0 / 7.5)
    assert r.expected_s == pytest.approx(1.5 + 1.0 + 41.0 / 7.5)
    assert NET.route("floor-mens", "fitting-rooms").segments == ("T5", "T4")
    assert len(NET.routes) == 12          # every ordered pair of the 4 stations
    assert TubeNetwork.from_dict(NET.to_dict()).fingerprint == NET.fingerprint


def _broken(mutate):
    cfg = copy.deepcopy(CONFIG)
    mutate(cfg)
    with pytest.raises(NetworkConfigError) as e:
        TubeNetwork.from_dict(cfg)
    return e.value


def test_config_unknown_node_names_the_field():
    e = _broken(lambda c: c["segments"][2].update(to="floor-kids"))
    assert e.field == "segments[2].to" and "unknown node 'floor-kids'" in str(e)


def test_config_duplicate_id_names_both():
    e = _broken(lambda c: c["diverters"][1].update(id="DV1"))
    assert e.field == "diverters[1].id" and "duplicate id 'DV1'" in str(e) and "diverters[0].id" in str(e)
    e = _broken(lambda c: c["segments"][1].update(eye="PE-T1"))
    assert e.field == "segments[1].eye"


def test_config_disconnected_station():
    def no_tube(c):
        c["stations"].append({"id": "floor-kids", "zone": "floor-3", "kind": "floor"})
    e = _broken(no_tube)
    assert e.field == "stations[4]" and "disconnected" in str(e)

    def no_position(c):  # T3 still ends at DV1 but no position reaches it
        c["diverters"][0]["positions"] = {"through": ["T1", "T2"]}
    e = _broken(no_position)
    assert e.field == "diverters[0].positions" and "'T3'" in str(e)

    def island(c):       # a floor station on its own tube to another floor station
        c["stations"] += [{"id": "a", "zone": "x", "kind": "floor"}, {"id": "b", "zone": "x", "kind": "floor"}]
        c["segments"].append({"id": "T9", "from": "a", "to": "b", "length_m": 3, "eye": "PE-T9"})
    e = _broken(island)
    assert e.field == "stations[4]" and "no route 'a' -> 'stockroom'" in str(e)


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c["stations"][0].update(kind="office"), "stations[0].kind"),
    (lambda c: c["segments"][0].update(length_m=0), "segments[0].length_m"),
    (lambda c: c["segments"][0].pop("eye"), "segments[0].eye"),
    (lambda c: c["blower"].pop("speed_m_s"), "blower.speed_m_s"),
    (lambda c: c["diverters"][0]["positions"].update(womens=["T1", "T4"]), "diverters[0].positions.womens"),
    (lambda c: c["diverters"][0].update(travel_time_s=-1), "diverters[0].travel_time_s"),
    (lambda c: c["stations"].__setitem__(0, {**c["stations"][0], "kind": "floor"}), "stations"),
    (lambda c: c["segments"].append({"id": "T6", "from": "DV2", "to": "floor-mens", "length_m": 4, "eye": "PE-T6"}),
     "stations[2]"),
])
def test_config_errors_name_the_field(mutate, field):
    assert _broken(mutate).field == field


# ------------------------------------------------------------------------------------------
# one dispatch by hand
# ------------------------------------------------------------------------------------------
def test_end_to_end_dispatch_with_diverters():
    arb = TubeArbiter(NET)
    out = arb.submit(req("J1"), 0.0)
    assert states(out, "J1") == [QUEUED]
    assert of(out, LoadCarrier) == [LoadCarrier("stockroom", "J1", "SKU-J1", "fitting-rooms", "J1/1/1")]

    out = send(arb, "J1", "stockroom", 8.0)
    assert states(out, "J1") == [QUEUED, ROUTING]
    assert {(a.diverter_id, a.position) for a in of(out, SetDiverter)} == {("DV1", "through"), ("DV2", "fitting")}
    assert not of(out, StartBlower)

    out = arb.on_diverter_confirmed("DV1", "through", 9.0)
    assert not of(out, StartBlower), "blower must wait for every diverter"
    out = arb.on_diverter_confirmed("DV2", "mens", 9.1)          # wrong position: still waiting
    assert not of(out, StartBlower)
    out = arb.on_diverter_confirmed("DV2", "fitting", 9.2)
    (start,) = of(out, StartBlower)
    assert start.route == ("T1", "T2", "T4") and start.direction == "blow"
    assert states(out, "J1") == [IN_TRANSIT]
    assert arb.job("J1").resources == ("div:DV1", "div:DV2", "recv:fitting-rooms",
                                       "seg:T1", "seg:T2", "seg:T4", "send:stockroom")

    out = arb.on_photo_eye("PE-T1", 10.2)                          # left the stockroom
    assert arb.job("J1").departed and "send:stockroom" not in arb.reservations()
    out = arb.on_photo_eye("PE-T2", 14.6) + arb.on_photo_eye("PE-T4", 15.7)
    assert not of(out, Alert)
    out = arb.on_station("fitting-rooms", carrier_present=True, now=15.7)
    assert states(out, "J1") == [ARRIVED] and len(of(out, StopBlower)) == 1
    assert arb.reservations() == {"recv:fitting-rooms": "J1"}      # bin stays taken until emptied
    out = arb.on_station("fitting-rooms", carrier_present=False, now=21.0)
    assert states(out, "J1") == [DELIVERED]
    assert arb.reservations() == {}


def test_duplicate_submit_is_idempotent_and_bad_jobs_are_refused():
    arb = TubeArbiter(NET)
    arb.submit(req("J1"), 0.0)
    again = arb.submit(req("J1"), 1.0)
    assert again == [JobUpdate("J1", QUEUED, "duplicate submit: already known")]
    with pytest.raises(InvalidJob, match="different dispatch"):
        arb.submit(req("J1", dest="floor-mens"), 1.0)
    with pytest.raises(InvalidJob, match="unknown station 'attic'"):
        arb.submit(req("J2", dest="attic"), 1.0)
    with pytest.raises(InvalidJob, match="priority 'vip'"):
        arb.submit(req("J3", priority="vip"), 1.0)
    with pytest.raises(InvalidJob, match="both 'stockroom'"):
        arb.submit(req("J4", dest="stockroom"), 1.0)


# ------------------------------------------------------------------------------------------
# contention, priority, ageing (simulated world)
# ------------------------------------------------------------------------------------------
def _intervals(world, job):
    t = {u.state: tt for tt, u in reversed(world.updates) if u.job_id == job}
    return t[ROUTING], t[ARRIVED]


def test_shared_segment_is_serialized_and_both_delivered():
    world = TubeWorld(TubeArbiter(NET))
    world.submit(req("A", "fitting-rooms", "stockroom", "replenishment"))   # T4 T2 T1
    world.submit(req("B", "floor-mens", "floor-womens", "replenishment"))   # T5 T2 T3: shares T2
    world.submit(req("C", "stockroom", "floor-womens", "customer"))         # T1 T3: shares with both
    world.run()
    assert world.violations == []
    assert {world.state[j] for j in "ABC"} == {DELIVERED}
    a, b, c = (_intervals(world, j) for j in "ABC")
    for x, y in ((a, b), (a, c), (b, c)):
        assert x[1] <= y[0] or y[1] <= x[0], "dispatches sharing a segment overlapped"


def test_disjoint_routes_run_at_the_same_time():
    world = TubeWorld(TubeArbiter(NET))
    world.submit(req("A", "stockroom", "floor-womens"))      # T1 T3
    world.submit(req("B", "floor-mens", "fitting-rooms"))    # T5 T4
    world.run()
    a, b = _intervals(world, "A"), _intervals(world, "B")
    assert a[0] < b[1] and b[0] < a[1], "independent routes should overlap in time"
    assert world.violations == []


def test_customer_before_replenishment():
    world = TubeWorld(TubeArbiter(NET))
    world.submit(req("R0", priority="replenishment"), at=0.0)              # takes the send chamber
    world.submit(req("R1", priority="replenishment", created=1.0), at=1.0)
    world.submit(req("C1", priority="customer", created=2.0), at=2.0)
    world.run()
    loads = [a.job_id for _, a in world.actions if isinstance(a, LoadCarrier)]
    assert loads == ["R0", "C1", "R1"]
    assert [u.job_id for _, u in world.updates if u.state == DELIVERED] == ["R0", "C1", "R1"]


def test_customer_wins_the_line_between_origins():
    arb = TubeArbiter(NET)
    arb.submit(req("R", "floor-mens", "stockroom", "replenishment"), 0.0)          # T5 T2 T1
    arb.submit(req("C", "stockroom", "floor-mens", "customer", created=0.5), 0.5)  # T1 T2 T5
    arb.on_estop(True, 1.0)                     # hold the line while both get loaded
    send(arb, "R", "floor-mens", 9.0)
    send(arb, "C", "stockroom", 9.0)
    out = arb.on_estop(False, 10.0)
    assert [a.job_id for a in of(out, JobUpdate, state=ROUTING)] == ["C"]


def test_ageing_bounds_how_long_replenishment_waits():
    """Effective priority = class (customer 1, replenishment 0) + waiting time / ageing_s.
    So a customer job created more than ageing_s after a replenishment job never overtakes it."""
    policy = ArbiterPolicy(ageing_s=60.0)
    world = TubeWorld(TubeArbiter(NET, policy), load_s=8.0, unload_s=5.0)
    world.submit(req("C-first", created=0.0), at=0.0)             # has the send chamber
    world.submit(req("R", priority="replenishment", dest="floor-womens", created=0.0), at=0.0)
    for i in range(60):                          # a customer request every 4 s: more than the line can do
        t = 0.5 + 4.0 * i
        world.submit(req(f"C{i:02d}", dest=["fitting-rooms", "floor-mens"][i % 2], created=t), at=t)
    world.run()
    assert world.violations == []
    loads = [(t, a.job_id) for t, a in world.actions if isinstance(a, LoadCarrier)]
    order = [j for _, j in loads]
    r_at = order.index("R")
    overtook = order[1:r_at]
    assert overtook and all(j.startswith("C") for j in overtook)   # customers did go first...
    created = {f"C{i:02d}": 0.5 + 4.0 * i for i in range(60)}
    assert max(created[j] for j in overtook) <= 0.0 + policy.ageing_s  # ...but only those within 60 s
    assert world.state["R"] == DELIVERED
    # bound: R waits at most for the jobs created before created(R) + ageing_s
    assert world.times(DELIVERED)["R"] < 0.0 + policy.ageing_s + 20.0 * len(overtook)


def test_higher_ranked_job_claims_its_route_against_lower_ones():
    """A ready job that cannot start because part of its route is busy keeps lower-ranked jobs
    off the rest of it, so long routes are not starved by a stream of short ones."""
    arb = TubeArbiter(NET)
    for j, o, d, p in (("X", "floor-mens", "fitting-rooms", "customer"),     # T5 T4
                       ("Y", "stockroom", "floor-mens", "customer"),         # T1 T2 T5 (waits for X)
                       ("Z", "floor-womens", "fitting-rooms", "replenishment")):  # T3 T2 T4
        arb.submit(req(j, o, d, p), 0.0)
    assert of(send(arb, "X", "floor-mens", 1.0), JobUpdate, state=ROUTING)
    send(arb, "Y", "stockroom", 2.0)
    out = send(arb, "Z", "floor-womens", 3.0)
    assert not of(out, JobUpdate, state=ROUTING), "Z would take T2 that Y (higher rank) waits for"


# ------------------------------------------------------------------------------------------
# jams
# ------------------------------------------------------------------------------------------
def _launch(arb, job, origin, dest, t, priority="customer"):
    arb.submit(req(job, origin, dest, priority, created=t), t)
    out = send(arb, job, origin, t)
    out += set_route(arb, out, t)
    assert of(out, StartBlower, job_id=job)
    return out


def test_jam_detected_at_the_window_blocks_only_its_span_then_staff_recover():
    arb = TubeArbiter(NET)
    _launch(arb, "J1", "stockroom", "fitting-rooms", 0.0)       # blower on at 0.0
    arb.on_photo_eye("PE-T1", 1.0)                               # departed
    # next hop PE-T1 -> PE-T2: 33 m / 7.5 m/s = 4.4 s; window 4.4 * 1.5 + 2 = 8.6 s
    assert not arb.tick(1.0 + 8.6)
    out = arb.tick(1.0 + 8.6 + 1e-6)
    assert states(out, "J1") == [LOST]
    assert of(out, StopBlower, job_id="J1")
    (alert,) = of(out, Alert, kind="carrier_lost")
    assert alert.severity == "error" and alert.segment_ids == ("T1", "T2")
    # the carrier is somewhere between PE-T1 and PE-T2: T1, DV1, T2 blocked; T4 and DV2 free
    assert set(arb.blocked()) == {"seg:T1", "seg:T2", "div:DV1"}

    # a route sharing the blocked span waits; one that does not share it runs
    out = _launch(arb, "K", "floor-mens", "fitting-rooms", 11.0)            # T5 T4 via DV2
    out = arb.submit(req("L", "floor-womens", "stockroom", created=11.0), 11.0)  # T3 T1: blocked
    assert not of(out, LoadCarrier, job_id="L"), "no point loading a carrier for a blocked route"
    for eye, t in (("PE-T5", 12.0), ("PE-T4", 14.4)):
        arb.on_photo_eye(eye, t)
    arb.on_station("fitting-rooms", carrier_present=True, now=14.4)
    assert states(arb.on_station("fitting-rooms", carrier_present=False, now=18.0), "K") == [DELIVERED]
    assert arb.job("L").state == QUEUED

    # an unexpected eye on the blocked span is reported, not taken for someone else's carrier
    out = arb.on_photo_eye("PE-T2", 19.0)
    assert of(out, Alert, kind="unexpected_carrier")

    # staff find the carrier, bring it back, clear: resend (attempt 2), line free again
    out = arb.clear_jam("T2", 60.0)
    assert states(out, "J1") == [QUEUED] and arb.job("J1").attempt == 2
    assert arb.blocked() == {}
    assert {a.job_id for a in of(out, LoadCarrier)} == {"J1", "L"}   # L's route is open again too
    assert arb.job("J1").reason.startswith("resend 2/2")


def test_second_loss_fails_the_job_and_alerts_staff():
    arb = TubeArbiter(NET)
    _launch(arb, "J1", "stockroom", "floor-womens", 0.0)
    arb.tick(100.0)                                                     # never seen at all
    assert arb.job("J1").state == LOST
    assert "send:stockroom" in arb.blocked(), "not departed: may still be in the send chamber"
    arb.clear_jam("J1", 120.0)
    out = send(arb, "J1", "stockroom", 130.0)
    out += set_route(arb, out, 131.0)
    assert of(out, StartBlower, job_id="J1")
    arb.on_photo_eye("PE-T1", 132.0)
    out = arb.tick(200.0)
    assert states(out, "J1") == [FAILED]
    (alert,) = of(out, Alert, kind="job_failed")
    assert alert.severity == "error"
    assert arb.blocked(), "the line stays blocked until staff clear it"
    out = arb.clear_jam("J1", 300.0)
    assert arb.blocked() == {} and arb.job("J1").state == FAILED
    assert not of(out, JobUpdate), "a failed job stays failed"
    assert arb.clear_jam("J1", 301.0) == []                          # idempotent
    with pytest.raises(InvalidCommand, match="is delivered: nothing to clear"):
        _launch(arb, "J2", "floor-mens", "fitting-rooms", 400.0)
        arb.on_photo_eye("PE-T5", 401.0)
        arb.on_photo_eye("PE-T4", 403.4)
        arb.on_station("fitting-rooms", carrier_present=True, now=403.4)
        arb.on_station("fitting-rooms", carrier_present=False, now=404.0)
        arb.clear_jam("J2", 405.0)


def test_clear_without_resend_cancels():
    arb = TubeArbiter(NET)
    _launch(arb, "J1", "stockroom", "floor-womens", 0.0)
    arb.tick(100.0)
    out = arb.clear_jam("J1", 101.0, resend=False)
    assert states(out, "J1") == [CANCELLED]


def test_refused_command_still_returns_what_time_produced():
    arb = TubeArbiter(NET)
    _launch(arb, "J1", "stockroom", "floor-womens", 0.0)
    with pytest.raises(InvalidCommand) as e:
        arb.cancel("J1", 100.0)          # in the tube: cannot cancel; but at 100 s it is lost
    assert [a.state for a in e.value.actions if isinstance(a, JobUpdate)] == [LOST]


def test_diverter_timeout_faults_it_and_requeues_then_recovers():
    arb = TubeArbiter(NET)
    arb.submit(req("J1", dest="floor-womens"), 0.0)
    send(arb, "J1", "stockroom", 1.0)                        # DV1 -> womens; window 1.5*1.5+2
    out = arb.tick(1.0 + 4.25 + 1e-6)
    assert of(out, Alert, kind="diverter_timeout", diverter_id="DV1")
    assert states(out, "J1") == [QUEUED] and arb.job("J1").loaded
    assert arb.blocked() == {"div:DV1": "fault: did not confirm 'womens' for job J1"}
    out = arb.on_diverter_confirmed("DV1", "womens", 10.0)   # late report: back in service
    assert of(out, Alert, kind="diverter_recovered")
    # its report is the position J1 needs: routed and started at once, nothing sent again
    assert states(out, "J1") == [ROUTING, IN_TRANSIT] and not of(out, SetDiverter)
    assert of(out, StartBlower, job_id="J1")


def test_a_diverter_that_recovers_elsewhere_is_set_and_awaited():
    arb = TubeArbiter(NET)
    arb.submit(req("J1", dest="floor-womens"), 0.0)
    send(arb, "J1", "stockroom", 1.0)
    arb.tick(1.0 + 4.25 + 1e-6)
    out = arb.on_diverter_confirmed("DV1", "through", 10.0)  # back, but not where J1 goes
    assert states(out, "J1") == [ROUTING] and not of(out, StartBlower)
    assert of(out, SetDiverter, diverter_id="DV1", position="womens")
    out = arb.on_diverter_confirmed("DV1", "womens", 10.5)
    assert of(out, StartBlower, job_id="J1")


def test_diverter_that_moves_after_confirming_is_set_again_or_holds_the_carrier():
    arb = TubeArbiter(NET)
    arb.submit(req("J1"), 0.0)
    out = send(arb, "J1", "stockroom", 1.0)
    arb.on_diverter_confirmed("DV1", "through", 2.0)
    out = arb.on_diverter_confirmed("DV1", "womens", 2.1)       # moved on its own before the start
    assert not of(out, StartBlower)
    out = arb.on_diverter_confirmed("DV2", "fitting", 2.2)
    assert of(out, SetDiverter, diverter_id="DV1", position="through") and not of(out, StartBlower)
    out = arb.on_diverter_confirmed("DV1", "through", 3.5)
    assert of(out, StartBlower)
    arb.on_photo_eye("PE-T1", 4.5)
    out = arb.on_diverter_confirmed("DV2", "mens", 5.0)          # ahead of the carrier: hold
    assert states(out, "J1") == [HELD] and of(out, Alert, kind="diverter_moved", severity="error")
    out = arb.on_diverter_confirmed("DV2", "fitting", 6.0)
    assert states(out, "J1") == [IN_TRANSIT]
    out = arb.on_diverter_confirmed("DV2", "sideways", 6.5)
    assert of(out, Alert, kind="unknown_position") and states(out, "J1") == [HELD]


def test_free_diverters_are_prepositioned_while_staff_load():
    arb = TubeArbiter(NET)
    out = arb.submit(req("J1", dest="floor-mens"), 0.0)
    assert {(a.diverter_id, a.position) for a in of(out, SetDiverter)} == {("DV1", "through"), ("DV2", "mens")}
    assert arb.reservations() == {"send:stockroom": "J1"}        # moved, not reserved
    arb.on_diverter_confirmed("DV1", "through", 1.5)
    arb.on_diverter_confirmed("DV2", "mens", 1.2)
    out = send(arb, "J1", "stockroom", 8.0)
    # both report the route's positions and nothing else was asked of them since: routing
    # neither sends nor awaits them again (a device round trip saved on the line, issue 18)
    assert not of(out, SetDiverter) and of(out, StartBlower, job_id="J1")
    assert states(out, "J1")[-1] == IN_TRANSIT


def test_a_diverter_asked_elsewhere_since_its_report_is_awaited_again():
    arb = TubeArbiter(NET)
    arb.submit(req("J1", dest="floor-mens", priority="replenishment"), 0.0)  # DV1 through, DV2 mens
    arb.on_diverter_confirmed("DV1", "through", 1.5)
    arb.on_diverter_confirmed("DV2", "mens", 1.2)
    out = arb.submit(req("J0", origin="floor-mens", dest="fitting-rooms"), 1.6)  # outranks J1
    assert of(out, SetDiverter, diverter_id="DV2", position="cross")  # pre-positioned for J0
    out = send(arb, "J1", "stockroom", 8.0)
    # DV2 reported mens, but cross was asked of it after that report: J1 sets it and waits
    assert of(out, SetDiverter, diverter_id="DV2", position="mens") and not of(out, StartBlower)
    out = arb.on_diverter_confirmed("DV2", "mens", 9.0)
    assert of(out, StartBlower, job_id="J1")
    assert not of(TubeArbiter(NET, ArbiterPolicy(preposition=False)).submit(req("J1"), 0.0), SetDiverter)


# ------------------------------------------------------------------------------------------
# doors, bins, e-stop
# ------------------------------------------------------------------------------------------
def test_destination_door_open_or_bin_full_means_not_started():
    arb = TubeArbiter(NET)
    arb.on_station("floor-mens", door_open=True, now=0.0)
    arb.submit(req("J1", dest="floor-mens"), 0.0)
    out = send(arb, "J1", "stockroom", 8.0)
    assert states(out, "J1") == [QUEUED, ] and arb.job("J1").loaded
    out = arb.on_station("floor-mens", door_open=False, carrier_present=True, now=9.0)   # now the bin
    assert not of(out, JobUpdate, state=ROUTING)
    out = arb.on_station("floor-mens", carrier_present=False, now=10.0)
    assert states(out, "J1") == [ROUTING]


def test_destination_door_opened_mid_transit_holds_then_resumes():
    arb = TubeArbiter(NET, ArbiterPolicy(hold_alert_s=30.0))
    first = _launch(arb, "J1", "stockroom", "fitting-rooms", 0.0)
    arb.on_photo_eye("PE-T1", 1.0)
    out = arb.on_station("fitting-rooms", door_open=True, now=2.0)
    assert states(out, "J1") == [HELD] and of(out, StopBlower)
    assert not arb.tick(31.9) and arb.job("J1").state == HELD         # held: no loss while stopped
    (alert,) = of(arb.tick(32.1), Alert, kind="hold_timeout")
    assert alert.severity == "error"
    out = arb.on_station("fitting-rooms", door_open=False, now=40.0)
    assert states(out, "J1") == [IN_TRANSIT]
    (start,) = of(out, StartBlower)
    assert start.command_id != of(first, StartBlower)[0].command_id, "a new actuation has a new id"
    # fresh window from the resume: spin-up + 33 m
    assert not arb.tick(40.0 + (1.0 + 33 / 7.5) * 1.5 + 2.0)
    arb.on_photo_eye("PE-T2", 46.0)
    arb.on_photo_eye("PE-T4", 47.1)
    assert states(arb.on_station("fitting-rooms", carrier_present=True, now=47.1), "J1") == [ARRIVED]


def test_foreign_carrier_in_the_bin_before_arrival_holds():
    arb = TubeArbiter(NET)
    _launch(arb, "J1", "stockroom", "fitting-rooms", 0.0)
    arb.on_photo_eye("PE-T1", 1.0)
    out = arb.on_station("fitting-rooms", carrier_present=True, now=2.0)   # ours is still in T2
    assert of(out, Alert, kind="destination_occupied") and states(out, "J1") == [HELD]
    out = arb.on_station("fitting-rooms", carrier_present=False, now=5.0)
    assert states(out, "J1") == [IN_TRANSIT]


def test_origin_door_after_departure_depends_on_policy():
    for policy, held in ((ArbiterPolicy(), False), (ArbiterPolicy(origin_door="whole_transit"), True)):
        arb = TubeArbiter(NET, policy)
        _launch(arb, "J1", "stockroom", "fitting-rooms", 0.0)
        out = arb.on_station("stockroom", door_open=True, now=0.5)        # before departure: always held
        assert states(out, "J1") == [HELD]
        arb.on_station("stockroom", door_open=False, now=0.6)
        arb.on_photo_eye("PE-T1", 1.6)
        out = arb.on_station("stockroom", door_open=True, now=2.0)        # loading the next carrier
        assert (states(out, "J1") == [HELD]) is held


def test_estop_holds_everything_and_starts_nothing():
    arb = TubeArbiter(NET)
    _launch(arb, "A", "stockroom", "floor-womens", 0.0)
    arb.submit(req("B", "floor-mens", "fitting-rooms"), 0.0)
    out = arb.on_estop(True, 0.5, source="stockroom button")
    assert states(out, "A") == [HELD] and of(out, StopBlower, job_id="A") and of(out, Alert, kind="estop")
    out = send(arb, "B", "floor-mens", 1.0)
    assert not of(out, JobUpdate, state=ROUTING)
    out = arb.on_estop(False, 5.0)
    assert states(out, "A") == [IN_TRANSIT] and states(out, "B") == [ROUTING]


# ------------------------------------------------------------------------------------------
# persistence
# ------------------------------------------------------------------------------------------
def test_snapshot_round_trip_is_exact():
    world = TubeWorld(TubeArbiter(NET))
    world.submit(req("A", "stockroom", "fitting-rooms"))
    world.submit(req("B", "floor-mens", "stockroom", "replenishment"))
    world.run_until(10.0)
    snap = json.loads(json.dumps(world.arbiter.to_dict()))
    restored = TubeArbiter.from_dict(NET, snap)
    assert restored.to_dict() == snap
    other = json.loads(json.dumps(CONFIG))
    other["segments"][0]["length_m"] = 19.0
    with pytest.raises(ValueError, match="different network config"):
        TubeArbiter.from_dict(TubeNetwork.from_dict(other), snap)


def test_gateway_restart_mid_transit_delivers_once():
    world = TubeWorld(TubeArbiter(NET))
    world.submit(req("J1", "stockroom", "fitting-rooms"))
    world.submit(req("J2", "floor-mens", "floor-womens", "replenishment"))
    world.run_until(10.0)                              # J1 started at 9.5: in the tube
    assert world.state["J1"] == IN_TRANSIT
    snap = json.dumps(world.arbiter.to_dict())         # what the gateway persisted
    world.gateway_down()
    world.run_until(18.0)                              # J1 arrives while the gateway is down
    assert world.arrivals["J1"] == 1 and world.state["J1"] == IN_TRANSIT
    world.gateway_up(TubeArbiter.from_dict(NET, json.loads(snap)))
    world.run()
    assert world.violations == []
    for j in ("J1", "J2"):
        assert [u.state for _, u in world.updates if u.job_id == j].count(DELIVERED) == 1
        assert world.arrivals[j] == 1
    starts = [a for _, a in world.actions if isinstance(a, StartBlower) and a.job_id == "J1"]
    assert len(starts) == 2 and starts[0].command_id == starts[1].command_id, \
        "resume re-emits the same command id (the device dedupes it)"


def test_release_behind_frees_what_the_carrier_passed():
    arb = TubeArbiter(NET, ArbiterPolicy(reservation="release_behind"))
    _launch(arb, "J1", "stockroom", "fitting-rooms", 0.0)
    arb.on_photo_eye("PE-T1", 1.0)
    assert "seg:T1" in arb.reservations()              # PE-T1 is at the stockroom end
    arb.on_photo_eye("PE-T2", 5.4)                     # past DV1 and all of T1
    held = set(arb.reservations())
    assert "seg:T1" not in held and "div:DV1" not in held and {"seg:T2", "seg:T4", "div:DV2"} <= held


# ------------------------------------------------------------------------------------------
# property tests: random submissions, doors, e-stops, cancels, restarts; invariants every step
# ------------------------------------------------------------------------------------------
PAIRS = [(a, b) for a in STATIONS for b in STATIONS if a != b]
SUBMIT = st.tuples(st.just("submit"), st.sampled_from(PAIRS), st.sampled_from(["customer", "replenishment"]))
OPS = st.one_of(
    SUBMIT, SUBMIT,
    st.tuples(st.just("wait"), st.floats(0.0, 30.0)),
    st.tuples(st.just("door"), st.sampled_from(STATIONS), st.floats(0.1, 45.0)),
    st.tuples(st.just("estop"), st.floats(0.1, 20.0)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("restart"), st.floats(0.0, 25.0)),
)
FAULT_OPS = st.one_of(OPS, st.tuples(st.just("stick"), st.sampled_from(sorted(NET.diverters))))
POLICIES = st.builds(ArbiterPolicy, reservation=st.sampled_from(["route", "release_behind"]),
                     origin_door=st.sampled_from(["until_departure", "whole_transit"]),
                     ageing_s=st.sampled_from([30.0, 120.0]))


def _check_step(world: TubeWorld) -> None:
    arb = world.arbiter
    seen: dict[str, str] = {}
    for j in arb.jobs():
        for r in j.resources:
            assert r not in seen, f"{r} held by {seen[r]} and {j.request.id}"
            seen[r] = j.request.id
        if j.state in (IN_TRANSIT, HELD) and arb.policy.reservation == "route":   # whole route, all the way
            route = NET.route(j.request.origin, j.request.destination)
            assert {f"seg:{x}" for x in route.segments} <= set(j.resources)
            assert {f"div:{x}" for x in route.diverters} <= set(j.resources)
        if j.state == IN_TRANSIT:      # the arbiter never keeps air on with a protected door open
            assert not arb.station_state(j.request.destination)["door_open"]
            if not j.departed or arb.policy.origin_door == "whole_transit":
                assert not arb.station_state(j.request.origin)["door_open"]
    assert not world.violations, world.violations


def _play(ops, policy, world_kw, lose=None):
    world = TubeWorld(TubeArbiter(NET, policy), observe=_check_step, **world_kw)
    ids: list[str] = []
    for op in ops:
        kind = op[0]
        if kind == "submit":
            (o, d), p = op[1], op[2]
            jid = f"J{len(ids)}"
            ids.append(jid)
            if lose:
                for attempt, seg in lose(jid, NET.route(o, d)):
                    world.lose[(jid, attempt)] = seg
            world.submit(DispatchRequest(jid, o, d, p, "item", world.now))
            world.run_until(world.now)
        elif kind == "wait":
            world.run_until(world.now + op[1])
        elif kind == "door":
            world.set_door(op[1], True)
            world.set_door(op[1], False, world.now + op[2])
            world.run_until(world.now)
        elif kind == "estop":
            world.set_estop(True)
            world.set_estop(False, world.now + op[1])
            world.run_until(world.now)
        elif kind == "cancel" and ids:
            world.cancel(ids[op[1] % len(ids)])
            world.run_until(world.now)
        elif kind == "stick":                 # the next move of this diverter never confirms
            world.stuck_diverters.add(op[1])
        elif kind == "restart":
            if any(s in (ROUTING, IN_TRANSIT, HELD) for s in world.state.values()):
                event("restart with a dispatch in the line")
            snap = json.dumps(world.arbiter.to_dict())
            world.gateway_down()
            world.run_until(world.now + op[1])
            world.gateway_up(TubeArbiter.from_dict(NET, json.loads(snap)))
    for s in STATIONS:
        world.set_door(s, False)
    world.set_estop(False)
    world.run(max_t=world.now + 100_000)
    seen = {u.state for _, u in world.updates}
    for s in (HELD, LOST, FAILED, CANCELLED):
        if s in seen:
            event(f"some job {s}")
    if any(a.kind == "diverter_timeout" for _, a in world.alerts):
        event("diverter timeout")
    event(f"jobs: {'1-4' if len(ids) < 5 else '5-9' if len(ids) < 10 else '10+'}")
    return world, ids


def _finals(world, jid):
    return [u.state for _, u in world.updates if u.job_id == jid and u.state in FINAL_STATES]


# TUBE_PROPERTY_EXAMPLES=5000 for a long soak; the default keeps the file well under 20 s.
EXAMPLES = int(os.environ.get("TUBE_PROPERTY_EXAMPLES", "400"))


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.tuples(st.lists(SUBMIT, min_size=1, max_size=6), st.lists(OPS, max_size=40)).map(lambda t: t[0] + t[1]),
       policy=POLICIES, door_on_load=st.booleans(),
       handling=st.sampled_from([(8.0, 5.0), (0.5, 0.5)]))
def test_property_well_behaved_world(ops, policy, door_on_load, handling):
    world, ids = _play(ops, policy, {"load_s": handling[0], "unload_s": handling[1], "door_on_load": door_on_load})
    assert world.violations == []
    for jid in ids:
        st_ = world.arbiter.job(jid).state
        assert st_ in (DELIVERED, CANCELLED), f"{jid} ended {st_}"
        assert _finals(world, jid) == [st_], "exactly one final state, reported once"
        assert LOST not in [u.state for _, u in world.updates if u.job_id == jid]
        assert world.arrivals[jid] == (1 if st_ == DELIVERED else 0)
    assert world.arbiter.reservations() == {} and world.arbiter.blocked() == {}


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.tuples(st.lists(SUBMIT, min_size=1, max_size=6), st.lists(FAULT_OPS, max_size=30))
       .map(lambda t: t[0] + t[1]),
       policy=POLICIES, data=st.data())
def test_property_jams_and_staff_recovery(ops, policy, data):
    def lose(jid, route):
        out = []
        for attempt in (1, 2):
            if data.draw(st.integers(0, 3), label=f"lose {jid} #{attempt}") == 0:
                out.append((attempt, data.draw(st.sampled_from(route.segments))))
        return out

    world, ids = _play(ops, policy, {"load_s": 2.0, "unload_s": 2.0, "clear_jams_after_s": 20.0}, lose=lose)
    assert world.violations == []
    for jid in ids:
        st_ = world.arbiter.job(jid).state
        assert st_ in FINAL_STATES, f"{jid} ended {st_}"
        assert _finals(world, jid) == [st_]
        assert world.arrivals[jid] == (1 if st_ == DELIVERED else 0)
        if st_ == FAILED:
            assert world.attempts[jid] == 2
    assert world.arbiter.blocked() == {}
