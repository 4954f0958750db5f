"""The pneumatic tube in tests (docs/tube.md): the store around the tube line on the virtual rig
(`tube_store`, yielding a `Line`: the gateway's API plus the rig's world actions), and the tube
service alone on a real Store (`World`)."""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import httpx

from gateway.devices.commands import CommandService
from gateway.kinds.tube.service import TubeService
from gateway.storage.db import Database
from gateway.storage.store import Store
from hil.harness import GatewayProcess, wait_for
from hil.rig import ROOT, VirtualRigBackend
from tests.support.services import Clock, commands

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
        return wait_for(lambda: j if (j := self.job(key))["state"] == state else None,
                        timeout, what=f"dispatch {key} {state}")

    def line(self) -> dict:
        return self.gw.get("/tube/line")

    # --- world -----------------------------------------------------------------------------
    def display(self, station: str) -> str:
        return bytes(self.rig.sim(DEV[station]).uart_from_fw.get("display", b"")).decode(errors="replace")

    def send(self, station: str, item: str) -> None:
        """Staff: wait for the station to show the item, open the door, load a carrier, close
        the door, press send."""
        wait_for(lambda: self.display(station).rstrip("\n").rsplit("\n", 1)[-1].startswith(f"Load {item} "),
                 T, what=f"{station} showing {item}")
        self.load_and_send(station)

    def load_and_send(self, station: str) -> None:
        dev = DEV[station]
        n = len(self.gw.events(dev, "carrier.loaded"))
        self.rig.open_door(dev)  # (the previous carrier may still be flying: its air stays on)
        self.rig.load_carrier(dev)
        self.rig.close_door(dev)
        wait_for(lambda: len(self.gw.events(dev, "carrier.loaded")) > n, T, what=f"{station} chamber loaded")
        self.rig.press_send(dev)

    def take(self, station: str) -> None:
        self.rig.take_carrier(DEV[station])

    def air(self, station: str) -> int:
        return self.rig.output(DEV[station], "air")


@contextlib.contextmanager
def tube_store(tmp_path, broker, *, coap: bool = False, wiring=WIRING, extra_args=()):
    """The gateway process and the virtual tube rig, every device online; yields the Line.
    On the way out: no physical violation in the line model, no unexpected firmware reset."""
    network = NETWORK
    if coap:
        # over CoAP a lost or late datagram costs a retransmission (ACK_TIMEOUT 2-3 s): the
        # arbiter's confirmation windows must cover one (docs/tube.md, "Timing over CoAP")
        net = json.loads(NETWORK.read_text())
        net["timing"]["window_margin_s"] = 8.0
        network = tmp_path / "network-coap.json"
        network.write_text(json.dumps(net))
    gw = GatewayProcess(tmp_path / "gw", broker.port, coap_heartbeat_s=2 if coap else None,
                        extra_args=["--tube-network", str(network), *extra_args]).start()
    # every tube app runs in the 96 KB heap of a board (TUBE_FW_HEAP to measure smaller ones).
    # Over CoAP the line controller used to run out at 96 KB with two diverter moves in flight
    # and its event sender died (the old flake, docs/tube.md "Timing over CoAP")
    rig = VirtualRigBackend(tmp_path / "rig", ("127.0.0.1", broker.port), wiring=wiring,
                            heap=os.environ.get("TUBE_FW_HEAP", "96k"),
                            coap=("127.0.0.1", gw.coap_port) if coap else None,
                            coap_keys=gw.coap_keys)
    try:
        line = Line(gw, rig)  # the line model first: it sets the idle world before power-on
        for dev in rig.devices():
            rig.start(dev, timeout=40)
        wait_for(lambda: {d["id"] for d in gw.get("/devices") if d["online"]} >= set(rig.devices()),
                 T, what="devices online at the gateway")
        yield line
        assert not line.model.violations, line.model.violations
        assert not rig.unexpected_resets(), rig.unexpected_resets()
    finally:
        rig.close()
        gw.stop()


# --- the tube service alone ------------------------------------------------------------------

DEVICES = ("tube-stockroom", "tube-womens", "tube-mens", "tube-fitting", "tube-line")


def _devices_tx(store: Store, now: int) -> None:
    with store.transaction():
        for d in DEVICES:
            store.upsert_device(id=d, kind="tube-line" if d == "tube-line" else "tube-station", fw="t",
                                caps=[], cfg="x", session=1, epoch="e1", boot=1, reset=None, online=True,
                                now=now)


def _event_tx(store: Store, dev: str, seq: int, etype: str, body: dict[str, Any], now: int) -> None:
    with store.transaction():
        store.insert_event(dev, "e1", seq, etype, now, now, body)


class World:
    """The tube service on a real Store without a gateway process: a clock the test moves,
    device events written as the ingest would, the commands it sends collected."""

    def __init__(self, path) -> None:
        self.path = path
        self.clock = Clock()
        self.seq: dict[str, int] = {}
        self.published: list[tuple[str, dict]] = []
        self.seen: set[str] = set()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, json.loads(payload)))

    async def open(self) -> TubeService:
        self.db = Database(self.path)
        await self.db.__aenter__()
        await self.db.write(_devices_tx, self.clock())
        self.cmds = CommandService(self.db, self.publish, clock=self.clock)
        svc = TubeService(self.db, self.cmds, NETWORK, clock=self.clock)
        await svc.load()
        return svc

    async def event(self, dev: str, etype: str, **body: Any) -> None:
        self.seq[dev] = self.seq.get(dev, 0) + 1
        await self.db.write(_event_tx, dev, self.seq[dev], etype, body, self.clock())

    async def new_commands(self) -> list[tuple[str, str, dict]]:
        """Commands inserted since the last call (the clock stands still: `created` ties)."""
        cmds = [c for c in await self.db.read(commands) if c["id"] not in self.seen]
        self.seen.update(c["id"] for c in cmds)
        return [(c["device"], c["name"], c["args"]) for c in cmds]
