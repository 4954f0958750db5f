"""The virtual tube line (hil/sim/tube.py) on its own, driven through the boards' output pins as
the firmware drives them, and the tube rig wiring files. Fast: no firmware, no broker."""
from __future__ import annotations

import time

import pytest

from hil.harness import wait_for
from hil.pi.wiring import load_wiring
from hil.rig import ROOT
from hil.sim.rig import VirtualRig
from hil.sim.tube import TubeLineModel

NETWORK = ROOT / "boards" / "tube" / "virtual-fast.json"


@pytest.fixture
def line():
    rig = VirtualRig().start()
    model = TubeLineModel(rig, NETWORK).start()
    yield rig, model
    model.stop()
    rig.stop()


def drive(rig, dev, pin, v):
    rig.device(dev)._write_pin(pin, v)  # what a firmware `W pin v` does over the sim link


def turn(rig, model, diverter, position):
    """Run a diverter's motor until `position`'s limit switch closes (as tube_line.py does)."""
    positions = model._positions(diverter)
    sim = rig.device("tube-line")
    if sim.inputs.get(f"{diverter}.{position}"):
        return
    at = model.div_pos[diverter]
    drive(rig, "tube-line", f"{diverter}.dir", 1 if positions.index(position) > at else 0)
    drive(rig, "tube-line", f"{diverter}.run", 1)
    assert sim.wait_for(lambda d: d.inputs.get(f"{diverter}.{position}") == 1, 5), f"{diverter} -> {position}"
    drive(rig, "tube-line", f"{diverter}.run", 0)


def eye_pulses(rig) -> list[str]:
    return [sig for (_, _, sig, v) in rig.trace.signals if sig.startswith("PE-") and v == 1]


def air(rig, dev, on, gate=False):
    drive(rig, dev, "air", 1 if on else 0)
    if gate:
        drive(rig, dev, "gate", 1)


def test_diverter_turns_through_its_positions_and_a_stuck_one_does_not(line):
    rig, model = line
    sim = rig.device("tube-line")
    assert sim.inputs["DV1.womens"] == 1 and sim.inputs["DV1.through"] == 0
    turn(rig, model, "DV1", "cross")  # two steps, passing `through`
    assert sim.inputs["DV1.cross"] == 1 and sim.inputs["DV1.womens"] == 0
    assert any(sig == "DV1.through" and v == 1 for (_, _, sig, v) in rig.trace.signals)
    model.stick_diverter("DV2")
    drive(rig, "tube-line", "DV2.dir", 1)
    drive(rig, "tube-line", "DV2.run", 1)
    assert not sim.wait_for(lambda d: d.inputs.get("DV2.mens") == 1, 0.8)
    drive(rig, "tube-line", "DV2.run", 0)


def test_carrier_flies_the_set_route_passing_each_eye_and_drops_into_the_bin(line):
    rig, model = line
    turn(rig, model, "DV1", "through")
    turn(rig, model, "DV2", "fitting")
    rig.device("tube-stockroom").set_input("chamber", 1)  # staff load a carrier
    air(rig, "tube-stockroom", True)
    air(rig, "tube-fitting", True)
    wait_for(lambda: model.carriers, 2, what="carrier seen in the chamber")
    assert not model.in_tube(), "no departure while the send gate is shut"
    drive(rig, "tube-stockroom", "gate", 1)
    wait_for(lambda: rig.device("tube-fitting").inputs.get("bin") == 1, 10, what="arrival in the bin")
    assert rig.device("tube-stockroom").inputs["chamber"] == 0
    assert eye_pulses(rig) == ["PE-T1", "PE-T2", "PE-T4"]
    assert model.arrivals == [(1, "stockroom", "fitting-rooms")] and not model.violations
    rig.device("tube-fitting").set_input("bin", 0)  # someone takes it out
    wait_for(lambda: not model.carriers, 2, what="carrier gone from the bin")


def test_air_cut_at_the_far_end_stops_the_carrier_and_a_jam_keeps_it(line):
    rig, model = line
    turn(rig, model, "DV1", "through")
    turn(rig, model, "DV2", "mens")
    rig.device("tube-stockroom").set_input("chamber", 1)
    air(rig, "tube-mens", True)
    air(rig, "tube-stockroom", True, gate=True)
    wait_for(lambda: model.in_tube() and model.in_tube()[0].dist > 2.0, 5, what="carrier flying")
    air(rig, "tube-mens", False)  # the destination's door opened: its station cut the air
    d0 = model.in_tube()[0].dist
    wait_for(lambda: model.in_tube()[0].air_since is None, 2, what="carrier stopped")
    d1 = model.in_tube()[0].dist
    time.sleep(0.3)
    assert model.in_tube()[0].dist == d1 and d1 - d0 < 1.0
    model.jam_segment("T5")
    air(rig, "tube-mens", True)
    wait_for(lambda: model.in_tube() and model.in_tube()[0].at == "stuck", 5, what="carrier stuck in T5")
    time.sleep(0.3)
    assert not model.arrivals and rig.device("tube-mens").inputs.get("bin") == 0
    assert "PE-T5" not in eye_pulses(rig)
    assert model.retrieve_stuck() == 1 and not model.in_tube()


def test_tube_wiring_files():
    virtual = load_wiring(ROOT / "boards" / "rigs" / "tube-virtual.json")
    assert {w.kind for w in virtual.devices.values()} == {"tube-station", "tube-line"}
    bench = load_wiring(ROOT / "boards" / "rigs" / "tube-bench.json")
    bench.require_gpio()  # every line has a GPIO, none used twice (checked at load)
    st = bench.device("tube-stockroom")
    assert {"door", "chamber", "bin", "send", "estop"} <= set(st.inputs)
    assert {"air", "air_dir", "gate"} <= set(st.outputs)
    assert st.levels["estop_active"] == 1


def test_tube_board_files_map_every_pin_the_apps_use():
    import json

    bench = load_wiring(ROOT / "boards" / "rigs" / "tube-bench.json")
    for dev in bench.devices.values():
        pins = json.loads((ROOT / dev.board).read_text())["pins"]
        wired = set(dev.inputs) | set(dev.outputs)
        assert wired <= set(pins), (dev.name, wired - set(pins))
        if dev.kind == "tube-station":
            need = {"door", "chamber", "bin", "send", "estop", "air", "air_dir", "gate", *dev.app["eyes"]}
        else:
            need = {"estop", *dev.app["eyes"]}
            for d in dev.app["diverters"]:
                need |= {f"{d['id']}.run", f"{d['id']}.dir"} | {f"{d['id']}.{p}" for p in d["positions"]}
        assert need <= set(pins), (dev.name, need - set(pins))
