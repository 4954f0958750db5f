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

from hil.rig import ROOT, VirtualRigBackend
from tests.e2e import GatewayProcess, StreamReader
from tests.support import wait_for

NETWORK = ROOT / "boards" / "tube" / "virtual-fast.json"
WIRING = ROOT / "boards" / "rigs" / "tube-virtual.json"
DEV = {"stockroom": "tube-stockroom", "floor-womens": "tube-womens", "floor-mens": "tube-mens",
       "fitting-rooms": "tube-fitting"}
T = 30  # generous waits: 2 shared cores, five firmware processes


class Line:
    """The store around the tube: gateway API + rig world actions."""

    def __init__(self, gw: GatewayProcess, rig: VirtualRigBackend):
        self.gw, self.rig = gw, rig
        self.model = rig.tube_line()

    # --- API -------------------------------------------------------------------------------
    def dispatch(self, key: str, origin: str, dest: str, priority: str = "customer",
                 item: str = "SKU-1", expect: int = 201) -> dict:
        r = httpx.post(self.gw.url + "/tube/dispatches", json={
            "from": origin, "to": dest, "priority": priority, "item": item,
            "idempotency_key": key}, timeout=30)
        assert r.status_code == expect, r.text
        return r.json()

    def job(self, key: str) -> dict:
        return self.gw.get(f"/tube/dispatches/{key}")

    def states(self, key: str) -> list[str]:
        return [h[1] for h in self.job(key)["history"]]

    def wait_state(self, key: str, state: str, timeout: float = T) -> dict:
        return wait_for(lambda: (lambda j: j if j["state"] == state else None)(self.job(key)),
                        timeout, what=f"dispatch {key} {state}")

    def line(self) -> dict:
        return self.gw.get("/tube/line")

    # --- world -----------------------------------------------------------------------------
    def display(self, station: str) -> str:
        return bytes(self.rig.sim(DEV[station]).uart_from_fw.get("display", b"")).decode(errors="replace")

    def send(self, station: str, item: str) -> None:
        """Staff: wait for the station to show the item, load a carrier, press send."""
        dev = DEV[station]
        wait_for(lambda: f"Load {item} " in self.display(station).splitlines()[-1:][0]
                 if self.display(station) else False, T, what=f"{station} showing {item}")
        self.rig.load_carrier(dev)
        wait_for(lambda: self.rig.messages(dev, "carrier.loaded") or self.gw.events(dev, "carrier.loaded"),
                 T, what=f"{station} chamber loaded")
        self.rig.press_send(dev)

    def take(self, station: str) -> None:
        self.rig.take_carrier(DEV[station])

    def air(self, station: str) -> int:
        return self.rig.output(DEV[station], "air")


@pytest.fixture
def tube(tmp_path, broker):
    gw = GatewayProcess(tmp_path / "gw", broker.port,
                        extra_args=["--tube-network", str(NETWORK)]).start()
    rig = VirtualRigBackend(tmp_path / "rig", ("127.0.0.1", broker.port), wiring=WIRING)
    try:
        line = Line(gw, rig)  # the line model first: it sets the idle world before power-on
        for dev in rig.devices():
            rig.start(dev, timeout=40)
        wait_for(lambda: {d["id"] for d in gw.get("/devices") if d["online"]} >= set(rig.devices()),
                 T, what="tube devices online at the gateway")
        yield line
        assert not line.model.violations, line.model.violations
        assert not rig.unexpected_resets(), rig.unexpected_resets()
    finally:
        rig.close()
        gw.stop()


def test_dispatch_end_to_end_with_diverters(tube):
    with StreamReader(tube.gw.url) as stream:
        rec = tube.dispatch("d-1", "stockroom", "fitting-rooms", item="SKU-42")
        assert rec["state"] == "queued" and rec["from"] == "stockroom"
        tube.send("stockroom", "SKU-42")
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
