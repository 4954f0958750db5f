"""The door counter's beam state machine (firmware/edge/apps/door_beams.py) and its app's
bookkeeping (firmware/edge/apps/door_counter.py) in the real MicroPython binary, on bytecode
from mpy-cross, fed scripted beam levels: every tricky crossing of docs/door-counter.md.

The scripts sample the beams every 5 ms as the app does, with the app's default 30 ms
debounce. A crossing is written as segments `(A, B, ms)`: the raw beam levels (1 = blocked)
and how long they hold. Times are simulated (the state machine takes `dt`): no sleeping.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from hil.sim.firmware import build_mpy, micropython_binary, micropython_env

RUN_BEAMS = r'''
import json, sys
from edge.apps.door_beams import Beams

out = {}
for sc in json.load(open(sys.argv[1])):
    b = Beams(sc.get("debounce", 30), sc.get("stuck", 60000))
    got = []
    oos_seen = False
    for a, bb, ms in sc["segs"]:
        t = 0
        while t < ms:
            r = b.step(a, bb, 5)
            if r:
                for o in r:
                    got.append(list(o))
            oos_seen = oos_seen or b.oos
            t += 5
    out[sc["name"]] = {"got": got, "oos_seen": oos_seen, "oos": b.oos, "unclear": b.unclear}
print(json.dumps(out))
'''

IDLE = [(0, 0, 200)]


def walk_in(a=60, ab=200, b=60):
    """A person walking in at ~1.2 m/s: A, both, then only B."""
    return [(1, 0, a), (1, 1, ab), (0, 1, b), (0, 0, 200)]


def walk_out(a=60, ab=200, b=60):
    return [(0, 1, b), (1, 1, ab), (1, 0, a), (0, 0, 200)]


SCENARIOS: dict[str, tuple[list, list]] = {
    # name: (segments, expected outcomes)
    "in": (IDLE + walk_in(), [["in"]]),
    "out": (IDLE + walk_out(), [["out"]]),
    # running: the beams' edges 20 ms apart (less than the debounce): each beam is delayed
    # alike, so the order survives
    "running in": (IDLE + walk_in(a=20, ab=120, b=20), [["in"]]),
    # back to back: the second person breaks A 10 ms after the first clears B (each beam itself
    # was clear far longer than the debounce)
    "back to back in": (IDLE + walk_in()[:3] + [(0, 0, 10)] + walk_in(), [["in"], ["in"]]),
    "back to back out": (IDLE + walk_out()[:3] + [(0, 0, 10)] + walk_out(), [["out"], ["out"]]),
    "in then out": (IDLE + walk_in() + walk_out(), [["in"], ["out"]]),
    # someone stops in the beams for 20 s (less than the 60 s stuck time), then walks on
    "stops in the beam": (IDLE + walk_in(ab=20000), [["in"]]),
    "stops on A then goes in": (IDLE + [(1, 0, 8000)] + walk_in(a=60), [["in"]]),
    # steps back once (B clears, A still blocked), then goes through
    "hesitates": (IDLE + [(1, 0, 60), (1, 1, 300), (1, 0, 300), (1, 1, 300), (0, 1, 60), (0, 0, 200)],
                  [["in"]]),
    # comes in as far as both beams and turns back out
    "turns back": (IDLE + [(1, 0, 60), (1, 1, 300), (1, 0, 60), (0, 0, 200)], []),
    "pokes a head in from the store": (IDLE + [(0, 1, 60), (1, 1, 100), (0, 1, 60), (0, 0, 200)], []),
    # a bag swinging through beam A for 10-20 ms at a time: shorter than the debounce
    "bag flicks A": (IDLE + [(1, 0, 15), (0, 0, 40), (1, 0, 20), (0, 0, 40), (1, 0, 10), (0, 0, 200)], []),
    # a bag swinging through both beams, longer than the debounce, and back
    "bag swings through both and back": (IDLE + [(1, 0, 50), (1, 1, 60), (1, 0, 50), (0, 0, 200)], []),
    # someone walks in; their bag swings back into A while they are past it
    "walks in, bag swings back into A": (IDLE + [(1, 0, 60), (1, 1, 200), (0, 1, 60), (1, 1, 80),
                                                 (0, 1, 60), (0, 0, 200)], [["in"]]),
    # the A receiver chatters on the edges (5 ms pulses) as a coat brushes it
    "chattering edges": (IDLE + [(1, 0, 5), (0, 0, 5), (1, 0, 5), (0, 0, 5)] + walk_in()
                         + [(0, 1, 5), (0, 0, 5)], [["in"]]),
    # both beams change within one sample (the loop stalled on a flash write): the step after
    # the skipped state tells the direction
    "skip at the start": (IDLE + [(1, 1, 200), (0, 1, 60), (0, 0, 200)], [["in"]]),
    "skip in the middle": (IDLE + [(0, 1, 60), (1, 0, 100), (0, 0, 200)], [["out"]]),
    "skip both ways, untold": (IDLE + [(1, 1, 200), (0, 0, 200)], []),
    # documented limit: bodies closer than the beams' gap (the second breaks A before the first
    # clears B) count as one
    "tailgating closer than the gap": (IDLE + [(1, 0, 60), (1, 1, 200), (0, 1, 60), (1, 1, 60),
                                               (1, 0, 60), (1, 1, 200), (0, 1, 60), (0, 0, 200)],
                                       [["in"]]),
}


def run_micropython(tmp_path, script: str, data) -> dict:
    (tmp_path / "run.py").write_text(script)
    (tmp_path / "data.json").write_text(json.dumps(data))
    r = subprocess.run([micropython_binary(), "-X", "heapsize=96k", str(tmp_path / "run.py"),
                        str(tmp_path / "data.json")], cwd=tmp_path, env=micropython_env(path=build_mpy()),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def crossings(tmp_path_factory):
    data = [{"name": name, "segs": segs} for name, (segs, _) in SCENARIOS.items()]
    return run_micropython(tmp_path_factory.mktemp("beams"), RUN_BEAMS, data)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_crossing(crossings, name):
    got = crossings[name]
    assert got["got"] == SCENARIOS[name][1], name
    assert not got["oos_seen"], name  # none of these is a stuck beam


def test_skips_that_never_tell_are_counted_as_unclear(crossings):
    assert crossings["skip both ways, untold"]["unclear"] == 1
    assert crossings["skip at the start"]["unclear"] == 0


def test_a_stuck_beam_stops_counting_until_it_and_the_other_clear(tmp_path):
    stuck = 2000  # ms (the app's stuck_s is whole seconds; the machine takes ms)
    data = [
        # A blocked for 3 s: stuck after 2 s (+ the debounce); someone crosses B meanwhile;
        # A clears: counting resumes, and the next crossing counts
        {"name": "stuck A", "stuck": stuck, "segs": IDLE + [(1, 0, 3000), (1, 1, 200), (1, 0, 100),
                                                            (0, 0, 200)] + walk_in()},
        # B stuck; it clears while someone blocks A: out of service until both beams are
        # clear (that person is not counted), then the next crossing counts
        {"name": "stuck B, clears under someone", "stuck": stuck,
         "segs": IDLE + [(0, 1, 2500), (1, 1, 100), (1, 0, 100), (0, 0, 100)] + walk_out()},
        # a stuck receiver that flickers "clear" for 5 ms every 500 ms is still stuck (the
        # debounce), and clears once, when it really clears
        {"name": "stuck A flickering", "stuck": stuck,
         "segs": IDLE + [(1, 0, 500), (0, 0, 5)] * 6 + [(0, 0, 200)] + walk_in()},
        # A stays blocked: someone crossing B meanwhile is not counted
        {"name": "stays stuck", "stuck": stuck, "segs": IDLE + [(1, 0, 2500), (1, 1, 200), (1, 0, 200)]},
    ]
    got = run_micropython(tmp_path, RUN_BEAMS, data)
    a = got["stuck A"]
    assert [o[:2] for o in a["got"]] == [["stuck", 0], ["cleared", 0], ["in"]]
    assert a["got"][0][2] == stuck  # blocked_ms when it was declared stuck
    assert 3290 <= a["got"][1][2] <= 3300 + 40  # the whole time A was blocked (debounced)
    assert a["oos_seen"] and not a["oos"]
    b = got["stuck B, clears under someone"]
    assert [o[:2] for o in b["got"]] == [["stuck", 1], ["cleared", 1], ["out"]]
    f = got["stuck A flickering"]
    assert [o[:2] for o in f["got"]] == [["stuck", 0], ["cleared", 0], ["in"]]
    s = got["stays stuck"]
    assert s["got"] == [["stuck", 0, stuck]] and s["oos"]  # nothing counted, still out of service


RUN_APP = r'''
import json, sys
from edge.apps.door_counter import DoorCounter
from edge.runtime import Rejected
import asyncio

class Pin:
    def __init__(self):
        self.v = 0
    def value(self):
        return self.v

class Hal:
    def __init__(self):
        self.pins = {}
    def pin_in(self, name, pull=None):
        return self.pins.setdefault(name, Pin())

class Rt:
    def __init__(self):
        self.clock = None
        self.events = []
    def now(self):
        return self.clock
    def emit(self, etype, body):
        self.events.append([etype, body])

script = json.load(open(sys.argv[1]))
hal, rt = Hal(), Rt()
app = DoorCounter(rt, hal, script["app"])
app.t0 = 0  # uptime in simulated ms (the script's `ticks`)
a, b = hal.pins[script["app"].get("beam_a", "beam_a")], hal.pins[script["app"].get("beam_b", "beam_b")]
ticks = 0
lvl = script["app"].get("blocked_level", 1)
for op in script["ops"]:
    if op[0] == "clock":
        rt.clock = op[1]
    elif op[0] == "cmd":
        try:
            rt.events.append(["reply", asyncio.run(app.commands[op[1]](op[2]))])
        except Rejected as e:
            rt.events.append(["rejected", e.reason])
    else:
        va, vb, ms = op
        t = 0
        while t < ms:
            a.v = lvl if va else 1 - lvl
            b.v = lvl if vb else 1 - lvl
            app.sample(5)
            ticks += 5
            if rt.clock is not None:
                rt.clock += 5
            app.period(ticks)
            t += 5
print(json.dumps(rt.events))
'''

T0 = 1_795_426_620_000  # a minute boundary (unix ms)


def segs(*crossings):
    return [seg for c in crossings for seg in c]


def test_app_counts_per_period_keeps_occupancy_never_negative_and_resets(tmp_path):
    ops = ([["clock", T0]] + segs(IDLE, walk_in(), walk_in(), walk_out(), walk_out(), walk_out())
           + [(0, 0, 60_000)]  # the minute ends: one footfall for it
           + segs(walk_in(), walk_in()) + [["cmd", "reset", {}]] + segs(walk_out())
           + [["cmd", "reset", {"occupancy": 5}], ["cmd", "reset", {"occupancy": -1}],
              ["cmd", "status", {}]]
           + [(0, 0, 60_000)])
    ev = run_micropython(tmp_path, RUN_APP, {"app": {}, "ops": ops})
    footfall = [e[1] for e in ev if e[0] == "footfall"]
    # the first minute: 2 in, 3 out; the occupancy went 1, 2, 1, 0 and stayed 0 (not -1)
    assert footfall[0] == {"start": T0, "period_s": 60, "in": 2, "out": 3, "occupancy": 0, "oos_ms": 0}
    assert ["occupancy.reset", {"occupancy": 0, "was": 2}] in ev
    assert ["occupancy.reset", {"occupancy": 5, "was": 0}] in ev
    assert ["rejected", "bad-args"] in ev  # a negative occupancy is refused
    status = next(e[1] for e in ev if e[0] == "reply" and "beams" in e[1])
    assert status["occupancy"] == 5 and status["in"] == 4 and status["out"] == 4
    assert status["period"] == {"in": 2, "out": 1, "oos_ms": 0} and status["out_of_service"] is False
    # the second minute: 2 in, 1 out, ending at the occupancy the last reset set
    assert footfall[1] == {"start": T0 + 60_000, "period_s": 60, "in": 2, "out": 1, "occupancy": 5,
                           "oos_ms": 0}
    assert len(footfall) == 2  # quiet minutes send nothing


def test_app_reports_a_stuck_beam_and_the_time_out_of_service(tmp_path):
    ops = ([["clock", T0]] + segs(IDLE, walk_in()) + [(1, 0, 1500), (1, 1, 100), (0, 1, 100), (0, 0, 100)]
           + segs(walk_in()) + [(0, 0, 60_000)])
    ev = run_micropython(tmp_path, RUN_APP, {"app": {"stuck_s": 1, "blocked_level": 0}, "ops": ops})
    types = [e[0] for e in ev]
    assert types == ["beam.stuck", "beam.cleared", "footfall"], ev
    assert ev[0][1] == {"beam": "A", "blocked_ms": 1000}
    assert ev[1][1]["beam"] == "A" and 1590 <= ev[1][1]["blocked_ms"] <= 1600 + 40
    f = ev[2][1]
    # the crossing under the stuck beam is not counted; the minute says it was out of service
    assert (f["in"], f["out"], f["occupancy"]) == (2, 0, 2)
    # from stuck (A blocked 1 s after its debounce) until both beams read clear (B's debounce)
    assert 680 <= f["oos_ms"] <= 720, f


def test_app_without_a_clock_ends_periods_by_uptime(tmp_path):
    ops = segs(IDLE, walk_in()) + [(0, 0, 61_000)]
    ev = run_micropython(tmp_path, RUN_APP, {"app": {}, "ops": ops})
    assert ev == [["footfall", {"start": None, "period_s": 60, "in": 1, "out": 0, "occupancy": 1,
                                "oos_ms": 0}]]


def test_app_refuses_a_bad_config(tmp_path):
    (tmp_path / "run.py").write_text(RUN_APP)
    (tmp_path / "data.json").write_text(json.dumps({"app": {"debounce_ms": 0}, "ops": []}))
    r = subprocess.run([micropython_binary(), str(tmp_path / "run.py"), str(tmp_path / "data.json")],
                       cwd=tmp_path, env=micropython_env(path=build_mpy()), capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode != 0 and "app.debounce_ms must be a positive integer" in r.stdout + r.stderr
