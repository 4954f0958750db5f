"""The per-kind rig drivers (hil/drivers/): the registry, the rig forwarding a kind's world
actions to its driver, the drivers' idle levels and springs, and the virtual store getting its
per-kind parts from the registry. Fast: no firmware process is started."""
from __future__ import annotations

import json

import pytest

from hil.drivers import DRIVERS, KINDS, actions, driver_class
from hil.drivers.base import DeviceDriver
from hil.pi import wiring as wiring_mod
from hil.rig import VirtualRigBackend
from hil.sim.store import VirtualStore


@pytest.fixture
def rig(tmp_path):
    r = VirtualRigBackend(tmp_path / "rig", ("127.0.0.1", 1))  # boards/rigs/virtual.json; nothing started
    yield r
    r.close()


def test_every_kind_the_wiring_files_accept_has_its_rig_driver():
    for kind in DRIVERS:
        cls = driver_class(kind)
        assert issubclass(cls, DeviceDriver) and cls.kind == kind
    assert set(wiring_mod.KINDS) == set(KINDS)  # the gateway's registry = hil's drivers
    with pytest.raises(LookupError, match=r"turnstile.*hil/drivers/<kind>.py"):
        driver_class("turnstile")


def test_a_device_handle_is_its_kinds_driver_and_the_rig_forwards_its_actions(rig):
    lk = rig.device_of_kind("locker-bank")
    assert type(lk).__name__ == "LockerBank" and rig.device(lk.dev) is lk
    assert type(rig.device_of_kind("sample-pad")).__name__ == "SamplePad"
    assert actions()["type_code"] == ("locker-bank",)
    rig.place_parcel(lk.dev, 2)  # forwarded: rig.<action>(dev, ...) = driver.<action>(...)
    assert rig.sim(lk.dev).inputs["occ_2"] == 1
    lk.take_parcel(2)
    assert rig.sim(lk.dev).inputs["occ_2"] == 0
    rig.type_code(lk.dev, "1234")
    assert bytes(rig.sim(lk.dev)._uart_to_fw["keypad"]) == b"1234#"
    pad = rig.device_of_kind("sample-pad").dev
    with pytest.raises(AttributeError, match=r"pad-1 is a sample-pad: it has no 'type_code' "
                                             r"\(that is a world action of locker-bank\)"):
        rig.type_code(pad, "1234")
    with pytest.raises(AttributeError, match="no attribute 'no_such_action'"):
        rig.no_such_action(pad)


def test_springs_are_played_by_the_driver_and_a_jam_stops_them_until_reset_world(rig):
    lk = rig.device_of_kind("locker-bank")
    lk.close_door("door_1")
    sim = rig.sim(lk.dev)
    sim._write_pin("lock_1", 1)  # what the firmware's `W lock_1 1` does over the sim link
    assert sim.inputs["door_1"] == 1  # sprang open
    lk.close_door("door_1")
    sim._write_pin("lock_1", 0)
    lk.jam("door_1")
    sim._write_pin("lock_1", 1)
    assert sim.inputs["door_1"] == 0  # jammed: stays shut
    sim._write_pin("lock_1", 0)
    rig.reset_world()
    sim._write_pin("lock_1", 1)
    assert sim.inputs["door_1"] == 1  # reset_world freed the spring


def test_idle_levels_come_from_the_kinds_driver(tmp_path):
    w = wiring_mod.load_wiring(_wiring(tmp_path, {
        "st": {"kind": "tube-station", "levels": {"eye_blocked": 0, "estop_active": 0},
               "inputs": {"door": {}, "chamber": {}, "bin": {}, "send": {}, "estop": {}, "PE-T1": {}}},
        "lk": {"kind": "locker-bank", "levels": {"door_open": 0},
               "inputs": {"door_1": {}, "occ_1": {}}}}))
    st, lk = w.device("st"), w.device("lk")
    idle = {pin: driver_class(st.kind).idle_level(st, pin) for pin in st.inputs}
    assert idle == {"door": 0, "chamber": 1, "bin": 1, "send": 0, "estop": 1, "PE-T1": 0}
    assert {pin: driver_class(lk.kind).idle_level(lk, pin) for pin in lk.inputs} == {"door_1": 1, "occ_1": 0}


def test_the_virtual_store_gets_per_kind_app_config_and_handles_from_the_registry(tmp_path):
    store = VirtualStore(tmp_path / "store", broker_port=1)
    try:
        assert "code_key" in store._config("lk-9", "locker-bank", {})["app"]  # LockerBank.firmware_app
        assert store._config("pad-9", "sample-pad", {"poll_ms": 40})["app"] == {"poll_ms": 40}
        pad = store.add("sample-pad", "pad-9")
        assert store.pads == {"pad-9": pad} and store.devices["pad-9"] is pad.fw
        assert "rfid" in store.rig.device("pad-9").spi  # its emulated reader
        lk = store.add_locker("lk-9", ["S", "M"])
        assert store.lockers == {"lk-9": lk} and lk.compartments == [1, 2]
        with pytest.raises(LookupError, match=r"no model for kind 'tube-station' alone.*add_tube"):
            store.add("tube-station", "st-9")
    finally:
        store.stop()


def _wiring(tmp_path, devices):
    p = tmp_path / "wiring.json"
    p.write_text(json.dumps({"rig": "t", "devices": devices}))
    return p
