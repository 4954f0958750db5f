"""Door-counter scenarios: the real firmware on the rig (virtual in CI: door-1 in
boards/rigs/virtual.json, `stuck_s` 3, `period_s` 2), the real gateway, through the rig
abstraction (docs/door-counter.md). People and things in the doorway are the driver's world
actions (hil/drivers/door_counter.py); what counts is what the gateway's read routes say.

    pytest tests/hil/test_hil_door_counter.py --trace-dir artifacts/traces   # VCD/PNG of each

`test_one_crossing_each_way` also keeps a picture of the two beams for one crossing in each
direction: artifacts/hil/door-counter-crossings.png (and .vcd).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from hil.harness import GatewayProcess, wait_for

pytestmark = pytest.mark.rig_kinds("door-counter")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "hil"


@pytest.fixture
def gw(tmp_path, rig_broker):
    g = GatewayProcess(tmp_path / "gw", rig_broker[1]).start()
    yield g
    g.stop()


@pytest.fixture
def door(rig, gw):
    d = rig.device_of_kind("door-counter")
    d.start()
    gw.wait_online(d.dev, timeout=20)
    return d


def counts(gw, dev) -> dict:
    now = int(time.time() * 1000)
    return gw.get(f"/door-counters/{dev}/counts", **{"from": now - 3600_000, "to": now + 60_000})


def view(gw, dev) -> dict:
    return next(c for c in gw.get("/door-counters") if c["device"] == dev)


def wait_counts(gw, dev, entries: int, exits: int, timeout: float = 30) -> dict:
    def done():
        c = counts(gw, dev)
        return c if (c["entries"], c["exits"]) == (entries, exits) else None
    try:
        return wait_for(done, timeout, what=f"{dev}: {entries} in, {exits} out")
    except AssertionError:
        c = counts(gw, dev)
        raise AssertionError(f"{dev}: wanted {entries} in, {exits} out; the gateway has "
                             f"{c['entries']} in, {c['exits']} out: {gw.events(dev, 'footfall')}") from None


def edges(rig, dev, pin, since: float) -> list[tuple[float, int]]:
    return [(t, v) for t, v in rig.trace.history(dev, pin) if t >= since]


def test_one_crossing_each_way(rig, gw, door):
    t_in = rig.trace.now()
    door.walk_in()
    t_out = rig.trace.now()
    door.walk_out()
    c = wait_counts(gw, door.dev, 1, 1)
    assert all(m["oos_ms"] == 0 for m in c["minutes"])
    assert view(gw, door.dev)["occupancy"] == 0
    # the trace: going in, A breaks first and clears first; going out, B does
    a_in, b_in = edges(rig, door.dev, "beam_a", t_in), edges(rig, door.dev, "beam_b", t_in)
    rise = {p: next(t for t, v in e if v == 1) for p, e in (("a", a_in), ("b", b_in))}
    assert rise["a"] < rise["b"] < t_out
    a_out = [(t, v) for t, v in a_in if t >= t_out]
    b_out = [(t, v) for t, v in b_in if t >= t_out]
    assert next(t for t, v in b_out if v == 1) < next(t for t, v in a_out if v == 1)
    from hil.timeline import write_timeline
    from hil.vcd import write_vcd
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    write_vcd(rig.trace, ARTIFACTS / "door-counter-crossings.vcd")
    try:
        write_timeline(rig.trace, ARTIFACTS / "door-counter-crossings.png")
    except ImportError:  # Pillow missing: the VCD is the picture
        pass


def test_tricky_crossings_count_right_and_staff_reset_the_occupancy(rig, gw, door):
    door.back_to_back(3, "in", gap_ms=10)      # three people one right behind the other
    door.stop_in_beam(1.5)                    # stops in the doorway (under stuck_s), goes in
    door.turn_back()                          # comes as far as both beams and goes back
    door.bag_swing(times=4, ms=10)            # a bag flicks through beam A
    door.walk_out()
    wait_counts(gw, door.dev, 4, 1)
    wait_for(lambda: view(gw, door.dev)["occupancy"] == 3, 10, what="occupancy 3")
    assert not view(gw, door.dev)["out_of_service"]
    # closing time: staff reset the estimate (journaled as occupancy.reset)
    r = gw.command(door.dev, "reset", {}, key=f"close-{time.time_ns()}")
    assert r["status"] == "done" and r["result"] == {"occupancy": 0, "was": 3}, r
    wait_for(lambda: view(gw, door.dev)["occupancy"] == 0, 10, what="occupancy reset to 0")
    door.walk_out()  # someone who came in before the reset: never below 0
    wait_counts(gw, door.dev, 4, 2)
    assert view(gw, door.dev)["occupancy"] == 0


def test_a_stuck_beam_raises_an_alert_stops_counting_and_recovers(rig, gw, door):
    door.walk_in()
    wait_counts(gw, door.dev, 1, 0)
    door.block_beam("A")                      # a box left in the beam, longer than stuck_s (3)
    wait_for(lambda: gw.events(door.dev, "beam.stuck"), 15, what="beam.stuck")
    alert = wait_for(lambda: [a for a in gw.get("/alerts") if a["key"] == f"beam.stuck:{door.dev}:A"],
                     15, what="stuck-beam alert")[0]
    assert alert["severity"] == "warning" and "out of service" in alert["text"]
    wait_for(lambda: view(gw, door.dev)["out_of_service"], 15, what="out of service at the gateway")
    assert view(gw, door.dev)["stuck_beams"] == ["A"]
    # someone squeezes past on the store side meanwhile: not counted
    door.block_beam("B")
    time.sleep(0.3)
    door.block_beam("B", blocked=False)
    door.block_beam("A", blocked=False)       # the box is taken away
    wait_for(lambda: gw.events(door.dev, "beam.cleared"), 15, what="beam.cleared")
    wait_for(lambda: not view(gw, door.dev)["out_of_service"], 15, what="back in service")
    wait_for(lambda: not [a for a in gw.get("/alerts") if a["key"] == f"beam.stuck:{door.dev}:A"],
             15, what="the alert resolved")
    door.walk_in()
    c = wait_counts(gw, door.dev, 2, 0)
    # the minutes say they were incomplete: out of service from the moment A had been blocked
    # for stuck_s (3 s) until it cleared (the debounces and sampling make it a little longer)
    blocked = gw.events(door.dev, "beam.cleared")[0]["body"]["blocked_ms"]
    oos = sum(m["oos_ms"] for m in c["minutes"])
    assert blocked - 3000 - 50 <= oos <= blocked - 3000 + 200, (oos, blocked, c)
